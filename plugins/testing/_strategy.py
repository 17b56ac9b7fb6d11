"""The strategy contract: what every registered strategy declares about itself, and a tiny run.

The capabilities that ``compare`` and ``robustnas list`` dispatch on live on the class
(``robustnas.strategies.is_one_shot`` / ``is_threat_aware`` / ``takes_seed``); the contract checks
that they tell the truth about the object the name builds, then runs the strategy in an NNI
``NasExperiment`` (sequential engine, through :func:`robustnas.plugins.nni.run_experiment`) for a
tiny budget on digits.
"""

from __future__ import annotations

import inspect
import logging
import random
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
# nni.nas.strategy before NNI's one-shot module: the other way round, a circular import in NNI 3.0
# leaves nni.nas.strategy.RandomOneShot, DARTS, ... stubs that raise ImportError when they run.
from nni.nas.strategy import Strategy
from nni.nas.oneshot.pytorch.strategy import OneShotStrategy

from robustnas.plugins.errors import ConfigError
from robustnas.plugins.evaluator import load_dataset
from robustnas.plugins.evaluator._utils import logits_of
from robustnas.plugins.nni import ExperimentResult, classification_evaluator, robust_evaluator, run_experiment
from robustnas.search_spaces import build_model, export_record, get_space, validate_sample
from robustnas.strategies import is_one_shot, is_threat_aware, strategy_factory, takes_seed

__all__ = ["CHEAP_EVALUATOR", "StrategyCheck", "StrategyRun", "check_strategy", "check_strategy_capabilities",
           "check_strategy_resolves", "run_strategy", "strategy_kwargs_for"]

_logger = logging.getLogger(__name__)

#: The shared evaluator's settings for a multi-trial run of the contract: one epoch of standard
#: training, AutoAttack's fast mode on 4 test points (seconds per candidate on digits).
CHEAP_EVALUATOR: dict[str, Any] = dict(recipe="standard", epochs=1, batch_size=256, lr=0.1, aa_mode="fast",
                                       n_examples=4, pgd_eval_steps=2, latency_repeats=1, escalate=False,
                                       progress=False)


@dataclass
class StrategyRun:
    """One run of :func:`run_strategy`: the space searched, the strategy object and NNI's result."""

    space: Any
    strategy: Any
    result: ExperimentResult
    seconds: float


@dataclass
class StrategyCheck:
    """What :func:`check_strategy` found: the capabilities, and the run when there was one
    (``repeated``: a second run with the same seed exported the same sample)."""

    name: str
    one_shot: bool
    threat_aware: bool
    seedable: bool
    run: StrategyRun | None = None
    repeated: bool = False


def check_strategy_resolves(name: str) -> Any:
    """``strategy_factory(name)`` finds and imports the strategy (built-in, registered or entry point)."""
    try:
        return strategy_factory(name)
    except ConfigError as exc:
        raise AssertionError(f"strategy {name!r} is not registered: {exc}") from None
    except (ImportError, AttributeError) as exc:
        raise AssertionError(f"strategy {name!r} is registered but does not import: {exc}") from None


def _parameters(factory: Any) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None


def _accepts(factory: Any, argument: str) -> bool:
    params = _parameters(factory)
    return params is None or argument in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def strategy_kwargs_for(name: str, kwargs: Mapping[str, Any] | None = None, *, seed: int = 0,
                        threat: Any = None) -> dict[str, Any]:
    """``kwargs`` as ``compare`` completes them: ``seed`` for a strategy that takes one, the run's
    threat model (``eps``, ``norm``) for a threat-aware one, unless given."""
    kwargs = dict(kwargs or {})
    if takes_seed(name):
        kwargs.setdefault("seed", seed)
    if threat is not None and is_threat_aware(name):
        kwargs.setdefault("eps", threat.eps)
        kwargs.setdefault("norm", threat.norm)
    return kwargs


