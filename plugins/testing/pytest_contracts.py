"""The conformance suites as pytest test classes (as ``optuna.testing.pytest_samplers``).

Subclass one in your package's tests and override its fixtures; every test of the class then
runs on your space or strategy::

    import pytest
    from robustnas.plugins.testing.pytest_contracts import SpaceContract, StrategyContract

    class TestMySpace(SpaceContract):
        @pytest.fixture
        def space_name(self) -> str:
            return "my-space"

    class TestMyStrategy(StrategyContract):
        @pytest.fixture
        def strategy_name(self) -> str:
            return "my-random"

Needs pytest (``pip install 'robustnas[test]'``); the plain functions of
:mod:`robustnas.plugins.testing` do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from nni.nas.nn.pytorch import ModelSpace

from robustnas.search_spaces import random_sample
from robustnas.strategies import takes_seed

from ._space import (
    check_record_round_trip, check_sample_trains, check_space_builds, check_space_has_choices, check_space_resolves,
    check_space_seeded, check_wrong_samples_refused,
)
from ._strategy import check_strategy, check_strategy_capabilities

__all__ = ["SpaceContract", "StrategyContract"]


def _required(name: str) -> Any:
    """The fixture ``name`` that a subclass must override: until then it raises, saying so."""

    def fixture(self: Any) -> str:
        raise NotImplementedError(f"override the {name} fixture with the registered name of your plugin")

    return pytest.fixture(name=name)(fixture)


class _Contract:
    """What both suites share: the ``seed`` of every build and run."""

    @pytest.fixture
    def seed(self) -> int:
        return 0


class SpaceContract(_Contract):
    """The space contract, one test per clause. Override ``space_name`` (required) and, when the
    defaults do not suit the space, ``space_kwargs``, ``input_shape``, ``num_classes`` and ``seed``."""

    space_name = _required("space_name")

    @pytest.fixture
    def space_kwargs(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def input_shape(self) -> Sequence[int]:
        return (1, 8, 8)

    @pytest.fixture
    def num_classes(self) -> int:
        return 10

    @pytest.fixture
    def space(self, space_name: str, space_kwargs: dict[str, Any], input_shape: Sequence[int], num_classes: int,
              seed: int) -> ModelSpace:
        return check_space_builds(space_name, input_shape=input_shape, num_classes=num_classes, seed=seed,
                                  **space_kwargs)

    @pytest.fixture
    def sample(self, space: ModelSpace, seed: int) -> dict[str, Any]:
        return random_sample(space, seed)

    def test_name_resolves(self, space_name: str) -> None:
        check_space_resolves(space_name)

    def test_builds_a_model_space_with_its_registered_name(self, space: ModelSpace, space_name: str) -> None:
        assert space.space_name == space_name

    def test_has_choices(self, space: ModelSpace) -> None:
        check_space_has_choices(space)

    def test_a_random_sample_gives_finite_logits_and_gradients(self, space: ModelSpace, sample: dict[str, Any],
                                                               input_shape: Sequence[int], num_classes: int) -> None:
        check_sample_trains(space, sample, input_shape=input_shape, num_classes=num_classes)

    def test_a_record_rebuilds_the_same_network(self, space: ModelSpace, sample: dict[str, Any],
                                                input_shape: Sequence[int], num_classes: int, seed: int) -> None:
        model, _ = check_sample_trains(space, sample, input_shape=input_shape, num_classes=num_classes)
        check_record_round_trip(space, sample, model, input_shape=input_shape, seed=seed)

    def test_wrong_samples_are_refused(self, space: ModelSpace, sample: dict[str, Any]) -> None:
        check_wrong_samples_refused(space, sample)

    def test_the_same_seed_builds_the_same_weights(self, space_name: str, space_kwargs: dict[str, Any],
                                                   input_shape: Sequence[int], num_classes: int, seed: int) -> None:
        check_space_seeded(space_name, input_shape=input_shape, num_classes=num_classes, seed=seed, **space_kwargs)


class StrategyContract(_Contract):
    """The strategy contract. Override ``strategy_name`` (required) and, as needed,
    ``strategy_kwargs``, the space it runs on (``space_name``, ``space_kwargs``), ``budget`` and
    ``seed``. The strategy runs once, twice when it takes a seed (:func:`check_strategy`)."""

    strategy_name = _required("strategy_name")

    @pytest.fixture
    def strategy_kwargs(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def space_name(self) -> str:
        return "robust201"

    @pytest.fixture
    def space_kwargs(self, space_name: str) -> dict[str, Any]:
        return {"width": 4} if space_name == "robust201" else {}

    @pytest.fixture
    def budget(self) -> int:
        return 2

    def test_capabilities_match_the_class(self, strategy_name: str, strategy_kwargs: dict[str, Any],
                                          seed: int) -> None:
        check_strategy_capabilities(strategy_name, strategy_kwargs, seed=seed)

    def test_a_tiny_run_exports_a_valid_sample_and_repeats_with_its_seed(
            self, strategy_name: str, strategy_kwargs: dict[str, Any], space_name: str, space_kwargs: dict[str, Any],
            budget: int, seed: int) -> None:
        check = check_strategy(strategy_name, space=space_name, space_kwargs=space_kwargs,
                               strategy_kwargs=strategy_kwargs, budget=budget, seed=seed)
        assert check.repeated == takes_seed(strategy_name)
