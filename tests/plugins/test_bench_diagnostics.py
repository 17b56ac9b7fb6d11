"""One-shot diagnostics on the shipped benchmark table: supernet scores and their rank agreement
with the table, parameter-free shares, and zero-cost proxies at initialisation.

The supernets train on the table's own data and space for a few batches only: the tests check
what the diagnostics compute, not how good a supernet is (benchmarks/bench_diagnostics.py
measures that).
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch

from robustnas.plugins.bench import load_benchmark
from robustnas.plugins.bench._diagnostics import (
    architecture_log_probs, parameter_free_share, ranking_agreement, supernet_scores, table_cells,
    table_parameter_free_share, zero_cost_proxies,
)
from robustnas.plugins.errors import ConfigError
from robustnas.search_spaces.robust201 import LABELS, all_samples


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("robust201-digits")


@pytest.fixture(scope="module")
def bundle(bench):
    from robustnas.plugins.evaluator import load_dataset

    return load_dataset(bench.protocol.dataset, seed=bench.protocol.data_seed)


def _search(bench, bundle, strategy, batches=4):
    """Train ``strategy``'s supernet for one epoch of ``batches`` batches on the table's data and space."""
    from robustnas.plugins.nni import classification_evaluator, run_experiment

    torch.manual_seed(0)
    evaluator = classification_evaluator(bundle, max_epochs=1, limit_train_batches=batches)
    with tempfile.TemporaryDirectory() as workdir:
        result = run_experiment(bench.space(), strategy, evaluator, working_dir=workdir)
    return result.exported[0]


@pytest.fixture(scope="module")
def darts(bench, bundle):
    from nni.nas.strategy import DARTS

    strategy = DARTS()
    return strategy, _search(bench, bundle, strategy)


def _cell(ops):
    return dict(zip(LABELS, ops))


# ---------------------------------------------------------------------- ranking agreement
def test_kendall_tau_is_1_for_the_tables_own_values_and_minus_1_for_their_reverse(bench):
    values = bench.values("pgd_acc")
    same = ranking_agreement(bench, values)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["spearman"] == pytest.approx(1.0)
    assert same["n"] == len(bench) and same["p_value"] < 1e-6
    assert same["top_cell"]["key"] == bench.best("pgd_acc")["key"] and same["top_cell"]["percentile"] == 1.0
    assert ranking_agreement(bench, -values)["kendall_tau"] == pytest.approx(-1.0)
    # a metric to minimise is oriented too: the negated parameter count agrees with params
    assert ranking_agreement(bench, -bench.values("params"), metric="params")["kendall_tau"] == pytest.approx(1.0)


def test_kendall_tau_of_other_scores_lies_in_minus_1_1(bench):
    cells = bench.architectures()
    scores = np.random.default_rng(0).normal(size=len(cells))
    result = ranking_agreement(bench, scores, samples=cells)
    assert -1.0 <= result["kendall_tau"] <= 1.0 and 0.0 <= result["p_value"] <= 1.0
    clean = ranking_agreement(bench, bench.values("clean_acc"))  # another metric of the same cells
    assert -1.0 < clean["kendall_tau"] < 1.0
    with pytest.raises(ConfigError, match="scores for"):
        ranking_agreement(bench, scores[:-1], samples=cells)


def test_table_cells_draws_n_held_cells_with_a_fixed_seed_or_all_when_it_holds_fewer(bench):
    first, again = table_cells(bench, n=10, seed=0), table_cells(bench, n=10, seed=0)
    assert first == again and len(first) == 10
    assert all(cell in bench for cell in first)
    assert table_cells(bench, n=10, seed=1) != first
    assert len(table_cells(bench, n=len(bench) + 50)) == len(bench)
    with pytest.raises(ConfigError, match="n must be"):
        table_cells(bench, n=1)


# ---------------------------------------------------------------------- parameter-free shares
def test_parameter_free_share_counts_none_skip_and_pooling_edges():
    convs = _cell(["conv_3x3"] * 6)
    free = _cell(["none", "skip_connect", "avg_pool_3x3", "none", "skip_connect", "avg_pool_3x3"])
    assert parameter_free_share([convs])["parameter_free"] == 0.0
    assert parameter_free_share([free])["parameter_free"] == 1.0
    both = parameter_free_share([convs, free])
    assert both["samples"] == 2 and both["edges"] == 12
    assert both["parameter_free"] == pytest.approx(0.5)
    assert both["none"] == both["skip_connect"] == both["avg_pool_3x3"] == pytest.approx(2 / 12)
    assert both["ops"] == pytest.approx({"avg_pool_3x3": 2 / 12, "conv_3x3": 0.5, "none": 2 / 12,
                                         "skip_connect": 2 / 12})
    with pytest.raises(ConfigError, match="no edges"):
        parameter_free_share([])


def test_canonical_share_maps_an_export_to_its_isomorphism_class_representative():
    # skip then conv_1x1 equals conv_1x1 then skip, and both paths to node 3 then share one conv:
    # the representative keeps one convolution where the export has two
    export = {"cell/0_1": "skip_connect", "cell/0_2": "avg_pool_3x3", "cell/1_2": "conv_1x1",
              "cell/0_3": "none", "cell/1_3": "conv_1x1", "cell/2_3": "avg_pool_3x3"}
    assert parameter_free_share([export])["parameter_free"] == pytest.approx(4 / 6)
    assert parameter_free_share([export], canonical=True)["parameter_free"] == pytest.approx(5 / 6)
    # node 1 is dead (0->1 is none), so are the edges out of it; the rest computes conv(conv(x)) + conv(x),
    # which the representative writes with 2 convolutions where this sample has 5
    dead = _cell(["none", "conv_3x3", "conv_3x3", "conv_3x3", "conv_3x3", "conv_3x3"])
    assert parameter_free_share([dead])["parameter_free"] == pytest.approx(1 / 6)
    assert parameter_free_share([dead], canonical=True)["parameter_free"] == pytest.approx(4 / 6)


def test_table_share_of_the_top_cells_and_of_all_cells(bench):
    share = table_parameter_free_share(bench, metric="pgd_acc", top=1)
    best = bench.best("pgd_acc")
    assert share["top"]["cells"] == 1 and share["top"]["keys"] == [best["key"]]
    assert share["top"]["parameter_free"] == parameter_free_share([best["sample"]])["parameter_free"]
    assert share["all"] == {"cells": len(bench), **parameter_free_share(bench.architectures())}
    five = table_parameter_free_share(bench, top=0.05)
    assert five["top"]["cells"] == int(np.ceil(0.05 * len(bench)))
    assert five["top"]["threshold"] <= best["pgd_acc"]
    for bad in (0, 1.5, "5%"):
        with pytest.raises(ConfigError, match="top must be"):
            table_parameter_free_share(bench, top=bad)


# ---------------------------------------------------------------------- supernet scores
def test_a_trained_darts_supernet_scores_its_export_highest_of_the_whole_space(darts):
    strategy, export = darts
    samples = all_samples()
    scores = supernet_scores(strategy, samples)
    assert samples[int(np.argmax(scores))] == export
    log_probs = architecture_log_probs(strategy)
    assert sorted(log_probs) == sorted(LABELS)
    for table in log_probs.values():  # a softmax per edge
        assert sum(np.exp(v) for v in table.values()) == pytest.approx(1.0)
    assert scores.max() == pytest.approx(sum(log_probs[label][export[label]] for label in LABELS))


def test_training_the_architecture_changes_the_scores(bench, bundle, darts):
    from nni.nas.strategy import DARTS

    trained, _ = darts
    frozen = DARTS(warmup_epochs=1)  # the same start (seed 0), but no architecture step in its one epoch
    _search(bench, bundle, frozen)
    cells = bench.architectures()
    before, after = supernet_scores(frozen, cells), supernet_scores(trained, cells)
    assert np.all(np.isfinite(before)) and np.all(np.isfinite(after))
    assert np.abs(after - before).max() > 1e-5


def test_a_robust_darts_strategy_also_scores_its_export_highest(bench, bundle):
    from robustnas.strategies import DSRNA

    # without its cap on parameter-free edges (tests/strategies/test_export.py), DSRNA's export is
    # DARTS' derivation: the best-scored cell among those without `none`
    strategy = DSRNA(metric="jacobian", dataset=bundle, eval_batches=1, eval_pgd_steps=1, max_parameter_free=None)
    export = _search(bench, bundle, strategy, batches=2)
    samples = [s for s in all_samples() if "none" not in s.values()]
    assert samples[int(np.argmax(supernet_scores(strategy, samples)))] == export
    result = ranking_agreement(bench, strategy, n=30)
    assert result["n"] == 30 and -1.0 <= result["kendall_tau"] <= 1.0


def test_tamnas_scores_a_cell_by_its_inherited_weight_metrics(bench, bundle):
    from robustnas.strategies import get_strategy

    strategy = get_strategy("tamnas", dataset=bundle, attack_steps=1, population_size=2, generations=1,
                            eval_batches=1, bn_batches=1, eval_pgd_steps=2, seed=0)
    _search(bench, bundle, strategy, batches=2)
    cells = bench.architectures()[:3]
    pgd = supernet_scores(strategy, cells)
    assert list(pgd) == [strategy.evaluate_subnet(c)["pgd_acc"] for c in cells]
    # the inherited subnet is the table's network: the same parameter count (negated: larger = preferred)
    assert list(supernet_scores(strategy, cells, metric="params")) == [-bench.query(c)["params"] for c in cells]
    with pytest.raises(ConfigError, match="cannot score"):
        supernet_scores(strategy, cells, metric="robust_acc")
    with pytest.raises(ConfigError, match="does not measure 'flops'"):  # not one of its objectives
        supernet_scores(strategy, cells, metric="flops")


def test_strategies_without_a_score_of_their_own_and_bad_samples_are_refused(bench, darts):
    from nni.nas.strategy import DARTS, Random

    with pytest.raises(ConfigError, match="has not been run"):
        supernet_scores(DARTS(), bench.architectures())
    with pytest.raises(ConfigError, match="not a one-shot strategy"):
        supernet_scores(Random(), bench.architectures())
    strategy, _ = darts
    with pytest.raises(ConfigError, match="valid choices"):
        supernet_scores(strategy, [_cell(["conv_5x5"] * 6)])
    with pytest.raises(ConfigError, match="no choice for label"):
        supernet_scores(strategy, [{"cell/0_1": "none"}])


# ---------------------------------------------------------------------- zero-cost proxies
def test_zero_cost_proxies_are_finite_and_deterministic(bench):
    cells = table_cells(bench, n=6, seed=0)
    first = zero_cost_proxies(bench, cells=cells, batch=32)
    again = zero_cost_proxies(bench, cells=cells, batch=32)
    assert first["n"] == 6 and [r["key"] for r in first["cells"]] == [bench.key(c) for c in cells]
    assert first["cells"] == again["cells"] and first["spearman"] == again["spearman"]
    for row, cell in zip(first["cells"], cells):
        entry = bench.query(cell)
        assert np.isfinite(row["jacobian_norm"]) and row["jacobian_norm"] > 0
        assert np.isfinite(row["bound"]) and row["bound"] <= 0  # minus a cross-entropy
        assert row["params"] == entry["params"] and row["pgd_acc"] == entry["pgd_acc"]
    for proxy in ("jacobian", "bound", "params"):
        assert first["spearman"][proxy]["n"] == 6 and -1.0 <= first["spearman"][proxy]["rho"] <= 1.0
    settings = first["settings"]
    assert settings["q"] == 1 and settings["norm"] == "linf" and settings["batch"] == 32
    assert settings["eps"] == bench.query(cells[0])["eps"]  # the protocol's threat
    # a different initialisation seed gives different values
    other = zero_cost_proxies(bench, cells=cells[:3], batch=32, seed=1)
    assert [r["jacobian_norm"] for r in other["cells"]] != [r["jacobian_norm"] for r in first["cells"][:3]]
    with pytest.raises(ConfigError, match="bound_reduction"):
        zero_cost_proxies(bench, cells=cells, bound_reduction="worst")
