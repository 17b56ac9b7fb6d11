"""Statistics of a comparison on a table: regret, normalised hypervolume, confidence
intervals, ranks, paired tests and anytime curves.

Pure functions over plain numbers and metrics dicts (no NNI, no Optuna): a comparison
(:func:`~robustnas.plugins.bench.compare_on_table`) feeds them what each (strategy, seed)
unit found, and they return plain JSON-able values. The table enters only through a
:class:`TableTarget` (its best value of the objective, its bounds and its true Pareto front),
computed once by :func:`table_target` over the cells the table holds.

References:

* percentile bootstrap: Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13;
* Wilcoxon signed-rank test: Wilcoxon, *Biometrics Bulletin* 1(6), 1945;
* Holm's step-down correction: Holm, *Scandinavian Journal of Statistics* 6(2), 1979;
* mean ranks over problems (here: seeds): Demšar, *JMLR* 7, 2006;
* hypervolume: Zitzler & Thiele, *IEEE TEVC* 3(4), 1999 (computed with
  :func:`robustnas.strategies.pareto.hypervolume`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from robustnas.plugins.errors import ConfigError, DataError
from robustnas.strategies.pareto import METRIC_DIRECTIONS, hypervolume, pareto_front_mask

if TYPE_CHECKING:
    from ._table import Benchmark

__all__ = [
    "HV_OBJECTIVES", "TableTarget", "bootstrap_band", "bootstrap_ci", "holm", "mean_ranks",
    "normalised_hypervolume", "paired_wilcoxon", "regret", "regret_at_times", "regret_curve",
    "table_target",
]

#: The objectives of the normalised hypervolume: clean accuracy up, PGD accuracy up, parameters down.
HV_OBJECTIVES: tuple[str, ...] = ("clean_acc", "pgd_acc", "params")

#: Seed of the bootstrap's generator: identical inputs give identical intervals.
BOOTSTRAP_SEED = 0


@dataclasses.dataclass(frozen=True)
class TableTarget:
    """What a search is measured against, computed from the cells a table holds.

    ``best`` and ``worst`` are the table's best and worst values of ``objective``
    (``direction`` says which way is better); ``bounds`` the table's (min, max) of each
    hypervolume objective; ``front`` the true Pareto front under ``hv_objectives`` as
    ``{objective: value}`` points. ``cells`` is the number of cells that entered.
    """

    objective: str
    direction: str
    best: float
    worst: float
    best_key: str | None
    hv_objectives: tuple[str, ...]
    bounds: dict[str, tuple[float, float]]
    front: tuple[dict[str, float], ...]
    cells: int

    def to_dict(self) -> dict[str, Any]:
        """The target as a plain JSON-able dict."""
        out = dataclasses.asdict(self)
        out["bounds"] = {k: list(v) for k, v in self.bounds.items()}
        out["front"] = [dict(p) for p in self.front]
        out["hv_objectives"] = list(self.hv_objectives)
        return out


def _direction(metric: str) -> str:
    if metric not in METRIC_DIRECTIONS:
        raise ConfigError(f"unknown metric {metric!r}; valid metrics: {sorted(METRIC_DIRECTIONS)}")
    return METRIC_DIRECTIONS[metric]


def _value(entry: Mapping[str, Any] | None, metric: str) -> float | None:
    if entry is None:
        return None
    value = entry.get(metric)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def table_target(table: Benchmark | Sequence[Mapping[str, Any]], objective: str = "pgd_acc",
                 hv_objectives: Sequence[str] = HV_OBJECTIVES) -> TableTarget:
    """The :class:`TableTarget` of a table (a :class:`Benchmark` or its entries), over the
    cells it holds: on a partial table, regret is measured against the best cell held so far
    and the hypervolume against the front of the cells held so far."""
    entries = table.entries() if hasattr(table, "entries") else [dict(e) for e in table]
    direction = _direction(objective)
    hv_objectives = tuple(hv_objectives)
    if not hv_objectives or len(set(hv_objectives)) != len(hv_objectives):
        raise ConfigError(f"hv_objectives must be distinct metric names, got {list(hv_objectives)}")
    hv_directions = [_direction(m) for m in hv_objectives]
    scored = [(v, e) for e in entries if (v := _value(e, objective)) is not None]
    if not scored:
        raise DataError(f"the table holds no value of {objective!r}")
    sign = 1.0 if direction == "maximize" else -1.0
    # ties as Benchmark.best: smaller params, then key
    best_value, best_entry = min(scored, key=lambda ve: (-sign * ve[0], ve[1].get("params") or 0,
                                                         str(ve[1].get("key"))))
    worst_value = min(v * sign for v, _ in scored) * sign
    complete = [e for e in entries if all(_value(e, m) is not None for m in hv_objectives)]
    if not complete:
        raise DataError(f"the table holds no cell with every hypervolume objective {list(hv_objectives)}")
    points = np.array([[float(e[m]) for m in hv_objectives] for e in complete])
    bounds = {m: (float(points[:, j].min()), float(points[:, j].max())) for j, m in enumerate(hv_objectives)}
    mask = pareto_front_mask(points, hv_directions)
    front = tuple(sorted(({m: float(p[j]) for j, m in enumerate(hv_objectives)} for p in points[mask]),
                         key=lambda p: tuple(p[m] for m in hv_objectives)))
    return TableTarget(objective=objective, direction=direction, best=float(best_value), worst=float(worst_value),
                       best_key=best_entry.get("key"), hv_objectives=hv_objectives, bounds=bounds, front=front,
                       cells=len(entries))


# ---------------------------------------------------------------------- regret
def regret(found: Sequence[Mapping[str, Any] | None], target: TableTarget) -> float:
    """Simple regret of one run: the table's best value of the objective minus the best value
    found (for a minimised objective, found minus best), never negative.

    ``found`` holds the metrics dicts of the queried cells (``None`` for a query the table
    could not answer). A run that found no cell with a value is charged with the table's
    worst cell (regret ``|best - worst|``), so every run has a finite regret, bounded by that.
    A found value better than the table's best (possible only for a cell outside the table)
    gives 0.
    """
    curve = regret_curve(found, target)
    return float(curve[-1]) if len(curve) else _regret_of(None, target)


def _regret_of(value: float | None, target: TableTarget) -> float:
    value = target.worst if value is None else value
    gap = target.best - value if target.direction == "maximize" else value - target.best
    return max(0.0, float(gap))


def regret_curve(found: Sequence[Mapping[str, Any] | None], target: TableTarget) -> np.ndarray:
    """Best-so-far regret after each query (length ``len(found)``, non-increasing, never
    negative); before the first answered query, the regret of the table's worst cell."""
    out = np.empty(len(found), dtype=float)
    best: float | None = None
    sign = 1.0 if target.direction == "maximize" else -1.0
    for i, entry in enumerate(found):
        value = _value(entry, target.objective)
        if value is not None and (best is None or sign * value > sign * best):
            best = value
        out[i] = _regret_of(best, target)
    return out


