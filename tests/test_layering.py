"""The layering, read statically from the source (ast, every import including those inside
functions): dependencies point down (jaffnet <- pipelines <- tuning, serving; cli on top), and
the modules of each package import one another without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaffnet", "pipelines", "tuning", "serving", "cli")
# What each package must never import (cli/, the composition root, may import them all).
FORBIDDEN = {
    "jaffnet": ("pipelines", "tuning", "serving", "cli", "ray", "mlflow"),
    "pipelines": ("tuning", "serving", "cli"),
    "tuning": ("serving", "cli"),
    "serving": ("tuning", "cli"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``path`` imports, anywhere in it; ``from package import name`` also counts
    as importing the submodule ``package.name`` when there is one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_lower_layers_never_import_higher_ones():
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in _graph().items()
        for target in targets
        if any(target == banned or target.startswith(banned + ".") for banned in FORBIDDEN.get(name.split(".")[0], ()))
    )
    assert offenders == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of ``graph`` (depth first)."""
    cycles, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return cycles


@pytest.mark.parametrize("package", ["jaffnet", "jaffnet.inference", "pipelines", "serving", "tuning", "cli"])
def test_the_modules_of_a_package_import_one_another_without_a_cycle(package):
    # Within the package only (an __init__ that re-exports its modules makes a module importing the package
    # itself close a cycle, reported too). Function-level imports count: they only hide a cycle.
    graph = {name: {target for target in targets if target == package or target.startswith(package + ".")}
             for name, targets in _graph().items() if name == package or name.startswith(package + ".")}
    assert len(graph) >= 3  # the package was found
    assert _cycles(graph) == []


def test_a_cycle_is_found_where_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