def check_strategy_capabilities(name: str, strategy_kwargs: Mapping[str, Any] | None = None, *, seed: int = 0,
                                threat: Any = None) -> Any:
    """What the class declares matches what the name builds; returns the strategy built with
    ``strategy_kwargs`` (completed by :func:`strategy_kwargs_for` with ``seed`` and ``threat``).

    ``is_one_shot(name)`` agrees with ``issubclass(factory, OneShotStrategy)`` and with the built
    object (a factory function that returns a one-shot strategy would send ``compare`` down the
    multi-trial path); ``threat_aware`` is a bool, and a threat-aware strategy takes ``eps`` and
    ``norm``; ``takes_seed(name)`` agrees with an explicit ``seed`` parameter of the factory; the
    object is an NNI ``Strategy``.
    """
    factory = check_strategy_resolves(name)
    declared = getattr(factory, "threat_aware", False)
    if not isinstance(declared, bool):
        raise AssertionError(f"strategy {name!r}: threat_aware must be a bool, got {declared!r}")
    threat_aware = is_threat_aware(name)
    if threat_aware and not (_accepts(factory, "eps") and _accepts(factory, "norm")):
        raise AssertionError(f"strategy {name!r} is threat-aware but does not take eps and norm; compare passes both")
    params = _parameters(factory)
    explicit_seed = (params is not None and "seed" in params
                     and params["seed"].kind is not inspect.Parameter.VAR_KEYWORD)
    if takes_seed(name) != explicit_seed:
        raise AssertionError(f"strategy {name!r}: takes_seed says {takes_seed(name)} but the signature of "
                             f"{factory!r} {'has' if explicit_seed else 'has no'} seed parameter")
    one_shot = is_one_shot(name)
    if one_shot != (inspect.isclass(factory) and issubclass(factory, OneShotStrategy)):
        raise AssertionError(f"strategy {name!r}: is_one_shot says {one_shot}, its class says otherwise")
    kwargs = strategy_kwargs_for(name, strategy_kwargs, seed=seed, threat=threat)
    try:
        strategy = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"strategy {name!r} does not build with {kwargs}: {exc}") from None
    if not isinstance(strategy, Strategy):
        raise AssertionError(f"strategy {name!r} builds a {type(strategy).__name__}, not an NNI Strategy "
                             "(nni.nas.strategy.base.Strategy)")
    if isinstance(strategy, OneShotStrategy) != one_shot:
        raise AssertionError(f"strategy {name!r} builds a {'one-shot' if not one_shot else 'multi-trial'} "
                             f"{type(strategy).__name__}, but is_one_shot says {one_shot}: register the class "
                             "itself (a subclass of NNI's OneShotStrategy for a one-shot strategy), not a factory")
    return strategy


