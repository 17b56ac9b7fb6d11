"""The benchmark scripts' shared helpers and bookkeeping (the measurements themselves run in `make bench`)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def common() -> ModuleType:
    return _load("_common")


def test_target_is_met_only_on_the_right_side_of_the_goal(common):
    assert common.target("ratio", 1.05, 1.10, "<=")["met"] is True
    assert common.target("ratio", 1.20, 1.10, "<=")["met"] is False
    assert common.target("speed-up", 4.5, 4.0, ">=", " x") == {
        "name": "speed-up", "value": 4.5, "target": ">= 4.0 x", "met": True}
    with pytest.raises(ValueError, match="unknown target kind '<'"):
        common.target("x", 1.0, 1.0, "<")


def test_target_standard_error_is_kept_and_shown_next_to_the_value(common):
    t = common.target("margin", -0.017, 0.0, ">=", se=0.0123456)
    assert t["se"] == 0.0123 and t["met"] is False
    assert common.value_text(t) == "-0.017 ± 0.0123"
    assert common.value_text(common.target("margin", 0.5, 0.0, ">=")) == "0.5"


def test_search_quality_standard_error_is_sample_deviation_over_root_n():
    import statistics

    sq = _load("bench_search_quality")

    assert sq.standard_error([0.1]) is None
    assert sq.standard_error([0.1, 0.3, 0.2]) == pytest.approx(statistics.stdev([0.1, 0.3, 0.2]) / 3 ** 0.5)


def test_paired_ratio_is_the_median_of_per_round_ratios(common):
    # round 2 ran under load on both sides: pairing cancels it, a ratio of medians would not
    assert common.paired_ratio([2.0, 20.0, 2.2], [1.0, 10.0, 1.0]) == pytest.approx(2.0)
    assert common.spread([1.0, 1.0, 1.0, 1.0]) == 0.0


def test_interleaved_calls_every_variant_once_per_round_after_warmup(common):
    calls = []
    times = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert [len(v) for v in times.values()] == [3, 3]
    assert all(t >= 0 for v in times.values() for t in v)


def test_write_result_writes_the_documented_layout(common, tmp_path):
    import argparse

    args = argparse.Namespace(quick=True, out=str(tmp_path))
    info = {"cpu": "test", "loadavg_start": None}
    path = common.write_result("demo", args, info, {"batch": 32}, {"ratio": 1.5},
                               [common.target("r", 1.5, 2.0, "<=")], ["a note"], headline="ratio 1.5")
    data = json.loads(path.read_text())
    assert path == tmp_path / "demo.json"
    assert set(data) == {"benchmark", "command", "quick", "date", "machine", "headline", "config", "results",
                         "targets", "notes"}
    assert data["benchmark"] == "demo" and data["quick"] is True and data["targets"][0]["met"] is True
    assert data["headline"] == "ratio 1.5" and data["results"] == {"ratio": 1.5}
    assert "loadavg_end" in data["machine"]
    assert not list(tmp_path.glob("*.tmp"))


def test_demo_space_kwargs_build_the_demo_space_on_digits(common):
    from robustnas.plugins.evaluator import load_dataset
    from robustnas.search_spaces import get_space

    bundle = load_dataset("digits")
    kwargs, _ = common.demo_space_kwargs("arnas", bundle)
    assert kwargs["input_shape"] == (1, 8, 8) and kwargs["num_classes"] == 10
    assert get_space("arnas", **kwargs) is not None


def test_oneshot_pass_counts_cover_every_strategy_and_match_the_issue(common):
    oneshot = _load("bench_oneshot")
    assert set(oneshot.STEP_PASSES) == set(oneshot.RUNS) == set(oneshot.NAIVE_PAIRS)
    assert oneshot.STEP_PASSES["darts"] == {"full": 2}
    # ARNAS: arch (clean fwd/bwd + PGD-7 + adv fwd/bwd) + weights (PGD-7 + fwd/bwd) = 17 pairs
    assert oneshot.NAIVE_PAIRS["arnas"] == 17 and sum(oneshot.STEP_PASSES["arnas"].values()) == 17


def test_evaluator_benchmark_buckets_every_stage_the_evaluator_times():
    from robustnas.plugins.evaluator._evaluator import STAGES

    bench = _load("bench_evaluator")
    assert set(bench.BUCKETS) == set(STAGES)
    assert bench.OTHER not in bench.BUCKETS.values()


def test_finish_writes_the_result_then_prints_tables_lines_and_targets(common, tmp_path, capsys):
    import argparse

    args = argparse.Namespace(quick=True, out=str(tmp_path))
    info = {"cpu": "test", "cores": 2, "usable_cores": 2, "torch": "x", "torch_threads": 1, "python": "3",
            "loadavg_start": None}
    targets = [common.target("ratio", 1.5, 2.0, "<=")]
    path = common.finish("demo", args, info, {"batch": 32}, {"ratio": 1.5}, targets, ["a note"], headline="ratio 1.5",
                         tables=[("The table", ["a", "b"], [[1, 2.5]])], lines=["one more line"])
    data = json.loads(path.read_text())
    assert path == tmp_path / "demo.json" and data["results"] == {"ratio": 1.5} and data["notes"] == ["a note"]
    out = capsys.readouterr().out
    order = [out.index(text) for text in ("The table", "2.500", "one more line", "ratio 1.5", "note: a note",
                                          "target ratio: 1.5 (goal <= 2.0) -> MET", f"wrote {path}")]
    assert order == sorted(order)


def test_digits_models_take_digits_and_train_briefly_beats_chance(common):
    from robustnas.plugins.evaluator import accuracy, load_dataset

    bundle = load_dataset("digits")
    x, y = bundle.tensors("test", 200)
    for name, factory in common.digits_models().items():
        assert tuple(factory()(x[:4]).shape) == (4, 10), name
    model = common.train_briefly(common.digits_models()["mlp"], bundle, "standard", epochs=3, eps=0.1)
    again = common.train_briefly(common.digits_models()["mlp"], bundle, "standard", epochs=3, eps=0.1)
    assert not model.training
    assert accuracy(model, x, y) > 0.5  # 10 classes: chance is 0.1
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_one_shot_benchmarks_share_the_strategy_settings():
    oneshot, diagnostics = _load("bench_oneshot"), _load("bench_diagnostics")
    common = _load("_common")
    for runs in (oneshot.RUNS, diagnostics.RUNS):
        assert {k: runs[k] for k in common.ONE_SHOT_RUNS} == common.ONE_SHOT_RUNS
    assert set(diagnostics.ON_TABLE) == set(diagnostics.RUNS)


def test_diagnostics_search_trains_through_run_one_shot_and_returns_nni_top_export():
    from robustnas.plugins.bench import load_benchmark

    diagnostics = _load("bench_diagnostics")
    bench = load_benchmark("robust201-digits")
    strategy, export, seconds = diagnostics.search(bench, "darts", 0, epochs=1, batches=1, quick=True)
    again = diagnostics.search(bench, "darts", 0, epochs=1, batches=1, quick=True)[1]
    assert export == again  # seeded: the same export twice
    assert set(export) == set(bench.space().simplify()) and seconds > 0
    assert hasattr(strategy, "supernet")  # the trained strategy, for the rank diagnostics


def test_run_all_rejects_an_unknown_benchmark_name():
    run_all = _load("run_all")
    assert list(run_all.BENCHMARKS) == ["adv_training", "autoattack", "evaluator", "oneshot", "search_quality",
                                        "scaleout", "table", "diagnostics", "jobs", "bounds", "table_compare",
                                        "oneshot_fixes"]
    with pytest.raises(SystemExit):
        run_all.main(["no-such-bench"])
    for name in run_all.BENCHMARKS:
        assert (BENCH / f"bench_{name}.py").exists()
