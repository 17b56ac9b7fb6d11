"""Imports go one way (docs/internals.md, DESIGN.md): no module of the library imports one of a
higher layer, lazily inside a function or only for typing included.

Layers, lowest first: the leaves (``plugins.errors``, ``plugins._io``), the shared evaluator
(torch only), the spaces (torch and NNI), the strategies, then the adapters in the order they
build on each other: NNI, Optuna, the benchmark tables, the harness beside the report and the
conformance suites, the command line. Modules of one layer may import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> package it installs as (pyproject.toml, [tool.setuptools.package-dir]).
FOLDERS = {"search_spaces": "robustnas.search_spaces", "strategies": "robustnas.strategies",
           "plugins": "robustnas.plugins"}

LAYERS: list[tuple[str, ...]] = [
    ("robustnas.plugins", "robustnas.plugins.errors", "robustnas.plugins._io", "robustnas.plugins._deprecation"),
    ("robustnas.plugins.evaluator",),
    ("robustnas.search_spaces",),
    ("robustnas.strategies",),
    ("robustnas.plugins.nni", "robustnas.plugins._parallel"),
    ("robustnas.plugins.optuna",),
    ("robustnas.plugins.bench",),
    ("robustnas.plugins.compare", "robustnas.plugins.report", "robustnas.plugins.testing"),
    ("robustnas.plugins.cli",),
]
#: Third-party packages a layer must not import (DESIGN.md: the evaluator knows nothing of NNI or
#: Optuna; the spaces depend on torch and NNI only).
FORBIDDEN = {
    "robustnas.plugins.evaluator": ("nni", "optuna", "pytorch_lightning", "lightning"),
    "robustnas.search_spaces": ("optuna", "pytorch_lightning", "lightning"),
}


def _modules() -> dict[str, Path]:
    """Every module of the library by dotted name (a package by its own name)."""
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``, relative ones resolved; ``from p import x``
    names ``p.x`` when that is a module of the library, else ``p``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found += [(node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
                      for alias in node.names]
    return found


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest entry that is ``module`` or a package above it
    (the bare ``robustnas.plugins`` names its ``__init__`` only)."""
    best, index = "", -1
    for i, names in enumerate(LAYERS):
        for entry in names:
            exact_only = entry == "robustnas.plugins"
            if (module == entry or not exact_only and module.startswith(entry + ".")) and len(entry) > len(best):
                best, index = entry, i
    if index < 0:
        raise KeyError(f"module {module} has no layer: add it to LAYERS in {Path(__file__).name}")
    return index


EDGES = {(name, line, target) for name, path in MODULES.items() for line, target in _imports(name, path)}


def test_the_import_scan_sees_relative_lazy_and_typing_imports():
    pairs = {(name, target) for name, _, target in EDGES}
    assert ("robustnas.plugins.nni", "robustnas.strategies._nni") in pairs  # lazy, inside run_experiment
    assert ("robustnas.strategies", "robustnas.strategies.arnas") in pairs  # relative: from .arnas import
    assert ("robustnas.plugins.evaluator._evaluator", "robustnas.plugins.evaluator.records") in pairs  # typing only
    assert layer_of("robustnas.plugins.nni") > layer_of("robustnas.strategies._nni") > layer_of("robustnas.plugins")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_of_the_library_has_a_layer(module):
    assert 0 <= layer_of(module) < len(LAYERS)


def test_no_module_imports_a_module_of_a_higher_layer():
    upward = sorted(f"{MODULES[name].relative_to(ROOT)}:{line}: {name} (layer {layer_of(name)}) imports {target} "
                    f"(layer {layer_of(target)})"
                    for name, line, target in EDGES
                    if target.startswith("robustnas.") and layer_of(target) > layer_of(name))
    assert not upward, "imports that go up:\n" + "\n".join(upward)


def test_the_evaluator_and_the_spaces_import_only_what_their_layer_allows():
    bad = sorted(f"{MODULES[name].relative_to(ROOT)}:{line}: {name} imports {target}"
                 for name, line, target in EDGES for layer, forbidden in FORBIDDEN.items()
                 if (name == layer or name.startswith(layer + ".")) and target.split(".")[0] in forbidden)
    assert not bad, "\n".join(bad)