def run_strategy(name: str, *, space: str = "robust201", space_kwargs: Mapping[str, Any] | None = None,
                 strategy_kwargs: Mapping[str, Any] | None = None, budget: int = 2, seed: int = 0,
                 dataset: str = "digits", evaluator: Any = None,
                 working_dir: str | Path | None = None) -> StrategyRun:
    """Run the strategy ``name`` once on the space ``space`` (built for ``dataset``'s input shape)
    in a sequential ``NasExperiment``, after seeding torch, NumPy and ``random`` with ``seed``.

    Multi-trial strategies try ``budget`` candidates judged by the shared evaluator with
    :data:`CHEAP_EVALUATOR`; one-shot strategies train the supernet for 2 batches of 64 (1
    validation batch). ``evaluator`` replaces that NNI evaluator; ``working_dir`` holds NNI's
    files (a temporary folder by default).
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"budget must be a positive integer, got {budget!r}")
    bundle = load_dataset(dataset)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model_space = get_space(space, input_shape=tuple(bundle.input_shape), num_classes=bundle.num_classes,
                            **dict(space_kwargs or {}))
    strategy = check_strategy_capabilities(name, strategy_kwargs, seed=seed, threat=bundle.threat)
    one_shot = is_one_shot(name)
    if evaluator is None and one_shot:
        evaluator = classification_evaluator(bundle, batch_size=64, max_epochs=1, limit_train_batches=2,
                                             limit_val_batches=1)
    elif evaluator is None:
        evaluator = robust_evaluator({**CHEAP_EVALUATOR, "dataset": dataset, "seed": seed})
    with tempfile.TemporaryDirectory(prefix="robustnas-contract-") as tmp:
        start = time.perf_counter()
        result = run_experiment(model_space, strategy, evaluator, max_trial_number=None if one_shot else budget,
                                working_dir=working_dir if working_dir is not None else tmp)
        seconds = time.perf_counter() - start
    return StrategyRun(space=model_space, strategy=strategy, result=result, seconds=seconds)


def _check_run(name: str, run: StrategyRun, *, budget: int, one_shot: bool, num_classes: int) -> dict[str, Any]:
    """Every trial trained, a multi-trial run stayed within ``budget``, and the export is a valid
    sample whose network runs; returns the exported sample."""
    records = run.result.records
    if not records:
        raise AssertionError(f"strategy {name!r} ran no trial")
    failed = [(r.get("sample"), r.get("error")) for r in records if r["status"] != "trained"]
    if failed:
        raise AssertionError(f"strategy {name!r}: {len(failed)} of {len(records)} trial(s) did not train: {failed[:3]}")
    if not one_shot and len(records) > budget:
        raise AssertionError(f"strategy {name!r} ran {len(records)} trials for a budget of {budget}")
    if not run.result.exported:
        raise AssertionError(f"strategy {name!r} exports no architecture")
    exported = run.result.exported[0]
    try:
        validate_sample(run.space, exported)
        record = export_record(run.space, exported)
    except ValueError as exc:
        raise AssertionError(f"strategy {name!r} exports a sample the space refuses: {exc}") from None
    model = build_model(record).eval()
    x = torch.rand((2, *record["kwargs"]["input_shape"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = logits_of(model(x))
    if tuple(logits.shape) != (2, num_classes) or not torch.isfinite(logits).all():
        raise AssertionError(f"strategy {name!r}: the exported network returns {tuple(logits.shape)} logits "
                             f"(finite: {bool(torch.isfinite(logits).all())}); expected finite {(2, num_classes)}")
    return exported


def check_strategy(name: str, *, space: str = "robust201", space_kwargs: Mapping[str, Any] | None = None,
                   strategy_kwargs: Mapping[str, Any] | None = None, budget: int = 2, seed: int = 0,
                   dataset: str = "digits", evaluator: Any = None, run: bool = True,
                   repeat: bool | None = None) -> StrategyCheck:
    """Run the strategy contract on the strategy registered as ``name``.

    Always :func:`check_strategy_capabilities` (no training). With ``run=True`` (the default) the
    strategy then runs once on ``space`` for a tiny budget (:func:`run_strategy`): every trial
    trains, a multi-trial strategy runs at most ``budget`` trials, the export is a sample that
    ``validate_sample`` accepts and whose network gives finite logits. With ``repeat`` (default:
    when the strategy takes a seed) it runs a second time with the same seed and must export the
    same sample after the same sequence of trials. Raises ``AssertionError`` naming the broken
    clause; returns a :class:`StrategyCheck`.

    Example (two runs of 2 candidates: NNI's Random takes a seed)::

        check_strategy("random", space="robust201", space_kwargs={"width": 4}, budget=2)
    """
    bundle = load_dataset(dataset)
    check_strategy_capabilities(name, strategy_kwargs, seed=seed, threat=bundle.threat)
    one_shot, seedable = is_one_shot(name), takes_seed(name)
    check = StrategyCheck(name=name, one_shot=one_shot, threat_aware=is_threat_aware(name), seedable=seedable)
    if not run:
        return check
    options = dict(space=space, space_kwargs=space_kwargs, strategy_kwargs=strategy_kwargs, budget=budget,
                   seed=seed, dataset=dataset, evaluator=evaluator)
    check.run = run_strategy(name, **options)
    exported = _check_run(name, check.run, budget=budget, one_shot=one_shot, num_classes=bundle.num_classes)
    if seedable if repeat is None else repeat:
        again = run_strategy(name, **options)
        samples = [r["sample"] for r in check.run.result.records]
        samples_again = [r["sample"] for r in again.result.records]
        if samples_again != samples or again.result.exported[:1] != [exported]:
            raise AssertionError(f"strategy {name!r}: two runs with seed {seed} differ: trials {samples} then "
                                 f"{samples_again}, exports {exported} then {again.result.exported[:1]}")
        check.repeated = True
    _logger.info("strategy %r passed its contract on space %r (%.1f s)", name, space, check.run.seconds)
    return check
