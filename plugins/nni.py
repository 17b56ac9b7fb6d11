"""NNI adapter: the shared evaluator inside NNI experiments, and the raw metric dicts back out.

* :func:`robust_evaluator` -- a ``FunctionalEvaluator`` for multi-trial strategies (Random,
  RegularizedEvolution, TPE, ours) that trains and attacks each candidate with
  :class:`robustnas.plugins.evaluator.RobustnessEvaluator` and reports the whole metrics dict
  with a ``default`` key.
* :func:`classification_evaluator` -- an NNI Lightning ``Classification`` evaluator over a
  dataset bundle, for one-shot strategies (DARTS, ARNAS, DSRNA, TAM-NAS, RandomOneShot).
* :class:`MetricsCollector` -- NNI keeps only the ``default`` scalar of a reported dict
  (``nni.nas.space.Metrics``); the raw dict survives only in the engine's
  ``FinalMetricEvent``, which the collector listens to.
* :func:`run_experiment` -- one call that runs a ``NasExperiment`` and returns every trial's
  ``{"sample", "metrics", "record"}`` and the exported top models.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nni
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ModelStatus

if TYPE_CHECKING:
    from nni.nas.evaluator.pytorch import Classification
    from nni.nas.experiment import NasExperiment
    from torch import nn

__all__ = [
    "robust_evaluator", "evaluate_candidate", "classification_evaluator",
    "MetricsCollector", "ExperimentResult", "run_experiment", "architecture_record", "to_json",
]

_logger = logging.getLogger(__name__)

_EVALUATORS: dict[str, Any] = {}  # per-process cache: one dataset load per config
_EVALUATORS_LOCK = threading.Lock()

# The reason of the last candidate that failed in this process (sequential engine: the one whose
# TrainingEnd event comes next); MetricsCollector moves it into that model's record.
_LAST_FAILURE = threading.local()


def failure_reason(exc: BaseException) -> str:
    """One line naming why a candidate failed: ``"FloatingPointError: ..."``; out of memory is named as such."""
    import torch

    text = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)) or "out of memory" in str(exc).lower():
        text = f"out of memory ({text})"
    return text.splitlines()[0][:500] if text else type(exc).__name__


def to_json(value: Any) -> Any:
    """A JSON-safe copy: dataclasses to dicts, numpy/torch scalars to numbers, tuples to lists."""
    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if hasattr(obj, "item"):
            return obj.item()
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")
    return json.loads(json.dumps(value, default=default))


def _config_dict(config: Any) -> dict[str, Any]:
    """A plain dict of an ``EvaluatorConfig`` (or a dict) that ``EvaluatorConfig(**d)`` rebuilds."""
    from robustnas.plugins.evaluator import EvaluatorConfig

    if isinstance(config, Mapping):
        config = EvaluatorConfig(**dict(config))  # validates names and values now, not in a trial
    if not isinstance(config, EvaluatorConfig):
        raise TypeError(f"config must be an EvaluatorConfig or a dict, got {type(config).__name__}")
    to_dict = getattr(config, "to_dict", None)
    return to_json(to_dict() if callable(to_dict) else dataclasses.asdict(config))


def _evaluator_for(config: Mapping[str, Any]) -> Any:
    from robustnas.plugins.evaluator import EvaluatorConfig, RobustnessEvaluator

    key = json.dumps(config, sort_keys=True)
    with _EVALUATORS_LOCK:
        if key not in _EVALUATORS:
            from_dict = getattr(EvaluatorConfig, "from_dict", None)
            cfg = from_dict(dict(config)) if callable(from_dict) else EvaluatorConfig(**dict(config))
            _EVALUATORS[key] = RobustnessEvaluator(cfg)
        return _EVALUATORS[key]


def _default_value(metrics: Mapping[str, Any], default: str) -> float:
    from robustnas.strategies.pareto import METRIC_DIRECTIONS

    value = float(metrics[default])
    return -value if METRIC_DIRECTIONS.get(default) == "minimize" else value


def evaluate_candidate(model: nn.Module, config: dict[str, Any], default: str = "robust_acc",
                       train: bool = True) -> dict[str, Any]:
    """Train and measure ``model`` with the shared evaluator and report the metrics to NNI.

    The function behind :func:`robust_evaluator` (top level, so a training-service trial
    imports it by name). Reports ``metrics | {"default": metrics[default]}`` through
    ``nni.report_final_result`` (negated when ``default`` is a minimised metric, because NNI
    strategies maximise ``default``; see docs/fidelity.md) and returns the same dict.
    """
    try:
        metrics = to_json(_evaluator_for(config).evaluate(model, train=train))
    except Exception as exc:  # the trial fails (NNI marks it Failed); the experiment goes on
        _LAST_FAILURE.reason = failure_reason(exc)
        _logger.warning("candidate failed: %s", _LAST_FAILURE.reason)
        raise
    if default not in metrics:
        raise KeyError(f"default metric {default!r} is not among the evaluator's metrics {sorted(metrics)}")
    report = {**metrics, "default": _default_value(metrics, default)}
    nni.report_final_result(report)
    return report


def robust_evaluator(config: Any, default: str = "robust_acc", train: bool = True) -> FunctionalEvaluator:
    """An NNI ``FunctionalEvaluator`` that judges each candidate with the shared evaluator.

    ``config`` is an ``EvaluatorConfig`` or a dict of its fields (kept as a plain dict inside the
    evaluator, so NNI can send it to training-service trials as JSON). ``default`` names the
    metric that NNI's scalar strategies rank by (any of ``METRIC_DIRECTIONS``; minimised metrics
    are negated). The full dict reaches :class:`MetricsCollector` and :class:`OptunaStrategy`.
    """
    from robustnas.strategies.pareto import METRIC_DIRECTIONS

    if default not in METRIC_DIRECTIONS:
        raise ValueError(f"unknown default metric {default!r}; valid: {sorted(METRIC_DIRECTIONS)}")
    return FunctionalEvaluator(evaluate_candidate, config=_config_dict(config), default=default, train=train)


def classification_evaluator(
    bundle: Any,
    batch_size: int = 64,
    max_epochs: int = 1,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    limit_train_batches: int | float | None = None,
    limit_val_batches: int | float | None = None,
    num_workers: int = 0,
    progress: bool = False,
    accelerator: str = "auto",
    **trainer_kwargs: Any,
) -> Classification:
    """NNI Lightning ``Classification`` evaluator over a ``DatasetBundle`` (one-shot strategies).

    Train and validation dataloaders come from the bundle's ``train`` and ``val`` splits
    (NNI's traced ``DataLoader``, so the evaluator stays serialisable). The trainer is
    quiet and CPU-friendly: no checkpoints, no logger, no model summary, progress bar only
    when ``progress=True``; extra keyword arguments go to the Lightning ``Trainer``.
    """
    from nni.nas.evaluator.pytorch import Classification, DataLoader

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs!r}")
    train = DataLoader(bundle.train, batch_size=batch_size, shuffle=True, num_workers=num_workers)
    val = DataLoader(bundle.val, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    trainer = dict(max_epochs=max_epochs, accelerator=accelerator, enable_checkpointing=False, logger=False,
                   enable_model_summary=False, enable_progress_bar=progress, num_sanity_val_steps=0)
    if limit_train_batches is not None:
        trainer["limit_train_batches"] = limit_train_batches
    if limit_val_batches is not None:
        trainer["limit_val_batches"] = limit_val_batches
    trainer.update(trainer_kwargs)
    return Classification(train_dataloaders=train, val_dataloaders=val, learning_rate=learning_rate,
                          weight_decay=weight_decay, num_classes=bundle.num_classes, **trainer)


def architecture_record(space: Any, sample: Any) -> dict[str, Any] | None:
    """``export_record(space, sample)``; ``{"space": None, "kwargs": {}, "sample"}`` for a space that is
    not a registered robustnas space; ``None`` without a space or a sample."""
    if space is None or sample is None:
        return None
    from robustnas.search_spaces import export_record

    try:
        return to_json(export_record(space, sample))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        _logger.debug("no exportable record for %s (%s); keeping the sample only", type(space).__name__, exc)
        return {"space": None, "kwargs": {}, "sample": to_json(sample)}


class MetricsCollector:
    """Records the raw final-metric dict of every model an NNI engine trains.

    NNI reduces a reported dict to its ``default`` scalar when it stores it on the model
    (``nni.nas.space.Metrics``); the engine's ``FinalMetricEvent`` still carries the dict, and
    this collector keeps it. Attach it to a ``NasExperiment`` before ``run`` (it hooks the
    engine the experiment creates) or to an engine directly.

    Records are ``{"sample", "metrics", "record", "status"}`` in the order metrics arrived
    (``record`` is ``export_record(space, sample)`` when ``space`` is a robustnas space).
    Failed models without a metric are recorded with ``metrics=None``, status ``"failed"`` and,
    when the candidate failed in this process, ``"error"``: the reason (exception type and message).

    Example::

        collector = MetricsCollector(space).attach(experiment)
        experiment.run()
        collector.records
    """

    def __init__(self, space: Any = None) -> None:
        self.space = space
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._by_model: dict[int, dict[str, Any]] = {}
        self._engines: list[ExecutionEngine] = []

    @property
    def records(self) -> list[dict[str, Any]]:
        """The collected records (copies of the list, records shared)."""
        with self._lock:
            return list(self._records)

    def attach(self, target: NasExperiment | ExecutionEngine) -> MetricsCollector:
        """Listen to ``target``'s engine; for an experiment not yet started, to the engine it will create."""
        if isinstance(target, ExecutionEngine):
            self._register(target)
            return self
        engine = getattr(target, "_engine", None)
        if engine is not None:
            self._register(engine)
            return self
        if not hasattr(target, "execution_engine_factory"):
            raise TypeError(f"attach() takes a NasExperiment or an ExecutionEngine, got {type(target).__name__}")
        factory = target.execution_engine_factory

        def hooked_factory(config: Any) -> ExecutionEngine:
            engine = factory(config)
            self._register(engine)
            return engine

        target.execution_engine_factory = hooked_factory  # instance attribute: this experiment only
        return self

    def detach(self) -> None:
        """Stop listening to every engine attached so far."""
        for engine in self._engines:
            engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
            engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        self._engines.clear()

    def _register(self, engine: ExecutionEngine) -> None:
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        self._engines.append(engine)

    def _record(self, model: Any) -> dict[str, Any]:
        record = self._by_model.get(id(model))
        if record is None:
            sample = to_json(model.sample) if model.sample is not None else None
            record = {"sample": sample, "metrics": None, "record": architecture_record(self.space, sample),
                      "status": ModelStatus.Training.value}
            self._by_model[id(model)] = record
            self._records.append(record)
        return record

    def _on_final_metric(self, event: FinalMetricEvent) -> None:
        metric = event.metric
        with self._lock:
            self._record(event.model)["metrics"] = to_json(metric if isinstance(metric, dict)
                                                            else {"default": metric})

    def _on_training_end(self, event: TrainingEndEvent) -> None:
        with self._lock:
            record = self._record(event.model)
            record["status"] = event.status.value
            reason = getattr(_LAST_FAILURE, "reason", None)
            _LAST_FAILURE.reason = None
            if event.status == ModelStatus.Failed:
                record["error"] = reason or "the trial failed (see its log)"


@dataclasses.dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns: every trial's record and the exported top models."""

    records: list[dict[str, Any]]
    top_models: list[dict[str, Any]]
    experiment: Any = dataclasses.field(repr=False, default=None)

    @property
    def exported(self) -> list[dict[str, Any]]:
        """The samples of :attr:`top_models` (what ``NasExperiment.export_top_models(formatter="dict")`` gives)."""
        return [record["sample"] for record in self.top_models]

    def front(self, objectives: Sequence[str] = ("clean_acc", "robust_acc", "params")) -> list[dict[str, Any]]:
        """Non-dominated records over ``objectives`` (``robustnas.strategies.pareto.ParetoArchive``)."""
        from robustnas.strategies.pareto import ParetoArchive

        archive = ParetoArchive(objectives)
        archive.extend(r for r in self.records
                       if r["metrics"] is not None and all(k in r["metrics"] for k in objectives))
        return archive.front()


def run_experiment(
    space: Any,
    strategy: Any,
    evaluator: Any,
    *,
    max_trial_number: int | None = None,
    engine: str = "sequential",
    top_k: int = 1,
    working_dir: str | Path | None = None,
    port: int = 8080,
    trial_concurrency: int = 1,
    trial_threads: int | None = None,
    debug: bool = False,
) -> ExperimentResult:
    """Run ``NasExperiment(space, evaluator, strategy)`` and collect every trial's raw metrics.

    ``engine`` is ``"sequential"`` (in this process; the default) or ``"ts"`` (NNI's training
    service: local trial processes managed by the NNI manager on ``port``, ``trial_concurrency``
    at a time, each with ``trial_threads`` torch threads if given). One-shot strategies
    always run sequentially with the raw model format (NNI's default for them). Returns
    records ``{"sample", "metrics", "record", "status"}`` and ``top_models`` as records of the
    strategy's best models (by NNI's ``default`` scalar).

    A candidate that raises (NaN loss, out of memory, a bad architecture) fails its own trial
    only: its record has status ``"failed"`` and ``"error"`` (the reason), and the search goes on
    (NNI's ``continue_on_failure``). ``working_dir`` holds NNI's experiment files (checkpoints,
    logs); NNI's default is ``~/nni-experiments``.
    """
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    engines = ("sequential", "ts")
    if engine not in engines:
        raise ValueError(f"unknown engine {engine!r}; valid engines: {', '.join(engines)}")
    from nni.nas.oneshot.pytorch.strategy import OneShotStrategy, is_supernet

    if isinstance(strategy, OneShotStrategy) or is_supernet(space):  # weights live in this process
        config = NasExperimentConfig("sequential", "raw")
    elif engine == "ts":
        config = NasExperimentConfig("ts", "simplified", "local", trial_concurrency=trial_concurrency)
        config.training_service.use_active_gpu = False
        if trial_threads is not None:  # trial processes otherwise use every core each
            config._trial_command_params = {"envs": f"OMP_NUM_THREADS={int(trial_threads)}"}
    else:
        config = NasExperimentConfig("sequential", "simplified")
    if config.execution_engine.name == "sequential":
        config.execution_engine.continue_on_failure = True
    if max_trial_number is not None:
        config.max_trial_number = max_trial_number
    if working_dir is not None:
        config.experiment_working_directory = str(Path(working_dir).resolve())
    experiment = NasExperiment(space, evaluator, strategy, config)
    collector = MetricsCollector(space).attach(experiment)
    completed = experiment.run(port=port, debug=debug)  # None: interrupted, and NNI stopped it already
    try:
        samples = experiment.export_top_models(top_k=top_k, formatter="dict") if completed else []
    finally:
        if completed:
            experiment.stop()
        collector.detach()
    records = collector.records
    top = []
    for sample in samples:
        sample = to_json(sample)
        match = next((r for r in records if r["sample"] == sample), None)
        top.append(match or {"sample": sample, "metrics": None, "record": architecture_record(space, sample),
                             "status": ModelStatus.Trained.value})
    return ExperimentResult(records=records, top_models=top, experiment=experiment)
