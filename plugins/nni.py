"""NNI adapter: the shared evaluator inside NNI experiments, and the raw metric dicts back out.

* :func:`robust_evaluator` -- a ``FunctionalEvaluator`` for multi-trial strategies (Random,
  RegularizedEvolution, TPE, ours) that trains and attacks each candidate with
  :class:`robustnas.plugins.evaluator.RobustnessEvaluator` and reports the whole metrics dict
  with a ``default`` key.
* :func:`classification_evaluator` -- an NNI Lightning ``Classification`` evaluator over a
  dataset bundle, for one-shot strategies (DARTS, ARNAS, DSRNA, TAM-NAS, RandomOneShot).
* :class:`MetricsCollector` -- NNI keeps only the ``default`` scalar of a reported dict
  (``nni.nas.space.Metrics``); the raw dict survives only in the engine's
  ``FinalMetricEvent``, which the collector listens to (holding every submitted model, which
  NNI's training-service engine keeps only weakly).
* :func:`arch_key` -- the key every reported dict carries (``"arch_key"``), so a metric is always
  matched to its architecture; :func:`rest_records` pairs them from NNI's REST API, which lists
  trials next to the wrong architecture when trials start out of order (docs/nni.md).
* :func:`run_experiment` -- one call that runs a ``NasExperiment`` and returns every trial's
  ``{"sample", "metrics", "record"}`` and the exported top models.
* :class:`TPE`, :class:`HPOStrategy`, :class:`Proxyless`, :class:`ENAS`, :class:`PolicyBasedRL`
  -- NNI's strategies adapted to every robustnas space (defined in ``robustnas.strategies._nni``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nni
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ModelStatus

from robustnas.plugins._io import to_json
from robustnas.plugins.errors import ConfigError
from robustnas.search_spaces import sample_key

if TYPE_CHECKING:
    from nni.nas.evaluator.pytorch import Classification
    from nni.nas.experiment import NasExperiment
    from torch import nn

__all__ = [
    "robust_evaluator", "evaluate_candidate", "classification_evaluator",
    "MetricsCollector", "ExperimentResult", "run_experiment", "architecture_record", "to_json",
    "arch_key", "rest_records", "wait_for_manager", "ARCH_KEY", "MANAGER_TIMEOUT",
    "TPE", "HPOStrategy", "Proxyless", "ENAS", "PolicyBasedRL",
]

#: The key of a reported metrics dict that names the architecture it was measured on.
ARCH_KEY = "arch_key"

#: Seconds :func:`run_experiment` waits for NNI's manager to answer (NNI's launcher gives up after 3 tries).
MANAGER_TIMEOUT = 120.0

_ADAPTED = ("TPE", "HPOStrategy", "Proxyless", "ENAS", "PolicyBasedRL")

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


#: The canonical key of an architecture (the sample key of robustnas.search_spaces).
arch_key = sample_key


def _current_sample() -> Mapping[str, Any] | None:
    """The sample of the architecture NNI is evaluating now: the sequential engine's model, or the
    training-service trial's parameter; ``None`` outside a trial."""
    from nni.runtime.env_vars import trial_env_vars
    from nni.runtime.trial_command_channel import get_default_trial_command_channel

    model = getattr(get_default_trial_command_channel(), "model", None)  # the sequential engine's channel
    if model is None and trial_env_vars.NNI_PLATFORM:  # a training-service trial process
        model = nni.get_current_parameter()
    return getattr(model, "sample", None)


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
                       train: bool = True, sample: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train and measure ``model`` with the shared evaluator and report the metrics to NNI.

    The function behind :func:`robust_evaluator` (top level, so a training-service trial
    imports it by name). Reports ``metrics | {"default": metrics[default], "arch_key": ...}``
    through ``nni.report_final_result`` (``default`` negated when it is a minimised metric,
    because NNI strategies maximise it; see docs/fidelity.md) and returns the same dict.
    ``arch_key`` is :func:`arch_key` of ``sample``, by default the sample NNI is evaluating
    (absent outside an NNI trial when no sample is given).
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
    sample = sample if sample is not None else _current_sample()
    if sample is not None:
        report[ARCH_KEY] = arch_key(sample)
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

    The collector holds every model submitted to the engine until it is detached: NNI's
    training-service engine keeps only weak references and drops the events of models that the
    strategy let go (NNI's Random does), so without it no metric would arrive.

    Records are ``{"sample", "metrics", "record", "status"}`` in the order models were submitted
    (``record`` is ``export_record(space, sample)`` when ``space`` is a robustnas space).
    A metrics dict that carries an ``arch_key`` (:func:`arch_key`) goes to the record of that
    architecture even if the engine named another model. Failed models without a metric are
    recorded with ``metrics=None``, status ``"failed"`` and, when the candidate failed in this
    process, ``"error"``: the reason (exception type and message).

    Example (two random candidates of a small space, one epoch each on digits):

    >>> import tempfile
    >>> from nni.nas.experiment import NasExperiment, NasExperimentConfig
    >>> from nni.nas.strategy import Random
    >>> from robustnas.plugins.nni import MetricsCollector, robust_evaluator
    >>> from robustnas.search_spaces import get_space
    >>> space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=4)
    >>> evaluator = robust_evaluator(dict(dataset="digits", recipe="standard", epochs=1, n_examples=16,
    ...                                   progress=False))
    >>> config = NasExperimentConfig("sequential", "simplified", max_trial_number=2)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     config.experiment_working_directory = folder
    ...     experiment = NasExperiment(space, evaluator, Random(seed=0), config)
    ...     collector = MetricsCollector(space).attach(experiment)
    ...     _ = experiment.run()
    ...     experiment.stop()
    >>> [(r["status"], r["record"]["space"], "robust_acc" in r["metrics"]) for r in collector.records]
    [('trained', 'robust201', True), ('trained', 'robust201', True)]
    """

    def __init__(self, space: Any = None) -> None:
        self.space = space
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._by_model: dict[int, dict[str, Any]] = {}
        self._models: dict[int, Any] = {}  # strong references: id -> submitted model
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
        """Stop listening to every engine attached so far, and let go of the submitted models."""
        for engine in self._engines:
            engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
            engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
            engine.__dict__.pop("submit_models", None)  # the class's method again
        self._engines.clear()
        with self._lock:
            self._models.clear()

    def _register(self, engine: ExecutionEngine) -> None:
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        submit = engine.submit_models

        def submit_models(*models: Any) -> None:  # record (and hold) each model before it can run
            with self._lock:
                for model in models:
                    self._models[id(model)] = model
                    self._record(model)
            submit(*models)

        engine.submit_models = submit_models  # type: ignore[method-assign]  # this engine instance only
        self._engines.append(engine)

    def _record(self, model: Any) -> dict[str, Any]:
        record = self._by_model.get(id(model))
        if record is None:
            sample = to_json(model.sample) if model.sample is not None else None
            record = {"sample": sample, "metrics": None, "record": architecture_record(self.space, sample),
                      "status": ModelStatus.Training.value}
            self._by_model[id(model)] = record
            self._records.append(record)
            self._models.setdefault(id(model), model)  # ids stay unique while the model is held
        elif record["sample"] is None and model.sample is not None:  # a one-shot model, sampled at the end
            record["sample"] = to_json(model.sample)
            record["record"] = architecture_record(self.space, record["sample"])
        return record

    def _owner(self, record: dict[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The record whose architecture ``metrics`` name (by ``arch_key``); ``record`` when they agree."""
        key = metrics.get(ARCH_KEY)
        if not isinstance(key, str) or record["sample"] is None or arch_key(record["sample"]) == key:
            return record
        match = next((r for r in self._records if r["metrics"] is None and r["sample"] is not None
                      and arch_key(r["sample"]) == key), None)
        if match is None:
            _logger.warning("metrics with arch_key %s arrived for another architecture (%s) and match no "
                            "submitted one; kept with the model NNI named", key, arch_key(record["sample"]))
            return record
        _logger.warning("metrics with arch_key %s arrived for the model of arch_key %s; paired by arch_key",
                        key, arch_key(record["sample"]))
        return match

    def _on_final_metric(self, event: FinalMetricEvent) -> None:
        metric = _decoded(event.metric)
        metrics = to_json(metric if isinstance(metric, dict) else {"default": metric})
        with self._lock:
            self._owner(self._record(event.model), metrics)["metrics"] = metrics

    def _on_training_end(self, event: TrainingEndEvent) -> None:
        with self._lock:
            record = self._record(event.model)
            record["status"] = event.status.value
            reason = getattr(_LAST_FAILURE, "reason", None)
            _LAST_FAILURE.reason = None
            if event.status == ModelStatus.Failed:
                record["error"] = reason or "the trial failed (see its log)"


