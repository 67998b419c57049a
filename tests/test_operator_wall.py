"""The operator wall (DESIGN §1): nothing under sim/estimate/ may import the simulated world.

Checked three ways: each file's own imports against an allow-list; the whole static import
graph reached from sim.estimate (lazy imports inside functions included, see
tests/imports.py), so a world import added to ``sim/network/plan.py`` (which the estimators
read the plan through) fails here; and a fresh interpreter importing sim.estimate.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.imports import graph, reachable, within

ESTIMATE = Path(__file__).resolve().parents[1] / "sim" / "estimate"
#: What an estimator may import from crowdsim: operator-side data and helpers only.
#: (Not ``sim.zones``: it builds zones from the scenario and the streets; the estimators
#: take zone geometries as data.)
ALLOWED_SIM = {
    "sim.errors",
    "sim.io",
    "sim.network.plan",
    "sim.network.propagation",
    "sim.network.records",
}
#: Reached through the ones above, not imported by an estimator itself: the packages'
#: ``__init__``s (exact names: "sim" allows the package, not sim.*). The plan converts
#: coordinates itself, so not even the street loader or the scenario is reached.
ALLOWED_TRANSITIVE = {"sim", "sim.network"}
#: The simulated world and the stages after the wall, named in the failure message.
WORLD = (
    "sim.crowd", "sim.truth", "sim.network.radio", "sim.network.devices",
    "sim.network.signalling", "sim.network.simulate", "sim.run", "sim.report", "validation",
)  # fmt: skip
#: Third-party packages an estimator may use.
ALLOWED_THIRD_PARTY = {"numpy", "scipy", "pandas", "shapely", "geopandas"}


def imported_modules(path: Path, package: str = "sim.estimate") -> list[tuple[int, str]]:
    """Every module a file imports, fully qualified (``from sim import crowd`` -> sim.crowd).

    `package` is the package the file belongs to (for relative imports).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # `from sim import crowd` imports the module sim.crowd
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.append((node.lineno, "__import__ (dynamic import)"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
        ):
            found.append((node.lineno, "importlib.import_module (dynamic import)"))
    return found


def allowed(module: str) -> bool:
    """True if `module` (or the package it names a member of) is on the allowed list."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return not module.startswith(("importlib", "runpy", "pickle", "subprocess"))
    if top == "sim":
        if module.startswith("sim.estimate"):
            return True
        return any(module == a or module.startswith(a + ".") for a in ALLOWED_SIM)
    return top in ALLOWED_THIRD_PARTY


MODULES = sorted(ESTIMATE.rglob("*.py"))


def test_the_estimate_package_exists() -> None:
    assert {p.name for p in MODULES} >= {"__init__.py", "base.py", "presence.py", "em.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_estimators_import_only_operator_side_modules(path: Path) -> None:
    bad = [(line, m) for line, m in imported_modules(path) if not allowed(m)]
    assert not bad, f"{path.name} crosses the operator wall: " + ", ".join(
        f"line {line}: {m}" for line, m in bad
    )


@pytest.mark.parametrize(
    "source",
    [
        "import sim.crowd",
        "from sim import crowd",
        "from sim import truth",
        "from sim.crowd.movement import fruin_los",
        "import sim.network.radio as radio",
        "from sim.network import devices",
        "from sim.network.signalling import X",
        "from .. import truth",
        "from ..network import radio",
        "__import__('sim.truth')",
        "importlib.import_module('sim.crowd')",
        "import importlib",
        "import pickle",
        "import pyarrow.parquet",
        "import validation.metrics",
    ],
)
def test_the_wall_check_catches_forbidden_imports(tmp_path: Path, source: str) -> None:
    path = tmp_path / "leak.py"
    path.write_text(source + "\n", encoding="utf-8")
    assert any(not allowed(m) for _, m in imported_modules(path))


def test_the_wall_check_lets_operator_data_through(tmp_path: Path) -> None:
    path = tmp_path / "fine.py"
    path.write_text(
        "from sim.network.plan import NetworkPlan\nfrom sim.network import propagation\n"
        "import numpy as np\nfrom scipy.sparse import csr_matrix\nfrom .tiles import ZoneSet\n"
        "import os\nfrom pathlib import Path\nfrom typing import Any\n",
        encoding="utf-8",
    )
    assert all(allowed(m) for _, m in imported_modules(path))


def test_nothing_the_estimators_reach_through_any_import_is_of_the_world() -> None:
    """Transitively over the whole static graph, lazy imports included."""
    chains = reachable([m for m in graph() if within(m, ("sim.estimate",))], graph())
    world = sorted(chain for module, chain in chains.items() if within(module, WORLD))
    assert not world, "the operator wall leaks:\n" + "\n".join(world)
    other = sorted(
        chain
        for module, chain in chains.items()
        if not within(module, ("sim.estimate", *ALLOWED_SIM))
        and module not in ALLOWED_TRANSITIVE  # exact: "sim" allows the package, not sim.*
    )
    assert not other, "reached from sim.estimate, not on the allow-list:\n" + "\n".join(other)


def test_the_transitive_check_follows_a_chain_to_the_world() -> None:
    edges = {
        "sim.estimate.x": frozenset({"sim.zones"}),
        "sim.zones": frozenset({"sim.helper"}),
        "sim.helper": frozenset({"sim.truth"}),
        "sim.truth": frozenset(),
    }
    chains = reachable(["sim.estimate.x"], edges)
    assert chains["sim.truth"] == "sim.estimate.x -> sim.zones -> sim.helper -> sim.truth"
    assert within("sim.truth", WORLD)


def test_importing_the_estimators_loads_nothing_of_the_simulated_world() -> None:
    """Transitively too: a fresh interpreter importing sim.estimate holds no world module."""
    import subprocess

    code = (
        "import sys, sim.estimate\n"
        "world = ('sim.crowd', 'sim.truth', 'sim.network.radio', 'sim.network.devices',"
        " 'sim.network.signalling', 'sim.network.simulate', 'sim.streets', 'sim.scenario',"
        " 'sim.course', 'sim.zones', 'sim.run', 'validation', 'osmnx')\n"
        "print(sorted(m for m in sys.modules if m.startswith(world)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
