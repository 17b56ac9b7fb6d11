"""The main job under real use: config files, failing candidates, stale state, early validation (issue 16)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from robustnas.plugins import compare as compare_mod
from robustnas.plugins.cli import UsageError, main
from robustnas.plugins.compare import CompareConfig, RunFolder, check, compare
from robustnas.plugins.errors import ConfigError, DataError, RobustNASError
from robustnas.plugins.evaluator import EvaluatorConfig, RobustnessEvaluator, load_dataset

TINY = {
    "preset": "demo",
    "space_kwargs": {"width": 4, "num_cells": 4},
    "seeds": [0],
    "budget": 2,
    "top_k": 1,
    "search": {"recipe": "standard", "epochs": 1, "batch_size": 64, "attack": "fast", "n_examples": 16, "eps": 0.1},
    "final": {"recipe": "pgd", "epochs": 1, "batch_size": 64, "attack": "fast", "n_examples": 16, "eps": 0.1},
}
REPO = Path(__file__).resolve().parents[2]


def _config(out: Path, **changes) -> CompareConfig:
    return CompareConfig.from_options({**TINY, "out": str(out), **changes})


def _fail_phase(monkeypatch, recipe: str, exc: BaseException, times: int | None = None) -> list[int]:
    """Make evaluate() raise ``exc`` for evaluators of ``recipe`` (the first ``times`` calls, or all)."""
    real = RobustnessEvaluator.evaluate
    calls = []

    def evaluate(self, model, train=True):
        if self.config.recipe == recipe and (times is None or len(calls) < times):
            calls.append(1)
            raise exc
        return real(self, model, train=train)

    monkeypatch.setattr(RobustnessEvaluator, "evaluate", evaluate)
    return calls


# ---------------------------------------------------------------------------- item 7: exception types
def test_library_validation_errors_are_project_errors_and_still_value_errors():
    for make in (lambda: EvaluatorConfig(recipe="free"), lambda: load_dataset("imagenet"),
                 lambda: CompareConfig.from_options({"strategies": ["nope"]}), lambda: EvaluatorConfig(eps=2.0)):
        with pytest.raises(ConfigError) as info:
            make()
        assert isinstance(info.value, ValueError) and isinstance(info.value, RobustNASError)
    assert issubclass(UsageError, ConfigError)


def test_cli_prints_project_errors_on_one_line_and_lets_bugs_show_their_traceback(tmp_path, capsys, monkeypatch):
    assert main(["compare", "--strategies", "nope", "--out", str(tmp_path / "r"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown strategy 'nope'" in err and "Traceback" not in err

    def bug(config):
        raise ValueError("an internal bug, not bad input")

    monkeypatch.setattr(compare_mod, "check", bug)
    with pytest.raises(ValueError, match="internal bug"):
        main(["compare", "--out", str(tmp_path / "r"), "--dry-run"])


# ---------------------------------------------------------------------------- item 8: permissions
def test_run_folder_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        folder = RunFolder(_config(tmp_path / "run", strategies=["random"]), resume=False)
        folder.add("random", 0, [])
        folder.close()
    finally:
        os.umask(old)
    assert (tmp_path / "run" / "results.json").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------- item 3: each space its own kwargs
def test_space_tiny_gets_its_own_defaults_not_the_presets_arnas_kwargs(tmp_path, capsys):
    config = CompareConfig.from_options({"space": "tiny", "out": str(tmp_path / "t")})
    assert config.space_kwargs == {} and config.final_space_kwargs == {}
    check(config)  # builds the tiny space: the ARNAS width/num_cells would raise a TypeError here
    assert main(["compare", "--space", "tiny", "--out", str(tmp_path / "t"), "--dry-run"]) == 0
    assert "| tiny {} |" in capsys.readouterr().out
    kept = CompareConfig.from_options({"space": "tiny", "space_kwargs": {"width_multiplier": 0.5}, "out": "x"})
    assert kept.space_kwargs == {"width_multiplier": 0.5}
    assert compare_mod._space_for(_config(tmp_path, strategy_spaces={"tamnas": "tiny"}), "tamnas") == ("tiny", {})


# ---------------------------------------------------------------------------- item 5: validation before work
@pytest.mark.parametrize(
    "flags, yaml_text, message",
    [
        (["--eps", "8"], None, r"eps must be in \(0, 1\].*8/255 = 0\.0314"),
        (["--device", "gpu"], None, r"unknown device 'gpu'; valid devices: auto, cpu, cuda"),
        (["--dataset", "imagenet"], None, r"unknown dataset 'imagenet'; valid datasets: digits"),
        (["--epochs", "0"], None, r"epochs must be an integer >= 1, got 0"),
        ([], "search: {lr: 0}\n", r"search: lr must be a positive finite number, got 0"),
        ([], "final: {lr: .nan}\n", r"final: lr must be a positive finite number, got nan"),
        ([], "seeds: ['a']\n", r"seeds must be integers >= 0, got 'a'"),
        ([], "search: {epohcs: 1}\n", r"search: unknown EvaluatorConfig keys \['epohcs'\]; valid keys: .*epochs"),
        ([], "space_kwargs: {widht: 8}\n", r"space 'arnas' cannot be built with \{'widht': 8\}.*widht"),
        ([], "strategies: [dsrna]\nstrategy_kwargs: {dsrna: {metrik: bound}}\n", r"strategy_kwargs of 'dsrna'.*metrik"),
        ([], "budget: four\n", r"budget must be a positive integer, got 'four'"),
    ],
)
def test_bad_configuration_is_refused_before_the_run_folder_exists(tmp_path, capsys, flags, yaml_text, message):
    out = tmp_path / "run"
    config = []
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        config = ["--config", str(tmp_path / "c.yaml")]
    assert main(["compare", *config, *flags, "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="torch sees no CUDA device; use --device cpu"):
        EvaluatorConfig(device="cuda")


# ---------------------------------------------------------------------------- item 2: config files and dry run
def _yaml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        for i, block in enumerate(re.findall(r"^```yaml\n(.*?)^```", doc.read_text(), re.M | re.S)):
            blocks.append((f"{doc.name}#{i}", block))
    return blocks


@pytest.mark.parametrize("name, block", _yaml_blocks(), ids=[n for n, _ in _yaml_blocks()])
def test_the_docs_yaml_examples_are_accepted_by_compare(tmp_path, capsys, name, block):
    path = tmp_path / "example.yaml"
    path.write_text(block)
    out = tmp_path / "run"
    assert main(["compare", "--config", str(path), "--out", str(out), "--dry-run"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    import yaml

    for key, value in yaml.safe_load(block).items():  # every setting of the file reaches the configuration
        assert key in printed, key
    if yaml.safe_load(block).get("preset") == "bench":  # table lookups: no training passes to plan
        assert "# planned:" in printed and "units on table" in printed
    else:
        assert "planned units" in printed and "image passes" in printed
    assert not out.exists()


def test_flags_override_the_config_file_nested_settings_included(tmp_path, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text("seeds: [0, 1]\nsearch: {epochs: 2, n_examples: 32}\nstrategy_spaces: {tamnas: tiny}\n")
    assert main(["compare", "--config", str(path), "--seeds", "3", "--epochs", "5", "--out", str(tmp_path / "r"),
                 "--dry-run"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out.split("# planned units")[0])
    assert resolved["seeds"] == [3]
    assert resolved["search"]["epochs"] == 5 and resolved["search"]["n_examples"] == 32
    assert resolved["search"]["recipe"] == "fgsm-rs"  # the rest of the preset's search settings stay
    assert resolved["final"]["epochs"] == 5
    assert resolved["strategy_spaces"] == {"tamnas": "tiny"}


def test_dry_run_plans_every_unit_with_a_cost_and_creates_nothing(tmp_path):
    config = _config(tmp_path / "run", strategies=["random", "arnas"], seeds=[0, 1])
    planned = compare_mod.plan(config)
    assert [(u["strategy"], u["seed"]) for u in planned["units"]] == [
        ("random", 0), ("arnas", 0), ("random", 1), ("arnas", 1)]
    random_unit = planned["units"][0]
    train = len(load_dataset("digits").train)
    # 2 candidates x (1 standard epoch over the training split + clean test + PGD-20 and AutoAttack on 16 points)
    assert random_unit["search_passes"] == 2 * (train + 450 + 16 * (21 + 200))
    assert planned["total_passes"] == sum(u["search_passes"] + u["retrain_passes"] for u in planned["units"])
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- item 1: failing candidates
def test_a_nan_candidate_in_nni_random_fails_alone_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    calls = _fail_phase(monkeypatch, "standard", FloatingPointError("non-finite loss nan at epoch 1"), times=1)
    out = tmp_path / "run"
    result = compare(_config(out, strategies=["random"]), progress=True)  # stderr is not a terminal here
    assert calls == [1]
    data = json.loads((out / "results.json").read_text())
    assert data["done"] == [["random", 0]] and len(data["rows"]) == 1
    assert data["rows"][0]["search_cost"]["candidates"] == 2
    [failure] = data["failures"]
    assert failure["strategy"] == "random" and failure["phase"] == "search"
    assert failure["error"].startswith("FloatingPointError: non-finite loss nan") and failure["sample"]
    assert "FloatingPointError: non-finite loss nan" in (out / "report.md").read_text()
    assert result["unfinished"] == []
    # item 9: outside a terminal, one line per finished step with the best robust accuracy so far
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("robustnas compare:")]
    assert len(lines) == 2
    assert "random seed 0: search" in lines[0] and "1 failed candidate(s)" in lines[0]
    assert re.search(r"retrain 1/1 [\d.]+ s, robust acc [\d.]+; best robust acc so far [\d.]+$", lines[1])


def test_nni_run_experiment_keeps_the_reason_of_a_failed_trial(monkeypatch):
    from robustnas.plugins.nni import robust_evaluator, run_experiment
    from robustnas.search_spaces import get_space
    from robustnas.strategies import get_strategy

    _fail_phase(monkeypatch, "standard", torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    space = get_space("arnas", input_shape=(1, 8, 8), num_classes=10, width=4, num_cells=4)
    config = EvaluatorConfig(recipe="standard", epochs=1, n_examples=8, progress=False)
    result = run_experiment(space, get_strategy("evolution", population_size=2, sample_size=1, seed=0),
                            robust_evaluator(config), max_trial_number=2)
    assert [r["status"] for r in result.records] == ["failed", "failed"]
    assert all(r["error"].startswith("out of memory (OutOfMemoryError: CUDA out of memory") for r in result.records)


def test_an_optuna_unit_whose_trials_all_fail_is_reported_and_retried_on_resume(tmp_path, monkeypatch):
    import optuna

    out = tmp_path / "run"
    config = _config(out, strategies=["optuna-random"], budget=1)
    with monkeypatch.context() as mp:
        _fail_phase(mp, "standard", RuntimeError("candidate exploded"))
        result = compare(config, progress=False)
    assert result["unfinished"] == [["optuna-random", 0]] and result["rows"] == []
    data = json.loads((out / "results.json").read_text())
    assert data["done"] == [] and data["failures"][0]["error"] == "RuntimeError: candidate exploded"
    assert "optuna-random seed 0: no successful candidate" in (out / "report.md").read_text()
    result = compare(config, resume=True, progress=False)
    assert result["unfinished"] == [] and len(result["rows"]) == 1
    study = optuna.load_study(study_name="optuna-random-seed0", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal"))))
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]


def test_a_failing_retraining_fails_its_architecture_only(tmp_path, monkeypatch):
    _fail_phase(monkeypatch, "pgd", FloatingPointError("non-finite loss inf at epoch 1, step 3"))
    result = compare(_config(tmp_path / "run", strategies=["random"], budget=1), progress=False)
    assert result["unfinished"] == [["random", 0]]
    [failure] = result["failures"]
    assert failure["phase"] == "retrain" and "non-finite loss inf" in failure["error"]


# ---------------------------------------------------------------------------- item 4: stale state
def _foreign_journal(folder: Path) -> None:
    from robustnas.plugins.optuna import create_study

    folder.mkdir(parents=True)
    create_study(storage=f"journal:///{folder / 'optuna.journal'}", study_name="optuna-random-seed0", sampler="random")


def test_a_foreign_optuna_journal_is_refused(tmp_path):
    out = tmp_path / "run"
    _foreign_journal(out)
    config = _config(out, strategies=["optuna-random"])
    with pytest.raises(ConfigError, match="holds optuna.journal but no results.json.*--resume"):
        RunFolder(config, resume=False)
    with pytest.raises(ConfigError, match="optuna.journal holds Optuna studies of another configuration"):
        RunFolder(config, resume=True)
    assert not (out / "results.json").exists()


def test_a_second_compare_on_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    config = _config(tmp_path / "run", strategies=["random"])
    first = RunFolder(config, resume=False)
    try:
        with pytest.raises(ConfigError, match="in use by another running compare"):
            RunFolder(config, resume=True)
    finally:
        first.close()
    RunFolder(config, resume=True).close()


_KILLED_RUN = """
import os, signal, sys
from robustnas.plugins.compare import CompareConfig, compare
from robustnas.plugins.evaluator import RobustnessEvaluator

