"""robustnas strategies: ARNAS, DSRNA and TAM-NAS as NNI exploration strategies, plus a registry.

``get_strategy(name, **kwargs)`` builds a strategy by name: ours (``arnas``,
``dsrna``, ``tamnas``) or every NNI 3.0 built-in: ``random``, ``grid-search``, ``evolution``,
``tpe``, ``policy-rl`` (multi-trial) and ``darts``, ``gumbel-darts``, ``proxyless``, ``enas``,
``random-oneshot`` (one-shot). ``tpe``, ``proxyless``, ``enas`` and ``policy-rl`` are NNI's
classes adapted to every robustnas space (``robustnas.strategies._nni``, docs/nni.md);
``enas`` and ``policy-rl`` need the optional extra ``rl`` (tianshou). Other packages add
strategies through the entry-point group ``robustnas.strategies`` (name -> ``module:attr``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
from importlib.metadata import entry_points
from typing import Any, Callable

from ._oneshot import DartsSettings
from .arnas import ARNAS, mgda_two_task
from .dsrna import DSRNA
from robustnas.plugins.errors import ConfigError

_logger = logging.getLogger(__name__)

__all__ = ["ARNAS", "DSRNA", "TAMNAS", "DartsSettings", "STRATEGIES", "ENTRY_POINT_GROUP", "available_strategies",
           "get_strategy", "register_strategy", "strategy_factory", "takes_seed", "is_one_shot", "is_threat_aware",
           "mgda_two_task", "population_for"]

ENTRY_POINT_GROUP = "robustnas.strategies"

#: Name -> ``"module:attribute"`` (imported lazily) or a strategy class/factory.
STRATEGIES: dict[str, str | Callable[..., Any]] = {
    "arnas": "robustnas.strategies.arnas:ARNAS",
    "dsrna": "robustnas.strategies.dsrna:DSRNA",
    "tamnas": "robustnas.strategies.tamnas:TAMNAS",
    "random": "nni.nas.strategy:Random",
    "grid-search": "nni.nas.strategy:GridSearch",
    "evolution": "nni.nas.strategy:RegularizedEvolution",
    "tpe": "robustnas.strategies._nni:TPE",
    "policy-rl": "robustnas.strategies._nni:PolicyBasedRL",
    # NNI's one-shot classes from their own module: nni.nas.strategy holds stubs of them when a process
    # imported nni.nas.oneshot.pytorch.strategy first (an NNI 3.0 import cycle)
    "darts": "nni.nas.oneshot.pytorch.strategy:DARTS",
    "gumbel-darts": "nni.nas.oneshot.pytorch.strategy:GumbelDARTS",
    "proxyless": "robustnas.strategies._nni:Proxyless",
    "enas": "robustnas.strategies._nni:ENAS",
    "random-oneshot": "nni.nas.oneshot.pytorch.strategy:RandomOneShot",
}


def register_strategy(name: str, target: str | Callable[..., Any]) -> None:
    """Register a strategy class (or ``"module:attr"`` path) under ``name``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"strategy name must be a non-empty string, got {name!r}")
    STRATEGIES[name] = target


def _entry_point_strategies() -> dict[str, Any]:
    try:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception as err:  # noqa: BLE001 - broken third-party metadata must not break the registry
        _logger.warning("could not read entry points %s: %s", ENTRY_POINT_GROUP, err)
        return {}


def available_strategies() -> list[str]:
    """Every strategy name: built-in, registered and from entry points."""
    return sorted(set(STRATEGIES) | set(_entry_point_strategies()))


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def get_strategy(name: str, **kwargs: Any) -> Any:
    """Build the strategy registered as ``name`` with ``kwargs``.

    >>> from robustnas.strategies import get_strategy
    >>> get_strategy("dsrna", metric="jacobian", gamma=0.01).regularizer.gamma
    0.01
    """
    return strategy_factory(name)(**kwargs)


def strategy_factory(name: str) -> Callable[..., Any]:
    """The class (or factory) registered as ``name``, not yet built."""
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    if key in STRATEGIES:
        return _resolve(STRATEGIES[key])
    eps = _entry_point_strategies()
    if key in eps:
        return eps[key].load()
    raise ConfigError(f"unknown strategy {name!r}; valid strategies: {', '.join(available_strategies())}")


def population_for(budget: int) -> int:
    """Population of an evolutionary search of ``budget`` candidates: about three generations.

    NSGA-II's default population (Optuna: 50) and NNI's regularised evolution (100) exceed
    small budgets, which would make them random search with extra steps; a third of the
    budget (at least 2, at most 50) gives them generations to select in.
    """
    return max(2, min(50, math.ceil(budget / 3)))


def takes_seed(name: str) -> bool:
    """Whether the strategy registered as ``name`` has an explicit ``seed`` argument.

    NNI's ``Random`` and ``RegularizedEvolution`` and our ``TAMNAS`` do; the
    differentiable ones (ARNAS, DSRNA, DARTS, ...) draw only from torch's global generator.
    """
    factory = strategy_factory(name)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # callables without a readable signature
        return False
    return "seed" in params and params["seed"].kind is not inspect.Parameter.VAR_KEYWORD


def is_one_shot(name: str) -> bool:
    """Whether the strategy registered as ``name`` trains a supernet: its class is an NNI
    ``OneShotStrategy`` (as NNI's ``is_supernet`` asks the space, this asks the class)."""
    from nni.nas.oneshot.pytorch.strategy import OneShotStrategy

    factory = strategy_factory(name)
    return inspect.isclass(factory) and issubclass(factory, OneShotStrategy)


def is_threat_aware(name: str) -> bool:
    """Whether the strategy registered as ``name`` takes the threat model (``eps``, ``norm``):
    its class says so with ``threat_aware = True`` (ARNAS, DSRNA, TAM-NAS); callers pass the
    run's threat to those. A plugin strategy declares the same attribute."""
    return bool(getattr(strategy_factory(name), "threat_aware", False))


def __getattr__(name: str) -> Any:  # lazy: TAM-NAS lives in its own module
    if name == "TAMNAS":
        return _resolve(STRATEGIES["tamnas"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
