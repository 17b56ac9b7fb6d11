"""Optuna samplers by name, configured for multi-objective architecture search."""

from __future__ import annotations

import logging
from typing import Any, Callable

import optuna
from robustnas.plugins.errors import ConfigError

_logger = logging.getLogger(__name__)


def _nsga2(seed: int | None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)


def _nsga3(seed: int | None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIIISampler(seed=seed, **kwargs)


def _tpe(seed: int | None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    # Multivariate TPE models the joint distribution of the cell's choices; with several
    # objectives Optuna's TPE splits good/bad trials by non-dominated rank (MOTPE).
    kwargs.setdefault("multivariate", True)
    return optuna.samplers.TPESampler(seed=seed, **kwargs)


def _gp(seed: int | None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, **kwargs)


def _random(seed: int | None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed, **kwargs)


def _qmc(seed: int | None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    kwargs.setdefault("warn_independent_sampling", False)
    return optuna.samplers.QMCSampler(seed=seed, **kwargs)


SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "nsga2": _nsga2,
    "nsga3": _nsga3,
    "tpe": _tpe,
    "gp": _gp,
    "random": _random,
    "qmc": _qmc,
}
"""Sampler factories by name: ``nsga2`` (NSGA-II, Deb et al. 2002), ``nsga3`` (NSGA-III,
Deb & Jain 2014), ``tpe`` (multivariate multi-objective TPE, Ozaki et al. 2020), ``gp``
(GP with log-EHVI), ``random``, ``qmc`` (Sobol)."""


def make_sampler(name: str, seed: int | None = None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    """Build an Optuna sampler by name (see :data:`SAMPLERS`); ``kwargs`` go to its constructor.

    >>> from robustnas.plugins.optuna import make_sampler
    >>> sampler = make_sampler("nsga2", seed=0, population_size=8)
    >>> type(sampler).__name__
    'NSGAIISampler'
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    aliases = {"nsgaii": "nsga2", "nsgaiii": "nsga3", "motpe": "tpe", "sobol": "qmc"}
    key = aliases.get(key, key)
    if key not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}")
    sampler = SAMPLERS[key](seed, **kwargs)
    _logger.debug("sampler %s -> %r", name, sampler)
    return sampler
