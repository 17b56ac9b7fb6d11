"""The conformance suites of robustnas.plugins.testing: the space contract on every registered
space, the strategy capabilities on every registered strategy, and broken plugins that the
contracts refuse (a contract that passes everything would prove nothing).

The strategy contract's runs happen in tests/plugins/test_nni_matrix.py (every strategy on every
space it supports), so the suite trains no second matrix.
"""

from __future__ import annotations

import time

import pytest
import torch
from nni.nas.strategy import DARTS, Random
from torch import nn

from robustnas.plugins.testing import check_space, check_strategy
from robustnas.plugins.testing.pytest_contracts import SpaceContract
from robustnas.search_spaces import SPACES, available_spaces, get_space, register_space
from robustnas.search_spaces.robust201 import Robust201Space
from robustnas.strategies import STRATEGIES, available_strategies, register_strategy

#: Small builds of the built-in spaces at 1x8x8 (a plugin space not listed here is built with its defaults).
SMALL_SPACES = {
    "arnas": dict(width=4, num_cells=4),
    "dsrna": dict(width=4, num_cells=3),
    "tiny": dict(stages=[[2, 8, 1], [1, 16, 2]]),
    "robust201": dict(width=4),
}


class TestEveryRegisteredSpace(SpaceContract):
    """The space contract, clause by clause, on every name of ``available_spaces()``."""

    @pytest.fixture(params=available_spaces())
    def space_name(self, request: pytest.FixtureRequest) -> str:
        return request.param

    @pytest.fixture
    def space_kwargs(self, space_name: str) -> dict:
        return SMALL_SPACES.get(space_name, {})


@pytest.mark.parametrize("name", available_strategies())
def test_every_registered_strategy_declares_what_it_builds(name):
    check = check_strategy(name, run=False)
    assert check.run is None and not check.repeated
    assert (check.one_shot, check.threat_aware) == (
        name in ("arnas", "dsrna", "tamnas", "darts", "gumbel-darts", "proxyless", "enas", "random-oneshot"),
        name in ("arnas", "dsrna", "tamnas"))


def test_the_space_contract_names_the_parameters_a_darts_cell_leaves_unused():
    # Seed 2 of the small ARNAS space: no edge of the last cell reads its first input, so that
    # input's preprocessor computes a value nobody uses (DARTS keeps it; it counts in "params").
    report = check_space("arnas", seed=2, **SMALL_SPACES["arnas"])
    assert report.unused == ["cells.3.preprocessor.pre0.conv_1.weight", "cells.3.preprocessor.pre0.conv_2.weight",
                             "cells.3.preprocessor.pre0.bn.weight", "cells.3.preprocessor.pre0.bn.bias"]
    torch.manual_seed(2)
    space = get_space("arnas", input_shape=(1, 8, 8), num_classes=10, **SMALL_SPACES["arnas"])
    assert report.labels == list(space.simplify())
    assert report.params == sum(p.numel() for p in space.freeze(report.sample).parameters())


# ------------------------------------------------------------------ broken plugins the contracts refuse
class _Misnamed(Robust201Space):
    """Registered as "contract-misnamed" but still called robust201: its records would rebuild robust201."""


class _Detached(Robust201Space):
    """Scales the logits by a parameter that the forward pass cuts off from the gradient."""

    space_name = "contract-detached"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale = nn.Parameter(torch.full((), 2.0))

    def forward(self, x):
        return super().forward(x) * self.scale.detach()


class _Forgetful(Robust201Space):
    """Leaves ``width`` out of its recorded arguments: records rebuild it at the default width."""

    space_name = "contract-forgetful"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.space_kwargs = {k: v for k, v in self.space_kwargs.items() if k != "width"}


def _registered(register, registry, added):
    """Register ``added`` (name -> target) for one test, then take the names out of ``registry``."""
    for name, target in added.items():
        register(name, target)
    yield
    for name in added:
        registry.pop(name, None)


@pytest.fixture
def broken_spaces():
    yield from _registered(register_space, SPACES, {"contract-misnamed": _Misnamed, "contract-detached": _Detached,
                                                    "contract-forgetful": _Forgetful})


@pytest.mark.parametrize("name, complaint", [
    ("contract-misnamed", "whose space_name is 'robust201': set the class attribute space_name = 'contract-misnamed'"),
    ("contract-detached", "parameter(s) ['scale'] change the output"),
    ("contract-forgetful", "build_model(record) rebuilds another network"),
    ("contract-unregistered", "space 'contract-unregistered' is not registered"),
])
def test_the_space_contract_refuses_a_broken_space(broken_spaces, name, complaint):
    with pytest.raises(AssertionError) as refused:
        check_space(name, width=4)
    assert complaint in str(refused.value)


class _SeedIgnored(Random):
    """Takes a seed and ignores it: every run draws other architectures."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(seed=time.perf_counter_ns() % 2**31, **kwargs)


class _Unsure(Random):
    threat_aware = "yes"


@pytest.fixture
def broken_strategies():
    yield from _registered(register_strategy, STRATEGIES, {
        "contract-darts-factory": lambda **kwargs: DARTS(**kwargs), "contract-unsure": _Unsure,
        "contract-seed-ignored": _SeedIgnored})


@pytest.mark.parametrize("name, complaint", [
    ("contract-darts-factory", "builds a one-shot DARTS, but is_one_shot says False"),
    ("contract-unsure", "threat_aware must be a bool, got 'yes'"),
    ("contract-missing", "strategy 'contract-missing' is not registered"),
])
def test_the_strategy_contract_refuses_capabilities_that_do_not_hold(broken_strategies, name, complaint):
    with pytest.raises(AssertionError) as refused:
        check_strategy(name, run=False)
    assert complaint in str(refused.value)


def test_the_strategy_contract_refuses_a_strategy_that_ignores_its_seed(broken_strategies):
    with pytest.raises(AssertionError, match="two runs with seed 0 differ"):
        check_strategy("contract-seed-ignored", space="robust201", space_kwargs={"width": 4}, budget=2)
