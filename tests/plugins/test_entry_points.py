"""A space and strategies installed through entry points, as a third-party distribution installs them.

The test writes a distribution into a temporary folder (a module and ``pocket_plugin-0.1.dist-info``
with ``METADATA`` and ``entry_points.txt`` for the groups ``robustnas.search_spaces`` and
``robustnas.strategies``), puts the folder on ``PYTHONPATH`` and, in fresh processes, runs
``robustnas list``, ``robustnas compare --dry-run`` and the conformance suites on them: what a
user sees after ``pip install pocket-plugin``. The space is a real NNI ``ModelSpace`` (a
``LayerChoice`` of two convolutions); the strategies are NNI's ``Random`` and ``RandomOneShot``
under the plugin's names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
"""pocket-plugin: one robustnas space and two strategies."""

import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.strategy import Random, RandomOneShot
from torch import nn


class PocketSpace(ModelSpace):
    """A 3x3 or 5x5 convolution, then global pooling and a linear classifier."""

    space_name = "pocket"

    def __init__(self, *, input_shape=(1, 8, 8), num_classes=10, width=4):
        super().__init__()
        self.space_kwargs = {"input_shape": list(input_shape), "num_classes": num_classes, "width": width}
        channels = input_shape[0]
        self.conv = LayerChoice({"conv3": nn.Conv2d(channels, width, 3, padding=1),
                                 "conv5": nn.Conv2d(channels, width, 5, padding=2)}, label="conv")
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class PocketRandom(Random):
    """NNI's random search under the plugin's name."""


class PocketOneShot(RandomOneShot):
    """NNI's single-path one-shot search under the plugin's name."""
'''

ENTRY_POINTS = """\
[robustnas.search_spaces]
pocket = pocket_plugin:PocketSpace

[robustnas.strategies]
pocket-random = pocket_plugin:PocketRandom
pocket-oneshot = pocket_plugin:PocketOneShot
"""


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a process that sees pocket-plugin as an installed distribution."""
    root = tmp_path_factory.mktemp("site")
    (root / "pocket_plugin.py").write_text(PLUGIN)
    info = root / "pocket_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pocket-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(root) + (os.pathsep + path if path else ""), "OMP_NUM_THREADS": "1"}


def _robustnas(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The ``robustnas`` console script of this environment (the module's ``main`` without one)."""
    script = Path(sys.executable).with_name("robustnas")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "robustnas.plugins.cli"]
    return subprocess.run([*command, "--threads", "1", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_robustnas_list_and_compare_accept_a_space_and_strategies_from_entry_points(plugin_env, tmp_path):
    listed = _robustnas(plugin_env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    names = json.loads(listed.stdout)
    assert "pocket" in names["spaces"]
    assert {"pocket-random", "pocket-oneshot"} <= set(names["strategies"])

    out = tmp_path / "run"
    planned = _robustnas(plugin_env, "compare", "--space", "pocket", "--strategies", "pocket-random", "pocket-oneshot",
                         "random", "--seeds", "0", "--budget", "2", "--out", str(out), "--dry-run")
    assert planned.returncode == 0, planned.stderr
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in planned.stdout.splitlines() if line.startswith("| pocket-") or line.startswith("| random |")}
    assert rows["pocket-random"][:3] == ["0", "multi-trial", 'pocket {}']
    assert rows["pocket-random"][3] == "2"  # candidates: the budget
    assert rows["pocket-oneshot"][:3] == ["0", "one-shot", 'pocket {}']
    assert rows["random"][:3] == ["0", "multi-trial", 'pocket {}']
    assert not out.exists()


#: The plugin's own test module, as docs/internals.md ("Writing a plugin") shows it, plus one test of
#: how a misspelt plugin name is refused.
PLUGIN_TESTS = '''
import pytest

from robustnas.plugins.testing.pytest_contracts import SpaceContract, StrategyContract


class TestPocketSpace(SpaceContract):
    @pytest.fixture
    def space_name(self):
        return "pocket"


class TestPocketStrategies(StrategyContract):
    @pytest.fixture(params=["pocket-random", "pocket-oneshot"])
    def strategy_name(self, request):
        return request.param

    @pytest.fixture
    def space_name(self):  # the strategies run on the plugin's own space
        return "pocket"


def test_a_misspelt_plugin_name_is_refused_with_the_valid_ones(capsys):
    from robustnas.plugins.cli import main

    assert main(["compare", "--space", "pocket", "--strategies", "pocket-randm", "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "unknown strategy 'pocket-randm'" in error and "pocket-random" in error
'''


@pytest.mark.slow
def test_a_space_and_strategies_from_entry_points_pass_the_conformance_suites(plugin_env, tmp_path):
    """The plugin's tests subclass the suites' pytest classes; pytest runs them in a fresh process."""
    tests = tmp_path / "test_pocket.py"
    tests.write_text(PLUGIN_TESTS)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", str(tests)],
                          cwd=tmp_path, env=plugin_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    # 7 clauses of the space contract, 2 tests for each strategy, the misspelt name
    assert "12 passed" in done.stdout.strip().splitlines()[-1]
