"""The head-to-head comparison on the table: partial-table modes, one-shot units, resuming
from the journal, live cells, and ``robustnas compare --preset bench``."""

from __future__ import annotations

import json

import pytest

from robustnas.plugins import _parallel
from robustnas.plugins.bench import compare_on_table, load_benchmark, report_markdown, strip_timings
from robustnas.plugins.bench._oneshot import LiveCells, run_one_shot
from robustnas.plugins.cli import main
from robustnas.plugins.errors import ConfigError


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("robust201-digits")


def test_on_a_partial_table_random_search_spends_its_budget_on_held_cells_and_counts_the_misses(bench):
    if bench.complete:
        pytest.skip("the table is complete: no query misses")
    auto = compare_on_table(bench, ["random"], seeds=[0, 1], budget=8)
    for unit in auto["units"]:
        assert unit["n_queries"] == 8 and unit["failed"] == 0
        assert all(q["held"] for q in unit["queries"])
        assert unit["skipped"] > 0  # at a few percent coverage most random draws miss
    fail = compare_on_table(bench, ["random"], seeds=[0, 1], budget=8, missing="fail")
    for unit in fail["units"]:
        assert unit["n_queries"] == 8 and unit["skipped"] == 0
        assert unit["failed"] == sum(not q["held"] for q in unit["queries"]) > 0
    assert "misses skipped" in report_markdown(auto)


def test_a_one_shot_unit_trains_its_supernet_and_looks_its_export_up(bench):
    messages = []
    result = compare_on_table(bench, ["random", "darts"], seeds=[0, 1], budget=4, epochs=1, batches=3,
                              missing="fail", progress=messages.append)
    darts = [u for u in result["units"] if u["strategy"] == "darts"]
    for unit in darts:
        assert unit["kind"] == "one-shot"
        assert unit["n_queries"] == 1  # DARTS exports one cell
        query = unit["queries"][0]
        assert query["seconds"] > 0  # the supernet's training time
        if query["held"]:
            assert query["pgd_acc"] == bench.query(unit["best"]["sample"])["pgd_acc"]
        assert 0.0 <= unit["regret"] <= abs(result["table"]["best"] - result["table"]["worst"])
    assert result["strategies"]["darts"]["kind"] == "one-shot"
    assert any("darts seed 1" in m for m in messages)
    # the same seed trains the same supernet: the same export
    again = run_one_shot(bench, "darts", 0, epochs=1, batches=3, missing="fail")
    assert bench.key(again.queries[0][1]) == darts[0]["queries"][0]["key"]


def test_a_killed_comparison_resumes_from_its_journal_without_running_finished_units(bench, tmp_path):
    journal = tmp_path / "units.jsonl"
    first = compare_on_table(bench, ["random", "optuna-nsga2"], seeds=[0, 1], budget=6, journal=journal)
    lines = journal.read_text().splitlines()
    assert len(lines) == 4
    journal.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])  # killed mid-write
    messages = []
    second = compare_on_table(bench, ["random", "optuna-nsga2"], seeds=[0, 1], budget=6, journal=journal,
                              progress=messages.append)
    assert sum("done in an earlier run" in m for m in messages) == 2
    assert strip_timings(second) == strip_timings(first)


def test_live_cells_are_written_once_and_read_back_and_a_cut_line_is_ignored(tmp_path):
    path = tmp_path / "live.jsonl"
    cells = LiveCells(path)
    cells.add("k1", {"pgd_acc": 0.5, "key": "k1"})
    cells.add("k2", {"pgd_acc": 0.25, "key": "k2"})
    with open(path, "a") as f:
        f.write('{"key": "k3", "metr')
    again = LiveCells(path)
    assert len(again) == 2 and again.get("k2")["pgd_acc"] == 0.25 and "k3" not in again


def test_bad_one_shot_settings_are_refused_before_any_training(bench):
    with pytest.raises(ConfigError, match="epochs"):
        compare_on_table(bench, ["darts"], seeds=[0], budget=2, epochs=0)
    with pytest.raises(ConfigError, match="missing"):
        compare_on_table(bench, ["darts"], seeds=[0], budget=2, missing="nearest")
    with pytest.raises(ConfigError, match="not compared"):
        compare_on_table(bench, ["random"], seeds=[0], budget=2, strategy_kwargs={"arnas": {}})


def test_compare_preset_bench_runs_three_strategies_and_three_seeds_and_writes_its_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "bench.yaml"
    config.write_text("preset: bench\nstrategies: [random, evolution, optuna-nsga2]\nseeds: [0, 1, 2]\n"
                      "budget: 5\nfinal: {recipe: fgsm-rs, epochs: 1, n_examples: 32}\n")
    assert main(["--threads", "1", "compare", "--config", str(config), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    for name in ("random", "evolution", "optuna-nsga2"):
        assert f"| {name} |" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["seeds"] == [0, 1, 2] and len(result["units"]) == 9
    retrain = json.loads((out / "retrain.json").read_text())
    for row in retrain["strategies"].values():
        assert 0.0 <= row["metrics"]["robust_acc"] <= row["metrics"]["clean_acc"] <= 1.0
    assert (out / "anytime.png").read_bytes()[:4] == b"\x89PNG"
    assert "[9/9] optuna-nsga2 seed 2" in (out / "run.log").read_text()
    # a second run needs --resume, and then runs nothing again
    assert main(["compare", "--config", str(config), "--out", str(out), "-q"]) == 2
    assert "--resume" in capsys.readouterr().err
    # where the units run is not part of the settings: another --jobs resumes (and starts no engine here)
    assert main(["compare", "--config", str(config), "--out", str(out), "-q", "--resume", "--jobs", "2"]) == 0
    assert (out / "run.log").read_text().count("done in an earlier run") == 9
    assert "job(s) on" not in (out / "run.log").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not _parallel.engine_available(), reason="jobs > 1 runs on Ray: pip install 'robustnas[ray]'")
def test_two_jobs_on_ray_give_the_queries_and_statistics_of_one_job(bench, tmp_path):
    settings = dict(strategies=["random", "optuna-tpe", "dsrna-bound"], seeds=[0, 1], budget=5, epochs=1, batches=2)
    one = compare_on_table(bench, **settings, live=tmp_path / "one.jsonl", journal=tmp_path / "one-units.jsonl")
    lines = []
    two = compare_on_table(bench, **settings, live=tmp_path / "two.jsonl", journal=tmp_path / "two-units.jsonl",
                           jobs=2, progress=lines.append)
    assert any("2 job(s) on a local Ray instance" in line for line in lines)
    assert strip_timings(two) == strip_timings(one)  # each unit seeds itself; one torch thread in both
    assert len(LiveCells(tmp_path / "two.jsonl")) == len(LiveCells(tmp_path / "one.jsonl"))  # written by the workers
    assert len((tmp_path / "two-units.jsonl").read_text().splitlines()) == 6
    with pytest.raises(ConfigError, match="jobs must be a positive integer"):
        compare_on_table(bench, ["random"], seeds=[0], budget=2, jobs=0)


def test_compare_preset_bench_refuses_flags_it_does_not_use_and_dry_run_writes_nothing(tmp_path, capsys):
    assert main(["compare", "--preset", "bench", "--eps", "0.1", "--out", str(tmp_path / "a")]) == 2
    assert "--eps" in capsys.readouterr().err
    assert main(["compare", "--preset", "bench", "--dry-run", "--out", str(tmp_path / "b")]) == 0
    assert "180 units" in capsys.readouterr().out
    assert not (tmp_path / "b").exists()