def regret_at_times(seconds: Sequence[float], curve: Sequence[float], grid: Sequence[float],
                    before: float) -> np.ndarray:
    """Best-so-far regret at each time of ``grid``: the value of ``curve`` after the last
    query that had finished by then (``seconds[i]``: when query ``i`` finished), ``before``
    until the first one, and the last value after the run ended."""
    seconds = np.asarray(seconds, dtype=float)
    curve = np.asarray(curve, dtype=float)
    if seconds.shape != curve.shape:
        raise ValueError(f"seconds ({seconds.shape}) and curve ({curve.shape}) must have one value per query")
    index = np.searchsorted(seconds, np.asarray(grid, dtype=float), side="right") - 1
    padded = np.concatenate([[float(before)], curve])
    return padded[index + 1]


# ---------------------------------------------------------------------- hypervolume
def _normalise(point: Mapping[str, Any], target: TableTarget) -> list[float]:
    """``point`` mapped into [0, 1] per objective, 1 best (the table's best value of it)."""
    out = []
    for m in target.hv_objectives:
        lo, hi = target.bounds[m]
        value = float(point[m])
        if hi == lo:
            out.append(1.0)
            continue
        scaled = (value - lo) / (hi - lo) if _direction(m) == "maximize" else (hi - value) / (hi - lo)
        out.append(min(1.0, max(0.0, scaled)))
    return out


def _raw_hypervolume(points: Sequence[Mapping[str, Any]], target: TableTarget) -> float:
    normalised = sorted({tuple(_normalise(p, target)) for p in points})  # order-free: same set, same bits
    if not normalised:
        return 0.0
    if len(target.hv_objectives) == 1:
        return max(p[0] for p in normalised)
    m = len(target.hv_objectives)
    return hypervolume(np.array(normalised), [0.0] * m, ["maximize"] * m)


def normalised_hypervolume(found: Sequence[Mapping[str, Any] | None], target: TableTarget) -> float:
    """Hypervolume of the found cells over the table's true Pareto front, in [0, 1].

    Each objective of ``target.hv_objectives`` is scaled to [0, 1] with the table's min and
    max (1 = the table's best value; parameters are minimised, accuracies maximised); the
    reference point is the table's worst value of every objective (0 after scaling). The
    found set's hypervolume (Zitzler & Thiele 1999) is divided by the true front's, so the
    front scores 1 and a subset of the table at most 1. Queries the table could not answer
    (``None``) and cells lacking an objective add nothing; no cell found scores 0. A table
    whose front encloses no volume (a table of one or two cells) gives 1 for any non-empty set.
    """
    points = [e for e in found if e is not None and all(_value(e, m) is not None for m in target.hv_objectives)]
    if not points:
        return 0.0
    front_volume = _raw_hypervolume(target.front, target)
    if front_volume <= 0.0:
        return 1.0
    return float(min(1.0, max(0.0, _raw_hypervolume(points, target) / front_volume)))


