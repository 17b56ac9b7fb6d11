"""Training recipes of the shared evaluator on a small synthetic set."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustnas.plugins.evaluator import RECIPES, TrainConfig, load_dataset, train_model, train_step
from robustnas.plugins.evaluator.training import make_optimizer


def mlp(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, classes))


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", input_shape=(1, 6, 6), num_classes=4, n_train=160, n_val=40, n_test=40)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_learns_the_synthetic_task(synthetic, recipe):
    model = mlp()
    cfg = TrainConfig(recipe=recipe, epochs=4, batch_size=32, lr=0.05, attack_steps=3, progress=False)
    history = train_model(model, synthetic, cfg, device="cpu")
    assert len(history["loss"]) == len(history["seconds"]) == len(history["val_acc"]) == 4
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_acc"][-1] > 0.5  # chance is 0.25
    assert history["recipe"] == recipe and history["eps"] == synthetic.threat.eps
    assert not model.training


def test_training_is_reproducible_on_cpu_with_the_same_seed(synthetic):
    weights = []
    for _ in range(2):
        model = mlp()
        train_model(model, synthetic, TrainConfig(recipe="pgd", epochs=2, batch_size=32, attack_steps=2,
                                                  progress=False), device="cpu")
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_non_finite_loss_stops_with_epoch_step_and_lr_advice(synthetic):
    model = mlp()
    cfg = TrainConfig(recipe="standard", epochs=3, batch_size=32, lr=1e12, schedule="constant", progress=False)
    with pytest.raises(FloatingPointError, match=r"epoch \d+, step \d+.*lower lr"):
        train_model(model, synthetic, cfg, device="cpu")


def test_train_step_makes_one_update_and_reports_loss_and_accuracy(synthetic):
    model = mlp()
    cfg = TrainConfig(recipe="pgd", eps=0.1, attack_steps=3)
    optimizer = make_optimizer(model, cfg)
    x, y = synthetic.tensors("train", n=32)
    before = [p.detach().clone() for p in model.parameters()]
    out = train_step(model, x, y, optimizer, cfg)
    assert set(out) == {"loss", "acc"} and out["loss"] > 0 and 0.0 <= out["acc"] <= 1.0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_adversarial_train_step_without_eps_asks_for_it(synthetic):
    model = mlp()
    cfg = TrainConfig(recipe="trades")
    x, y = synthetic.tensors("train", n=8)
    with pytest.raises(ValueError, match="needs eps"):
        train_step(model, x, y, make_optimizer(model, cfg), cfg)


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown recipe 'madry'.*standard, pgd, trades, fgsm-rs"):
        TrainConfig(recipe="madry")


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("eps", 2.0)])
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field if field != "eps" else "eps must be in"):
        TrainConfig(**{field: value})
