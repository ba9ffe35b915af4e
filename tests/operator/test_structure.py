"""The operator package's shape, checked: short functions, and layers that import only
downwards (vocabulary and spec → pure core → engine → drivers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "src" / "modelops"
CONTRACT = ROOT / "operator" / "contract" / "src" / "modelops_contract"
MAX_LINES = 80
# Layer of each module (by its path inside the package); a module may import its own layer
# and the layers before it, never a later one.
LAYERS = {
    "names": 0, "settings": 0, "spec": 0, "validation": 0,
    "core": 1,
    "engine": 2,
    "kube": 3, "cache": 3, "metrics": 3, "leader": 3, "operator": 3, "local": 3, "cli": 3,
    "prometheus": 3,
}  # fmt: skip


def sources(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [
        (node.name, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_every_function_reads_at_once():
    too_long = [
        f"{path.relative_to(ROOT)}:{name} ({lines} lines)"
        for path in sources(PACKAGE) + sources(CONTRACT)
        for name, lines in functions(path)
        if lines > MAX_LINES
    ]
    assert not too_long, f"functions over {MAX_LINES} lines: {too_long}"


def layer_of(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def imported_modules(path: Path) -> list[str]:
    """modelops-internal imports of a module, as paths inside the package."""
    here = path.relative_to(PACKAGE).with_suffix("").parts
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(here[: len(here) - node.level])
            target = [*base, *(node.module.split(".") if node.module else [])]
            if target:
                out.append(".".join(target))
            else:  # `from . import x` at the top of the package
                out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("modelops."):
            out.append(node.module.removeprefix("modelops."))
    return out


def test_layers_import_only_downwards():
    upward = []
    for path in sources(PACKAGE):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if module == "__init__":
            continue
        for target in imported_modules(path):
            if target.split(".")[0] in LAYERS and layer_of(target) > layer_of(module):
                upward.append(f"{module} imports {target}")
    assert not upward, upward


def test_contract_is_stdlib_only():
    import sys

    for path in sources(CONTRACT):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", (path, name)
