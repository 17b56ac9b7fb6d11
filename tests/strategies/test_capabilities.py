"""Capabilities live on the strategy classes: compare and `robustnas list` ask them, so a
strategy registered by a plugin is listed, validated and dispatched like a built-in one."""

from __future__ import annotations

import json

import pytest
from nni.nas.strategy import DARTS

from robustnas.plugins.cli import main
from robustnas.strategies import STRATEGIES, is_one_shot, is_threat_aware, register_strategy


class MyDarts(DARTS):
    """A plugin's one-shot strategy (NNI's DARTS under another name)."""


@pytest.fixture
def registered():
    register_strategy("my-darts", MyDarts)
    yield "my-darts"
    STRATEGIES.pop("my-darts", None)


def test_the_built_in_strategies_declare_what_they_are():
    assert [n for n in ("arnas", "dsrna", "tamnas", "darts", "proxyless", "random", "evolution", "tpe")
            if is_one_shot(n)] == ["arnas", "dsrna", "tamnas", "darts", "proxyless"]
    assert [n for n in ("arnas", "dsrna", "tamnas", "darts", "random") if is_threat_aware(n)] == [
        "arnas", "dsrna", "tamnas"]


def test_a_registered_strategy_is_listed_and_planned_as_one_shot(registered, tmp_path, capsys):
    assert is_one_shot(registered) and not is_threat_aware(registered)
    assert main(["list", "--json"]) == 0
    assert registered in json.loads(capsys.readouterr().out)["strategies"]
    out = tmp_path / "run"
    assert main(["compare", "--strategies", registered, "random", "--seeds", "0", "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith(f"| {registered} | 0 |"))
    assert "one-shot" in line
    assert not out.exists()
