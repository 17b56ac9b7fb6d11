"""Pareto tools for multi-objective architecture search.

Non-dominated sorting (Deb et al., "A fast and elitist multiobjective genetic
algorithm: NSGA-II", IEEE TEVC 2002) and the hypervolume indicator (While et al.,
"A Fast Way of Calculating Exact Hypervolumes", IEEE TEVC 2012), both taken from
Optuna's own implementations after the objectives are turned into losses
(every objective minimised). Objectives are named by metric keys of the shared
evaluator; :data:`METRIC_DIRECTIONS` says which way each one is better.

.. code-block:: python

    archive = ParetoArchive(("clean_acc", "robust_acc", "params"))
    archive.add({"sample": {"layer0/block": "mb_e3_k3"},
                 "metrics": {"clean_acc": 0.9, "robust_acc": 0.5, "params": 12000}})
    archive.front()          # first non-dominated front, as records
    archive.hypervolume()    # w.r.t. default_reference(...)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from optuna._hypervolume import compute_hypervolume
from optuna.study._multi_objective import _fast_non_domination_rank

__all__ = [
    "METRIC_DIRECTIONS",
    "DIRECTIONS",
    "directions_for",
    "non_dominated_sort",
    "pareto_front_mask",
    "hypervolume",
    "default_reference",
    "ParetoArchive",
]

_logger = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")

#: Which way each metric of the shared evaluator is better.
METRIC_DIRECTIONS: dict[str, str] = {
    "clean_acc": "maximize",
    "robust_acc": "maximize",
    "pgd_acc": "maximize",
    "fgsm_acc": "maximize",
    "certified_acc": "maximize",
    "params": "minimize",
    "flops": "minimize",
    "latency_ms": "minimize",
}


def directions_for(metric_names: Sequence[str]) -> list[str]:
    """The optimisation direction of each named metric (see :data:`METRIC_DIRECTIONS`)."""
    unknown = [name for name in metric_names if name not in METRIC_DIRECTIONS]
    if unknown:
        raise ValueError(f"unknown objective metric(s) {unknown}; valid: {sorted(METRIC_DIRECTIONS)}")
    return [METRIC_DIRECTIONS[name] for name in metric_names]


def _as_losses(points: Any, directions: Sequence[str]) -> np.ndarray:
    """``points`` (n, m) turned into losses: maximised columns are negated."""
    array = np.asarray(points, dtype=float)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, len(directions))
    if array.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n_points, n_objectives), got shape {array.shape}")
    if array.shape[1] != len(directions):
        raise ValueError(f"points have {array.shape[1]} objectives but {len(directions)} directions were given")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"unknown direction(s) {bad}; valid: {list(DIRECTIONS)}")
    if np.isnan(array).any():
        raise ValueError("points contain NaN; every objective value must be a number")
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return array * signs


def non_dominated_sort(points: Any, directions: Sequence[str]) -> list[list[int]]:
    """Indices of ``points`` grouped into non-dominated fronts, best front first (NSGA-II).

    Equal points share a front. ``directions`` holds ``"maximize"`` or
    ``"minimize"`` per column.
    """
    losses = _as_losses(points, directions)
    if len(losses) == 0:
        return []
    ranks = _fast_non_domination_rank(losses)
    return [np.flatnonzero(ranks == rank).tolist() for rank in range(int(ranks.max()) + 1)]


def pareto_front_mask(points: Any, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the points on the first non-dominated front."""
    losses = _as_losses(points, directions)
    if len(losses) == 0:
        return np.zeros(0, dtype=bool)
    return _fast_non_domination_rank(losses) == 0


