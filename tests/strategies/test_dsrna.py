"""DSRNA strategy: robustness metrics, real searches in a NasExperiment, and the Jacobian effect."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from robustnas.strategies import DSRNA, get_strategy
from robustnas.strategies.dsrna import bound_metric, jacobian_norm

SPACE_KWARGS = {"width": 2, "num_cells": 3}


pytestmark = pytest.mark.usefixtures("single_thread")


def _linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 4))


def test_exact_jacobian_norm_of_a_linear_model_is_the_norm_of_the_top_class_row():
    model = _linear_model()
    x = torch.rand(5, 1, 3, 4)
    weight = model[1].weight.detach()
    top = model(x).argmax(1)
    for q in (1, 2):
        expected = weight[top].norm(p=q, dim=1).mean()
        assert float(jacobian_norm(model, x, q=q).detach()) == pytest.approx(float(expected), rel=1e-5)


def test_projected_jacobian_estimates_the_frobenius_norm():
    model = _linear_model(1)
    x = torch.rand(4, 1, 3, 4)
    torch.manual_seed(0)
    estimate = float(jacobian_norm(model, x, q=2, mode="projection", n_proj=4000, create_graph=False))
    frobenius = float(model[1].weight.detach().norm())
    assert estimate == pytest.approx(frobenius, rel=0.03)


def test_jacobian_norm_is_differentiable_wrt_parameters():
    model = _linear_model()
    value = jacobian_norm(model, torch.rand(3, 1, 3, 4), q=1)
    (grad,) = torch.autograd.grad(value, model[1].weight)
    assert float(grad.abs().sum()) > 0


def test_bound_metric_grows_as_eps_shrinks_and_its_margin_form_is_the_mean_worst_margin():
    model = _linear_model()
    x, y = torch.rand(6, 1, 3, 4), torch.randint(0, 4, (6,))
    with torch.no_grad():
        values = [float(bound_metric(model, x, y, eps=e)) for e in (0.3, 0.1, 0.01)]
    assert values[0] < values[1] < values[2]
    from robustnas.plugins.evaluator.bounds import margin_lower_bound

    with torch.no_grad():
        expected = margin_lower_bound(model, x, y, 0.1).min(1).values.mean()
        margin = bound_metric(model, x, y, eps=0.1, reduction="margin")
    assert float(margin) == pytest.approx(float(expected))


def test_arguments_are_validated_with_the_valid_choices_named():
    with pytest.raises(ValueError, match="jacobian, bound, combined"):
        DSRNA(metric="lipschitz")
    with pytest.raises(ValueError, match="exact, projection"):
        DSRNA(jacobian_mode="svd")
    with pytest.raises(ValueError, match="q must be 1 or 2"):
        DSRNA(q=3)
    with pytest.raises(ValueError, match="gamma"):
        DSRNA(gamma=-1)
    with pytest.raises(ValueError, match="arch_warmup_epochs"):
        DSRNA(arch_warmup_epochs=-1)
    assert isinstance(get_strategy("dsrna", metric="bound"), DSRNA)


def _check_valid_export(strategy: DSRNA) -> dict:
    from robustnas.search_spaces import DSRNASpace, build_model, export_record

    front = strategy.pareto_front()
    assert len(front) == 1
    record = export_record(DSRNASpace(input_shape=(1, 8, 8), num_classes=10, **SPACE_KWARGS), front[0]["sample"])
    assert {label.split("/")[0] for label in record["sample"]} == {"normal", "reduce"}
    model = build_model(json.loads(json.dumps(record))).eval()
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    metrics = front[0]["metrics"]
    assert 0 <= metrics["pgd_acc"] <= metrics["clean_acc"] <= 1
    assert 0 <= metrics["certified_acc"] <= metrics["clean_acc"]
    assert metrics["jacobian_norm"] > 0 and math.isfinite(metrics["margin_lower_bound"])
    json.dumps(front)
    return metrics


@pytest.mark.parametrize("metric", ["bound", "combined"])
def test_dsrna_bound_and_combined_searches_complete_and_move_the_architecture(one_shot_search, tmp_path, metric):
    from robustnas.search_spaces import DSRNASpace

    strategy = DSRNA(metric=metric, dataset="digits", weight_reg=1e-4, eval_batches=1, eval_pgd_steps=1)
    snapshot = one_shot_search(DSRNASpace, SPACE_KWARGS, strategy, steps=2, tmp_path=tmp_path)
    _check_valid_export(strategy)
    assert snapshot.max_change() > 1e-4
    history = strategy.oneshot_module.r_history
    assert len(history) == 2 and all(math.isfinite(r) for r in history)
    # bound R is minus a cross-entropy of worst-case logits: never positive
    assert all(r <= 0 for r in history)


def test_dsrna_arch_warmup_trains_weights_only_then_moves_the_architecture(one_shot_search, tmp_path):
    from robustnas.search_spaces import DSRNASpace

    strategy = DSRNA(metric="jacobian", arch_warmup_epochs=1, arc_learning_rate=0.05, dataset="digits",
                     eval_batches=1, eval_pgd_steps=1)
    snapshot = one_shot_search(DSRNASpace, SPACE_KWARGS, strategy, steps=2, epochs=2, tmp_path=tmp_path)
    assert snapshot.epoch_changes[0] == 0.0  # epoch 0: weights only
    assert snapshot.epoch_changes[1] > 1e-3  # epoch 1: architecture steps
    assert len(strategy.oneshot_module.r_history) == 2  # R of the two architecture steps of epoch 1
    _check_valid_export(strategy)


def _jacobian_with_batch_stats(net: nn.Module, x: torch.Tensor) -> float:
    net = copy.deepcopy(net).train()
    return float(jacobian_norm(net, x, q=1, create_graph=False))


@pytest.fixture(scope="module")
def jacobian_pair(one_shot_search, tmp_path_factory):
    """The same 4-step search at gamma=1 and gamma=0.

    The weights are held still (``weight_lr=0``) so the two runs differ only through the
    architecture term, and the architecture learning rate is 0.05 instead of 3e-4: at the
    paper's rate the architecture weights move by ~1e-3 in the four steps a unit test can
    afford, far too little to change the network measurably.
    """
    from robustnas.plugins.evaluator import load_dataset
    from robustnas.search_spaces import DSRNASpace

    x_val, _ = load_dataset("digits").tensors("val", 64)
    out = {}
    for gamma in (1.0, 0.0):
        strategy = DSRNA(metric="jacobian", gamma=gamma, arc_learning_rate=0.05, weight_lr=0.0, weight_lr_min=0.0,
                         dataset="digits", eval_batches=1, eval_pgd_steps=1)
        snapshot = one_shot_search(DSRNASpace, SPACE_KWARGS, strategy, steps=4, seed=0,
                                   tmp_path=tmp_path_factory.mktemp(f"dsrna{gamma}"))
        out[gamma] = (strategy, snapshot, _jacobian_with_batch_stats(strategy.supernet, x_val))
    return out


def test_dsrna_jacobian_search_completes_and_exports_a_valid_architecture(jacobian_pair):
    strategy, snapshot, _ = jacobian_pair[1.0]
    _check_valid_export(strategy)
    assert snapshot.max_change() > 1e-3
    history = strategy.oneshot_module.r_history
    assert len(history) == 4 and all(r < 0 for r in history)  # R = -||J||


def test_dsrna_jacobian_term_lowers_the_input_gradient_norm_of_the_supernet(jacobian_pair):
    regularised, plain = jacobian_pair[1.0][2], jacobian_pair[0.0][2]
    assert jacobian_pair[0.0][0].oneshot_module.r_history == []  # gamma=0: no R term at all
    assert regularised < 0.9 * plain, (regularised, plain)
