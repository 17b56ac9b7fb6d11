"""Interval bound propagation: soundness, tightness at eps -> 0, differentiability."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustnas.plugins.evaluator import pgd
from robustnas.plugins.evaluator.bounds import (
    IntervalTensor,
    certified_accuracy,
    input_box,
    interval_bounds,
    margin_lower_bound,
)

TOL = 1e-4  # float32 rounding slack


def _digits(n: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    from robustnas.plugins.evaluator import load_dataset

    return load_dataset("digits").tensors("train", n)


def _small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 10),
    )


@pytest.fixture(scope="module")
def trained_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x, y = _digits()
    model = _small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    model.eval()
    return model, x[:64], y[:64]


def _margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    m = logits.gather(1, y[:, None]) - logits
    return m.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("inf"))


def _assert_margins_above(model, x, y, lb, eps, norm="linf", n_random=20):
    with torch.no_grad():
        for _ in range(n_random):
            if norm == "linf":
                delta = (torch.rand_like(x) * 2 - 1) * eps
            else:
                delta = torch.randn_like(x)
                delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps
            assert (_margins(model, (x + delta).clamp(0, 1), y) >= lb - TOL).all()
    adv = pgd(model, x, y, eps=eps, norm=norm, steps=10)
    with torch.no_grad():
        assert (_margins(model, adv, y) >= lb - TOL).all()
    return adv


@pytest.mark.parametrize("eps", [0.01, 0.05])
def test_frozen_cnn_margins_never_fall_below_certified_bound_under_random_and_pgd_noise(trained_cnn, eps):
    model, x, y = trained_cnn
    lb = margin_lower_bound(model, x, y, eps).detach()
    lo, hi = (t.detach() for t in interval_bounds(model, x, eps))
    adv = _assert_margins_above(model, x, y, lb, eps)
    with torch.no_grad():
        out = model(adv)
    assert (out >= lo - TOL).all() and (out <= hi + TOL).all()


def test_l2_bounds_use_the_enclosing_linf_box_and_stay_sound(trained_cnn):
    model, x, y = trained_cnn
    lb = margin_lower_bound(model, x, y, 0.1, norm="l2").detach()
    _assert_margins_above(model, x, y, lb, 0.1, norm="l2")


def test_bounds_through_mixed_darts_supernet_are_sound(dsrna_supernet):
    x, y = _digits(16)
    from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedCell

    assert any(isinstance(m, DifferentiableMixedCell) for m in dsrna_supernet.modules())
    lb = margin_lower_bound(dsrna_supernet, x, y, 0.02).detach()
    assert torch.isfinite(lb.masked_fill(lb.isinf(), 0)).all()
    _assert_margins_above(dsrna_supernet, x, y, lb, 0.02, n_random=10)


@pytest.mark.parametrize("which", ["cnn", "supernet"])
def test_bounds_shrink_to_the_point_value_as_eps_goes_to_zero(trained_cnn, dsrna_supernet, which):
    model, x = (trained_cnn[0], trained_cnn[1]) if which == "cnn" else (dsrna_supernet, _digits(16)[0])
    with torch.no_grad():
        point = model(x)
        widths = []
        for eps in (1e-2, 1e-3, 1e-4, 0.0):
            lo, hi = interval_bounds(model, x, eps)
            assert (lo <= point + TOL).all() and (hi >= point - TOL).all()
            widths.append(float((hi - lo).max()))
    assert widths[0] > widths[1] > widths[2] > widths[3]
    assert widths[3] == pytest.approx(0.0, abs=1e-5)
    assert widths[2] < 0.02 * widths[0]


def test_last_layer_elision_is_at_least_as_tight_as_subtracting_logit_bounds(trained_cnn):
    model, x, y = trained_cnn
    lo, hi = interval_bounds(model, x, 0.05)
    naive = lo.gather(1, y[:, None]) - hi
    elided = margin_lower_bound(model, x, y, 0.05)
    mask = ~F.one_hot(y, 10).bool()
    assert (elided[mask] >= naive[mask] - 1e-5).all()
    assert (elided[mask] > naive[mask] + 1e-4).any()


def test_certified_accuracy_equals_clean_accuracy_at_zero_eps_and_decreases_with_eps(trained_cnn):
    model, x, y = trained_cnn
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    assert clean > 0.5
    accs = [certified_accuracy(model, x, y, eps, batch_size=16) for eps in (0.0, 0.005, 0.02, 0.2)]
    assert accs[0] == pytest.approx(clean)
    assert all(a >= b for a, b in zip(accs, accs[1:]))
    assert accs[-1] < accs[0]
    assert model.training is False


def test_certified_accuracy_restores_train_mode(trained_cnn):
    model, x, y = trained_cnn
    model.train()
    try:
        certified_accuracy(model, x[:8], y[:8], 0.01)
        assert model.training
    finally:
        model.eval()


def test_margin_bound_is_differentiable_wrt_architecture_weights(dsrna_supernet):
    x, y = _digits(8)
    alphas = [p for n, p in dsrna_supernet.named_parameters() if "_arch_alpha" in n]
    lb = margin_lower_bound(dsrna_supernet, x, y, 0.01).min(1).values.mean()
    grads = torch.autograd.grad(lb, alphas, allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_input_box_is_clamped_to_the_image_range():
    x = torch.tensor([[0.0, 0.5, 1.0]])
    box = input_box(x, 0.2)
    assert torch.allclose(box.lower, torch.tensor([[0.0, 0.3, 0.8]]))
    assert torch.allclose(box.upper, torch.tensor([[0.2, 0.7, 1.0]]))


def test_interval_products_and_signed_scaling_are_sound():
    torch.manual_seed(1)
    a = IntervalTensor.from_bounds(torch.tensor([-1.0, 0.5, -2.0]), torch.tensor([2.0, 1.0, -1.0]))
    b = IntervalTensor.from_bounds(torch.tensor([-3.0, -1.0, 1.0]), torch.tensor([1.0, 2.0, 4.0]))
    for out, fn in ((a * b, lambda p, q: p * q), (a * -2.0, lambda p, q: p * -2.0), (a - b, lambda p, q: p - q)):
        for _ in range(200):
            p = a.lower + torch.rand(3) * (a.upper - a.lower)
            q = b.lower + torch.rand(3) * (b.upper - b.lower)
            v = fn(p, q)
            assert (v >= out.lower - 1e-6).all() and (v <= out.upper + 1e-6).all()


def test_unsupported_op_raises_a_clear_error_naming_it():
    class SoftmaxNet(nn.Module):
        def forward(self, x):
            return torch.softmax(x.flatten(1), dim=1)

    with pytest.raises(NotImplementedError, match="softmax"):
        interval_bounds(SoftmaxNet(), torch.rand(2, 1, 4, 4), 0.1)


def test_bad_norm_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="linf, l2"):
        interval_bounds(nn.Flatten(), torch.rand(2, 3), 0.1, norm="l1")
