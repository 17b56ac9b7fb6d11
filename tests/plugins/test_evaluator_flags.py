"""Flags: gradient masking is caught, AutoAttack's own checks surface, ``fast`` escalates to ``standard``.

The model that motivated them (issue 17): an MLP behind a layer that rounds its input to 5 grey
levels, PGD-trained on digits. Its input gradient is exactly zero, so every gradient attack
fails; only Square (black-box, in the ``standard`` ensemble) breaks it.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from robustnas.plugins.evaluator import METRIC_KEYS, EvaluatorConfig, RobustnessEvaluator, load_dataset
from robustnas.plugins.evaluator.autoattack import autoattack_evaluation
from robustnas.plugins.evaluator.checks import evaluator_flags, flag_code, zero_gradient_share


class RoundInput(nn.Module):
    """Rounds pixels to ``levels`` grey levels: a zero gradient almost everywhere."""

    def __init__(self, levels: int = 5) -> None:
        super().__init__()
        self.steps = levels - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * self.steps) / self.steps


def mlp(rounding: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [RoundInput()] if rounding else []
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def config(**kw) -> EvaluatorConfig:
    """Evaluator defaults (digits, PGD-7 training for 10 epochs, ``fast`` AutoAttack), 100 points."""
    return EvaluatorConfig(dataset="digits", n_examples=100, device="cpu", progress=False, **kw)


def codes(flags: list[str]) -> set[str]:
    return {flag_code(f) for f in flags}


@pytest.fixture(scope="module")
def rounding_model():
    """The rounding MLP, PGD-trained on digits; its metrics with escalation turned off."""
    model = mlp(rounding=True)
    metrics = RobustnessEvaluator(config(escalate=False)).evaluate(model)
    return model, metrics


def test_without_escalation_fast_mode_is_fooled_by_the_rounding_model_but_flags_it(rounding_model):
    _, metrics = rounding_model
    # the failure of issue 17: fast mode reports the model as very robust ...
    assert metrics["attack"] == "fast"
    assert metrics["robust_acc"] > 0.8 and metrics["pgd_acc"] > 0.8
    # ... but no longer silently: pyautoattack's zero-gradient check and the evaluator's own
    assert {"aa-zero-gradient", "zero-input-gradient"} <= codes(metrics["flags"])
    assert "zero-input-gradient: 1.00 of points" in metrics["flags"]


def test_rounding_model_in_the_default_fast_mode_is_escalated_and_broken(rounding_model):
    model, unescalated = rounding_model
    metrics = RobustnessEvaluator(config()).evaluate(model, train=False)
    assert metrics["attack"] == "standard"
    assert metrics["flags"][0].startswith("escalated-to-standard: fast mode gave ")
    assert f"{unescalated['robust_acc']:.3f}" in metrics["flags"][0]
    assert {"aa-square-beats-white-box", "zero-input-gradient"} <= codes(metrics["flags"])
    # Square finds what the gradient attacks cannot: robust accuracy near 0, far below PGD
    assert metrics["robust_acc"] <= 0.1
    assert metrics["pgd_acc"] - metrics["robust_acc"] > 0.7
    assert metrics["clean_acc"] > 0.85
    json.dumps(metrics)


def test_a_plain_pgd_trained_mlp_has_no_flags_and_stays_in_fast_mode():
    metrics = RobustnessEvaluator(config()).evaluate(mlp(rounding=False))
    assert "flags" in METRIC_KEYS and set(METRIC_KEYS) <= set(metrics)
    assert metrics["flags"] == [] and metrics["attack"] == "fast"
    assert metrics["robust_acc"] <= metrics["pgd_acc"] < metrics["clean_acc"]


def test_autoattack_checks_are_captured_even_when_its_logger_is_silenced(rounding_model):
    model, _ = rounding_model
    x, y = load_dataset("digits").tensors("test", 40)
    logger = logging.getLogger("auto-attack")
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        result = autoattack_evaluation(model, x, y, norm="linf", eps=0.2, mode="fast")
    finally:
        logger.setLevel(before)
    assert "aa-zero-gradient" in codes(result.flags)
    assert any("zero gradient" in w for w in result.warnings)
    assert set(result.per_attack) == {"apgd-ce", "apgd-t"}
    assert result.robust_acc == result.per_attack["apgd-t"]


def test_zero_gradient_share_is_one_for_rounding_and_zero_for_a_plain_mlp(rounding_model):
    model, _ = rounding_model
    x, y = load_dataset("digits").tensors("test", 50)
    assert zero_gradient_share(model, x, y) == 1.0
    assert zero_gradient_share(mlp(rounding=False), x, y) == 0.0
    # a model whose output ignores the input's autograd graph counts every point
    detached = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    detached.forward = lambda inp: nn.Sequential.forward(detached, inp.detach())  # type: ignore[method-assign]
    assert zero_gradient_share(detached, x, y) == 1.0


@pytest.mark.parametrize(
    "numbers, expected",
    [
        (dict(clean_acc=0.9, robust_acc=0.5, pgd_acc=0.6, zero_share=0.0, eps=0.2), set()),
        (dict(clean_acc=0.9, robust_acc=0.5, pgd_acc=0.45, zero_share=0.0, eps=0.2), {"pgd-below-autoattack"}),
        (dict(clean_acc=0.9, robust_acc=0.895, pgd_acc=0.9, zero_share=0.0, eps=0.2), {"robust-near-clean"}),
        # a small radius may leave a model robust: not suspicious
        (dict(clean_acc=0.9, robust_acc=0.895, pgd_acc=0.9, zero_share=0.0, eps=0.01), set()),
        # a model at chance is not masking anything
        (dict(clean_acc=0.12, robust_acc=0.12, pgd_acc=0.12, zero_share=0.0, eps=0.2), set()),
        (dict(clean_acc=0.9, robust_acc=0.5, pgd_acc=0.6, zero_share=0.06, eps=0.2), {"zero-input-gradient"}),
        (dict(clean_acc=0.9, robust_acc=0.5, pgd_acc=0.6, zero_share=0.04, eps=0.2), set()),
    ],
)
def test_evaluator_flags_fire_on_their_thresholds(numbers, expected):
    assert codes(evaluator_flags(norm="linf", num_classes=10, **numbers)) == expected


def test_escalate_must_be_a_boolean():
    with pytest.raises(ValueError, match="escalate must be true or false"):
        EvaluatorConfig(escalate="yes")


class AbsMLP(nn.Module):
    """An MLP with an ``abs`` activation: attackable, but outside what interval bounds support."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.abs(self.fc1(x.flatten(1))))


def test_certify_with_an_unsupported_op_keeps_every_metric_and_names_the_op():
    evaluator = RobustnessEvaluator(config(certify=True, epochs=2, recipe="standard"))
    metrics = evaluator.evaluate(AbsMLP())
    assert metrics["certified_acc"] is None
    assert "certify-unsupported: abs" in metrics["flags"]
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["clean_acc"] > 0.5 and 0.0 <= metrics["robust_acc"] <= metrics["pgd_acc"]
    json.dumps(evaluator.record("abs-mlp", metrics))


def test_certify_on_a_supported_model_gives_a_number_below_autoattack():
    metrics = RobustnessEvaluator(config(certify=True, epochs=2, recipe="standard", eps=0.01)).evaluate(
        mlp(rounding=False))
    assert isinstance(metrics["certified_acc"], float)
    assert 0.0 < metrics["certified_acc"] <= metrics["robust_acc"]
    assert not any(f.startswith("certify-unsupported") for f in metrics["flags"])
