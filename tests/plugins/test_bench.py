"""The robustness benchmark: build (resumable, killable), the shipped table, NNI and Optuna on it."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robustnas.plugins.bench import (
    BenchmarkObjective, Plan, Protocol, TableEvaluator, build_table, load_benchmark, pack_table, read_rows,
)
from robustnas.plugins.bench._build import plan_tasks
from robustnas.plugins.bench._spaces import space_adapter
from robustnas.plugins.errors import ConfigError, DataError
from robustnas.search_spaces.robust201 import LABELS, canonical_key

TINY = Protocol(epochs=1, pgd_steps=2, aa_examples=20)
TINY_PLAN = Plan(aa_random=1, aa_top=0, seed_cells=1, extra_seeds=(1,), validity_cells=0)


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("robust201-digits")


# ---------------------------------------------------------------------- the build
def _build_script(folder: Path, limit: int) -> str:
    return (
        "import warnings; warnings.filterwarnings('ignore')\n"
        "from robustnas.plugins.bench import Plan, Protocol, build_table\n"
        f"build_table({str(folder)!r}, protocol=Protocol(epochs=1, pgd_steps=2, aa_examples=20), "
        f"plan=Plan(aa_random=1, aa_top=0, seed_cells=1, extra_seeds=(1,), validity_cells=0), limit={limit}, quiet=True)\n"
    )


def test_build_killed_with_sigkill_resumes_with_nothing_lost_or_duplicated(tmp_path):
    folder = tmp_path / "table"
    proc = subprocess.Popen([sys.executable, "-c", _build_script(folder, 50)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows_path = folder / "rows.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(read_rows(rows_path)) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_rows(rows_path)
    assert len(before) >= 2
    counts = build_table(folder, protocol=TINY, plan=TINY_PLAN, limit=3, quiet=True)
    rows = read_rows(rows_path)
    assert sum(counts.values()) == 3
    ids = [(r["phase"], r["key"], r["seed"]) for r in rows]
    assert len(ids) == len(set(ids)) == len(before) + 3
    keys = space_adapter("robust201").keys()
    planned = [t.id for t in plan_tasks(keys, TINY_PLAN)][: len(ids)]
    assert set(ids) == set(planned)  # the first tasks of the plan, each exactly once
    first = rows[0]
    assert first["phase"] == "main" and 0.0 <= first["metrics"]["pgd_acc"] <= first["metrics"]["clean_acc"] <= 1.0
    assert "robust_acc" in first["metrics"] and first["metrics"]["params"] > 10_000
    log = (folder / "build.log").read_text()
    assert "ETA" in log and "tasks done" in log


def test_a_line_cut_short_by_a_kill_is_dropped_and_cut_from_the_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = json.dumps({"phase": "main", "key": "k", "seed": 0, "metrics": {}})
    path.write_text(good + "\n" + good[:17])
    assert len(read_rows(path)) == 1
    read_rows(path, repair=True)
    assert path.read_text() == good + "\n"


def test_a_corrupt_line_inside_the_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"phase": \n{"phase": "main"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl: line 1"):
        read_rows(path)


def test_a_build_folder_refuses_another_protocol(tmp_path):
    build_table(tmp_path, protocol=TINY, plan=TINY_PLAN, limit=0, quiet=True)
    with pytest.raises(ConfigError, match="another protocol"):
        build_table(tmp_path, protocol=Protocol(epochs=2), plan=TINY_PLAN, limit=0, quiet=True)


def test_build_arguments_are_checked_before_any_file_is_written(tmp_path):
    with pytest.raises(ConfigError, match="phase"):
        build_table(tmp_path / "a", phases=("main", "mian"))
    with pytest.raises(ConfigError, match="workers"):
        build_table(tmp_path / "b", workers=0)
    with pytest.raises(ValueError, match="recipe"):
        Protocol(recipe="adam")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_plan_measures_the_first_cells_of_one_fixed_random_order():
    keys = space_adapter("robust201").keys()
    tasks = plan_tasks(keys, Plan())
    mains = [t for t in tasks if t.phase == "main"]
    assert len(mains) == 6466 and len({t.key for t in mains}) == 6466
    assert sum(t.autoattack for t in mains) == 200
    assert sum(t.phase == "seed" for t in tasks) == 600
    assert sum(t.phase == "validity" for t in tasks) == 100
    assert plan_tasks(keys, Plan()) == tasks  # the order is fixed


# ---------------------------------------------------------------------- the shipped table
def test_every_shipped_accuracy_is_in_range_and_robust_never_above_clean(bench):
    assert len(bench) > 0
    for entry in bench.entries():
        for metric in ("clean_acc", "fgsm_acc", "pgd_acc"):
            assert 0.0 <= entry[metric] <= 1.0
        assert entry["pgd_acc"] <= entry["clean_acc"]
        if entry["robust_acc"] is not None:
            assert entry["robust_acc"] <= entry["clean_acc"]
        assert entry["params"] > 10_000 and entry["train_seconds"] > 0


def test_the_table_separates_cells_above_chance(bench):
    clean, pgd = bench.values("clean_acc"), bench.values("pgd_acc")
    assert np.nanmax(clean) > 0.95 and np.nanmax(pgd) > 0.4  # robust cells exist
    assert np.nanstd(pgd) > 0.02  # and they differ


def test_isomorphic_samples_return_the_same_entry(bench):
    entry = bench.entries()[0]
    rep = entry["sample"]
    # The same cell written with a skip into node 1 replaced by a dead conv elsewhere is not a
    # rewrite we can build generally; instead, every sample of the class maps to the entry:
    from robustnas.search_spaces.robust201 import all_samples

    members = [s for s in all_samples() if canonical_key(s) == entry["key"]]
    assert rep in members
    for sample in members[:20]:
        assert bench.query(sample)["pgd_acc"] == entry["pgd_acc"]
        assert bench.query(sample)["key"] == entry["key"]


@pytest.mark.skipif(not load_benchmark("robust201-digits").complete,
                    reason="the shipped table is still being built (robustnas bench build)")
def test_the_table_covers_all_6466_cells(bench):
    assert len(bench) == 6466 and len(bench.architectures()) == 6466


def test_query_returns_the_evaluator_keys_and_seed_noise(bench):
    from robustnas.plugins.evaluator import METRIC_KEYS

    noisy = [e for e in bench.entries() if e["seeds"] >= 3]
    assert noisy, "the first cells of the build carry extra seeds"
    result = bench.query(noisy[0]["sample"])
    assert set(METRIC_KEYS) <= set(result) and "fgsm_acc" in result
    assert result["pgd_acc_sd"] >= 0 and result["eps"] == 0.2 and result["norm"] == "linf"
    result["pgd_acc"] = -1.0  # a copy: the table is not changed by its callers
    assert bench.query(noisy[0]["sample"])["pgd_acc"] >= 0


def test_the_pareto_front_is_non_dominated(bench):
    front = bench.pareto_front(("clean_acc", "pgd_acc", "params"))
    assert front
    everyone = bench.entries()
    for f in front:
        for e in everyone:
            dominates = (e["clean_acc"] >= f["clean_acc"] and e["pgd_acc"] >= f["pgd_acc"] and e["params"] <= f["params"]
                         and (e["clean_acc"], e["pgd_acc"], e["params"]) != (f["clean_acc"], f["pgd_acc"], f["params"]))
            assert not dominates
    best = bench.best("pgd_acc")
    assert best["pgd_acc"] == max(e["pgd_acc"] for e in everyone)


def test_a_re_evaluated_cell_agrees_with_its_entry_within_the_seed_noise(bench):
    noisy = sorted((e for e in bench.entries() if e["seeds"] >= 3), key=lambda e: e["key"])
    entry = noisy[len(noisy) // 2]
    fresh = bench.evaluate(entry["sample"], seed=0)
    for metric in ("clean_acc", "pgd_acc"):
        tolerance = max(3 * entry[f"{metric}_sd"], 0.02)
        assert abs(fresh[metric] - entry[metric]) <= tolerance, (metric, fresh[metric], entry[metric])
    assert fresh["params"] == entry["params"]


def test_noise_reports_seed_to_seed_spread(bench):
    noise = bench.noise()
    if noise["cells"] >= 3:
        for metric in ("clean_acc", "pgd_acc"):
            assert 0.0 < noise["metrics"][metric]["mean_sd"] < 0.3
            assert -1.0 <= noise["metrics"][metric]["kendall_tau"] <= 1.0


# ---------------------------------------------------------------------- bad input
def test_bad_benchmark_names_samples_and_files_get_clear_errors(bench, tmp_path):
    with pytest.raises(ConfigError, match="unknown benchmark 'robust999'.*robust201-digits"):
        load_benchmark("robust999")
    with pytest.raises(ValueError, match="misses label"):
        bench.query({label: "none" for label in LABELS[:-1]})
    with pytest.raises(ValueError, match="not a valid choice"):
        bench.query({**dict.fromkeys(LABELS, "none"), "cell/0_1": "sep_conv_3x3"})
    with pytest.raises(ValueError, match="does not have"):
        bench.query({"normal/op_2_0": "skip_connect"} | dict.fromkeys(LABELS, "none"))
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark(path=tmp_path / "nothing.json.gz")
    packed = Path(bench.source)
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.json.gz is truncated"):
        load_benchmark(path=cut)
    with pytest.raises(ConfigError, match="unknown table metric"):
        bench.best("accuracy")


def test_pack_is_deterministic_and_loads_back(tmp_path):
    build_table(tmp_path / "t", protocol=TINY, plan=TINY_PLAN, limit=1, quiet=True)
    a, b = pack_table(tmp_path / "t", tmp_path / "a.json.gz"), pack_table(tmp_path / "t", tmp_path / "b.json.gz")
    assert a.read_bytes() == b.read_bytes()
    loaded = load_benchmark(path=a)
    assert len(loaded) == 1 and loaded.protocol == TINY
    with gzip.open(a, "rt") as handle:
        assert set(json.load(handle)) == {"meta", "rows"}


# ---------------------------------------------------------------------- NNI and Optuna on the table
def test_nni_random_over_the_table_reports_each_cells_own_metrics(bench):
    import nni.nas.strategy as strategy

    from robustnas.plugins.nni import run_experiment

    result = run_experiment(bench.space(), strategy.Random(seed=0), TableEvaluator(path=bench.source),
                            max_trial_number=50)
    assert len(result.records) == 50
    found = [r for r in result.records if r["metrics"] is not None]
    for record in found:
        expected = bench.query(record["sample"])
        assert record["metrics"]["key"] == expected["key"]
        assert record["metrics"]["pgd_acc"] == expected["pgd_acc"]
        assert record["metrics"]["default"] == expected["pgd_acc"]
    missing = [r for r in result.records if r["metrics"] is None]
    assert all(r["sample"] not in bench for r in missing)  # only cells not in a partial table fail
    if bench.complete:
        top10 = np.quantile(bench.values("pgd_acc"), 0.9)
        assert max(r["metrics"]["pgd_acc"] for r in found) >= top10


def test_optuna_nsga2_over_the_table_returns_the_tables_values(bench):
    import optuna

    from robustnas.plugins.optuna import create_study

    objective = BenchmarkObjective(bench)
    study = create_study(objective.objectives, sampler="nsga2", seed=0)
    study.optimize(objective, n_trials=40)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for trial in done:
        entry = bench.query(trial.user_attrs["sample"])
        assert tuple(trial.values) == (entry["clean_acc"], entry["pgd_acc"], entry["params"])
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert all("not in table" in t.user_attrs["fail_reason"] for t in failed)
    with pytest.raises(ConfigError, match="robust_acc"):
        BenchmarkObjective(bench, objectives=("clean_acc", "robust_acc"))


# ---------------------------------------------------------------------- NAS-RobBench-201's format
def _nasrobbench_files(tmp_path: Path) -> Path:
    ids = {
        "0": {"nb201-string": "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|", "isomorph": "0"},
        "1": {"nb201-string": "|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|", "isomorph": "1"},
        "2": {"nb201-string": "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|", "isomorph": "1"},
    }
    (tmp_path / "meta.json").write_text(json.dumps({"ids": ids}))
    results = {"cifar10": {
        "0": {"val_clean_acc": {"1": 0.81}, "val_fgsm_3.0_acc": {"1": 0.62}, "val_pgd_3.0_acc": {"1": 0.58}},
        "1": {"val_clean_acc": {"1": 0.70}, "val_fgsm_3.0_acc": {"1": 0.51}, "val_pgd_3.0_acc": {"1": 0.49}},
    }}
    path = tmp_path / "NAS-RobBench-201_all.json"
    path.write_text(json.dumps(results))
    return path


def test_nasrobbench201_files_read_through_the_same_api(tmp_path):
    path = _nasrobbench_files(tmp_path)
    table = load_benchmark("nasrobbench201", path=path, dataset="cifar10", eps=3.0)
    assert len(table) == 2
    iso = {"cell/0_1": "none", "cell/0_2": "none", "cell/1_2": "none", "cell/0_3": "conv_3x3",
           "cell/1_3": "none", "cell/2_3": "none"}
    assert table.query(iso)["pgd_acc"] == 0.49  # id 2 is evaluated as its isomorph, id 1
    assert table.query(iso)["eps"] == pytest.approx(3 / 255)
    assert table.best("pgd_acc")["clean_acc"] == 0.81
    assert table.space().space_kwargs["input_shape"] == [3, 32, 32]
    with pytest.raises(ConfigError, match="cifar100"):
        load_benchmark("nasrobbench201", path=path, dataset="cifar100")
    (tmp_path / "bad.json").write_text('{"cifar10": ')
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        load_benchmark("nasrobbench201", path=tmp_path / "bad.json", meta=tmp_path / "meta.json")
