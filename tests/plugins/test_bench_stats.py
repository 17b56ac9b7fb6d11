"""Statistics of a comparison on the benchmark table, and the comparison itself.

Every test runs on the shipped table, which may still be partial: regret is measured against
the best cell the table holds, the hypervolume against the front of the cells it holds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from robustnas.plugins.bench import (
    bootstrap_ci, compare_on_table, holm, load_benchmark, mean_ranks, normalised_hypervolume, paired_wilcoxon,
    plot_anytime, regret, regret_at_times, regret_curve, report_markdown, strip_timings, table_target,
)
from robustnas.plugins.errors import ConfigError

SMALL = {"strategies": ["random", "evolution", "optuna-nsga2"], "seeds": [0, 1, 2], "budget": 20}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("robust201-digits")


@pytest.fixture(scope="module")
def small_runs(bench):
    """The same small comparison, run twice."""
    return compare_on_table(bench, **SMALL), compare_on_table(bench, **SMALL)


# ---------------------------------------------------------------------- regret
@pytest.mark.parametrize("objective", ["pgd_acc", "clean_acc", "params"])
def test_regret_is_never_negative_for_any_cell_the_table_holds(bench, objective):
    target = table_target(bench, objective)
    entries = bench.entries()
    regrets = [regret([entry], target) for entry in entries]
    assert min(regrets) == 0.0  # the table's best cell
    assert all(r >= 0.0 for r in regrets)
    assert max(regrets) == pytest.approx(abs(target.best - target.worst))
    # a run that found nothing is charged with the worst cell, and a curve never rises
    assert regret([None, None], target) == pytest.approx(abs(target.best - target.worst))
    curve = regret_curve([None, *entries[::-1]], target)
    assert (curve >= 0).all() and (np.diff(curve) <= 0).all() and curve[-1] == 0.0


def test_the_tables_best_cell_has_regret_0_and_hypervolume_1_on_a_single_objective_front(bench):
    best = bench.best("pgd_acc")
    target = table_target(bench, "pgd_acc", hv_objectives=("pgd_acc",))
    assert target.best == best["pgd_acc"] and target.best_key == best["key"]
    assert regret([None, best], target) == 0.0
    assert normalised_hypervolume([None, best], target) == 1.0
    worst = min(bench.entries(), key=lambda e: e["pgd_acc"])
    assert normalised_hypervolume([worst], target) == 0.0
    assert normalised_hypervolume([], target) == 0.0


def test_the_true_front_scores_1_and_every_set_of_cells_lies_in_0_1(bench):
    target = table_target(bench)  # clean up, PGD up, params down
    assert normalised_hypervolume(bench.pareto_front(target.hv_objectives), target) == pytest.approx(1.0)
    assert normalised_hypervolume(bench.entries(), target) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    entries = bench.entries()
    for size in (1, 3, 10):
        subset = [entries[i] for i in rng.choice(len(entries), size=min(size, len(entries)), replace=False)]
        assert 0.0 <= normalised_hypervolume(subset, target) <= 1.0
    # the order of the found cells does not change a bit
    assert normalised_hypervolume(entries, target) == normalised_hypervolume(entries[::-1], target)


def test_regret_against_seconds_holds_the_last_finished_query():
    curve = [0.5, 0.2, 0.2, 0.0]
    seconds = [0.1, 0.2, 0.4, 0.8]
    at = regret_at_times(seconds, curve, [0.0, 0.1, 0.3, 0.8, 5.0], before=0.9)
    assert at.tolist() == [0.9, 0.5, 0.2, 0.0, 0.0]


# ---------------------------------------------------------------------- intervals, ranks, tests
def test_the_bootstrap_interval_of_zero_variance_has_zero_width(bench):
    target = table_target(bench)
    same = [regret([bench.entries()[0]], target)] * 20
    low, high = bootstrap_ci(same)
    assert low == high == same[0]


def test_the_bootstrap_interval_is_reproducible_and_holds_the_mean(bench):
    values = bench.values("pgd_acc")[:20]
    assert bootstrap_ci(values) == bootstrap_ci(values.copy())
    low, high = bootstrap_ci(values)
    assert low < float(np.mean(values)) < high
    assert values.min() <= low and high <= values.max()


def test_holm_multiplies_the_ith_smallest_p_by_m_minus_i_plus_1_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_a_strategy_that_always_finds_the_best_cell_beats_random_significantly(bench):
    target = table_target(bench)
    others = sorted((regret([e], target) for e in bench.entries()), reverse=True)
    random_regrets = [r for r in others if r > 0][:10]  # 10 seeds of a search that found a worse cell
    assert len(random_regrets) == 10
    scores = {"random": random_regrets, "oracle": [0.0] * 10, "copy": list(random_regrets)}
    tests = paired_wilcoxon(scores, baseline="random")
    assert tests["oracle"]["significant"] and tests["oracle"]["mean_difference"] < 0
    assert tests["oracle"]["p_holm"] == pytest.approx(min(1.0, 2 * tests["oracle"]["p"]))  # two comparisons
    # all-zero differences: nothing to test, never significant
    assert tests["copy"]["nonzero"] == 0 and tests["copy"]["p"] == 1.0 and not tests["copy"]["significant"]
    ranks = mean_ranks(scores)
    assert ranks["oracle"] == 1.0 and ranks["random"] == ranks["copy"] == 2.5


# ---------------------------------------------------------------------- the comparison
def test_a_comparison_run_twice_with_the_same_seeds_gives_identical_statistics_and_reports(small_runs):
    first, second = small_runs
    assert strip_timings(first) == strip_timings(second)
    assert report_markdown(first, seconds=False) == report_markdown(second, seconds=False)


def test_a_small_comparison_spends_its_budget_answers_from_the_table_and_names_each_strategy(bench, small_runs,
                                                                                             tmp_path):
    result, _ = small_runs
    assert len(result["units"]) == len(SMALL["strategies"]) * len(SMALL["seeds"])
    for unit in result["units"]:
        # on a partial table, misses are skipped: the budget buys queries of held cells (a
        # strategy may also stop by itself, e.g. when its mutations only repeat cells)
        assert unit["n_queries"] <= SMALL["budget"]
        if unit["strategy"] == "random" or bench.complete:
            assert unit["n_queries"] == SMALL["budget"]
        assert unit["failed"] == sum(not q["held"] for q in unit["queries"])
        for query in unit["queries"]:
            if query["held"]:
                assert query["pgd_acc"] == bench.query(_sample_of(bench, query["key"]))["pgd_acc"]
        assert 0.0 <= unit["regret"] <= abs(result["table"]["best"] - result["table"]["worst"])
        assert 0.0 <= unit["hypervolume"] <= 1.0
        assert unit["wall_seconds"] > 0
    for name in SMALL["strategies"]:
        stats = result["strategies"][name]
        assert stats["regret"]["ci_low"] <= stats["regret"]["mean"] <= stats["regret"]["ci_high"]
        assert len(result["curves"]["queries"][name]["mean"]) == SMALL["budget"]
    assert result["strategies"]["random"]["vs_baseline"]["regret"] is None
    assert json.loads(json.dumps(result)) == result  # plain JSON, no pickles
    report = report_markdown(result)
    for name in SMALL["strategies"]:
        assert f"| {name} |" in report
    for name in ("evolution", "optuna-nsga2"):
        assert f"`{name}` against `random`, regret:" in report
    assert "significant" in report and "Holm" in report
    png = plot_anytime(result, tmp_path / "anytime.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _sample_of(bench, key):
    return next(e["sample"] for e in bench.entries() if e["key"] == key)


def test_bad_comparison_arguments_are_refused_before_any_search(bench):
    with pytest.raises(ConfigError, match="enas.*random"):
        compare_on_table(bench, ["random", "enas"], seeds=[0], budget=2)
    with pytest.raises(ConfigError, match="latency_ms.*not measured"):  # not tabulated on any cell
        compare_on_table(bench, ["random"], seeds=[0], budget=2, objective="latency_ms")
    with pytest.raises(ConfigError, match="distinct"):
        compare_on_table(bench, ["random"], seeds=[0, 0], budget=2)
    with pytest.raises(ConfigError, match="budget"):
        compare_on_table(bench, ["random"], seeds=[0], budget=0)
    with pytest.raises(ConfigError, match="sampler"):
        compare_on_table(bench, ["optuna-nope"], seeds=[0], budget=2)
