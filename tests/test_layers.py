"""The layers of DESIGN.md, checked on the source: a layer imports only itself and those left of it.

`io` -> `data` -> `models` -> `evaluation` -> `convert` / `methods` -> `engine` -> `tasks` -> `cli`
(metrics come before the methods, whose validation scores use them); the small root-level
modules (errors, files, privacy, weight_sources, ...) may be used anywhere. Imports inside functions
count too: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "medfound"
ORDER = ["io", "data", "models", "evaluation", "convert", "methods", "engine", "tasks", "cli"]
# What each layer may import besides itself and the root-level modules.
ALLOWED = {
    "io": set(),
    "data": {"io"},
    "models": {"io", "data"},
    "evaluation": {"io", "data", "models"},
    "convert": {"io", "data", "models"},
    "methods": {"io", "data", "models", "evaluation"},
    "engine": {"io", "data", "models", "evaluation", "methods"},
    "tasks": {"io", "data", "models", "evaluation", "convert", "methods", "engine"},
    "cli": set(ORDER),
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("medfound.")}


@pytest.mark.parametrize("layer", ORDER)
def test_a_layer_imports_only_those_left_of_it(layer):
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module in _imports(path):
            target = module.split(".")[1]
            if target in ORDER and target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, wrong


def test_root_level_modules_import_no_layer():
    for path in PACKAGE.glob("*.py"):
        if path.name == "__init__.py":
            continue
        layers = {m.split(".")[1] for m in _imports(path)} & set(ORDER)
        assert not layers, f"{path.name} imports {layers}"
