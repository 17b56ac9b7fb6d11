"""Pareto tools for multi-objective architecture search.

Non-dominated sorting (Deb et al., "A fast and elitist multiobjective genetic
algorithm: NSGA-II", IEEE TEVC 2002; the fronts of Optuna's implementation) and the exact hypervolume
indicator (While et al., "A Fast Way of Calculating Exact Hypervolumes", IEEE TEVC 2012;
our own, :mod:`._hypervolume`), after the objectives are turned into losses
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
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from robustnas.plugins._io import to_json
from robustnas.plugins.errors import DataError
from robustnas.plugins.evaluator.metrics import DIRECTIONS, METRIC_DIRECTIONS
from robustnas.search_spaces import sample_key

from ._hypervolume import hypervolume_of_losses

if TYPE_CHECKING:
    from robustnas.plugins.evaluator import Metrics

__all__ = [
    "METRIC_DIRECTIONS",
    "DIRECTIONS",
    "directions_for",
    "non_dominated_sort",
    "pareto_front_mask",
    "hypervolume",
    "default_reference",
    "ParetoArchive",
    "ParetoRecord",
]

#: ``DIRECTIONS`` (maximize, minimize) and ``METRIC_DIRECTIONS`` (which way each metric of the shared
#: evaluator is better) are declared with the metrics, in ``robustnas.plugins.evaluator.metrics``
#: (``register_metric`` adds one).


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
    unique, inverse = np.unique(losses, axis=0, return_inverse=True)
    ranks = np.zeros(len(unique), dtype=int)
    remaining = np.arange(len(unique))
    rank = 0
    while remaining.size:  # peel off one front at a time
        front = _first_front(unique[remaining])
        ranks[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    ranks = ranks[inverse.reshape(-1)]
    return [np.flatnonzero(ranks == r).tolist() for r in range(rank)]


def pareto_front_mask(points: Any, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the points on the first non-dominated front."""
    losses = _as_losses(points, directions)
    if len(losses) == 0:
        return np.zeros(0, dtype=bool)
    unique, inverse = np.unique(losses, axis=0, return_inverse=True)
    return _first_front(unique)[inverse.reshape(-1)]


