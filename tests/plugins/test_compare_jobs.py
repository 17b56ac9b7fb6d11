"""Comparisons over several processes (issue 18, item 5): `compare --jobs N` on Ray gives the
results of one process, saves each unit as soon as it finishes, resumes, and refuses bad
engine settings before any file is created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from robustnas.plugins import _parallel
from robustnas.plugins.cli import main
from robustnas.plugins.compare import CompareConfig, compare, without_times
from robustnas.plugins.errors import ConfigError

needs_ray = pytest.mark.skipif(not _parallel.engine_available(),
                               reason="--jobs > 1 runs on Ray: pip install 'robustnas[ray]'")

_EVAL = {"batch_size": 32, "aa_mode": "fast", "eps": 0.1, "recipe": "standard", "pgd_eval_steps": 5,
         "latency_repeats": 1, "escalate": False}
#: Three kinds of unit (a one-shot supernet, NNI multi-trial, an Optuna study) on digits, cut to
#: seconds each; the final training still learns (clean accuracy above 0.8).
TINY = {
    "preset": "demo",
    "space_kwargs": {"width": 4, "num_cells": 4},
    "strategies": ["tamnas", "random", "optuna-nsga2"],
    "seeds": [0],
    "budget": 2,
    "top_k": 1,
    "search_batches": 2,
    "strategy_kwargs": {"tamnas": {"population_size": 2, "generations": 1, "val_batches": 1, "bn_batches": 1}},
    "search": {**_EVAL, "epochs": 1, "n_examples": 4},
    "final": {**_EVAL, "epochs": 2, "n_examples": 8},
}


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _same(a: dict, b: dict) -> None:
    """Two runs' results.json agree on everything but the measured durations."""
    for key in ("fingerprint", "done", "rows", "failures"):
        assert without_times(a[key]) == without_times(b[key]), key


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("jobs") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def one_job(config_file, tmp_path_factory) -> dict:
    """`compare --jobs 1`: this process, no engine (as before the option existed)."""
    out = tmp_path_factory.mktemp("jobs") / "one"
    assert main(["compare", "--config", str(config_file), "--jobs", "1", "--out", str(out), "-q"]) == 0
    return _results(out)


@pytest.mark.slow
@needs_ray
def test_compare_jobs_2_gives_the_results_of_jobs_1(one_job, config_file, tmp_path, capsys):
    out = tmp_path / "two"
    assert main(["compare", "--config", str(config_file), "--jobs", "2", "--out", str(out)]) == 0
    two = _results(out)
    _same(one_job, two)
    assert [r["strategy"] for r in two["rows"]] == TINY["strategies"]  # unit order, whichever finished first
    assert all(r["metrics"]["clean_acc"] > 0.8 for r in two["rows"])  # real training, not chance (0.1)
    assert two["config"]["jobs"] == 2 and one_job["config"]["jobs"] == 1
    err = capsys.readouterr().err
    assert "robustnas compare: 2 job(s) on a local Ray instance" in err
    for strategy in TINY["strategies"]:  # one line per finished search and per finished retraining
        assert err.count(f"] {strategy} seed 0: search ") == 1
        assert err.count(f"] {strategy} seed 0: retrain 1/1 ") == 1
    import ray

    assert not ray.is_initialized()  # the private instance is stopped at the end


@pytest.mark.slow
@needs_ray
def test_an_interrupted_jobs_2_run_keeps_its_finished_unit_and_resumes_to_the_same_results(
        one_job, config_file, tmp_path):
    out = tmp_path / "killed"
    finished = []

    def interrupt(strategy, seed):
        finished.append((strategy, seed))
        raise KeyboardInterrupt  # Ctrl-C while the other job is still running

    config = CompareConfig.from_options({**TINY, "out": str(out), "jobs": 2})
    with pytest.raises(KeyboardInterrupt):
        compare(config, progress=False, on_unit_done=interrupt)
    import ray

    assert not ray.is_initialized()  # the running task was cancelled and the instance stopped
    saved = _results(out)
    assert len(finished) == 1 and saved["done"] == [list(finished[0])]  # saved as soon as it finished
    assert [(r["strategy"], r["seed"]) for r in saved["rows"]] == finished

    assert main(["compare", "--config", str(config_file), "--jobs", "2", "--out", str(out), "--resume", "-q"]) == 0
    _same(one_job, _results(out))


def test_jobs_and_cluster_are_not_part_of_the_fingerprint():
    base = CompareConfig.from_options({**TINY, "out": "runs/x"})
    assert CompareConfig.from_options({**TINY, "out": "runs/y", "jobs": 2, "cluster": "auto"}).fingerprint() \
        == base.fingerprint()
    assert CompareConfig.from_options({**TINY, "out": "runs/x", "budget": 3}).fingerprint() != base.fingerprint()


@pytest.mark.parametrize("changes, message", [
    ({"jobs": 0}, "jobs must be a positive integer"),
    ({"jobs": "2"}, "jobs must be a positive integer"),
    ({"cluster": "head-node"}, "cluster address 'head-node' is not valid; valid forms: 'auto'"),
    ({"cluster": "ray://head:70000"}, "port 70000 is out of range"),
    ({"cluster": ""}, "cluster must be a Ray cluster address"),
])
def test_bad_jobs_or_cluster_are_refused_naming_the_value(changes, message):
    with pytest.raises(ConfigError, match=message):
        CompareConfig.from_options({**TINY, "out": "runs/x", **changes})


def test_more_than_one_job_without_ray_is_refused_with_the_install_hint_and_one_job_needs_none(monkeypatch):
    monkeypatch.setattr(_parallel, "engine_available", lambda: False)
    with pytest.raises(ConfigError, match=r"jobs=2 runs the comparison on Ray, which is not installed; "
                                          r"install it with `pip install 'robustnas\[ray\]'`"):
        CompareConfig.from_options({**TINY, "out": "runs/x", "jobs": 2})
    with pytest.raises(ConfigError, match="cluster='auto' runs the comparison on Ray"):
        CompareConfig.from_options({**TINY, "out": "runs/x", "cluster": "auto"})
    assert CompareConfig.from_options({**TINY, "out": "runs/x", "jobs": 1}).jobs == 1


@needs_ray
def test_an_unreachable_cluster_is_refused_before_the_run_folder_exists(tmp_path, capsys, config_file):
    out = tmp_path / "run"
    code = main(["compare", "--config", str(config_file), "--cluster", "127.0.0.1:1", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("gpus, jobs, wants, share", [
    (0, 2, True, 0.0),    # no GPU: CPU tasks only
    (1, 2, True, 0.5),    # one GPU shared by two tasks
    (4, 2, True, 1.0),    # at most one GPU a task
    (2, 4, True, 0.5),
    (2, 2, False, 0.0),   # device: cpu asks for none
])
def test_each_task_asks_for_an_equal_share_of_the_gpus_at_most_one(gpus, jobs, wants, share):
    assert _parallel.gpus_per_task(gpus, jobs, wants) == share
