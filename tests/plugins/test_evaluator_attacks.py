"""Attacks, AutoAttack and adversarial training of the shared evaluator, on real digits.

Two CNNs are trained once per module (standard and PGD at the digits default eps) and
reused; AutoAttack runs on at most 100 test points.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustnas.plugins.evaluator import (
    DEFAULT_THREATS,
    TrainConfig,
    accuracy,
    autoattack_accuracy,
    fgsm,
    load_dataset,
    pgd,
    train_model,
)

EPS = DEFAULT_THREATS["digits"].eps
N_AA = 100


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    )


class TupleOut(nn.Module):
    """A model returning (logits, features), as DARTS-style networks with auxiliary heads do."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x), x.flatten(1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _train(bundle, recipe):
    model = small_cnn()
    cfg = TrainConfig(recipe=recipe, epochs=10, batch_size=32, lr=0.1, progress=False)
    train_model(model, bundle, cfg, device="cpu")
    return model


@pytest.fixture(scope="module")
def standard_model(digits):
    return _train(digits, "standard")


@pytest.fixture(scope="module")
def pgd_model(digits):
    return _train(digits, "pgd")


@pytest.fixture(scope="module")
def test_points(digits):
    return digits.tensors("test", n=N_AA)


@pytest.fixture(scope="module")
def aa_fast(pgd_model, test_points):
    x, y = test_points
    return autoattack_accuracy(pgd_model, x, y, norm="linf", eps=EPS, mode="fast", seed=0)


# --- PGD / FGSM -----------------------------------------------------------------------------


def test_pgd_reduces_accuracy_and_stays_in_linf_ball_and_unit_box(standard_model, test_points):
    x, y = test_points
    adv = pgd(standard_model, x, y, eps=EPS, steps=10)
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    clean, robust = accuracy(standard_model, x, y), accuracy(standard_model, adv, y)
    assert clean >= 0.9 and robust < clean - 0.3


def test_pgd_l2_stays_in_l2_ball_and_reduces_accuracy(standard_model, test_points):
    x, y = test_points
    eps = 1.0
    adv = pgd(standard_model, x, y, eps=eps, norm="l2", steps=10)
    norms = (adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= eps + 1e-5
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert accuracy(standard_model, adv, y) < accuracy(standard_model, x, y) - 0.2


def test_fgsm_is_one_step_of_size_eps_and_weaker_than_pgd(standard_model, test_points):
    x, y = test_points
    adv = fgsm(standard_model, x, y, eps=EPS)
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    assert accuracy(standard_model, adv, y) < accuracy(standard_model, x, y)
    assert accuracy(standard_model, pgd(standard_model, x, y, eps=EPS, steps=20), y) <= accuracy(
        standard_model, adv, y
    )


@pytest.mark.parametrize("start_training", [True, False])
def test_pgd_restores_train_eval_mode_and_leaves_parameter_grads_untouched(standard_model, test_points, start_training):
    x, y = test_points
    standard_model.train(start_training)
    params = list(standard_model.parameters())
    params[0].grad = torch.full_like(params[0], 0.5)
    before = [None if p.grad is None else p.grad.clone() for p in params]
    pgd(standard_model, x[:16], y[:16], eps=EPS, steps=3)
    assert all(m.training == start_training for m in standard_model.modules())
    assert all(p.requires_grad for p in params)
    for p, g in zip(params, before):
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert torch.equal(p.grad, g)
    params[0].grad = None
    standard_model.eval()


def test_pgd_accepts_models_returning_a_tuple_with_logits_first(standard_model, test_points):
    x, y = test_points
    adv = pgd(TupleOut(standard_model), x[:32], y[:32], eps=EPS, steps=5)
    assert accuracy(standard_model, adv, y[:32]) < accuracy(standard_model, x[:32], y[:32])


def test_pgd_rejects_bad_eps(standard_model, test_points):
    x, y = test_points
    with pytest.raises(ValueError, match="eps must be in"):
        pgd(standard_model, x, y, eps=0.0)


# --- adversarial training and AutoAttack ------------------------------------------------------


def test_pgd_training_reaches_90_percent_clean_and_is_more_robust_than_standard_training(
    digits, pgd_model, standard_model, test_points, aa_fast
):
    x_all, y_all = digits.tensors("test")
    clean = accuracy(pgd_model, x_all, y_all)
    assert clean >= 0.90
    robust_pgd_trained, _ = aa_fast
    x, y = test_points
    robust_standard, _ = autoattack_accuracy(standard_model, x, y, norm="linf", eps=EPS, mode="fast")
    assert 0.0 < robust_pgd_trained < accuracy(pgd_model, x, y)
    assert robust_pgd_trained > robust_standard + 0.2


def test_autoattack_returns_adversarial_examples_within_the_ball(pgd_model, test_points, aa_fast):
    x, y = test_points
    robust, x_adv = aa_fast
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= EPS + 1e-5
    assert accuracy(pgd_model, x_adv, y) == pytest.approx(robust, abs=1e-9)


def test_autoattack_agrees_with_torchattacks_apgd_ce_plus_apgd_t(pgd_model, test_points, aa_fast):
    """torchattacks' AutoAttack offers only standard/plus/rand ensembles (with FAB and Square),
    so the independent check is its APGD-CE + APGD-T (100 steps, 9 targets) in a MultiAttack,
    the same attacks as the evaluator's fast mode."""
    torchattacks = pytest.importorskip("torchattacks")
    x, y = test_points
    attack = torchattacks.MultiAttack([
        torchattacks.APGD(pgd_model, norm="Linf", eps=EPS, steps=100, n_restarts=1, loss="ce", seed=0),
        torchattacks.APGDT(pgd_model, norm="Linf", eps=EPS, steps=100, n_restarts=1, n_classes=10, seed=0),
    ])
    theirs = accuracy(pgd_model, attack(x, y), y)
    ours, _ = aa_fast
    assert abs(ours - theirs) <= 0.03


def test_standard_mode_is_at_least_as_strong_as_fast_mode(pgd_model, test_points):
    x, y = test_points
    x, y = x[:20], y[:20]  # FAB-T and Square-5000 are slow on CPU: 20 points
    fast, _ = autoattack_accuracy(pgd_model, x, y, norm="linf", eps=EPS, mode="fast")
    standard, _ = autoattack_accuracy(pgd_model, x, y, norm="linf", eps=EPS, mode="standard")
    assert standard <= fast


def test_autoattack_unwraps_tuple_outputs_restores_mode_and_keeps_rng(pgd_model, test_points):
    x, y = test_points
    model = TupleOut(pgd_model).train()
    state = torch.random.get_rng_state()
    robust, _ = autoattack_accuracy(model, x[:20], y[:20], norm="linf", eps=EPS, mode="fast")
    assert 0.0 <= robust <= 1.0
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(state, torch.random.get_rng_state())
    pgd_model.eval()


def test_autoattack_rejects_unknown_mode(pgd_model, test_points):
    x, y = test_points
    with pytest.raises(ValueError, match="unknown AutoAttack mode 'plus'.*standard, fast"):
        autoattack_accuracy(pgd_model, x, y, norm="linf", eps=EPS, mode="plus")
