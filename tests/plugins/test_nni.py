"""The NNI adapter: the shared evaluator inside NasExperiments, and the raw metric dicts back out."""

from __future__ import annotations

import pytest
import torch
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.strategy import Random, RandomOneShot

from robustnas.plugins.evaluator import METRIC_KEYS, load_dataset
from robustnas.plugins.nni import (
    MetricsCollector,
    classification_evaluator,
    robust_evaluator,
    run_experiment,
)
from robustnas.search_spaces import build_model, get_space

CHEAP = dict(dataset="digits", recipe="standard", epochs=1, lr=0.1, attack="fast", n_examples=8,
             pgd_eval_steps=2, latency_repeats=1, progress=False)
TINY_STAGES = [[1, 8, 1], [1, 16, 2]]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny networks run fastest on one thread, and the test machine's cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def space():
    return get_space("tiny", input_shape=(1, 8, 8), num_classes=10, stages=TINY_STAGES)


def _n_params(record: dict) -> int:
    return sum(p.numel() for p in build_model(record).parameters())


def test_robust_evaluator_in_a_nas_experiment_with_random_reports_dicts_the_collector_keeps(space, tmp_path):
    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = 3
    config.experiment_working_directory = str(tmp_path)
    experiment = NasExperiment(space, robust_evaluator(CHEAP), Random(seed=0), config)
    collector = MetricsCollector(space).attach(experiment)
    experiment.run()
    experiment.stop()

    records = collector.records
    assert len(records) == 3 and all(r["status"] == "trained" for r in records)
    for record, model in zip(records, experiment._engine.list_models()):
        metrics = record["metrics"]
        assert set(METRIC_KEYS) | {"default"} <= set(metrics)
        assert metrics["default"] == metrics["robust_acc"]
        assert 0.0 <= metrics["robust_acc"] <= 1.0 and metrics["n_examples"] == 8
        assert model.metric == metrics["default"]  # NNI itself kept only the scalar
        assert record["sample"] == model.sample
        assert record["record"]["space"] == "tiny" and _n_params(record["record"]) == metrics["params"]


def test_run_experiment_ranks_top_models_by_the_default_metric_and_negates_minimised_ones(space, tmp_path):
    result = run_experiment(space, Random(seed=1), robust_evaluator(CHEAP, default="params"),
                            max_trial_number=3, top_k=1, working_dir=tmp_path)
    assert len(result.records) == 3
    assert all(r["metrics"]["default"] == -r["metrics"]["params"] for r in result.records)
    smallest = min(result.records, key=lambda r: r["metrics"]["params"])
    assert result.top_models == [smallest] and result.exported == [smallest["sample"]]
    front = result.front(("clean_acc", "params"))
    assert smallest in front or any(r["metrics"]["params"] == smallest["metrics"]["params"] for r in front)


def test_classification_evaluator_trains_a_one_shot_supernet_on_the_bundle_splits(space, tmp_path):
    bundle = load_dataset("digits")
    evaluator = classification_evaluator(bundle, batch_size=32, max_epochs=1, limit_train_batches=4,
                                         limit_val_batches=2)
    assert evaluator.train_dataloaders.dataset is bundle.train
    assert evaluator.val_dataloaders.dataset is bundle.val
    assert evaluator.trainer.checkpoint_callback is None and evaluator.trainer.logger is None

    result = run_experiment(space, RandomOneShot(), evaluator, working_dir=tmp_path)
    metrics = evaluator.trainer.callback_metrics
    assert {"train_loss", "val_acc"} <= set(metrics) and torch.isfinite(metrics["train_loss"])
    assert evaluator.trainer.global_step == 4  # limit_train_batches was honoured
    exported = result.exported[0]
    assert space.freeze(exported)(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_bad_inputs_to_the_adapter_raise_clear_errors(space):
    with pytest.raises(ValueError, match="unknown default metric 'accuracy'.*robust_acc"):
        robust_evaluator(CHEAP, default="accuracy")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        robust_evaluator({**CHEAP, "dataset": "imagenet"})
    with pytest.raises(TypeError, match="NasExperiment or an ExecutionEngine"):
        MetricsCollector().attach(space)
    with pytest.raises(ValueError, match="unknown engine 'remote'; valid engines: sequential, ts"):
        run_experiment(space, Random(), robust_evaluator(CHEAP), engine="remote")
