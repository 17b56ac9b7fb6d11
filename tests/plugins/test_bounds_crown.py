"""Linear (CROWN-style) bounds: sound under attack, never looser than interval bounds, tighter in practice.

Each model of the zoo below exercises a group of the ops the linear bounds model (batch norm,
max pooling with padding, average pooling, ReLU6 / hardtanh / clamp / leaky ReLU relaxations,
residual adds, channel padding and slicing, concatenation, sums over dims, in-place ops, the
sigmoid / tanh relaxations, the interval fallback of ELU); each is trained briefly on digits.
The PGD-100 soundness suite on the project's spaces is tests/plugins/test_bounds_soundness.py
(``method="crown"``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustnas.plugins.errors import ConfigError
from robustnas.plugins.evaluator import EvaluatorConfig, RobustnessEvaluator, load_dataset
from robustnas.plugins.evaluator._crown import (
    _relax_clamp,
    _relax_leaky,
    _relax_s_shaped,
    _sigmoid_grad,
    _tanh_grad,
)
from robustnas.plugins.evaluator._utils import eval_mode
from robustnas.plugins.evaluator.attacks import perturb
from robustnas.plugins.evaluator.autoattack import autoattack_accuracy
from robustnas.plugins.evaluator.bounds import (
    BOUND_METHODS,
    certified_accuracy,
    interval_bounds,
    linear_bounds,
    margin_lower_bound,
)

TOL = 1e-4  # float32 rounding slack
EPS = 0.01
N_POINTS = 100


class PaddedPools(nn.Module):
    """Conv, ReLU, 3x3 max pool (stride 2, padding 1), leaky ReLU, 3x3 average pool without padded counts."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.a(x)), 3, stride=2, padding=1)
        h = F.avg_pool2d(F.leaky_relu(self.b(h), 0.1), 3, stride=1, padding=1, count_include_pad=False)
        return self.fc(h.flatten(1))


class ClampResidual(nn.Module):
    """Hardtanh, a scaled residual add, clamp, zero channel padding, strided slicing, concat, mean."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(8 + 8 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.hardtanh(self.a(x), -1.0, 2.0)
        h = torch.clamp(h * 0.5 + self.b(h), min=0.0, max=3.0)
        h = F.pad(h, (0, 0, 0, 0, 0, 4))[:, :, ::2, ::2]  # 8 channels (4 zero), 4 x 4
        pooled = h.mean(dim=(2, 3))
        return self.fc(torch.cat([pooled, h.flatten(1)], dim=1))


class CenteredLogits(nn.Module):
    """Logits centred per example and halved (``(z - z.mean(1)) / 2``), after an in-place ReLU MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.l1(x.flatten(1))
        h.relu_()
        z = self.l2(h)
        return (z - z.mean(1, keepdim=True)) / 2


