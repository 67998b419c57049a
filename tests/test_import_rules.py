"""The layering, stated as rules on the static import graph (tests/imports.py).

- The report reads a run and never imports the run (``sim.run`` calls the report, not
  the reverse), so the report can redraw a finished folder with no run in memory.
- ``sim`` never imports ``validation``: validation holds both sides of the operator wall
  and scores what ``sim`` wrote, so it sits above it. The one exception is the command
  line (``sim.cli``), where the two are put together for the user.
- The operator wall (``sim.estimate`` sees no simulated world) is checked transitively in
  tests/test_operator_wall.py.
"""

from __future__ import annotations

import pytest

from tests.imports import graph, imported_names, reachable, within

#: Where the simulator and its validation are put together for the user.
COMPOSERS = ("sim.cli",)


def _breaches(start: list[str], forbidden: tuple[str, ...]) -> list[str]:
    chains = reachable(start, graph())
    return sorted(chain for module, chain in chains.items() if within(module, forbidden))


def test_the_graph_covers_both_packages() -> None:
    modules = graph()
    assert {"sim.run", "sim.report", "sim.report.write", "sim.estimate", "validation"} <= set(
        modules
    )
    assert "sim.report" in modules["sim.run"]  # the run calls the report


def test_the_report_does_not_import_the_run() -> None:
    report = [m for m in graph() if within(m, ("sim.report",))]
    assert not _breaches(report, ("sim.run",)), "\n".join(_breaches(report, ("sim.run",)))


def test_sim_does_not_import_validation() -> None:
    """The rule: no module of sim reaches validation, except the command line."""
    sim = [m for m in graph() if within(m, ("sim",)) and not within(m, COMPOSERS)]
    breaches = _breaches(sim, ("validation",))
    assert not breaches, "sim imports validation:\n" + "\n".join(breaches)


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import sim.run", "sim.report.write", {"sim.run"}),
        ("from sim import run", "sim.report.write", {"sim", "sim.run"}),
        ("from ..run import X", "sim.report.write", {"sim.run", "sim.run.X"}),
        ("from . import write", "sim.report", {"sim.report", "sim.report.write"}),
        ("def f():\n    import validation.metrics", "sim.io", {"validation.metrics"}),
        ("if TYPE_CHECKING:\n    import sim.run\n", "sim.report.write", set()),
        ("if TYPE_CHECKING:\n    pass\nelse:\n    import sim.run\n", "sim.x", {"sim.run"}),
    ],
)
def test_the_graph_reads_every_kind_of_import(source: str, module: str, expected: set[str]) -> None:
    assert imported_names(source, module, is_package=module == "sim.report") == expected


def test_a_chain_names_the_way_in() -> None:
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset()}
    assert reachable(["a"], edges)["c"] == "a -> b -> c"
