"""Every ``>>>`` example in the library's docstrings runs and prints what it says (issue 19).

``doctest`` over each module of ``robustnas.search_spaces``, ``robustnas.strategies`` and
``robustnas.plugins``, found with ``pkgutil.walk_packages`` and imported by its ``robustnas.``
name (not with ``pytest --doctest-modules``: its file paths would import the package folders a
second time, under other names). The examples run on ``digits`` (or ``synthetic``) data in
seconds; one marked ``# doctest: +SKIP`` would say in its text why it cannot run here (none is
today). Modules whose examples run NNI experiments or Optuna studies are marked slow.
"""

from __future__ import annotations

import doctest
import importlib
import logging
import pkgutil
from typing import Iterator

import pytest
import torch

PACKAGES = ("robustnas.search_spaces", "robustnas.strategies", "robustnas.plugins")

#: Modules whose examples run NNI experiments or Optuna studies: over 20 s together on 2 loaded
#: cores (``pytest --durations``); the others take seconds together.
SLOW = {
    "robustnas.plugins.bench._adapters",
    "robustnas.plugins.nni",
    "robustnas.plugins.optuna._objective",
    "robustnas.plugins.optuna._strategy",
    "robustnas.strategies.arnas",
    "robustnas.strategies.dsrna",
}


def module_names() -> list[str]:
    """Every module of the three packages (``__main__`` modules, which run a program, left out)."""
    names = set(PACKAGES)
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names.update(info.name for info in pkgutil.walk_packages(path, package + "."))
    return sorted(name for name in names if not name.endswith(".__main__"))


MODULES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in module_names()]


@pytest.fixture(autouse=True)
def quiet_libraries() -> Iterator[None]:
    """NNI and Lightning narrate every experiment; the examples' own output is what is checked."""
    names = ("nni", "pytorch_lightning", "lightning", "lightning_fabric", "optuna")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_every_module_of_the_three_packages_is_walked():
    names = module_names()
    assert {"robustnas.strategies.tamnas", "robustnas.plugins.evaluator._evaluator",
            "robustnas.search_spaces.robust201", "robustnas.plugins.testing._space"} <= set(names)
    assert not any(name.endswith("__main__") for name in names)


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_of_the_module_run(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