# ---------------------------------------------------------------------- confidence intervals
def _bootstrap_means(matrix: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    index = rng.integers(0, matrix.shape[0], size=(n_resamples, matrix.shape[0]))
    return matrix[index].mean(axis=1)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10_000,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (Efron & Tibshirani
    1993): ``n_resamples`` resamples with replacement from a generator seeded with ``seed``,
    so identical inputs give identical intervals. Values all equal (zero variance) or a single
    value give the zero-width interval ``(v, v)``."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or not len(array):
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D sequence of values, got shape {array.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if np.isnan(array).any():
        raise ValueError("values contain NaN")
    if np.all(array == array[0]):
        return float(array[0]), float(array[0])
    means = _bootstrap_means(array, n_resamples, seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_band(curves: Sequence[Sequence[float]], confidence: float = 0.95, n_resamples: int = 2_000,
                   seed: int = BOOTSTRAP_SEED) -> dict[str, list[float]]:
    """Mean and percentile-bootstrap band of curves of equal length (one per seed): the same
    resampling of seeds for every point, ``{"mean", "ci_low", "ci_high"}`` as lists. Points
    where every curve agrees get a zero-width band."""
    matrix = np.asarray(curves, dtype=float)
    if matrix.ndim != 2 or not matrix.shape[0]:
        raise ValueError(f"bootstrap_band needs curves of equal length (n_seeds, n_points), got shape {matrix.shape}")
    mean = matrix.mean(axis=0)
    means = _bootstrap_means(matrix, n_resamples, seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    flat = np.all(matrix == matrix[0], axis=0)
    low = np.where(flat, matrix[0], low)
    high = np.where(flat, matrix[0], high)
    mean = np.where(flat, matrix[0], mean)
    return {"mean": mean.tolist(), "ci_low": low.tolist(), "ci_high": high.tolist()}


# ---------------------------------------------------------------------- ranks and tests
def _score_matrix(scores: Mapping[str, Sequence[float]]) -> tuple[list[str], np.ndarray]:
    names = list(scores)
    if not names:
        raise ValueError("scores must name at least one strategy")
    lengths = {len(scores[n]) for n in names}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"every strategy needs one score per seed, the same seeds; got lengths "
                         f"{ {n: len(scores[n]) for n in names} }")
    return names, np.array([[float(v) for v in scores[n]] for n in names])


def mean_ranks(scores: Mapping[str, Sequence[float]], higher_is_better: bool = False) -> dict[str, float]:
    """Mean rank of each strategy over seeds (Demšar 2006): on each seed the strategies are
    ranked by their score (1 = best; ties share the average rank), then the ranks averaged.
    ``scores[name][i]`` is the score on seed ``i``; lower is better unless ``higher_is_better``."""
    from scipy.stats import rankdata

    names, matrix = _score_matrix(scores)
    ranks = rankdata(-matrix if higher_is_better else matrix, axis=0, method="average")
    return {name: float(r) for name, r in zip(names, ranks.mean(axis=1))}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order: the i-th smallest
    p times (m - i + 1), made monotone and capped at 1. Rejecting where the adjusted p is
    below alpha controls the family-wise error rate at alpha."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError("holm takes a 1-D sequence of p-values")
    m = len(p)
    if not m:
        return []
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must be in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def paired_wilcoxon(scores: Mapping[str, Sequence[float]], baseline: str = "random",
                    alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Each strategy against ``baseline`` over paired seeds: Wilcoxon's signed-rank test
    (Wilcoxon 1945; ``scipy.stats.wilcoxon``, two-sided, zero differences dropped) on the
    differences ``score - baseline_score``, with Holm-corrected p-values (Holm 1979) over the
    strategies compared.

    Returns ``{name: {"n", "nonzero", "mean_difference", "statistic", "p", "p_holm",
    "significant"}}``; ``significant`` is ``p_holm < alpha``. When every difference is zero
    (the strategy did exactly what the baseline did on every seed) there is nothing to test:
    ``statistic`` 0 and ``p`` 1.
    """
    from scipy.stats import wilcoxon

    names, matrix = _score_matrix(scores)
    if baseline not in names:
        raise ConfigError(f"baseline {baseline!r} is not among the strategies {names}")
    base = matrix[names.index(baseline)]
    results: dict[str, dict[str, Any]] = {}
    for name, row in zip(names, matrix):
        if name == baseline:
            continue
        diff = row - base
        nonzero = int(np.count_nonzero(diff))
        if nonzero == 0:
            statistic, p = 0.0, 1.0
        else:
            test = wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
            statistic, p = float(test.statistic), float(test.pvalue)
            if math.isnan(p):  # scipy's normal approximation can divide by zero; nothing to reject
                p = 1.0
        results[name] = {"n": int(len(diff)), "nonzero": nonzero, "mean_difference": float(diff.mean()),
                         "statistic": statistic, "p": p}
    adjusted = holm([r["p"] for r in results.values()])
    for result, p_holm in zip(results.values(), adjusted):
        result["p_holm"] = float(p_holm)
        result["significant"] = bool(p_holm < alpha)
    return results
