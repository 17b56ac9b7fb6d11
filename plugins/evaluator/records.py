"""The metrics dict as a typed record: :class:`Metrics` and :func:`metrics_from_dict`.

What :meth:`RobustnessEvaluator.evaluate <robustnas.plugins.evaluator.RobustnessEvaluator.evaluate>`
returns, what strategies keep in their Pareto archives and what ``results.json`` stores is one
flat JSON dict (docs/internals.md, "Records"). :class:`Metrics` types it without changing it: a
``TypedDict`` is a plain ``dict`` at run time, so the JSON on disk stays exactly what it was,
and ``total=False`` because no producer fills every key (a one-shot strategy scores subnets
with clean and PGD accuracy only; a benchmark table has no latency). Keys that a strategy or a
table adds (``jacobian``, ``aa_examples``, ``<metric>_sd``) are kept as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any, TypedDict

from robustnas.plugins.errors import DataError

from .metrics import METRICS

__all__ = ["Metrics", "metrics_from_dict"]


class Metrics(TypedDict, total=False):
    """One evaluated architecture's numbers (accuracies in [0, 1]; None where not measured).

    ``robust_acc`` is AutoAttack's accuracy in the mode named by ``attack``, on the first
    ``n_examples`` test points under the threat model ``norm``/``eps``; ``flags`` says why a
    number may not be trusted (empty when nothing is suspicious; docs/evaluator.md, "Flags").
    """

    clean_acc: float
    robust_acc: float | None
    pgd_acc: float
    fgsm_acc: float | None
    certified_acc: float | None
    params: int
    flops: int
    latency_ms: float | None
    train_seconds: float
    eval_seconds: float
    norm: str
    eps: float
    attack: str | None
    n_examples: int
    dataset: str
    recipe: str
    epochs: int
    flags: list[str]


_ACCURACIES = ("clean_acc", "robust_acc", "pgd_acc", "fgsm_acc", "certified_acc")
_AMOUNTS = ("params", "flops", "n_examples", "epochs", "latency_ms", "train_seconds", "eval_seconds")
_TEXTS = ("norm", "attack", "dataset", "recipe")


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` under the metric ``key`` (None when it fits or ``key`` is not ours)."""
    if key == "flags":
        if isinstance(value, (list, tuple)) and all(isinstance(flag, str) for flag in value):
            return None
        return "a list of strings"
    if value is None:
        return None
    if key in _ACCURACIES:
        if _number(value) and (math.isnan(value) or 0.0 <= value <= 1.0):
            return None
        return "a number in [0, 1] or None"
    if key in _AMOUNTS:
        if _number(value) and (math.isnan(value) or value >= 0):
            return None
        return "a number >= 0 or None"
    if key == "eps":
        return None if _number(value) else "a number or None"
    if key in _TEXTS:
        return None if isinstance(value, str) else "a string or None"
    return None


def metrics_from_dict(data: Any, where: str = "metrics") -> Metrics:
    """Check a metrics dict read from JSON (or from any producer) and return a plain copy.

    Every key of :class:`Metrics` that is present must hold its type (accuracies in [0, 1]
    or None, sizes and durations >= 0, ``flags`` a list of strings); other keys are kept as
    they are. NumPy scalars become Python numbers and ``flags`` a list, so the copy is JSON.
    Raises :class:`~robustnas.plugins.errors.DataError` naming ``where``, the bad key and
    what it must hold.
    """
    if not isinstance(data, Mapping):
        raise DataError(f"{where} must be a mapping of metric names to values, got {type(data).__name__}; "
                        f"metric keys: {', '.join(METRICS)}")
    bad = [key for key in data if not isinstance(key, str)]
    if bad:
        raise DataError(f"{where} has non-string key(s) {bad!r}; metric keys: {', '.join(METRICS)}")
    metrics: dict[str, Any] = {}
    for key, value in data.items():
        if key in METRICS and getattr(value, "ndim", None) == 0:
            value = value.item()  # a NumPy or torch scalar
        problem = _problem(key, value)
        if problem is not None:
            raise DataError(f"{where}[{key!r}] must be {problem}, got {value!r}")
        metrics[key] = list(value) if key == "flags" else value
    return metrics  # type: ignore[return-value]  # checked above; extra keys are allowed
