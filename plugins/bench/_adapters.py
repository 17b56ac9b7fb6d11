"""A table inside NNI and Optuna: an NNI benchmark evaluator and an Optuna objective.

Both answer a candidate from the table (a lookup, microseconds) with the same metrics dict
the shared evaluator returns, so a strategy runs unchanged on the live evaluator or on the
table.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import nni
import optuna
from nni.mutable import Categorical
from nni.nas.benchmark.evaluator import BenchmarkEvaluator, _strip_common_label_scope
from nni.nas.benchmark.space import SlimBenchmarkSpace

from robustnas.plugins.errors import ConfigError
from robustnas.plugins.optuna._objective import ATTR_FAIL, ATTR_METRICS, ATTR_RECORD, ATTR_SAMPLE, RobustObjective
from robustnas.strategies.sampling import suggest_architecture
from robustnas.search_spaces.robust201 import OPS

from ._table import Benchmark, _direction, load_benchmark

__all__ = ["BenchmarkObjective", "TableEvaluator", "benchmark_evaluator", "cached_benchmark"]

_CACHE: dict[tuple[str, str | None], Benchmark] = {}
_LOCK = threading.Lock()


def cached_benchmark(name: str = "robust201-digits", path: str | None = None) -> Benchmark:
    """:func:`load_benchmark`, loaded once per process (trial processes share nothing)."""
    key = (name, None if path is None else str(path))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_benchmark(name, path=path)
        return _CACHE[key]


def _table_metrics(bench: Benchmark, sample: Mapping[str, Any]) -> dict[str, Any]:
    metrics = bench.query(sample)
    metrics.pop("sample")
    return metrics


class TableEvaluator(BenchmarkEvaluator):
    """An NNI evaluator that reports a table's metrics instead of training the candidate,
    as NNI's ``NasBench201Benchmark`` does for NAS-Bench-201.

    Reports the full metrics dict (with the cell's canonical ``key``) and ``default`` =
    ``metrics[default]`` (negated for a minimised metric, because NNI maximises ``default``).
    Works with the ``robust201`` space and with NNI's hub ``NasBench201`` (same labels).

    Example (five random cells; a cell the shipped partial table lacks fails its trial):

    >>> import tempfile
    >>> from nni.nas.strategy import Random
    >>> from robustnas.plugins.bench import TableEvaluator, load_benchmark
    >>> from robustnas.plugins.nni import run_experiment
    >>> bench = load_benchmark("robust201-digits")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     result = run_experiment(bench.space(), Random(seed=0), TableEvaluator(), max_trial_number=5,
    ...                             working_dir=folder)
    >>> len(result.records), {r["status"] for r in result.records} <= {"trained", "failed"}
    (5, True)
    """

    def __init__(self, name: str = "robust201-digits", path: str | None = None, default: str = "pgd_acc") -> None:
        super().__init__()
        self.name, self.path = name, None if path is None else str(path)
        _direction(default)  # raises for an unknown metric
        self.default = default

    @classmethod
    def default_space(cls) -> SlimBenchmarkSpace:
        labels = ("0_1", "0_2", "1_2", "0_3", "1_3", "2_3")
        return SlimBenchmarkSpace({label: Categorical(list(OPS), label=label) for label in labels})

    def _execute(self, model: Any) -> Any:
        # NNI's base warns unless the space is a BenchmarkModelSpace; a table answers any space
        # whose labels it knows (the PyTorch space is what strategies need to build supernets).
        if model.sample is None:
            raise ValueError("the model cannot be evaluated: it has not been sampled")
        return self.evaluate(model.sample)

    def evaluate(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        bench = cached_benchmark(self.name, self.path)
        stripped = _strip_common_label_scope(dict(sample))
        metrics = _table_metrics(bench, {f"cell/{label}": op for label, op in stripped.items()})
        value = metrics[self.default]
        if value is None:
            raise ConfigError(f"metric {self.default!r} was not measured for cell {metrics['key']!r}; "
                              "choose a metric measured on every cell (clean_acc, fgsm_acc, pgd_acc, params)")
        sign = -1.0 if _direction(self.default) == "minimize" else 1.0
        report = {**metrics, "default": sign * float(value)}
        nni.report_final_result(report)
        return report


def benchmark_evaluator(name: str = "robust201-digits", path: str | None = None,
                        default: str = "pgd_acc") -> TableEvaluator:
    """The NNI evaluator of a table (see :class:`TableEvaluator`)."""
    return TableEvaluator(name, path=path, default=default)


class BenchmarkObjective(RobustObjective):
    """A multi-objective Optuna objective answered from a table (same trial attributes as
    :class:`~robustnas.plugins.optuna.RobustObjective`: ``sample``, ``metrics``, ``record``).
    A cell that a partial table does not hold yet fails its trial (``fail_reason``).

    Example (twenty lookups, no training):

    >>> from robustnas.plugins.bench import BenchmarkObjective, load_benchmark
    >>> from robustnas.plugins.optuna import create_study
    >>> objective = BenchmarkObjective(load_benchmark("robust201-digits"))
    >>> study = create_study(objective.objectives, sampler="nsga2", seed=0)
    >>> study.optimize(objective, n_trials=20)
    >>> objective.objectives, len(study.trials)
    (('clean_acc', 'pgd_acc', 'params'), 20)
    """

    def __init__(self, bench: Benchmark, objectives: Sequence[str] = ("clean_acc", "pgd_acc", "params")) -> None:
        unmeasured = [m for m in objectives if m in ("robust_acc", "latency_ms")]
        if unmeasured:
            raise ConfigError(f"objective(s) {unmeasured} are not measured on every cell of table {bench.name!r}; "
                              "use clean_acc, fgsm_acc, pgd_acc, params or flops")
        self.bench = bench
        super().__init__(bench.space(), evaluator=_NoEvaluator(), objectives=objectives)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        from robustnas.search_spaces import export_record

        sample = suggest_architecture(trial, self.space)
        trial.set_user_attr(ATTR_SAMPLE, sample)
        try:
            metrics = _table_metrics(self.bench, sample)
        except KeyError as err:  # a cell a partial table does not have yet fails its own trial
            trial.set_user_attr(ATTR_FAIL, str(err.args[0]))
            return tuple(float("nan") for _ in self.objectives)
        trial.set_user_attr(ATTR_METRICS, metrics)
        trial.set_user_attr(ATTR_RECORD, export_record(self.space, sample))
        return self.values(metrics)


class _NoEvaluator:
    """Stands for the evaluator of a table objective (the table answers every candidate)."""

    def evaluate(self, model: Any) -> dict[str, Any]:  # pragma: no cover - never called
        raise RuntimeError("a table objective does not train candidates")
