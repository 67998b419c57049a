# Two commands for a newcomer (see README): `make demo` and `make test` (`make lint` is
# the first half of `make test`: ruff, the format check and mypy).
# Each sets up a virtual environment in .venv (once) and then does its job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench study study-ttt clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/crowdsim demo --out runs/demo --overwrite

# What the README's Development section lists, in that order: lint, then the suite.
lint: $(BIN)/.installed
	$(BIN)/ruff check sim validation tests benchmarks
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest-xdist workers (CI has two cores). Tests sharing a module-scoped fixture go to
# one worker together, so that it is made once; the rest one by one (tests/conftest.py).
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadscope

bench: $(BIN)/.installed
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# The estimator study: runs (reused when finished), docs/estimators.md and the README table.
study: $(BIN)/.installed
	$(BIN)/crowdsim study scenarios/study/estimators.toml --out runs/study

# Its team-time-trial half (what fits a session on a shared 2-core machine), same folder.
study-ttt: $(BIN)/.installed
	$(BIN)/crowdsim study scenarios/study/estimators_ttt.toml --out runs/study

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