real, calls = RobustnessEvaluator.evaluate, []

def evaluate(self, model, train=True):
    if self.config.recipe == "standard":
        calls.append(1)
        if len(calls) == 2:  # mid-trial: the second candidate is being evaluated
            os.kill(os.getpid(), signal.SIGKILL)
    return real(self, model, train=train)

RobustnessEvaluator.evaluate = evaluate
compare(CompareConfig.from_options(__import__("json").loads(sys.argv[1])), progress=False)
"""


def test_a_compare_killed_mid_trial_resumes_to_the_units_of_an_uninterrupted_run(tmp_path):
    import optuna

    out = tmp_path / "killed"
    options = {**TINY, "strategies": ["optuna-random"], "out": str(out)}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_RUN), json.dumps(options)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    states = [t.state.name for t in optuna.load_study(study_name="optuna-random-seed0", storage=storage).trials]
    assert states == ["COMPLETE", "RUNNING"]  # the killed trial is left RUNNING

    resumed = compare(CompareConfig.from_options(options), resume=True, progress=False)
    plain = compare(CompareConfig.from_options({**options, "out": str(tmp_path / "plain")}), progress=False)
    assert json.loads((out / "results.json").read_text())["done"] == \
        json.loads((tmp_path / "plain" / "results.json").read_text())["done"] == [["optuna-random", 0]]
    assert len(resumed["rows"]) == len(plain["rows"]) == 1
    trials = optuna.load_study(study_name="optuna-random-seed0", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].params == trials[1].params and trials[2].user_attrs["retry_of"] == 1
    assert "no heartbeat" in trials[1].user_attrs["fail_reason"]


def test_nni_experiment_files_live_under_the_run_folder(tmp_path):
    out = tmp_path / "run"
    compare_mod.run_search(_config(out, strategies=["random"], budget=1), "random", 0, progress=False)
    assert any((out / "nni").iterdir())


# ---------------------------------------------------------------------------- item 6: errors that name the file
def test_corrupt_run_files_are_named(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"fingerprint": "abc", "rows": [')
    with pytest.raises(DataError, match=r"results file '.*results.json' is not valid JSON"):
        RunFolder(_config(out, strategies=["random"]), resume=True)
    other = tmp_path / "other"
    _foreign_journal(other)
    journal = other / "optuna.journal"
    first = journal.read_text().splitlines()[0]
    journal.write_text(journal.read_text() + '{"op_code": 5, "worker_id": \n' + first + "\n")  # a cut line inside
    with pytest.raises(DataError, match=r"Optuna journal '.*optuna.journal' is corrupt"):
        RunFolder(_config(other, strategies=["random"]), resume=True)
    record = tmp_path / "record.json"
    record.write_text('{"space": "arnas", "kwargs": {')
    assert main(["evaluate", str(record)]) == 2
    assert f"record file {str(record)!r} is not valid JSON" in capsys.readouterr().err
    record.write_text('{"space": "arnas"}')
    assert main(["evaluate", str(record)]) == 2
    assert f"record file {str(record)!r}, record 0: record lacks key(s)" in capsys.readouterr().err


def _npz(path: Path, **changes) -> Path:
    arrays = {"x_train": np.zeros((20, 1, 4, 4), np.float32), "y_train": np.arange(20) % 2,
              "x_test": np.zeros((6, 1, 4, 4), np.float32), "y_test": np.arange(6) % 2}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def test_a_corrupt_npz_names_the_file(tmp_path):
    path = tmp_path / "cut.npz"
    path.write_bytes(_npz(tmp_path / "good.npz").read_bytes()[:100])
    with pytest.raises(DataError, match=r"npz file '.*cut.npz' cannot be read as a NumPy .npz archive"):
        load_dataset("npz", path=path)


@pytest.mark.parametrize(
    "changes, options, message",
    [
        ({"x_train": np.full((20, 1, 4, 4), np.nan, np.float32)}, {}, r"x_train holds 320 NaN value\(s\)"),
        ({"y_train": np.zeros(20, np.int64), "y_test": np.zeros(6, np.int64)}, {"num_classes": 2},
         r"y_train holds a single class \(\[0\]\)"),
        ({"y_test": np.arange(6) % 3}, {}, r"class\(es\) \[2\] of the 3 classes never appear in y_train"),
        ({"x_train": np.zeros((4, 1, 4, 4), np.float32), "y_train": np.arange(4) % 2}, {},
         r"the validation split is empty \(4 training examples, val_fraction=0.15\)"),
    ],
)
def test_unusable_data_is_an_error_naming_the_file_and_the_problem(tmp_path, changes, options, message):
    path = _npz(tmp_path / "mine.npz", **changes)
    with pytest.raises(DataError, match=r"mine\.npz: " + message):
        load_dataset("npz", path=path, **options)
