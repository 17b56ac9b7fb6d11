"""The exact hypervolume of a set of loss vectors (every objective minimised), private.

:func:`robustnas.strategies.pareto.hypervolume` is the public entry point; it turns the
objectives into losses and drops the points that do not improve on the reference.

Two and three objectives (every front this project measures) take sweeps over the sorted
front; four or more take the WFG recursion (While, Bradstreet, Barone, "A Fast Way of
Calculating Exact Hypervolumes", IEEE TEVC 16(1), 2012): the volume of a set is the sum,
over its points sorted by the first objective, of each point's box minus the volume that
the later points, limited to that box, cover in it. Every step does the operations of
Optuna's own implementation (``optuna/_hypervolume/wfg.py``, MIT licence; a private module
there) in the same order, so the numbers are the ones Optuna computes, to the bit
(tests/strategies/test_pareto.py checks it on random fronts).
"""

from __future__ import annotations

import numpy as np

__all__ = ["front_of_sorted", "hypervolume_of_losses"]


def front_of_sorted(losses: np.ndarray) -> np.ndarray:
    """Mask of the rows of ``losses`` (sorted by the first column) that no kept row above them
    weakly dominates. On unique rows sorted lexicographically (``np.unique(..., axis=0)``) that is
    exactly the non-dominated set, since a dominating row sorts first; with ties in the first
    column a dominated row may stay, which leaves a volume unchanged (it only adds a term that
    cancels), and repeated rows keep only their first."""
    keep = np.zeros(len(losses), dtype=bool)
    for i, row in enumerate(losses):
        keep[i] = not bool(np.any(np.all(losses[:i][keep[:i]] <= row, axis=1)))
    return keep


def _volume_2d(front: np.ndarray, reference: np.ndarray) -> float:
    """A 2-D front sorted by the first loss (so the second falls): a sum of rectangles."""
    tops = np.concatenate([reference[1:], front[:-1, 1]])
    return (reference[0] - front[:, 0]) @ (tops - front[:, 1])


def _volume_3d(front: np.ndarray, reference: np.ndarray) -> float:
    """A 3-D front sorted by the first loss: on the grid of its x and y values, the height a cell
    is covered to is the largest ``reference_z - z`` of the points at or below-left of it (a running
    maximum along both axes), and the volume is the sum of cell area times height (O(n^2))."""
    n = len(front)
    by_y = np.argsort(front[:, 1])
    heights = np.zeros((n, n), dtype=float)
    heights[by_y, np.arange(n)] = reference[2] - front[by_y, 2]
    heights = np.maximum.accumulate(np.maximum.accumulate(heights, axis=0), axis=1)
    xs, ys = front[:, 0], front[by_y, 1]
    widths = np.concatenate([xs[1:], reference[:1]]) - xs
    depths = np.concatenate([ys[1:], reference[1:2]]) - ys
    return np.dot(np.dot(heights, depths), widths)


def _volume_wfg(front: np.ndarray, reference: np.ndarray) -> float:
    """Any number of objectives: WFG on a set sorted by the first loss. One or two points are
    summed directly (inclusion-exclusion); each exclusive volume drops the limited points that an
    earlier one weakly dominates, unless there are three or fewer."""
    if len(front) == 1:
        volume = 1.0
        for r, v in zip(reference, front[0]):
            volume *= r - v
        return float(volume)
    if len(front) == 2:
        first, second, both = 1.0, 1.0, 1.0
        for r, v1, v2 in zip(reference, front[0], front[1]):
            first *= r - v1
            second *= r - v2
            both *= r - max(v1, v2)
        return first + second - both
    boxes = (reference - front).prod(axis=-1)
    limited = np.maximum(front[:, np.newaxis], front)  # limited[i, j]: point j limited to point i's box
    return boxes[-1] + sum(_exclusive(limited[i, i + 1:], boxes[i], reference) for i in range(len(boxes) - 1))


def _exclusive(limited: np.ndarray, box: float, reference: np.ndarray) -> float:
    """The part of a point's ``box`` that the later points (``limited`` to the box) leave uncovered."""
    if len(limited) > 3:
        limited = limited[front_of_sorted(limited)]
    return box - _volume_wfg(limited, reference)


def hypervolume_of_losses(losses: np.ndarray, reference: np.ndarray) -> float:
    """The volume that ``losses`` (n, m) dominate below ``reference`` (m,); every row must be at
    or below the reference. An infinite reference gives ``inf``, an empty set 0."""
    if not np.all(losses <= reference):
        raise ValueError("every point must be at or below the reference point in every loss")
    if not np.all(np.isfinite(reference)):
        return float("inf")
    if losses.size == 0:
        return 0.0
    rows = np.unique(losses, axis=0)
    front = rows[front_of_sorted(rows)]
    m = reference.shape[0]
    if m == 2:
        volume = _volume_2d(front, reference)
    elif m == 3:
        volume = _volume_3d(front, reference)
    else:
        volume = _volume_wfg(front, reference)
    return float(volume) if np.isfinite(volume) else float("inf")
