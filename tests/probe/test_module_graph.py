"""The probe's and the store's modules import one another in one direction, and only public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"probe": "traindoctor.probe", "store": "traindoctor.store"}


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    parts = [FOLDERS[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    # Every import, also those inside functions and under TYPE_CHECKING: a
    # circle hidden behind either still ties the two modules together.
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


MODULES = {_module_name(path): path for folder in FOLDERS for path in sorted((REPO / folder).rglob("*.py"))}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for node in _imports(path):
            targets = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom):
                # `from traindoctor.probe import lint` names a module, not an attribute.
                targets += [f"{node.module}.{alias.name}" for alias in node.names]
            graph[name] |= {target for target in targets if target in MODULES and target != name}
    return graph


def _cycle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start → … → start, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for target in graph[node]:
            if target == start:
                return path + [start]
            if target not in seen:
                seen.add(target)
                stack.append((target, path + [target]))
    return None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_circle(module):
    # Packages import their submodules lazily (__getattr__) and submodules
    # import nothing from their package's __init__, so packages are left out.
    graph = {name: {t for t in targets if MODULES[t].name != "__init__.py"} for name, targets in _graph().items()}
    assert _cycle_through(module, graph) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_is_imported_from_another_module(module):
    private = [f"{node.module}.{alias.name}" for node in _imports(MODULES[module])
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("traindoctor")
               for alias in node.names if alias.name.startswith("_")]
    assert private == []