def _decoded(value: Any) -> Any:
    """A metric as NNI stores it (a JSON string, sometimes of a JSON string) as a plain value."""
    for _ in range(3):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def rest_records(port: int, url_prefix: str | None = None) -> list[dict[str, Any]]:
    """Every final metric of a running NNI experiment, paired with its own architecture.

    Reads NNI's REST API (``/trial-jobs``, ``/metric-data``, what the web UI shows) on ``port``.
    NNI 3.0's local training service hands the queued parameters to whichever trial asks first,
    so a trial can train another trial's architecture while ``/trial-jobs`` still lists the one
    it was created for; the metric's ``parameterId`` is right. Each record is ``{"trial_job_id",
    "parameter_id", "sample", "metrics", "status", "listed_parameter_id"}``: ``sample`` is the
    architecture of the metric's own parameter id (checked against the metric's ``arch_key``
    when it carries one), ``listed_parameter_id`` the one ``/trial-jobs`` shows for that trial.
    """
    from nni.experiment import rest

    jobs = rest.get(port, "/trial-jobs", url_prefix)
    samples: dict[int, Any] = {}
    listed: dict[str, int] = {}
    status: dict[str, str] = {}
    for job in jobs:
        status[job["trialJobId"]] = job.get("status", "UNKNOWN")
        for parameter in job.get("hyperParameters") or []:
            parameter = _decoded(parameter)
            samples[int(parameter["parameter_id"])] = _decoded(parameter.get("parameters", {})).get("sample")
            listed[job["trialJobId"]] = int(parameter["parameter_id"])
    by_key = {arch_key(sample): pid for pid, sample in samples.items() if sample is not None}
    records = []
    for row in rest.get(port, "/metric-data", url_prefix):
        if row.get("type") != "FINAL":
            continue
        metrics = _decoded(row["data"])
        metrics = metrics if isinstance(metrics, dict) else {"default": metrics}
        pid = int(row["parameterId"])
        key = metrics.get(ARCH_KEY)
        if isinstance(key, str) and (samples.get(pid) is None or arch_key(samples[pid]) != key) and key in by_key:
            _logger.warning("metric of parameter %d names the architecture of parameter %d; paired by arch_key",
                            pid, by_key[key])
            pid = by_key[key]
        records.append({"trial_job_id": row["trialJobId"], "parameter_id": pid, "sample": samples.get(pid),
                        "metrics": metrics, "status": status.get(row["trialJobId"], "UNKNOWN"),
                        "listed_parameter_id": listed.get(row["trialJobId"])})
    return records


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


