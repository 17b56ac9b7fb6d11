"""An NNI exploration strategy driven by any Optuna sampler."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import optuna
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy import Strategy
from optuna.trial import TrialState

from robustnas.plugins.nni import architecture_record, to_json

from ._objective import ATTR_FAIL, ATTR_METRICS, ATTR_RECORD, ATTR_SAMPLE, objective_directions, pareto_records
from robustnas.strategies.sampling import suggest_architecture
from ._storage import create_study
from robustnas.plugins.errors import ConfigError

_logger = logging.getLogger(__name__)


class OptunaStrategy(Strategy):
    """Explore an NNI model space with an Optuna sampler (NSGA-II, NSGA-III, MOTPE, GP, ...).

    Each new model is asked from the sampler through ``study.ask()`` and
    :func:`suggest_architecture`; when the engine reports its final metric, the *raw*
    metrics dict (read from the engine's ``FinalMetricEvent``, before NNI keeps only its
    ``default`` scalar) gives the objective tuple that is told back. So Optuna's
    multi-objective samplers run inside a ``NasExperiment`` with any engine, and the study
    (in memory, or in a storage for optuna-dashboard and resumption) holds every trial.
    Unlike NNI's ``HPOTunerStrategy`` the sampler sees every objective; see docs/fidelity.md.

    Parameters
    ----------
    sampler
        A sampler name of :data:`SAMPLERS` or an Optuna sampler.
    objectives
        Metric names reported by the evaluator (``robust_evaluator`` reports them all).
    study
        An existing study to continue (its directions must match ``objectives``); else one is
        created with ``storage`` / ``study_name``.
    n_trials
        Stop after submitting this many models (besides the engine's own budget).

    Example (two candidates of a small space in an NNI experiment, one epoch each on digits):

    >>> import tempfile
    >>> from robustnas.plugins.evaluator import EvaluatorConfig
    >>> from robustnas.plugins.nni import robust_evaluator, run_experiment
    >>> from robustnas.plugins.optuna import OptunaStrategy
    >>> from robustnas.search_spaces import get_space
    >>> space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=4)
    >>> config = EvaluatorConfig(dataset="digits", recipe="standard", epochs=1, n_examples=16, progress=False)
    >>> strategy = OptunaStrategy("nsga2", ("clean_acc", "robust_acc", "params"), seed=0)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     result = run_experiment(space, strategy, robust_evaluator(config), max_trial_number=2, working_dir=folder)
    >>> len(strategy.study.trials), all(set(r["metrics"]) >= {"clean_acc", "robust_acc"} for r in strategy.pareto_front())
    (2, True)
    """

    def __init__(
        self,
        sampler: str | optuna.samplers.BaseSampler = "nsga2",
        objectives: Sequence[str] = ("clean_acc", "robust_acc", "params"),
        *,
        study: optuna.Study | None = None,
        storage: Any = None,
        study_name: str | None = None,
        n_trials: int | None = None,
        seed: int | None = None,
        **sampler_kwargs: Any,
    ) -> None:
        super().__init__()
        self.objectives = tuple(objectives)
        if study is None:
            study = create_study(self.objectives, storage=storage, study_name=study_name,
                                 sampler=sampler, seed=seed, **sampler_kwargs)
        elif [d.name.lower() for d in study.directions] != objective_directions(self.objectives):
            raise ConfigError(f"study {study.study_name!r} has directions "
                             f"{[d.name.lower() for d in study.directions]}, objectives {list(self.objectives)} "
                             f"need {objective_directions(self.objectives)}")
        self.study = study
        self.n_trials = n_trials
        self._lock = threading.RLock()
        self._running: dict[ExecutableModelSpace, optuna.trial.Trial] = {}
        self._metrics: dict[ExecutableModelSpace, dict[str, Any]] = {}
        self._submitted = 0
        self._space_instance: Any = None

    def extra_repr(self) -> str:
        return f"sampler={type(self.study.sampler).__name__}, objectives={self.objectives}"

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)

    def _budget_left(self) -> bool:
        return self.n_trials is None or self._submitted < self.n_trials

    def _run(self) -> None:
        while self._budget_left() and self.wait_for_resource():
            with self._lock:
                trial = self.study.ask()
                try:
                    sample = suggest_architecture(trial, self.model_space)
                except optuna.TrialPruned as exc:
                    self.study.tell(trial, state=TrialState.PRUNED)
                    _logger.info("trial %d pruned: %s", trial.number, exc)
                    continue
                trial.set_user_attr(ATTR_SAMPLE, to_json(sample))
                model = self.model_space.freeze(sample)
                self._running[model] = trial
                self._submitted += 1
            _logger.info("[trial %d] submitting %s", trial.number, sample)
            self.engine.submit_models(model)
        _logger.debug("waiting for the submitted models")
        self.engine.wait_models()

    def _on_final_metric(self, event: FinalMetricEvent) -> None:
        with self._lock:
            if event.model in self._running:
                metric = event.metric
                self._metrics[event.model] = to_json(metric if isinstance(metric, dict) else {"default": metric})

    def _on_training_end(self, event: TrainingEndEvent) -> None:
        with self._lock:
            trial = self._running.pop(event.model, None)
            if trial is None:
                return
            metrics = self._metrics.pop(event.model, None)
            reason = None
            if event.status != ModelStatus.Trained:
                reason = f"model ended with status {event.status.value}"
            elif metrics is None:
                reason = "no final metric was reported"
            else:
                missing = [name for name in self.objectives if name not in metrics]
                if missing:
                    reason = f"reported metrics lack objective(s) {missing}; got {sorted(metrics)}"
            if metrics is not None:
                trial.set_user_attr(ATTR_METRICS, metrics)
            if reason is not None:
                trial.set_user_attr(ATTR_FAIL, reason)
                self.study.tell(trial, state=TrialState.FAIL)
                _logger.warning("[trial %d] failed: %s", trial.number, reason)
                return
            trial.set_user_attr(ATTR_RECORD, architecture_record(self._original_space(),
                                                                 trial.user_attrs.get(ATTR_SAMPLE)))
            values = [float(metrics[name]) for name in self.objectives]
            self.study.tell(trial, values)
            _logger.info("[trial %d] %s", trial.number,
                         ", ".join(f"{k}={v:.4g}" for k, v in zip(self.objectives, values)))

    def _original_space(self) -> Any:
        """The user's model space, rebuilt once from the executable space's trace (for records)."""
        if self._space_instance is None:
            model = getattr(self.model_space, "model", self.model_space)
            try:
                self._space_instance = model.trace_copy().get() if hasattr(model, "trace_copy") else model
            except Exception as exc:  # noqa: BLE001 - records then keep the sample only
                _logger.debug("cannot rebuild the model space for records: %s", exc)
                self._space_instance = model
        return self._space_instance

    def pareto_front(self) -> list[dict[str, Any]]:
        """Records ``{"number", "sample", "metrics", "record", "values", "state"}`` of the non-dominated trials."""
        return pareto_records(self.study)

    def state_dict(self) -> dict[str, Any]:
        """The submitted count; trials themselves live in the study's storage."""
        return {"submitted": self._submitted, "study_name": self.study.study_name}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._submitted = int(state_dict.get("submitted", 0))
        with self._lock:
            stale = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if stale:
            _logger.warning("%d trials were running when the experiment stopped; they stay RUNNING in the "
                            "study and are not re-submitted", len(stale))