def _first_front(rows: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated rows of ``rows``: unique loss vectors sorted lexicographically
    (``np.unique(..., axis=0)``), so that a row can be dominated only by rows above it, and one
    that is dominated by none of the kept rows above it is on the front."""
    on_front = np.zeros(len(rows), dtype=bool)
    candidates = np.arange(len(rows))
    while candidates.size:
        top = candidates[0]  # nothing above it that is still a candidate dominates it
        on_front[top] = True
        # Rows below ``top`` are no better in the first loss: they stay only if better in another.
        candidates = candidates[np.any(rows[candidates, 1:] < rows[top, 1:], axis=1)]
    return on_front


def hypervolume(points: Any, reference: Sequence[float], directions: Sequence[str], *,
                ideal: Sequence[float] | None = None) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (exact: :mod:`._hypervolume`,
    the numbers of Optuna's own computation for two and three objectives, WFG beyond).

    Points that do not strictly improve on the reference in every objective add
    nothing and are dropped before the computation. With ``ideal`` (the best corner,
    e.g. accuracies 1 and no parameters) the volume is divided by that of the box between
    ``ideal`` and ``reference``: the share of the box the points dominate, in [0, 1].
    """
    losses = _as_losses(points, directions)
    ref = _as_losses(np.asarray(reference, dtype=float).reshape(1, -1), directions)[0]
    inside = np.all(losses < ref, axis=1)
    volume = float(hypervolume_of_losses(losses[inside], ref)) if inside.any() else 0.0
    if ideal is None:
        return volume
    if len(ideal) != len(directions):
        raise ValueError(f"ideal has {len(ideal)} values but there are {len(directions)} objectives")
    box = 1.0
    for best, worst in zip(ideal, reference):
        box *= abs(float(worst) - float(best))
    return volume / box


def default_reference(
    metric_names: Sequence[str] | None,
    points: Any = None,
    *,
    upper: Mapping[str, float] | None = None,
    directions: Sequence[str] | None = None,
    scale: float = 1.0,
) -> list[float]:
    """The hypervolume reference point: the one rule of the library, its reports and plots.

    Maximised metrics of the shared evaluator (accuracies in [0, 1]) use 0; minimised
    objectives use ``upper[name]`` when given (e.g. the largest subnet's parameter count, so
    ``(clean_acc, robust_acc, params)`` gets ``(0, 0, max_params)``), else ``scale`` times the
    largest value among ``points`` (``scale=1``: the worst observed size adds no volume; the
    comparison report takes 1.1). Objectives without a known metric name (``metric_names``
    None, ``directions`` given, as for an Optuna study of other objectives) use the worst
    value among ``points``.
    """
    if directions is None:
        if metric_names is None:
            raise ValueError("default_reference needs metric_names or directions")
        directions = directions_for(metric_names)
    names: Sequence[str | None] = [None] * len(directions) if metric_names is None else list(metric_names)
    upper = dict(upper or {})
    array = None if points is None else np.asarray(points, dtype=float).reshape(-1, len(directions))
    observed = array is not None and len(array) > 0
    reference = []
    for j, (name, direction) in enumerate(zip(names, directions)):
        if direction == "maximize" and name in METRIC_DIRECTIONS:
            reference.append(0.0)
        elif name in upper:
            reference.append(float(upper[name]))
        elif observed and direction == "maximize":
            reference.append(float(array[:, j].min()))
        elif observed:
            reference.append(scale * float(array[:, j].max()))
        else:
            raise ValueError(f"no reference for objective {name or j!r}: pass points or upper={{{name!r}: ...}}")
    return reference


@dataclass(frozen=True)
class ParetoRecord:
    """One archived architecture: its sample, its metrics, and whatever else the strategy keeps
    beside them (``generation``, ``finetuned_metrics``, ``level``, ...) in ``extra``.

    ``to_dict()`` is the plain dict that :class:`ParetoArchive` hands out and writes to JSON,
    ``{"sample", "metrics", **extra}`` with the keys in the order of the dict the record was
    made from (``order``), so an archive's JSON is the same as when it stored dicts.
    """

    sample: dict[str, Any]
    metrics: Metrics
    extra: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Any) -> "ParetoRecord":
        """A record from a dict ``{"sample", "metrics", ...}`` (a JSON copy: NumPy scalars become
        Python numbers); a :class:`~robustnas.plugins.errors.DataError` names a missing key."""
        if not isinstance(data, Mapping):
            raise DataError(f"a record must be a dict with keys 'sample' and 'metrics', got {type(data).__name__}")
        if "sample" not in data or "metrics" not in data:
            raise DataError(f"a record needs 'sample' and 'metrics' keys, got {sorted(data)}")
        if not isinstance(data["metrics"], Mapping):
            raise DataError(f"record['metrics'] must be a dict of metric values, got {type(data['metrics']).__name__}")
        plain = to_json(dict(data))
        return cls(sample=plain.pop("sample"), metrics=plain.pop("metrics"), extra=plain, order=tuple(data))

    def to_dict(self) -> dict[str, Any]:
        """``{"sample", "metrics", **extra}`` in ``order`` (shares the nested dicts)."""
        values = {"sample": self.sample, "metrics": self.metrics, **self.extra}
        return {**{key: values[key] for key in self.order if key in values}, **values}


class ParetoArchive:
    """All evaluated architectures of a search, with their fronts and hypervolume.

    Each entry is a :class:`ParetoRecord`; the archive takes and hands out their plain dicts
    ``{"sample": {label: choice}, "metrics": {...}}`` (extra keys are kept). Adding a sample
    that is already archived replaces its record, so every architecture appears once.
    """

    def __init__(self, objectives: Sequence[str] = ("clean_acc", "robust_acc", "params")) -> None:
        self.objectives: tuple[str, ...] = tuple(objectives)
        if not self.objectives:
            raise ValueError("at least one objective metric is needed")
        self.directions: list[str] = directions_for(self.objectives)
        self._records: dict[str, ParetoRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every archived record, in insertion order."""
        return [record.to_dict() for record in self._records.values()]

    def add(self, record: ParetoRecord | Mapping[str, Any]) -> dict[str, Any]:
        """Archive one record ``{"sample", "metrics"}``; returns the stored copy."""
        stored = ParetoRecord.from_dict(record.to_dict() if isinstance(record, ParetoRecord) else record)
        missing = [name for name in self.objectives if name not in stored.metrics]
        if missing:
            raise ValueError(f"record metrics lack objective(s) {missing}; objectives: {list(self.objectives)}")
        for name in self.objectives:
            value = float(stored.metrics[name])
            if math.isnan(value):
                raise ValueError(f"objective {name!r} is NaN in record {stored.to_dict()}")
        self._records[sample_key(stored.sample)] = stored
        return stored.to_dict()

    def extend(self, records: Iterable[ParetoRecord | Mapping[str, Any]]) -> None:
        """Archive several records."""
        for record in records:
            self.add(record)

    def points(self) -> np.ndarray:
        """Objective values, one row per record, in :attr:`objectives` order."""
        return np.array(
            [[float(r.metrics[name]) for name in self.objectives] for r in self._records.values()],
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