_LAUNCHER_LOCK = threading.Lock()
_LAUNCHER_PATCH: dict[str, Any] = {"count": 0, "original": None}
_MANAGER_WAIT = threading.local()


def _patient_check(port: int, retry: int = 3, url_prefix: str | None = None) -> None:
    """NNI's ``_check_rest_server``, polling until the manager answers or this thread's timeout passes."""
    from nni.experiment import rest

    timeout = getattr(_MANAGER_WAIT, "timeout", MANAGER_TIMEOUT)
    deadline = time.monotonic() + timeout
    while True:
        try:
            rest.get(port, "/check-status", url_prefix)
            return
        except Exception as exc:  # noqa: BLE001 - connection refused until Node.js listens
            if time.monotonic() >= deadline:
                raise TimeoutError(f"NNI's manager did not answer on port {port} within {timeout:g} s "
                                   f"({type(exc).__name__}); see the experiment's log/nnictl_stderr.log") from exc
            time.sleep(0.5)


@contextlib.contextmanager
def wait_for_manager(timeout: float = MANAGER_TIMEOUT) -> Iterator[None]:
    """Within the block, NNI's launcher waits up to ``timeout`` seconds for its manager to answer.

    NNI 3.0's launcher polls the new manager's ``/check-status`` 3 times, a second apart, and
    fails the experiment ("Create experiment failed ... Connection refused") when Node.js takes
    longer to start, as it does on a loaded machine. Inside the block that check (in
    ``nni.experiment.launcher``; restored when the last block in any thread exits) polls every
    0.5 s until the manager answers or ``timeout`` passes, then raises ``TimeoutError``.
    :func:`run_experiment` uses it; wrap your own ``NasExperiment.run`` in it the same way.
    """
    from nni.experiment import launcher

    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    with _LAUNCHER_LOCK:
        if _LAUNCHER_PATCH["count"] == 0:
            _LAUNCHER_PATCH["original"] = launcher._check_rest_server
            launcher._check_rest_server = _patient_check
        _LAUNCHER_PATCH["count"] += 1
    previous = getattr(_MANAGER_WAIT, "timeout", None)
    _MANAGER_WAIT.timeout = float(timeout)
    try:
        yield
    finally:
        _MANAGER_WAIT.timeout = previous if previous is not None else MANAGER_TIMEOUT
        with _LAUNCHER_LOCK:
            _LAUNCHER_PATCH["count"] -= 1
            if _LAUNCHER_PATCH["count"] == 0:
                launcher._check_rest_server = _LAUNCHER_PATCH["original"]


def _width_fitted_skips(space: Any) -> list[str]:
    """Labels of the layer choices of ``space`` whose ``skip`` candidate fits a searched width
    (the tiny space's ``ChannelSkip``: an identity cut or padded to one width at a time)."""
    from nni.mutable import Mutable
    from nni.nas.nn.pytorch import LayerChoice

    from robustnas.search_spaces._tiny_ops import SKIP, ChannelSkip

    return [module.label for module in space.modules()
            if isinstance(module, LayerChoice) and SKIP in module.names and isinstance(module[SKIP], ChannelSkip)
            and isinstance(module[SKIP].args.get("out_channels"), Mutable)]