def hypervolume(points: Any, reference: Sequence[float], directions: Sequence[str]) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (exact; Optuna's WFG).

    Points that do not strictly improve on the reference in every objective add
    nothing and are dropped before the computation.
    """
    losses = _as_losses(points, directions)
    ref = _as_losses(np.asarray(reference, dtype=float).reshape(1, -1), directions)[0]
    inside = np.all(losses < ref, axis=1)
    if not inside.any():
        return 0.0
    return float(compute_hypervolume(losses[inside], ref))


def default_reference(
    metric_names: Sequence[str],
    points: Any = None,
    *,
    upper: Mapping[str, float] | None = None,
) -> list[float]:
    """The default hypervolume reference point for the named objectives.

    Maximised metrics (accuracies in [0, 1]) use 0; minimised ones use
    ``upper[name]`` when given (e.g. the largest subnet's parameter count, so
    ``(clean_acc, robust_acc, params)`` gets ``(0, 0, max_params)``), else the
    largest value among ``points`` (so the worst observed size adds no volume).
    """
    directions = directions_for(metric_names)
    upper = dict(upper or {})
    array = None if points is None else np.asarray(points, dtype=float).reshape(-1, len(metric_names))
    reference = []
    for j, (name, direction) in enumerate(zip(metric_names, directions)):
        if direction == "maximize":
            reference.append(0.0)
        elif name in upper:
            reference.append(float(upper[name]))
        elif array is not None and len(array):
            reference.append(float(array[:, j].max()))
        else:
            raise ValueError(f"no upper bound for minimised metric {name!r}: pass points or upper={{{name!r}: ...}}")
    return reference


def _sample_key(sample: Mapping[str, Any]) -> str:
    return json.dumps(sample, sort_keys=True, default=str)


class ParetoArchive:
    """All evaluated architectures of a search, with their fronts and hypervolume.

    Records are plain dicts ``{"sample": {label: choice}, "metrics": {...}}``
    (extra keys are kept). Adding a sample that is already archived replaces its
    record, so every architecture appears once.
    """

    def __init__(self, objectives: Sequence[str] = ("clean_acc", "robust_acc", "params")) -> None:
        self.objectives: tuple[str, ...] = tuple(objectives)
        if not self.objectives:
            raise ValueError("at least one objective metric is needed")
        self.directions: list[str] = directions_for(self.objectives)
        self._records: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every archived record, in insertion order."""
        return list(self._records.values())

    def add(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Archive one record ``{"sample", "metrics"}``; returns the stored copy."""
        if "sample" not in record or "metrics" not in record:
            raise ValueError(f"a record needs 'sample' and 'metrics' keys, got {sorted(record)}")
        metrics = record["metrics"]
        missing = [name for name in self.objectives if name not in metrics]
        if missing:
            raise ValueError(f"record metrics lack objective(s) {missing}; objectives: {list(self.objectives)}")
        for name in self.objectives:
            value = float(metrics[name])
            if math.isnan(value):
                raise ValueError(f"objective {name!r} is NaN in record {dict(record)}")
        stored = json.loads(json.dumps(dict(record), default=_json_default))
        self._records[_sample_key(stored["sample"])] = stored
        return stored

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Archive several records."""
        for record in records:
            self.add(record)

    def points(self) -> np.ndarray:
        """Objective values, one row per record, in :attr:`objectives` order."""
        return np.array(
            [[float(r["metrics"][name]) for name in self.objectives] for r in self._records.values()],
            dtype=float,
        ).reshape(len(self._records), len(self.objectives))

    def fronts(self) -> list[list[dict[str, Any]]]:
        """All non-dominated fronts, best first, as lists of records."""
        records = self.records
        return [[records[i] for i in front] for front in non_dominated_sort(self.points(), self.directions)]

    def front(self) -> list[dict[str, Any]]:
        """The first non-dominated front, sorted by the last objective (size, by default)."""
        if not self._records:
            return []
        records = self.records
        mask = pareto_front_mask(self.points(), self.directions)
        front = [r for r, keep in zip(records, mask) if keep]
        return sorted(front, key=lambda r: float(r["metrics"][self.objectives[-1]]))

    def hypervolume(self, reference: Sequence[float] | None = None,
                    upper: Mapping[str, float] | None = None) -> float:
        """Hypervolume of the archive; ``reference`` defaults to :func:`default_reference`."""
        if not self._records:
            return 0.0
        points = self.points()
        if reference is None:
            reference = default_reference(self.objectives, points, upper=upper)
        return hypervolume(points, reference, self.directions)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: objectives and records."""
        return {"objectives": list(self.objectives), "records": self.records}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.objectives = tuple(state["objectives"])
        self.directions = directions_for(self.objectives)
        self._records = {}
        self.extend(state["records"])

    def to_json(self, path: str | None = None, **kwargs: Any) -> str:
        """The archive as JSON (records and the first front); written to ``path`` if given."""
        payload = {**self.state_dict(), "front": self.front()}
        text = json.dumps(payload, indent=kwargs.pop("indent", 2), **kwargs)
        if path is not None:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str) -> "ParetoArchive":
        """Load an archive written by :meth:`to_json` (a JSON string or a file path)."""
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as handle:
                text = handle.read()
        state = json.loads(text)
        archive = cls(state["objectives"])
        archive.load_state_dict(state)
        return archive


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"value {value!r} of type {type(value).__name__} is not JSON-serialisable")
