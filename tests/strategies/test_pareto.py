"""Specification of robustnas.strategies.pareto (non-dominated sorting, hypervolume, archive)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from robustnas.strategies.pareto import (
    METRIC_DIRECTIONS,
    ParetoArchive,
    default_reference,
    directions_for,
    hypervolume,
    non_dominated_sort,
    pareto_front_mask,
)


def _dominates(a, b, directions) -> bool:
    better_or_equal = all((x >= y) if d == "maximize" else (x <= y) for x, y, d in zip(a, b, directions))
    return better_or_equal and any(x != y for x, y in zip(a, b))


def _brute_force_fronts(points, directions) -> list[set[int]]:
    remaining = set(range(len(points)))
    fronts = []
    while remaining:
        front = {i for i in remaining if not any(_dominates(points[j], points[i], directions) for j in remaining)}
        fronts.append(front)
        remaining -= front
    return fronts


@pytest.mark.parametrize("directions", [("maximize", "maximize", "minimize"), ("minimize", "maximize"),
                                        ("minimize", "minimize", "minimize", "maximize")])
def test_non_dominated_sort_matches_brute_force_on_random_points(directions):
    rng = np.random.default_rng(len(directions))
    # Rounded values make ties and duplicates common.
    points = np.round(rng.random((60, len(directions))), 1)
    fronts = non_dominated_sort(points, directions)
    assert [set(f) for f in fronts] == _brute_force_fronts(points.tolist(), directions)
    assert sorted(itertools.chain.from_iterable(fronts)) == list(range(len(points)))
    mask = pareto_front_mask(points, directions)
    assert set(np.flatnonzero(mask)) == set(fronts[0])


def test_direction_flips_the_front():
    points = [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]]
    assert non_dominated_sort(points, ["minimize", "minimize"]) == [[0], [2], [1]]
    assert non_dominated_sort(points, ["maximize", "maximize"]) == [[1], [2], [0]]
    assert pareto_front_mask(points, ["maximize", "minimize"]).tolist() == [True, True, True]


def test_hypervolume_matches_exact_2d_rectangle_union():
    rng = np.random.default_rng(0)
    points = rng.random((25, 2))  # (accuracy up, size down)
    reference = (0.0, 1.0)
    # Exact 2-D computation: sweep accuracy from high to low, keep the best size so far.
    order = np.argsort(-points[:, 0])
    volume, best_size = 0.0, reference[1]
    for i, idx in enumerate(order):
        acc, size = points[idx]
        best_size = min(best_size, size)
        next_acc = points[order[i + 1], 0] if i + 1 < len(order) else reference[0]
        volume += (acc - next_acc) * (reference[1] - best_size)
    assert hypervolume(points, reference, ["maximize", "minimize"]) == pytest.approx(volume, rel=1e-12)


def test_hypervolume_matches_monte_carlo_in_3d():
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.random(15), rng.random(15), rng.integers(10_000, 2_000_000, 15)])
    directions = ["maximize", "maximize", "minimize"]
    reference = default_reference(["clean_acc", "robust_acc", "params"], upper={"params": 2_000_000})
    assert reference == [0.0, 0.0, 2_000_000.0]
    exact = hypervolume(points, reference, directions)
    samples = rng.random((200_000, 3)) * np.array([1.0, 1.0, 2_000_000.0])
    covered = np.zeros(len(samples), dtype=bool)
    for p in points:
        covered |= (samples[:, 0] <= p[0]) & (samples[:, 1] <= p[1]) & (samples[:, 2] >= p[2])
    estimate = covered.mean() * 2_000_000.0
    assert exact == pytest.approx(estimate, rel=0.02)


def test_hypervolume_ignores_points_outside_the_reference_box():
    directions = ["maximize", "minimize"]
    inside = hypervolume([[0.5, 0.5]], (0.0, 1.0), directions)
    assert inside == pytest.approx(0.25)
    assert hypervolume([[0.5, 0.5], [0.9, 2.0]], (0.0, 1.0), directions) == pytest.approx(inside)
    assert hypervolume(np.zeros((0, 2)), (0.0, 1.0), directions) == 0.0


def test_bad_input_names_the_valid_values():
    with pytest.raises(ValueError, match="valid"):
        directions_for(["clean_acc", "accuracy"])
    with pytest.raises(ValueError, match="maximize"):
        non_dominated_sort([[1.0]], ["up"])
    with pytest.raises(ValueError, match="NaN"):
        pareto_front_mask([[np.nan, 1.0]], ["maximize", "minimize"])
    assert directions_for(["clean_acc", "params"]) == [METRIC_DIRECTIONS["clean_acc"], "minimize"]


def test_archive_keeps_the_front_and_round_trips_json(tmp_path):
    archive = ParetoArchive(("clean_acc", "robust_acc", "params"))
    archive.add({"sample": {"a": 1}, "metrics": {"clean_acc": 0.9, "robust_acc": 0.3, "params": 5000}})
    archive.add({"sample": {"a": 2}, "metrics": {"clean_acc": 0.8, "robust_acc": 0.2, "params": 9000}})  # dominated
    archive.add({"sample": {"a": 3}, "metrics": {"clean_acc": 0.7, "robust_acc": 0.4, "params": 20000}})
    archive.add({"sample": {"a": 4}, "metrics": {"clean_acc": np.float32(0.5), "robust_acc": 0.1, "params": 1000}})
    front = archive.front()
    assert [r["sample"]["a"] for r in front] == [4, 1, 3]  # sorted by size
    assert [len(f) for f in archive.fronts()] == [3, 1]
    # Re-adding a sample replaces its record instead of duplicating it.
    archive.add({"sample": {"a": 2}, "metrics": {"clean_acc": 0.95, "robust_acc": 0.5, "params": 9000}})
    assert len(archive) == 4 and {r["sample"]["a"] for r in archive.front()} == {4, 1, 2}
    path = tmp_path / "archive.json"
    text = archive.to_json(str(path))
    assert json.loads(text)["front"] == archive.front()
    restored = ParetoArchive.from_json(str(path))
    assert restored.records == archive.records
    assert restored.hypervolume() == pytest.approx(archive.hypervolume()) and archive.hypervolume() > 0
    with pytest.raises(ValueError, match="robust_acc"):
        archive.add({"sample": {"a": 5}, "metrics": {"clean_acc": 0.1, "params": 3}})