def bn_relu6_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 10),
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def tanh_cnn() -> nn.Module:
    """tanh and sigmoid take their chord / tangent relaxations; ELU falls back to its interval box."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.Sigmoid(), nn.Conv2d(8, 8, 3, padding=1), nn.ELU(), nn.Flatten(), nn.Linear(128, 10))


ZOO = {
    "bn-relu6-cnn": bn_relu6_cnn,
    "mlp": mlp,
    "padded-pools": PaddedPools,
    "clamp-residual": ClampResidual,
    "centered-logits": CenteredLogits,
    "tanh-sigmoid-elu": tanh_cnn,
}


@pytest.fixture(scope="module")
def data(digits):
    """The first ``N_POINTS`` digits test points ``(x, y)``."""
    return digits.tensors("test", N_POINTS)


def true_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = model(x)
    return z.gather(1, y[:, None]) - z


def _margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).max(1).values
    return (other - logits.gather(1, y[:, None]).squeeze(1)).sum()


def _finite(lb: torch.Tensor) -> torch.Tensor:
    return lb.masked_fill(torch.isinf(lb), float("-inf"))  # the y column holds +inf by convention


@pytest.mark.parametrize("name", sorted(ZOO))
def test_crown_margin_bound_is_at_least_the_interval_bound_and_tighter_on_average(name, data, briefly_trained):
    x, y = data
    model = briefly_trained(ZOO[name])
    with torch.no_grad():
        interval = margin_lower_bound(model, x, y, EPS, method="interval")
        crown = margin_lower_bound(model, x, y, EPS, method="crown")
    mask = ~torch.isinf(interval)
    assert torch.equal(torch.isinf(crown), ~mask)
    assert bool((crown[mask] >= interval[mask] - TOL).all()), float((crown - interval)[mask].min())
    assert float((crown - interval)[mask].mean()) > 0.01  # measurably tighter, not merely equal


@pytest.mark.parametrize("name", sorted(ZOO))
def test_crown_bound_holds_at_clean_random_and_pgd_points_and_no_certified_point_breaks(name, data, briefly_trained):
    x, y = data
    model = briefly_trained(ZOO[name])
    with torch.no_grad():
        lb = _finite(margin_lower_bound(model, x, y, EPS, method="crown"))
        correct = model(x).argmax(1) == y
        lo, hi = linear_bounds(model, x, EPS)
        ilo, ihi = interval_bounds(model, x, EPS)
    assert bool((lo >= ilo - TOL).all() and (hi <= ihi + TOL).all())  # output bounds inside the interval ones
    certified = correct & (lb.min(1).values > 0)
    points = [x] + [(x + (torch.rand_like(x) * 2 - 1) * EPS).clamp(0, 1) for _ in range(5)]
    with eval_mode(model):
        for restart in range(2):
            torch.manual_seed(restart)
            points.append(perturb(model, x, _margin_loss, y, eps=EPS, steps=50, alpha=EPS / 8))
    for k, p in enumerate(points):
        assert bool((lb <= true_margins(model, p, y) + TOL).all()), f"{name}: bound above a true margin (set {k})"
        with torch.no_grad():
            out = model(p)
        assert bool((out >= lo - TOL).all() and (out <= hi + TOL).all()), f"{name}: output outside its bounds"
        assert int((out.argmax(1) != y)[certified].sum()) == 0, f"{name}: a certified point broken (set {k})"


@pytest.mark.parametrize("name", ["bn-relu6-cnn", "padded-pools", "clamp-residual"])
def test_crown_certified_accuracy_is_between_interval_and_autoattack(name, data, briefly_trained):
    x, y = data
    model = briefly_trained(ZOO[name])
    interval = certified_accuracy(model, x, y, eps=EPS, method="interval")
    crown = certified_accuracy(model, x, y, eps=EPS, method="crown", batch_size=32)
    robust, _ = autoattack_accuracy(model, x, y, norm="linf", eps=EPS, mode="fast")
    assert interval <= crown <= robust, (interval, crown, robust)
    assert crown > 0


def test_crown_bound_is_the_true_margin_at_zero_eps(data, briefly_trained):
    x, y = data
    model = briefly_trained(ZOO["padded-pools"])
    with torch.no_grad():
        lb = margin_lower_bound(model, x, y, 0.0, method="crown")
    mask = ~torch.isinf(lb)
    assert torch.allclose(lb[mask], true_margins(model, x, y)[mask], atol=1e-4)


def test_l2_crown_bounds_are_sound_and_at_least_as_tight_as_the_enclosing_box(data, briefly_trained):
    x, y = data
    model = briefly_trained(ZOO["mlp"])
    eps = 0.3
    with torch.no_grad():
        crown = margin_lower_bound(model, x, y, eps, norm="l2", method="crown")
        interval = margin_lower_bound(model, x, y, eps, norm="l2", method="interval")
    mask = ~torch.isinf(crown)
    assert bool((crown[mask] >= interval[mask] - TOL).all())
    with eval_mode(model):
        adv = perturb(model, x, _margin_loss, y, eps=eps, norm="l2", steps=50, alpha=eps / 8)
    for p in (x, adv):
        assert bool((_finite(crown) <= true_margins(model, p, y) + TOL).all())


def test_crown_through_the_darts_supernet_is_tighter_sound_and_differentiable(dsrna_supernet):
    x, y = load_dataset("digits").tensors("train", 8)
    interval = margin_lower_bound(dsrna_supernet, x, y, 0.01, method="interval").detach()
    crown = margin_lower_bound(dsrna_supernet, x, y, 0.01, method="crown")
    mask = ~torch.isinf(interval)
    assert bool((crown.detach()[mask] >= interval[mask] - TOL).all())
    assert float((crown.detach() - interval)[mask].mean()) > 0.1
    for _ in range(5):
        p = (x + (torch.rand_like(x) * 2 - 1) * 0.01).clamp(0, 1)
        assert bool((_finite(crown.detach()) <= true_margins(dsrna_supernet, p, y) + TOL).all())
    alphas = [p for n, p in dsrna_supernet.named_parameters() if "_arch_alpha" in n]
    grads = torch.autograd.grad(crown.min(1).values.mean(), alphas, allow_unused=True)
    grads = [g for g in grads if g is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("lo,hi", [(0.0, None), (0.0, 6.0), (-1.0, 2.0), (None, 1.5)])
def test_clamp_relaxations_enclose_the_function_on_random_intervals(lo, hi):
    torch.manual_seed(0)
    a, b = torch.randn(2000) * 4, torch.randn(2000) * 4
    l, u = torch.minimum(a, b), torch.maximum(a, b)
    s_l, t_l, s_u, t_u = _relax_clamp(l, u, lo, hi)
    assert bool((s_l >= 0).all() and (s_u >= 0).all())
    for frac in torch.linspace(0, 1, 41):
        v = l + frac * (u - l)
        f = v.clamp(min=lo, max=hi)
        assert bool((s_l * v + t_l <= f + 1e-5).all() and (f <= s_u * v + t_u + 1e-5).all())


@pytest.mark.parametrize("kind", ["leaky_relu", "sigmoid", "tanh"])
def test_leaky_sigmoid_and_tanh_relaxations_enclose_the_function_on_random_intervals(kind):
    torch.manual_seed(0)
    a, b = torch.randn(2000) * 4, torch.randn(2000) * 4
    l, u = torch.minimum(a, b), torch.maximum(a, b)
    if kind == "leaky_relu":
        fn = lambda v: F.leaky_relu(v, 0.1)  # noqa: E731
        s_l, t_l, s_u, t_u = _relax_leaky(l, u, 0.1)
    else:
        fn, grad = (torch.sigmoid, _sigmoid_grad) if kind == "sigmoid" else (torch.tanh, _tanh_grad)
        s_l, t_l, s_u, t_u = _relax_s_shaped(l, u, fn, grad)
    for frac in torch.linspace(0, 1, 41):
        v = l + frac * (u - l)
        f = fn(v)
        assert bool((s_l * v + t_l <= f + 1e-5).all() and (f <= s_u * v + t_u + 1e-5).all())


def test_unsupported_op_raises_naming_it_and_bad_method_is_refused():
    class AbsNet(nn.Module):
        def forward(self, x):
            return x.flatten(1).abs()

    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    with pytest.raises(NotImplementedError, match="abs") as info:
        margin_lower_bound(AbsNet(), x, y, 0.1, method="crown")
    assert info.value.op == "abs"
    with pytest.raises(ConfigError, match="interval, crown"):
        margin_lower_bound(nn.Flatten(), x, y, 0.1, method="lipschitz")
    assert BOUND_METHODS == ("interval", "crown")


def test_evaluator_certifies_with_the_configured_bound_method():
    with pytest.raises(ConfigError, match="valid bound methods: interval, crown"):
        EvaluatorConfig(bound_method="deeppoly")
    assert EvaluatorConfig.from_dict(EvaluatorConfig(bound_method="crown").to_dict()).bound_method == "crown"
    config = EvaluatorConfig(dataset="digits", n_examples=100, device="cpu", progress=False, certify=True,
                             bound_method="crown", epochs=2, recipe="standard", eps=EPS)
    evaluator = RobustnessEvaluator(config)
    torch.manual_seed(0)
    model = mlp()
    metrics = evaluator.evaluate(model)
    x, y = evaluator.bundle.tensors("test", 100)
    interval = certified_accuracy(model, x, y, eps=EPS, method="interval")
    assert interval <= metrics["certified_acc"] <= metrics["robust_acc"]
    assert metrics["certified_acc"] == certified_accuracy(model, x, y, eps=EPS, method="crown")


def test_dsrna_bound_metric_and_strategy_take_the_bound_method(dsrna_supernet):
    from robustnas.strategies import DSRNA
    from robustnas.strategies.dsrna import bound_metric

    x, y = load_dataset("digits").tensors("train", 8)
    with torch.no_grad():
        interval = bound_metric(dsrna_supernet, x, y, eps=0.01, reduction="margin", method="interval")
        crown = bound_metric(dsrna_supernet, x, y, eps=0.01, reduction="margin", method="crown")
    assert float(crown) > float(interval)
    assert DSRNA(metric="bound", bound_method="crown").module_kwargs()["regularizer"].bound_method == "crown"
    assert DSRNA(metric="bound").module_kwargs()["regularizer"].bound_method == "interval"
    with pytest.raises(ValueError, match="bound_method"):
        DSRNA(metric="bound", bound_method="ibp")
