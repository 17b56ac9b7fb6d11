"""Names that mean one thing (issue 19): each renamed argument says what it counts or selects,
and its old name still works, with a DeprecationWarning, giving what it gave before.

- ``eval_batches`` (0: "every batch" in TAM-NAS, "no batch" in ARNAS / DSRNA) is ``val_batches``
  everywhere, with None for every batch;
- DSRNA's ``warmup_epochs`` (epochs without the robustness term) is ``regularizer_warmup_epochs``;
  NNI DARTS' ``warmup_epochs`` (epochs without architecture steps) keeps its name in ARNAS;
- ``EvaluatorConfig.attack`` / ``--attack`` (the AutoAttack mode) is ``aa_mode`` / ``--aa-mode``;
  the metrics keep their ``attack`` key (the on-disk format).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from robustnas.plugins._deprecation import show_deprecations
from robustnas.plugins.errors import ConfigError
from robustnas.plugins.evaluator import EvaluatorConfig, RobustnessEvaluator, add_evaluator_options, given_options
from robustnas.strategies import ARNAS, DSRNA, TAMNAS

DEPRECATED = r".*is deprecated, use"
BATCH = 64


def scored_validation(strategy, bundle):
    """The validation tensors a strategy measures its records on, with the loaders NNI hands it."""
    strategy.train_dataloader(lambda: DataLoader(bundle.train, batch_size=BATCH),
                              lambda: DataLoader(bundle.val, batch_size=BATCH))
    return strategy._val_tensors()


# ---------------------------------------------------------------------------- val_batches
def test_tamnas_scores_val_batches_validation_batches_and_none_is_every_batch(digits):
    every = scored_validation(TAMNAS(val_batches=None), digits)
    two = scored_validation(TAMNAS(val_batches=2), digits)
    assert len(every[1]) == len(digits.val) == 269 and len(two[1]) == 2 * BATCH
    with pytest.raises(ValueError, match="val_batches must be an integer >= 1, or None for every batch; got 0"):
        TAMNAS(val_batches=0)


def test_tamnas_eval_batches_still_works_and_its_zero_still_means_every_batch(digits):
    with pytest.warns(DeprecationWarning, match="TAMNAS: 'eval_batches' is deprecated, use 'val_batches'"):
        old_every = TAMNAS(eval_batches=0)
    with pytest.warns(DeprecationWarning, match="TAMNAS: 'eval_batches'"):
        old_two = TAMNAS(eval_batches=2)
    assert old_every.val_batches is None and old_two.val_batches == 2
    for old, new in ((old_every, TAMNAS(val_batches=None)), (old_two, TAMNAS(val_batches=2))):
        (x_old, y_old), (x_new, y_new) = scored_validation(old, digits), scored_validation(new, digits)
        assert torch.equal(x_old, x_new) and torch.equal(y_old, y_new)


@pytest.mark.parametrize("strategy_class", [ARNAS, DSRNA])
def test_arnas_and_dsrna_measure_val_batches_and_eval_batches_still_works(strategy_class, digits):
    every = scored_validation(strategy_class(val_batches=None), digits)
    assert len(every[1]) == len(digits.val)
    new = scored_validation(strategy_class(val_batches=2), digits)
    with pytest.warns(DeprecationWarning, match=f"{strategy_class.__name__}: 'eval_batches' is deprecated"):
        old = scored_validation(strategy_class(eval_batches=2), digits)
    assert len(new[1]) == 2 * BATCH and torch.equal(old[0], new[0]) and torch.equal(old[1], new[1])
    # eval_batches=0 measured no batch: the search ran, then failed; now it is refused up front
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="eval_batches must be an integer >= 1"):
        strategy_class(eval_batches=0)


# ---------------------------------------------------------------------------- warm-ups
def test_dsrna_regularizer_warmup_has_its_own_name_and_warmup_epochs_still_sets_it():
    new = DSRNA(regularizer_warmup_epochs=2)
    with pytest.warns(DeprecationWarning, match="DSRNA: 'warmup_epochs' is deprecated, use 'regularizer_warmup_epochs'"):
        old = DSRNA(warmup_epochs=2)
    assert old.regularizer == new.regularizer and new.regularizer.regularizer_warmup_epochs == 2
    assert old.module_kwargs() == new.module_kwargs()
    with pytest.warns(DeprecationWarning, match="DsrnaRegularizer: 'warmup_epochs' is deprecated"):
        assert new.regularizer.warmup_epochs == 2
    # NNI's warm-up (weights only, no architecture step) is another thing, DSRNA's arch_warmup_epochs
    assert old.warmup_epochs == new.warmup_epochs == 0
    arch = DSRNA(arch_warmup_epochs=1)
    assert arch.warmup_epochs == 1 and arch.regularizer.regularizer_warmup_epochs == 0


def test_arnas_warmup_epochs_is_nni_darts_own_and_not_deprecated():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=DEPRECATED, category=DeprecationWarning)
        strategy = ARNAS(warmup_epochs=1)
    assert strategy.warmup_epochs == 1


# ---------------------------------------------------------------------------- aa_mode
def test_evaluator_config_calls_the_autoattack_mode_aa_mode_and_attack_still_sets_it():
    new = EvaluatorConfig(aa_mode="standard")
    with pytest.warns(DeprecationWarning, match="EvaluatorConfig: 'attack' is deprecated, use 'aa_mode'"):
        old = EvaluatorConfig(attack="standard")
    assert old == new and old.aa_mode == "standard"
    data = new.to_dict()
    assert data["aa_mode"] == "standard" and "attack" not in data
    with pytest.warns(DeprecationWarning, match="'attack' is deprecated"):
        assert EvaluatorConfig.from_dict({"attack": "standard"}) == new
    with pytest.warns(DeprecationWarning, match="'attack' is deprecated"):
        assert new.attack == "standard"
    assert dataclasses.replace(new, epochs=2).aa_mode == "standard"
    with pytest.raises(ConfigError, match=r"unknown attack 'plus' \(aa_mode\); valid AutoAttack modes: standard, fast"):
        EvaluatorConfig(aa_mode="plus")
    with pytest.raises(ConfigError, match=r"unknown EvaluatorConfig keys \['atack'\]; valid keys: .*aa_mode"):
        EvaluatorConfig.from_dict({"atack": "fast"})


def _metrics(**mode: str) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    config = EvaluatorConfig(dataset="digits", recipe="standard", epochs=2, batch_size=64, n_examples=32,
                             latency_repeats=1, device="cpu", progress=False, **mode)
    metrics = RobustnessEvaluator(config).evaluate(model)
    return {k: v for k, v in metrics.items() if k not in ("train_seconds", "eval_seconds", "latency_ms")}


def test_attack_and_aa_mode_measure_the_same_and_the_metrics_keep_their_attack_key():
    new = _metrics(aa_mode="fast")
    with pytest.warns(DeprecationWarning, match="'attack' is deprecated"):
        old = _metrics(attack="fast")
    assert old == new
    assert new["attack"] == "fast" and "aa_mode" not in new and 0 <= new["robust_acc"] <= new["clean_acc"]


def test_the_flag_is_aa_mode_and_attack_still_works_with_a_warning():
    parser = argparse.ArgumentParser()
    add_evaluator_options(parser)
    assert given_options(vars(parser.parse_args(["--aa-mode", "standard"]))) == {"aa_mode": "standard"}
    with pytest.warns(DeprecationWarning, match="--attack is deprecated, use --aa-mode"):
        args = parser.parse_args(["--attack", "standard"])
    assert given_options(vars(args)) == {"aa_mode": "standard"}
    text = " ".join(parser.format_help().split())
    assert "--aa-mode AA_MODE AutoAttack mode" in text and "--attack AA_MODE deprecated: use --aa-mode" in text
    with pytest.warns(DeprecationWarning, match="'attack' is deprecated"):  # a settings file's key
        assert given_options({"attack": "standard", "epochs": 2}) == {"aa_mode": "standard", "epochs": 2}


def test_a_settings_file_spelled_the_old_way_loads_and_a_flag_still_wins_over_it(tmp_path):
    from robustnas.plugins.cli import _COMPARE_FLAGS, _compare_config, build_parser
    from robustnas.plugins.optuna._worker import _settings

    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump({"attack": "standard", "final": {"attack": "standard"}, "out": str(tmp_path)}))
    parser = build_parser()
    with pytest.warns(DeprecationWarning, match="'attack' is deprecated"):
        from_file = _compare_config(parser.parse_args(["compare", "--config", str(path)]), _COMPARE_FLAGS)
    assert from_file.search["aa_mode"] == from_file.final["aa_mode"] == "standard"
    with pytest.warns(DeprecationWarning, match="'attack' is deprecated"):
        flagged = _compare_config(parser.parse_args(["compare", "--config", str(path), "--aa-mode", "fast"]),
                                  _COMPARE_FLAGS)
    assert flagged.search["aa_mode"] == flagged.final["aa_mode"] == "fast"

    worker = tmp_path / "worker.yaml"
    worker.write_text(yaml.safe_dump({"evaluator": {"attack": "standard", "epochs": 1}}))
    args = parser.parse_args(["optuna-worker", "--study", "s", "--storage", str(tmp_path / "j.log"),
                              "--n-trials", "1", "--config", str(worker), "--aa-mode", "fast"])
    with pytest.warns(DeprecationWarning, match="'attack' is deprecated"):
        assert _settings(args)["evaluator"] == {"aa_mode": "fast", "epochs": 1, "progress": False}


# ---------------------------------------------------------------------------- run folders
def _old_spelling(settings: dict, names: dict[str, str]) -> dict:
    return {names.get(k, k): v for k, v in settings.items()}


def test_a_comparison_keeps_its_fingerprint_whichever_names_spell_its_settings():
    from robustnas.plugins.compare import PRESETS, CompareConfig

    for preset in PRESETS:
        new = CompareConfig.from_options({"preset": preset, "out": "runs/x"})
        old = dataclasses.replace(
            new, search=_old_spelling(new.search, {"aa_mode": "attack"}),
            final=_old_spelling(new.final, {"aa_mode": "attack"}),
            strategy_kwargs={name: _old_spelling(kwargs, {"val_batches": "eval_batches"})
                             for name, kwargs in new.strategy_kwargs.items()})
        assert "attack" in old.final and "aa_mode" not in old.final
        # the fingerprint as it was computed before the renames, from the settings spelled then
        data = {k: v for k, v in old.to_dict().items() if k not in ("out", "jobs", "cluster")}
        before = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        assert new.fingerprint() == old.fingerprint() == before
    every_old = CompareConfig.from_options({"strategy_kwargs": {"tamnas": {"eval_batches": 0}}, "out": "runs/x"})
    every_new = CompareConfig.from_options({"strategy_kwargs": {"tamnas": {"val_batches": None}}, "out": "runs/x"})
    assert every_old.fingerprint() == every_new.fingerprint()


def test_a_bench_run_folder_written_with_the_old_names_resumes(tmp_path):
    from robustnas.plugins.bench._preset import BenchConfig, _folder

    out = tmp_path / "bench"
    config = BenchConfig.from_options({"out": str(out)})
    old = config.to_dict()
    old["final"] = _old_spelling(old["final"], {"aa_mode": "attack"})
    old["strategy_kwargs"]["tamnas"] = _old_spelling(old["strategy_kwargs"]["tamnas"], {"val_batches": "eval_batches"})
    out.mkdir()
    (out / "config.json").write_text(json.dumps(old))
    assert _folder(config, resume=True) == out
    other = BenchConfig.from_options({"out": str(out), "final": {"aa_mode": "standard"}})
    with pytest.raises(ConfigError, match=r"other settings \(final\)"):
        _folder(other, resume=True)


def test_presets_use_the_new_names():
    from robustnas.plugins.bench import BENCH_PRESET, BenchConfig
    from robustnas.plugins.compare import PRESETS, CompareConfig

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=DEPRECATED, category=DeprecationWarning)
        for preset in PRESETS:
            CompareConfig.from_options({"preset": preset, "out": "runs/x"})
        BenchConfig.from_options({})
        for kwargs in (PRESETS["demo"]["strategy_kwargs"]["tamnas"], BENCH_PRESET["strategy_kwargs"]["tamnas"]):
            assert TAMNAS(**kwargs).val_batches == 2


# ---------------------------------------------------------------------------- the command line shows them
def test_show_deprecations_prints_ours_as_one_line_and_leaves_other_warnings_alone():
    text = "--attack is deprecated, use --aa-mode (the old flag still works for now)"
    theirs = "`isinstance(treespec, LeafSpec)` is deprecated, use `treespec.is_leaf()` instead."  # Lightning's
    passed_on: list[tuple] = []
    with warnings.catch_warnings():
        warnings.showwarning = lambda *args: passed_on.append(args)  # what showed warnings before
        show_deprecations()
        ours = io.StringIO()
        warnings.showwarning(DeprecationWarning(text), DeprecationWarning, "argparse.py", 1, ours)
        warnings.showwarning(DeprecationWarning(theirs), DeprecationWarning, "lib.py", 3, None, None)
    assert ours.getvalue() == f"robustnas: warning: {text}\n"
    assert [(str(args[0]), args[2], args[3]) for args in passed_on] == [(theirs, "lib.py", 3)]
    assert "show_deprecations" not in getattr(warnings.showwarning, "__qualname__", "")  # undone on leaving


@pytest.mark.slow
def test_the_cli_accepts_attack_and_says_on_stderr_that_it_is_deprecated(tmp_path):
    code = ("import sys; from robustnas.plugins.cli import main; sys.exit(main(sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", code, "compare", "--dry-run", "--attack", "standard",
                          "--strategies", "random", "--budget", "1", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).parent)
    assert run.returncode == 0, run.stderr
    assert "robustnas: warning: --attack is deprecated, use --aa-mode" in run.stderr
    assert "aa_mode: standard" in run.stdout and "attack:" not in run.stdout
