"""The operator wall (DESIGN §1): nothing under sim/estimate/ may import the simulated world.

Checked on the source, transitively: from every module of ``sim.estimate`` the whole
graph of ``sim`` modules it imports (at any depth, at module level or inside functions)
is walked, and every module reached must be operator-side. A world import added to
``sim/network/plan.py`` (which the estimators read the plan through) fails here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ESTIMATE = ROOT / "sim" / "estimate"
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
#: Packages whose ``__init__`` runs on the way to an allowed module (checked like others).
ALLOWED_PACKAGES = {"sim", "sim.network"}
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


def module_file(name: str) -> Path | None:
    """The source file of a ``sim`` module (or package), None if `name` names no module
    (e.g. ``sim.network.plan.NetworkPlan``, a member of a module)."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def sim_import_graph(start: list[str]) -> dict[str, str]:
    """Every ``sim`` module reached from `start` by imports at any depth -> who imports it.

    A dotted name that is a member of a module (``sim.io.write_json``) resolves to the
    module; importing ``a.b.c`` also runs the packages ``a`` and ``a.b``.
    """
    reached: dict[str, str] = {}
    todo = [(m, "(start)") for m in start]
    while todo:
        name, by = todo.pop()
        while name and module_file(name) is None:
            name = name.rpartition(".")[0]
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            mod = ".".join(parts[:k])
            if mod in reached or not mod.startswith("sim"):
                continue
            reached[mod] = by
            path = module_file(mod)
            assert path is not None
            package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
            todo.extend(
                (m, mod) for _, m in imported_modules(path, package) if m.split(".")[0] == "sim"
            )
    return reached


def operator_side(module: str) -> bool:
    """True if `module` may be reached from the estimators."""
    return (
        module in ALLOWED_PACKAGES
        or module == "sim.estimate"
        or module.startswith("sim.estimate.")
        or module in ALLOWED_SIM
    )


def test_the_estimators_reach_nothing_of_the_world_transitively() -> None:
    start = ["sim.estimate." + p.stem if p.stem != "__init__" else "sim.estimate" for p in MODULES]
    reached = sim_import_graph(start)
    assert "sim.network.plan" in reached  # the walk does go through the plan
    bad = {m: by for m, by in reached.items() if not operator_side(m)}
    assert not bad, "the estimators reach the simulated world: " + ", ".join(
        f"{m} (imported by {by})" for m, by in sorted(bad.items())
    )


def test_the_walk_finds_a_world_import_hidden_one_module_deep(tmp_path: Path, monkeypatch) -> None:
    """A plan module that imported the streets (as plan.py once did) is caught."""
    fake = tmp_path / "sim"
    (fake / "network").mkdir(parents=True)
    (fake / "estimate").mkdir()
    (fake / "__init__.py").write_text("", encoding="utf-8")
    (fake / "network" / "__init__.py").write_text("", encoding="utf-8")
    (fake / "estimate" / "__init__.py").write_text(
        "from sim.network.plan import NetworkPlan\n", encoding="utf-8"
    )
    (fake / "network" / "plan.py").write_text(
        "def read():\n    from sim.streets import to_metres\n", encoding="utf-8"
    )
    (fake / "streets.py").write_text("import sim.scenario\n", encoding="utf-8")
    (fake / "scenario.py").write_text("", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    reached = sim_import_graph(["sim.estimate"])
    assert {"sim.streets", "sim.scenario"} <= set(reached)
    assert reached["sim.streets"] == "sim.network.plan"
    assert not operator_side("sim.streets") and not operator_side("sim.scenario")


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
