"""The head-to-head harness and the command line, end to end on digits with a tiny budget."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from robustnas.plugins import compare as compare_mod
from robustnas.plugins.cli import main
from robustnas.plugins.compare import CompareConfig, compare
from robustnas.plugins.report import hypervolume_reference, summarise
from robustnas.strategies.pareto import hypervolume

TINY = {
    "preset": "demo",
    "space_kwargs": {"width": 4, "num_cells": 4},
    "strategies": ["random", "optuna-nsga2"],
    "seeds": [0],
    "budget": 2,
    "search_epochs": 1,
    "top_k": 1,
    # eps 0.1 (half the digits default) so that one epoch of PGD training leaves some robust accuracy.
    "search": {"recipe": "standard", "epochs": 1, "batch_size": 64, "attack": "fast", "n_examples": 16, "eps": 0.1},
    "final": {"recipe": "pgd", "epochs": 2, "batch_size": 64, "attack": "fast", "n_examples": 32, "eps": 0.1},
}


def _config(out: Path, **changes) -> CompareConfig:
    return CompareConfig.from_options({**TINY, "out": str(out), **changes})


@pytest.fixture(scope="module")
def sampler_calls():
    """Keyword arguments of every ``make_sampler`` call made by the module's compare run."""
    return []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, sampler_calls):
    import robustnas.plugins.optuna as optuna_plugin

    real = optuna_plugin.make_sampler

    def spy(name, seed=None, **kwargs):
        sampler_calls.append({"name": name, "seed": seed, **kwargs})
        return real(name, seed=seed, **kwargs)

    out = tmp_path_factory.mktemp("compare") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(optuna_plugin, "make_sampler", spy)
        return out, compare(_config(out), progress=False)


def test_nsga2_population_is_sized_from_the_budget(tiny_run, sampler_calls):
    # Optuna's default population (50) would make a 2-candidate NSGA-II plain random search.
    assert sampler_calls == [{"name": "nsga2", "seed": 0, "population_size": 2}]


@pytest.mark.parametrize("budget, population", [(1, 2), (4, 2), (8, 3), (12, 4), (50, 17), (1000, 50)])
def test_population_for_gives_about_three_generations(budget, population):
    assert compare_mod.population_for(budget) == population


def test_evolutionary_defaults_fill_only_what_is_missing():
    assert compare_mod.evolutionary_defaults("optuna-nsga3", 12, {}) == {"population_size": 4}
    assert compare_mod.evolutionary_defaults("evolution", 12, {}) == {"population_size": 4, "sample_size": 2}
    assert compare_mod.evolutionary_defaults("optuna-nsga2", 12, {"population_size": 9}) == {"population_size": 9}
    assert compare_mod.evolutionary_defaults("evolution", 12, {"sample_size": 1}) == {
        "population_size": 4, "sample_size": 1}
    for name in ("random", "optuna-tpe", "arnas", "tamnas"):
        assert compare_mod.evolutionary_defaults(name, 12, {"x": 1}) == {"x": 1}


def test_seeded_passes_the_run_seed_to_strategies_that_take_one():
    assert compare_mod.seeded("random", 3, {}) == {"seed": 3}
    assert compare_mod.seeded("evolution", 3, {"population_size": 4}) == {"population_size": 4, "seed": 3}
    assert compare_mod.seeded("tamnas", 3, {}) == {"seed": 3}
    assert compare_mod.seeded("random", 3, {"seed": 7}) == {"seed": 7}  # the user's own seed wins
    for name in ("arnas", "dsrna", "darts", "optuna-nsga2"):  # torch's generator / make_sampler(seed=...)
        assert compare_mod.seeded(name, 3, {}) == {}


def test_random_search_repeats_under_its_seed_and_differs_across_seeds(tmp_path):
    config = _config(tmp_path / "seeded", strategies=["random"], budget=1, top_k=1)

    def samples(seed):
        return [entry["record"]["sample"] for entry in compare_mod.run_search(config, "random", seed, progress=False)]

    first = samples(0)
    assert len(first) == 1
    assert samples(0) == first
    assert samples(1) != first


