"""RobustnessEvaluator: config validation, metrics dict, record, model checks, size metrics."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustnas.plugins.evaluator import (
    METRIC_KEYS,
    EvaluatorConfig,
    RobustnessEvaluator,
    count_flops,
    count_params,
    measure_latency,
)


def tiny_cnn(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, classes),
    )


SYNTHETIC = {"input_shape": (1, 6, 6), "num_classes": 10, "n_train": 200, "n_val": 20, "n_test": 60}


@pytest.fixture(scope="module")
def evaluated():
    config = EvaluatorConfig(dataset="synthetic", dataset_options=SYNTHETIC, recipe="pgd", epochs=3,
                             n_examples=30, train_attack_steps=3, device="cpu", progress=False)
    evaluator = RobustnessEvaluator(config)
    model = tiny_cnn()
    return evaluator, model, evaluator.evaluate(model)


def test_evaluate_returns_every_documented_key_json_serialisable(evaluated):
    _, _, metrics = evaluated
    assert set(METRIC_KEYS) <= set(metrics)
    assert "certified_acc" not in metrics
    json.dumps(metrics)
    for key in ("clean_acc", "robust_acc", "pgd_acc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["clean_acc"] > 0.3  # 10 classes: chance is 0.1
    assert metrics["robust_acc"] <= metrics["pgd_acc"] + 0.1
    assert metrics["n_examples"] == 30 and metrics["attack"] == "fast" and metrics["norm"] == "linf"
    assert metrics["params"] == count_params(evaluated[1]) and metrics["flops"] > 0
    assert metrics["train_seconds"] > 0 and metrics["eval_seconds"] > 0 and metrics["latency_ms"] > 0


def test_evaluate_without_training_is_reproducible_with_the_seed(evaluated):
    evaluator, model, _ = evaluated
    a, b = evaluator.evaluate(model, train=False), evaluator.evaluate(model, train=False)
    for key in ("clean_acc", "robust_acc", "pgd_acc"):
        assert a[key] == b[key]
    assert a["train_seconds"] == 0.0 and a["recipe"] == "none"


def test_record_is_robustbench_style_with_percent_accuracies(evaluated):
    evaluator, _, metrics = evaluated
    record = evaluator.record("tiny", metrics, extra={"space": "none"})
    assert record["name"] == "tiny" and record["dataset"] == "synthetic"
    assert record["threat_model"] == "Linf" and record["eps"] == metrics["eps"]
    assert record["clean_acc"] == pytest.approx(100 * metrics["clean_acc"], abs=0.01)
    assert record["autoattack_acc"] == pytest.approx(100 * metrics["robust_acc"], abs=0.01)
    assert record["metrics"] == metrics and record["extra"] == {"space": "none"}
    assert EvaluatorConfig.from_dict(json.loads(json.dumps(record["evaluator"]))) == evaluator.config


def test_certified_accuracy_is_reported_when_asked_and_bounded_by_robust():
    pytest.importorskip("robustnas.plugins.evaluator.bounds", reason="bounds.py (DSRNA bounds) not written yet")
    config = EvaluatorConfig(dataset="synthetic", dataset_options=SYNTHETIC, n_examples=20, certify=True,
                             device="cpu", progress=False, eps=0.01)
    metrics = RobustnessEvaluator(config).evaluate(tiny_cnn(), train=False)
    assert 0.0 <= metrics["certified_acc"] <= metrics["robust_acc"]
    json.dumps(metrics)


def test_evaluate_adds_the_seconds_of_every_stage_to_timings_and_measures_the_same():
    from robustnas.plugins.compare import MEASURED_KEYS
    from robustnas.plugins.errors import ConfigError
    from robustnas.plugins.evaluator._evaluator import STAGES

    config = EvaluatorConfig(dataset="digits", recipe="fgsm-rs", epochs=3, batch_size=64, n_examples=32,
                             latency_repeats=2, certify=True, device="cpu", progress=False)
    evaluator = RobustnessEvaluator(config)
    timings: dict[str, float] = {}
    timed = evaluator.evaluate(tiny_cnn(), timings=timings)
    untimed = evaluator.evaluate(tiny_cnn())
    assert set(timings) == set(STAGES)
    assert all(seconds > 0 for seconds in timings.values()), timings
    assert timings["train"] >= timed["train_seconds"]  # the stage wraps train_model's own clock
    evaluation = ("clean_acc", "pgd", "autoattack", "checks", "certify")
    assert sum(timings[s] for s in evaluation) <= timed["eval_seconds"]
    # timing the stages changes no number (tiny_cnn() is seeded: the same network twice)
    assert {k: v for k, v in timed.items() if k not in MEASURED_KEYS} == \
        {k: v for k, v in untimed.items() if k not in MEASURED_KEYS}
    assert timed["clean_acc"] > 0.3  # digits: chance is 0.1
    with pytest.raises(ConfigError, match="timings must be a dict"):
        evaluator.evaluate(tiny_cnn(), train=False, timings=[])


def test_model_with_wrong_input_shape_is_rejected_naming_both_shapes():
    config = EvaluatorConfig(dataset="synthetic", dataset_options=SYNTHETIC, device="cpu", progress=False)
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(ValueError, match=r"\(1, 6, 6\).*3072"):
        RobustnessEvaluator(config).evaluate(wrong)
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 10\)"):
        RobustnessEvaluator(config).evaluate(tiny_cnn(classes=4))


def test_config_round_trips_through_json():
    config = EvaluatorConfig(dataset="digits", eps=0.1, attack="standard", recipe="trades", epochs=2)
    assert EvaluatorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'.*digits, mnist"),
        ({"recipe": "free"}, "unknown recipe 'free'.*standard, pgd, trades, fgsm-rs"),
        ({"attack": "plus"}, "unknown attack 'plus'.*standard, fast"),
        ({"eps": 0.0}, "eps must be in \\(0, 1\\]"),
        ({"eps": 1.5}, "eps must be in \\(0, 1\\]"),
        ({"norm": "l1"}, "unknown norm 'l1'.*linf, l2"),
        ({"n_examples": 0}, "n_examples must be an integer >= 1"),
    ],
)
def test_bad_config_values_raise_naming_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvaluatorConfig(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown EvaluatorConfig keys \\['epsilon'\\].*valid keys"):
        EvaluatorConfig.from_dict({"epsilon": 0.1})


def test_missing_local_root_and_empty_split_surface_from_the_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        RobustnessEvaluator(EvaluatorConfig(dataset="cifar10", root=str(tmp_path / "none"))).bundle
    with pytest.raises(ValueError, match="must be >= 1"):
        RobustnessEvaluator(EvaluatorConfig(dataset="synthetic", dataset_options={"n_test": 0})).bundle


def test_flops_count_multiply_adds_twice_and_params_count_every_weight():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    assert count_params(model) == (4 * 9 + 4) + (100 * 3 + 3)
    assert count_flops(model, (1, 5, 5)) == 2 * (4 * 9 * 25 + 100 * 3)
    assert measure_latency(model, (1, 5, 5), repeats=5, warmup=1) > 0
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(model, (1, 0, 5))