def _refuse_width_mixtures(space: Any, strategy: Any) -> None:
    """A :class:`ConfigError` for ARNAS or DSRNA on a space with a width-fitted ``skip``.

    They relax every choice into a softmax-weighted mixture, widths included, which that skip
    cannot compute: the supernet would fail on its first batch, after NNI started the experiment.
    (NNI's DARTS-style strategies meet the same refusal as a failed trial, see docs/nni.md.)
    """
    from robustnas.search_spaces import space_name_of
    from robustnas.strategies import ARNAS, DSRNA

    if not isinstance(strategy, (ARNAS, DSRNA)):
        return
    labels = _width_fitted_skips(space)
    if labels:
        try:
            name = space_name_of(space)
        except ValueError:  # not a registered space
            name = type(space).__name__
        raise ConfigError(f"strategy {type(strategy).__name__} cannot search space {name!r}: it mixes widths, and "
                          f"the space's width-fitted 'skip' op takes one width at a time (choices {labels}); build "
                          "the space without it (blocks without 'skip') or use a single-path strategy (tamnas, "
                          "random-oneshot)")


def _stop_after_failure(experiment: Any) -> None:
    """Stop an experiment whose run raised (NNI would at process exit); a failure to stop is logged,
    so that the run's own exception is the one raised."""
    try:
        experiment.stop()
    except Exception as exc:  # noqa: BLE001 - the run's exception matters more
        _logger.warning("could not stop the NNI experiment after its run failed: %s: %s", type(exc).__name__, exc)


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
    manager_timeout: float = MANAGER_TIMEOUT,
    stop: bool = True,
    debug: bool = False,
) -> ExperimentResult:
    """Run ``NasExperiment(space, evaluator, strategy)`` and collect every trial's raw metrics.

    ``engine`` is ``"sequential"`` (in this process; the default) or ``"ts"`` (NNI's training
    service: local trial processes managed by the NNI manager on ``port``, ``trial_concurrency``
    at a time, each with ``trial_threads`` torch threads if given; the manager gets
    ``manager_timeout`` seconds to start, see :func:`wait_for_manager`). One-shot strategies
    always run sequentially with the raw model format (NNI's default for them). NNI's own
    ``TPE`` / ``HPOTunerStrategy`` run as :class:`HPOStrategy` (so the cells' input choices work).
    Returns records ``{"sample", "metrics", "record", "status"}`` and ``top_models`` as records of
    the strategy's best models (by NNI's ``default`` scalar).

    A candidate that raises (NaN loss, out of memory, a bad architecture) fails its own trial
    only: its record has status ``"failed"`` and ``"error"`` (the reason), and the search goes on
    (NNI's ``continue_on_failure``). ``working_dir`` holds NNI's experiment files (checkpoints,
    logs); NNI's default is ``~/nni-experiments``. With ``stop=False`` a training-service
    experiment stays up (its web UI and REST API on ``port``; see :func:`rest_records`) until
    you call ``result.experiment.stop()``. When the run itself raises, the experiment is stopped
    and the exception raised. ARNAS and DSRNA on a space whose ``skip`` fits a searched width (the
    tiny space) raise a :class:`~robustnas.plugins.errors.ConfigError` before anything starts:
    they mix widths, which that ``skip`` cannot.
    """
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    engines = ("sequential", "ts")
    if engine not in engines:
        raise ValueError(f"unknown engine {engine!r}; valid engines: {', '.join(engines)}")
    if not (isinstance(manager_timeout, (int, float)) and manager_timeout > 0):
        raise ValueError(f"manager_timeout must be a positive number of seconds, got {manager_timeout!r}")
    # robustnas.strategies first: it imports nni.nas.strategy before NNI's one-shot module (an NNI 3.0 cycle)
    from robustnas.strategies._nni import adapt_strategy
    from nni.nas.oneshot.pytorch.strategy import OneShotStrategy, is_supernet

    strategy = adapt_strategy(strategy)
    _refuse_width_mixtures(space, strategy)
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
    try:
        with wait_for_manager(manager_timeout):
            completed = experiment.run(port=port, debug=debug)  # None: interrupted, and NNI stopped it already
    except BaseException:  # NNI stops a failed experiment only at exit, logging into closed streams by then
        _stop_after_failure(experiment)
        collector.detach()
        raise
    try:
        # The collector still holds every model: NNI's engine lists them with their own metrics.
        samples = experiment.export_top_models(top_k=top_k, formatter="dict") if completed else []
    finally:
        if completed and stop:
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


def __getattr__(name: str) -> Any:  # NNI's strategies, adapted: imported on first use (they load Lightning)
    if name in _ADAPTED:
        from robustnas.strategies import _nni

        return getattr(_nni, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
