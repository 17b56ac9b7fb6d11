"""The library's one hypervolume (strategies/_hypervolume.py behind pareto.hypervolume) and its one
reference rule (pareto.default_reference, which the report and the Optuna plots call)."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest

from robustnas.plugins.optuna import hypervolume_reference as study_reference
from robustnas.plugins.report import hypervolume_reference
from robustnas.strategies._hypervolume import hypervolume_of_losses
from robustnas.strategies.pareto import default_reference, hypervolume


def grid_volume(losses: np.ndarray, reference: np.ndarray) -> float:
    """Exact volume by brute force: every cell of the grid of all coordinates, kept when a point
    dominates its lower corner."""
    axes = [np.unique(np.append(losses[:, j], reference[j])) for j in range(len(reference))]
    volume = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        corner = np.array([axes[j][k] for j, k in enumerate(cell)])
        if np.any(np.all(losses <= corner, axis=1)):
            volume += float(np.prod([axes[j][k + 1] - axes[j][k] for j, k in enumerate(cell)]))
    return volume


def random_fronts(seed: int, count: int, max_points: int, objectives: tuple[int, ...]):
    """Random loss sets below the reference 1.1: uniform points, points on a sphere (every one on
    the front), and points rounded to one decimal (ties and repeats)."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        m = objectives[k % len(objectives)]
        points = rng.random((int(rng.integers(1, max_points + 1)), m)) + 0.01
        if k % 3 == 1:
            points = points / np.linalg.norm(points, axis=1, keepdims=True)
        elif k % 3 == 2:
            points = np.round(points, 1)
        yield points, np.full(m, 1.1)


def test_hypervolume_is_the_exact_volume_of_a_brute_force_grid():
    for points, reference in random_fronts(seed=3, count=60, max_points=7, objectives=(1, 2, 3, 4)):
        assert hypervolume_of_losses(points, reference) == pytest.approx(grid_volume(points, reference), rel=1e-12)


def test_staircase_of_three_points_covers_six_unit_squares():
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.5, 3.5]])  # the last one is dominated
    assert hypervolume_of_losses(points, np.array([4.0, 4.0])) == 6.0


def test_hypervolume_gives_optunas_numbers_to_the_bit_on_random_fronts():
    wfg = pytest.importorskip("optuna._hypervolume")  # the private module we no longer import
    for points, reference in random_fronts(seed=0, count=300, max_points=30, objectives=(1, 2, 3, 4, 5)):
        assert hypervolume_of_losses(points, reference) == wfg.compute_hypervolume(points, reference)


def test_hypervolume_refuses_a_point_beyond_the_reference_and_is_infinite_for_an_infinite_one():
    with pytest.raises(ValueError, match="reference"):
        hypervolume_of_losses(np.array([[0.5, 2.0]]), np.array([1.0, 1.0]))
    assert hypervolume_of_losses(np.array([[0.5, 0.5]]), np.array([1.0, np.inf])) == float("inf")
    assert hypervolume_of_losses(np.zeros((0, 3)), np.ones(3)) == 0.0


def test_ideal_divides_by_the_box_between_ideal_and_reference():
    points = [[0.9, 0.5, 20_000.0], [0.7, 0.6, 8_000.0]]
    directions = ["maximize", "maximize", "minimize"]
    reference = [0.0, 0.0, 44_000.0]
    raw = hypervolume(points, reference, directions)
    assert raw > 0
    assert hypervolume(points, reference, directions, ideal=(1.0, 1.0, 0.0)) == raw / 44_000.0
    with pytest.raises(ValueError, match="ideal has 2 values"):
        hypervolume(points, reference, directions, ideal=(1.0, 1.0))


def test_one_reference_rule_serves_archives_reports_and_studies():
    names = ("clean_acc", "robust_acc", "params")
    points = [[0.9, 0.4, 20_000], [0.7, 0.5, 12_000]]
    assert default_reference(names, points) == [0.0, 0.0, 20_000.0]
    assert default_reference(names, points, upper={"params": 50_000}) == [0.0, 0.0, 50_000.0]
    assert default_reference(names, points, scale=1.1) == [0.0, 0.0, 1.1 * 20_000]
    # objectives without a metric name start from their worst observed value, in either direction
    assert default_reference(None, points, directions=["maximize", "maximize", "minimize"]) == [0.7, 0.4, 20_000.0]
    with pytest.raises(ValueError, match="no reference for objective 'params'"):
        default_reference(names)
    with pytest.raises(ValueError, match="metric_names or directions"):
        default_reference(None, points)

    rows = [{"metrics": {"clean_acc": c, "robust_acc": r, "params": p}} for c, r, p in points]
    assert hypervolume_reference(rows) == [0.0, 0.0, 1.1 * 20_000]
    assert hypervolume_reference([]) == [0.0, 0.0, 1.1]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("names, expected", [
    (["clean_acc", "params"], lambda v: [0.0, float(v[:, 1].max())]),
    (["accuracy", "size"], lambda v: [float(v[:, 0].min()), float(v[:, 1].max())]),
])
def test_a_study_reference_is_the_library_rule_on_its_completed_trials(names, expected):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(names)
    study.optimize(lambda t: (t.suggest_float("a", 0.2, 0.9), t.suggest_float("b", 100, 900)), n_trials=6)
    values = np.array([t.values for t in study.trials])
    assert study_reference(study) == expected(values)
