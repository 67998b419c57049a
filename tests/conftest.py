"""Shared fixtures: the real OpenStreetMap extracts (skipped when absent) and small scenarios."""

from __future__ import annotations

import ast
import copy
import fcntl
import functools
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
#: ../shared/data beside the repository (CROWDSIM_DATA overrides).
DATA = Path(os.environ.get("CROWDSIM_DATA", REPO.parent / "shared" / "data"))
SCENARIOS = REPO / "scenarios"

PENTAGON = "brussels_pentagon_walk_2013-01-01.osm.bz2"
REGION = "brussels_region_walk_2013-01-01.osm.bz2"
REGION_PBF = "brussels_region_2013-01-01.osm.pbf"
CITY_DRIVE = "brussels_city_drive_2026-01-12.graphml.gz"


def data_file(name: str) -> Path:
    """Path of a file in ../shared/data, or skip the test saying why."""
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"needs the OpenStreetMap extract {path} (../shared/data is absent)")
    if name == REGION:
        _prepare_streets_once(path)
    return path


def _prepare_streets_once(path: Path) -> None:
    """Put the prepared graph of `path` in the session's street cache, once and under a
    lock: the region takes about a minute to prepare, and two xdist workers needing it at
    the same time would otherwise both do it (whoever comes second reads the cache)."""
    from sim.streets import streets_from_file

    cache = Path(os.environ["CROWDSIM_CACHE"])  # the session's (_private_cache)
    done = cache / f"{path.name}.prepared"
    if done.exists():
        return
    with open(cache / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            streets_from_file(path, cache_dir=cache)
            done.touch()


# ----------------------------------------------------------------------------- shared runs
# Expensive results (a street cache, finished runs) are made once per test session and
# shared read-only. `make test` runs the suite on two pytest-xdist workers, each its own
# session: `shared_folder` makes such a folder once for all of them (the first worker to
# need it builds it under a lock; the others wait and reuse it).


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's temporary folder, or under xdist the one all its workers share."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-N/, above the worker's own pytest-N/popen-gwK/
    root = base / "shared"
    root.mkdir(exist_ok=True)
    return root


def shared_folder(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """``name`` in the shared temporary folder, made by ``build(path)`` once per test run.

    ``build`` gets a path that does not exist yet and must create it. A build that
    failed is tried again by the next caller (and fails the same way, in its own test).
    """
    root = _shared_root(tmp_path_factory)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            if folder.exists():
                shutil.rmtree(folder)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the street cache of the test session out of the user's ~/.cache (one cache for
    all xdist workers: entries are written atomically, so a real extract is prepared once)."""
    cache = _shared_root(tmp_path_factory) / "crowdsim-cache"
    cache.mkdir(exist_ok=True)
    os.environ["CROWDSIM_CACHE"] = str(cache)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, _private_cache: None) -> Path:
    """The smoke scenario run once per test run (under a minute); its folder is read-only.

    Tests that change files work on a copy (``shutil.copytree(smoke_run, tmp_path / ...)``).
    """
    from sim.scenario import load_scenario
    from validation.scoring import run_validated

    def build(out: Path) -> None:
        run_validated(load_scenario(SCENARIOS / "smoke.toml"), out, progress=False)

    return shared_folder(tmp_path_factory, "smoke", build)


# ----------------------------------------------------------------------------- xdist
# `make test` runs `pytest -n 2 --dist loadscope`. Plain loadscope would keep every test of
# a module on one worker; here only the tests that share a module- or class-scoped fixture
# of their module stay together (so that the fixture is made once), and every other test
# is handed out on its own. A module-scoped fixture in a conftest is not seen: its tests
# still pass, but each worker makes it. (xdist_group marks cannot do this: `--dist
# loadgroup` ignores them under pytest 9.2, pytest-xdist issue 1386.)


@functools.cache
def _shared_fixtures_of_tests(module: str) -> dict[str, str]:
    """Test name -> the module-, class- or package-scoped fixtures of `module` (a path
    under the repository) it uses, directly or through the module's other fixtures."""
    path = REPO / module
    if not path.is_file():
        return {}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]

    def fixture_scope(fn: ast.FunctionDef) -> str | None:
        for dec in fn.decorator_list:
            call = dec if isinstance(dec, ast.Call) else None
            target = call.func if call else dec
            if isinstance(target, ast.Attribute) and target.attr == "fixture":
                for kw in call.keywords if call else []:
                    if kw.arg == "scope" and isinstance(kw.value, ast.Constant):
                        return str(kw.value.value)
                return "function"
        return None

    def args(fn: ast.FunctionDef) -> list[str]:
        return [a.arg for a in fn.args.args + fn.args.kwonlyargs]

    fixtures = {fn.name: fn for fn in funcs if fixture_scope(fn)}

    @functools.cache
    def shared(name: str) -> frozenset[str]:
        fn = fixtures.get(name)
        if fn is None:
            return frozenset()
        own = {name} if fixture_scope(fn) in ("module", "class", "package") else set()
        return frozenset(own.union(*(shared(a) for a in args(fn) if a != name)))

    used = {fn.name: set().union(*(shared(a) for a in args(fn))) for fn in funcs
            if fn.name.startswith("test")}  # fmt: skip
    return {name: ",".join(sorted(fx)) for name, fx in used.items() if fx}


if importlib.util.find_spec("xdist") is not None:

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        """``--dist loadscope``: the tests sharing a module-scoped fixture go to one worker
        together (:func:`_shared_fixtures_of_tests`); every other test goes on its own."""
        if config.getvalue("dist") != "loadscope":
            return None
        from xdist.scheduler import LoadScopeScheduling

        class SharedFixtureScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                module, _, rest = nodeid.partition("::")
                fixtures = _shared_fixtures_of_tests(module).get(rest.split("[")[0])
                return f"{module}::{fixtures}" if fixtures else nodeid

        return SharedFixtureScheduling(config, log)


# ----------------------------------------------------------------------------- scenarios

MINIMAL: dict[str, Any] = {
    "name": "tiny",
    "event": {"name": "test", "date": "2019-07-07", "start": "13:00", "end": "14:00"},
    "streets": {"source": "sketch"},
    "route": {
        "name": "three points",
        "waypoints": [
            {"name": "A", "lat": 50.8417, "lon": 4.3620, "kind": "start"},
            {"name": "B", "lat": 50.8399, "lon": 4.3929},
            {"name": "C", "lat": 50.8383, "lon": 4.4078, "kind": "finish"},
        ],
    },
}


@pytest.fixture
def minimal() -> dict[str, Any]:
    """A small valid scenario as a dict (deep copy: tests may change it)."""
    return copy.deepcopy(MINIMAL)


#: Start of the small estimator worlds' record periods (UTC).
T0 = pd.Timestamp("2019-07-07T10:00:00+00:00")


def operator_records(minutes, device, cell_id, procedure=None) -> pd.DataFrame:
    """Operator records from lists; `minutes` after :data:`T0`, every outcome ok."""
    from sim.network.records import RECORD_COLUMNS

    n = len(device)
    return pd.DataFrame(
        {
            "time": T0 + pd.to_timedelta(np.asarray(minutes, dtype=float), unit="min"),
            "device": np.asarray(device, dtype=np.uint64),
            "cell_id": np.asarray(cell_id, dtype=np.int64),
            "procedure": procedure or ["service_request"] * n,
            "outcome": ["ok"] * n,
        }
    ).astype(RECORD_COLUMNS)
