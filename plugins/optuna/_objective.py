"""The objective for ``study.optimize``: build a candidate, run the shared evaluator."""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Sequence
from typing import Any

import optuna

from robustnas.plugins.nni import architecture_record, to_json

from robustnas.strategies.sampling import suggest_architecture
from robustnas.plugins.errors import ConfigError

_logger = logging.getLogger(__name__)

#: Trial user attributes written by :class:`RobustObjective` (all JSON).
ATTR_SAMPLE, ATTR_METRICS, ATTR_RECORD, ATTR_FAIL = "sample", "metrics", "record", "fail_reason"


def objective_directions(objectives: Sequence[str]) -> list[str]:
    """Optuna directions of metric names (``robustnas.strategies.pareto.METRIC_DIRECTIONS``).

    Unknown names raise ``ValueError`` listing the valid ones.
    """
    from robustnas.strategies.pareto import directions_for

    if isinstance(objectives, str) or not len(objectives):
        raise ConfigError(f"objectives must be a non-empty sequence of metric names, got {objectives!r}")
    if len(set(objectives)) != len(objectives):
        raise ConfigError(f"objectives must be distinct, got {list(objectives)}")
    return directions_for(list(objectives))


def _as_evaluator(evaluator: Any) -> Any:
    """A ``RobustnessEvaluator`` from an evaluator, an ``EvaluatorConfig`` or a config dict."""
    if hasattr(evaluator, "evaluate"):
        return evaluator
    from robustnas.plugins.evaluator import EvaluatorConfig, RobustnessEvaluator

    if isinstance(evaluator, dict):
        evaluator = EvaluatorConfig(**evaluator)
    if isinstance(evaluator, EvaluatorConfig):
        return RobustnessEvaluator(evaluator)
    raise TypeError(
        f"evaluator must be a RobustnessEvaluator, an EvaluatorConfig or a dict, got {type(evaluator).__name__}"
    )


class RobustObjective:
    """Multi-objective Optuna objective over an NNI model space, judged by the shared evaluator.

    Each call suggests an architecture (:func:`suggest_architecture`), freezes the space into a
    model, trains and attacks it with the shared evaluator and returns the chosen metrics as a
    tuple. The full metrics dict, the sample and the architecture record (``export_record``) are
    stored as trial user attributes ``metrics``, ``sample``, ``record``.

    A candidate that fails (build, training or evaluation raises) does not stop the study: the
    trial is returned as NaN, which Optuna records as FAIL, with the reason in the user
    attribute ``fail_reason`` and the traceback in the log (no penalty value, no retry; see
    docs/fidelity.md). ``KeyboardInterrupt`` propagates.

    Example (two candidates of a small space, one epoch each on digits):

    >>> from robustnas.plugins.evaluator import EvaluatorConfig
    >>> from robustnas.plugins.optuna import RobustObjective, create_study
    >>> from robustnas.search_spaces import get_space
    >>> space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=4)
    >>> config = EvaluatorConfig(dataset="digits", recipe="standard", epochs=1, n_examples=16, progress=False)
    >>> objective = RobustObjective(space, config)
    >>> study = create_study(objective.objectives, sampler="nsga2", seed=0)
    >>> study.optimize(objective, n_trials=2)
    >>> objective.objectives, [len(trial.values) for trial in study.trials]
    (('clean_acc', 'robust_acc', 'params'), [3, 3])
    """

    def __init__(
        self,
        space: Any,
        evaluator: Any,
        objectives: Sequence[str] = ("clean_acc", "robust_acc", "params"),
    ) -> None:
        self.objectives: tuple[str, ...] = tuple(objectives)
        self._directions = objective_directions(self.objectives)
        self.space = space
        self.evaluator = _as_evaluator(evaluator)

    @property
    def directions(self) -> list[str]:
        """``"maximize"`` / ``"minimize"`` per objective, for ``optuna.create_study(directions=...)``."""
        return list(self._directions)

    def values(self, metrics: dict[str, Any]) -> tuple[float, ...]:
        """The objective tuple of a metrics dict; a missing or NaN objective raises ``ValueError``."""
        missing = [name for name in self.objectives if name not in metrics]
        if missing:
            raise ValueError(f"metrics lack objective(s) {missing}; got keys {sorted(metrics)}")
        values = tuple(float(metrics[name]) for name in self.objectives)
        if any(math.isnan(v) for v in values):
            raise ValueError(f"objective values {dict(zip(self.objectives, values))} contain NaN")
        return values

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        sample = suggest_architecture(trial, self.space)
        trial.set_user_attr(ATTR_SAMPLE, to_json(sample))
        try:
            model = self.space.freeze(sample)
            metrics = to_json(self.evaluator.evaluate(model))
            trial.set_user_attr(ATTR_METRICS, metrics)
            values = self.values(metrics)
        except Exception as exc:  # noqa: BLE001 - a bad candidate must not end the study
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr(ATTR_FAIL, reason)
            _logger.warning("trial %d failed: %s\n%s", trial.number, reason, traceback.format_exc())
            return tuple(float("nan") for _ in self.objectives)
        trial.set_user_attr(ATTR_RECORD, architecture_record(self.space, sample))
        _logger.info("trial %d: %s", trial.number,
                     ", ".join(f"{k}={v:.4g}" for k, v in zip(self.objectives, values)))
        return values


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One finished trial as a plain record ``{"number", "sample", "metrics", "record", "values", "state"}``."""
    return {
        "number": trial.number,
        "state": trial.state.name,
        "sample": trial.user_attrs.get(ATTR_SAMPLE),
        "metrics": trial.user_attrs.get(ATTR_METRICS),
        "record": trial.user_attrs.get(ATTR_RECORD),
        "values": list(trial.values) if trial.values is not None else None,
    }


def pareto_records(study: optuna.Study) -> list[dict[str, Any]]:
    """Records of the study's non-dominated trials (``study.best_trials``), by trial number."""
    return [trial_record(t) for t in sorted(study.best_trials, key=lambda t: t.number)]
