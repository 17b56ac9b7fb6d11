"""NNI's training-service engine end to end: trial processes, NNI's manager, its REST API.

Four tiny-space candidates, two at a time, each judged by the shared evaluator in its own
process. NNI's REST API (what the web UI shows) is read while the experiment is still up.
"""

from __future__ import annotations

import json
import socket

import pytest
from nni.experiment import rest
from nni.nas.strategy import Random

from robustnas.plugins.evaluator import METRIC_KEYS
from robustnas.plugins.nni import ARCH_KEY, arch_key, rest_records, robust_evaluator, run_experiment
from robustnas.search_spaces import build_model, get_space

CHEAP = dict(dataset="digits", recipe="standard", epochs=1, lr=0.1, attack="fast", n_examples=8,
             pgd_eval_steps=2, latency_repeats=1, progress=False)
TINY_STAGES = [[1, 8, 1], [1, 16, 2]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _decoded(value):
    while isinstance(value, str):
        value = json.loads(value)
    return value


def _n_params(sample: dict) -> int:
    return sum(p.numel() for p in build_model({"space": "tiny", "kwargs": {"input_shape": [1, 8, 8],
                                                "num_classes": 10, "stages": TINY_STAGES},
                                               "sample": sample}).parameters())


@pytest.mark.slow
def test_training_service_run_collects_every_trials_metrics_paired_with_its_own_architecture(tmp_path):
    space = get_space("tiny", input_shape=(1, 8, 8), num_classes=10, stages=TINY_STAGES)
    port = _free_port()
    result = run_experiment(space, Random(seed=0), robust_evaluator(CHEAP), engine="ts", max_trial_number=4,
                            trial_concurrency=2, trial_threads=1, port=port, working_dir=tmp_path,
                            manager_timeout=180, stop=False)
    try:
        jobs = rest.get(port, "/trial-jobs")
        metric_rows = [row for row in rest.get(port, "/metric-data") if row["type"] == "FINAL"]
        paired = rest_records(port)
    finally:
        result.experiment.stop()

    # The REST API: 4 trials succeeded, each FINAL metric is the whole dict with an arch_key, and
    # the architecture NNI lists under the metric's own parameter id is the one it was measured on.
    assert len(jobs) == 4 and {job["status"] for job in jobs} == {"SUCCEEDED"}
    listed = {}
    for job in jobs:
        (parameter,) = [_decoded(p) for p in job["hyperParameters"]]
        listed[parameter["parameter_id"]] = parameter["parameters"]["sample"]
    assert sorted(listed) == [0, 1, 2, 3] and len(metric_rows) == 4
    for row in metric_rows:
        metrics = _decoded(row["data"])
        assert set(METRIC_KEYS) | {"default", ARCH_KEY} <= set(metrics)
        sample = listed[int(row["parameterId"])]
        assert metrics[ARCH_KEY] == arch_key(sample)
        assert metrics["params"] == _n_params(sample)

    # rest_records pairs the same way whether or not /trial-jobs lists a trial with another
    # trial's parameter (NNI 3.0's local training service hands parameters out first come, first served).
    assert sorted(r["parameter_id"] for r in paired) == [0, 1, 2, 3]
    for record in paired:
        assert record["metrics"][ARCH_KEY] == arch_key(record["sample"]) and record["status"] == "SUCCEEDED"
    crossed = [r for r in paired if r["listed_parameter_id"] != r["parameter_id"]]
    assert all(r["listed_parameter_id"] in listed for r in crossed)

    # The collector got every trial's full dict, from the engine, each with its own architecture.
    records = result.records
    assert len(records) == 4 and all(r["status"] == "trained" for r in records)
    for record in records:
        metrics = record["metrics"]
        assert set(METRIC_KEYS) | {"default", ARCH_KEY} <= set(metrics)
        assert metrics[ARCH_KEY] == arch_key(record["sample"])
        assert metrics["params"] == _n_params(record["sample"]) == sum(
            p.numel() for p in build_model(record["record"]).parameters())
    assert sorted(arch_key(r["sample"]) for r in records) == sorted(arch_key(s) for s in listed.values())
    by_key = {r[ARCH_KEY]: r for r in (rec["metrics"] for rec in paired)}
    assert all(by_key[r["metrics"][ARCH_KEY]] == r["metrics"] for r in records)
    best = max(records, key=lambda r: r["metrics"]["default"])
    assert result.top_models[0]["metrics"]["default"] == best["metrics"]["default"]