def test_compare_writes_results_report_and_plot(tiny_run):
    out, result = tiny_run
    for name in ("results.json", "report.md", "pareto.png", "optuna.journal"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert sorted(data["done"]) == [["optuna-nsga2", 0], ["random", 0]]
    for row in data["rows"]:
        m = row["metrics"]
        assert 0.0 <= m["robust_acc"] <= m["clean_acc"] <= 1.0
        assert m["params"] > 0 and row["search_cost"]["candidates"] >= 1
        assert row["record"]["space"] == "arnas"


def test_report_has_one_row_per_strategy_traced_to_results_json(tiny_run):
    out, result = tiny_run
    rows = json.loads((out / "results.json").read_text())["rows"]
    report = (out / "report.md").read_text()
    table_rows = [line for line in report.splitlines() if line.startswith("| ") and "strategy" not in line]
    assert [line.split("|")[1].strip() for line in table_rows] == ["random", "optuna-nsga2"]
    # Recompute every figure from results.json alone.
    for entry in summarise(rows, ["random", "optuna-nsga2"]):
        mine = [r for r in rows if r["strategy"] == entry["strategy"]]
        best = max(mine, key=lambda r: (r["metrics"]["robust_acc"], r["metrics"]["clean_acc"]))
        assert entry["best_clean_acc"] == max(r["metrics"]["clean_acc"] for r in mine)
        assert entry["best_robust_acc"] == best["metrics"]["robust_acc"]
        assert entry["params_of_best"] == best["metrics"]["params"]
        assert entry["search_seconds"] == mine[0]["search_cost"]["wall_seconds"]
        points = [[r["metrics"][k] for k in ("clean_acc", "robust_acc", "params")] for r in mine]
        reference = hypervolume_reference(rows)
        box = reference[2]  # the reference box: accuracies 0 to 1, parameters 0 to the reference
        assert entry["hypervolume"] == pytest.approx(
            hypervolume(points, reference, ["maximize", "maximize", "minimize"]) / box)
        assert 0.0 <= entry["hypervolume"] <= 1.0
        if best["metrics"]["robust_acc"] > 0:  # a box of positive volume under the best point
            assert entry["hypervolume"] >= best["metrics"]["clean_acc"] * best["metrics"]["robust_acc"] * (
                reference[2] - best["metrics"]["params"]) / box * (1 - 1e-9)
        line = next(l for l in table_rows if l.split("|")[1].strip() == entry["strategy"])
        assert f"{entry['best_robust_acc']:.3f}" in line and f"{entry['params_of_best']:,.0f}" in line
    assert hypervolume_reference(rows)[2] == pytest.approx(1.1 * max(r["metrics"]["params"] for r in rows))


def test_resume_after_interruption_does_not_redo_finished_units(tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = _config(out, strategies=["random", "optuna-random"])

    def stop_after_first(strategy, seed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(config, progress=False, on_unit_done=stop_after_first)
    assert json.loads((out / "results.json").read_text())["done"] == [["random", 0]]

    searched = []
    real = compare_mod.run_search
    monkeypatch.setattr(compare_mod, "run_search", lambda c, s, seed, progress=True: searched.append(s) or real(c, s, seed))
    with pytest.raises(ValueError, match="--resume"):
        compare(config, progress=False)
    result = compare(config, resume=True, progress=False)
    assert searched == ["optuna-random"]
    assert sorted({r["strategy"] for r in result["rows"]}) == ["optuna-random", "random"]


def test_resume_refuses_a_folder_from_another_configuration(tiny_run):
    out, _ = tiny_run
    with pytest.raises(ValueError, match="another configuration"):
        compare(_config(out, budget=3), resume=True, progress=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"strategies": ["nope"]}, "unknown strategy 'nope'"),
        ({"space": "nope"}, "unknown space 'nope'"),
        ({"budget": 0}, "budget must be a positive integer"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"colour": "red"}, "unknown compare option"),
    ],
)
def test_bad_compare_options_raise_clear_errors(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path / "x", **changes)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_output_folder_is_reported(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(PermissionError, match="not writable"):
        compare(_config(locked / "run"), progress=False)


def test_unwritable_output_path_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="not writable"):
        compare(_config(blocker / "run"), progress=False)


def test_cli_search_then_evaluate_round_trips_a_record(tmp_path, capsys):
    out = tmp_path / "search"
    flags = ["--space", "arnas", "--budget", "2", "--top-k", "1", "--epochs", "1", "--recipe", "standard",
             "--n-examples", "16", "--out", str(out), "-q"]
    assert main(["search", "--strategy", "random", "--seed", "0", *flags]) == 0
    path = out / "random-seed0.json"
    records = json.loads(path.read_text())
    assert len(records) == 1 and records[0]["record"]["space"] == "arnas"
    capsys.readouterr()
    assert main(["evaluate", str(path), "--epochs", "1", "--recipe", "pgd", "--n-examples", "16",
                 "--output", str(tmp_path / "metrics.json")]) == 0
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluated["record"] == records[0]["record"]
    m = evaluated["metrics"]
    assert m["clean_acc"] > 0.1 and m["robust_acc"] <= m["clean_acc"] and not math.isnan(m["pgd_acc"])


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    assert main(["compare", "--strategies", "nope", "--out", str(tmp_path / "r"), "-q"]) == 2
    assert "unknown strategy 'nope'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_list_names_every_registry(capsys):
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"arnas", "dsrna", "tiny"} <= set(listed["spaces"])
    assert {"arnas", "dsrna", "tamnas", "random", "optuna-nsga2"} <= set(listed["strategies"])
    assert "digits" in listed["datasets"] and "demo" in listed["presets"]


def test_top_k_ranks_by_autoattack_else_by_pgd_accuracy():
    def rec(i, clean, robust_key, robust, params):
        return {"sample": {"i": i}, "metrics": {"clean_acc": clean, robust_key: robust, "params": params}}

    # Supernet scores (pgd_acc only): the most robust member of the first front comes first,
    # not the smallest one, and a dominated record comes after the whole front.
    pgd_only = [rec(0, 0.9, "pgd_acc", 0.1, 100), rec(1, 0.8, "pgd_acc", 0.5, 500),
                rec(2, 0.7, "pgd_acc", 0.4, 600), rec(3, 0.95, "pgd_acc", 0.3, 300)]
    assert [r["sample"]["i"] for r in compare_mod._top_k(pgd_only, 4)] == [1, 3, 0, 2]
    with_aa = [rec(0, 0.9, "robust_acc", 0.2, 100), rec(1, 0.9, "robust_acc", 0.6, 900)]
    assert [r["sample"]["i"] for r in compare_mod._top_k(with_aa, 1)] == [1]
    exported = [{"sample": {"i": 7}, "metrics": {}}, {"sample": {"i": 7}, "metrics": {}}]
    assert compare_mod._top_k(exported, 2) == [exported[0]]  # duplicates dropped, order kept
