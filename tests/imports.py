"""The static import graph of crowdsim's own packages (``sim`` and ``validation``).

Read from the source with :mod:`ast`, so imports inside functions count as much as those
at the top of a module (a lazy import is still an import), while imports under
``if TYPE_CHECKING:`` do not (they never run). Importing ``a.b.c`` also runs the
``__init__`` of ``a`` and ``a.b``, so those are edges too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "validation")


def module_name(path: Path, root: Path = REPO) -> str:
    """Dotted name of the module in `path` (``sim/report/__init__.py`` -> sim.report)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: all but those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(source: str, module: str, *, is_package: bool) -> set[str]:
    """Dotted names `module` (given as `source`) imports, relative imports resolved.

    ``from x import y`` gives ``x.y`` (it may name a module or a member; :func:`graph`
    keeps whichever is a module).
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        found.add(base)
        found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


@cache
def graph(root: Path = REPO) -> dict[str, frozenset[str]]:
    """Module -> the crowdsim modules it imports (parent packages included)."""
    files = {
        module_name(path, root): path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }
    edges: dict[str, frozenset[str]] = {}
    for name, path in files.items():
        names = imported_names(
            path.read_text(encoding="utf-8"), name, is_package=path.name == "__init__.py"
        )
        edges[name] = frozenset(
            parent for n in names for parent in _parents(n) if parent in files and parent != name
        )
    return edges


def reachable(start: Iterable[str], edges: dict[str, frozenset[str]]) -> dict[str, str]:
    """Every module reached from `start`, each with the chain of imports that reaches it."""
    chains = {s: s for s in start}
    todo = list(chains)
    while todo:
        here = todo.pop()
        for there in sorted(edges.get(here, ())):
            if there not in chains:
                chains[there] = f"{chains[here]} -> {there}"
                todo.append(there)
    return chains


def within(module: str, packages: Iterable[str]) -> bool:
    """Whether `module` is one of `packages` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in packages)
