"""Private APIs of our dependencies: every one the library uses is pinned, and those we replaced
with our own code give the same results.

A private name (``_x``, a module ``_m`` on the import path, or an attribute ``_x`` of an imported
module or class) can change in any release, so its distribution needs an upper bound in
pyproject.toml (``nni>=3.0,<3.1``); adding one without a pin fails here. Non-dominated sorting
(``robustnas.strategies.pareto``) replaced Optuna's private ``_fast_non_domination_rank`` and is
checked against it while Optuna still has it.
"""

from __future__ import annotations

import ast
import importlib
import itertools
import sys
from collections import defaultdict
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from robustnas.strategies.pareto import non_dominated_sort, pareto_front_mask

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("search_spaces", "strategies", "plugins")
#: Operators that bound a version from above.
UPPER = {"<", "<=", "==", "===", "~="}


def _private(name: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in name.split("."))


def _dependency_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as, for every absolute import of a third-party
    package (stdlib and robustnas excluded)."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            pairs = [(alias.asname or alias.name.split(".")[0], alias.asname and alias.name or alias.name.split(".")[0])
                     for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            pairs = [(alias.asname or alias.name, f"{node.module}.{alias.name}") for alias in node.names]
        else:
            continue
        bound.update((local, full) for local, full in pairs
                     if full.split(".")[0] not in sys.stdlib_module_names and full.split(".")[0] != "robustnas")
    return bound


def _attribute_chain(node: ast.Attribute) -> list[str] | None:
    """``["a", "b", "c"]`` of ``a.b.c``; None when the chain does not start at a plain name."""
    parts = [node.attr]
    value = node.value
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    return [value.id, *reversed(parts)] if isinstance(value, ast.Name) else None


def private_uses() -> dict[str, list[str]]:
    """Top-level package -> ``"file:line: name"`` of every private name of it the library uses:
    in an import (``from nni.x._y import z``, ``from nni.x import _z``) or as an attribute of a
    name imported from it (``launcher._check_rest_server``, ``torch.Tensor._make_wrapper_subclass``)."""
    uses: dict[str, list[str]] = defaultdict(list)
    for path in sorted(p for folder in LIBRARY for p in (ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(ROOT)
        bound = _dependency_names(tree)
        for full in bound.values():
            if _private(full):
                uses[full.split(".")[0]].append(f"{where}: import {full}")
        for node in ast.walk(tree):
            chain = _attribute_chain(node) if isinstance(node, ast.Attribute) else None
            if chain and chain[0] in bound and _private(".".join(chain[1:])):
                full = ".".join([bound[chain[0]], *chain[1:]])
                uses[full.split(".")[0]].append(f"{where}:{node.lineno}: {full}")
    return {package: sorted(set(found)) for package, found in uses.items()}


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    lines += itertools.chain.from_iterable(project.get("optional-dependencies", {}).values())
    requirements: dict[str, Requirement] = {}
    for line in lines:
        requirement = Requirement(line)
        requirements.setdefault(canonicalize_name(requirement.name), requirement)
    return requirements


def test_the_scan_finds_private_names_in_imports_and_in_attributes():
    uses = private_uses()
    assert any("import nni.nas.oneshot.pytorch.supermodule.proxyless._ProxylessFunction" in use
               for use in uses["nni"])
    assert any(use.endswith("nni.experiment.launcher._check_rest_server") for use in uses["nni"])


def test_every_dependency_whose_private_api_the_library_uses_has_an_upper_bound():
    distributions = packages_distributions()
    requirements = _requirements()
    unpinned = []
    for package, uses in private_uses().items():
        names = [canonicalize_name(name) for name in distributions.get(package, [package])]
        requirement = next((requirements[name] for name in names if name in requirements), None)
        if requirement is None or not any(spec.operator in UPPER for spec in requirement.specifier):
            unpinned.append(f"{package} ({requirement or 'not a declared dependency'}): {uses}")
    assert not unpinned, ("private APIs of dependencies without an upper version bound in pyproject.toml:\n"
                          + "\n".join(unpinned))


DIRECTION_SETS = [("minimize",), ("maximize", "minimize"), ("maximize", "maximize", "minimize"),
                  ("minimize", "maximize", "minimize", "maximize")]


@pytest.mark.parametrize("directions", DIRECTION_SETS)
@pytest.mark.parametrize("n, decimals", [(0, 1), (1, 1), (7, 0), (60, 1), (300, 2)])
def test_non_dominated_sort_gives_optunas_fronts_on_random_points(directions, n, decimals):
    try:
        optuna_rank = importlib.import_module("optuna.study._multi_objective")._fast_non_domination_rank
    except (ImportError, AttributeError):
        pytest.skip("this Optuna has no optuna.study._multi_objective._fast_non_domination_rank to compare with")
    rng = np.random.default_rng(n * 10 + len(directions))
    points = np.round(rng.random((n, len(directions))), decimals)  # rounding makes ties and duplicates
    losses = points * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    ranks = optuna_rank(losses)
    expected = [np.flatnonzero(ranks == rank).tolist() for rank in range(int(ranks.max()) + 1)] if n else []
    assert non_dominated_sort(points, directions) == expected
    assert pareto_front_mask(points, directions).tolist() == (ranks == 0).tolist()
