"""White-box gradient attacks in [0, 1] pixel space: FGSM and PGD (L-inf and L2).

PGD follows Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks" (ICLR 2018): random start in the ball, ``steps`` signed (L-inf) or
normalised (L2) gradient steps of size ``alpha``, projection onto the ball and onto
[0, 1] after each step. The default ``alpha = 2.5 * eps / steps`` is the choice of
Madry et al.'s reference code.

The attacks run the model in eval mode with its parameters frozen
(``requires_grad=False``), and take gradients with ``torch.autograd.grad`` on the
input only, so no weight gradient is built and ``.grad`` of the parameters is
never touched; the model's train/eval flags are restored afterwards.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import device_for, eval_mode, logits_of
from .data import ThreatModel

__all__ = ["LossFn", "perturb", "pgd", "fgsm", "accuracy", "pgd_accuracy"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_TINY = 1e-12


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (t.dim() - 1)))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / _flat_norm(delta)).clamp(max=1.0)
    return delta * scale


def _random_start(x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return torch.empty_like(x).uniform_(-eps, eps)
    direction = torch.randn_like(x)
    direction = direction / _flat_norm(direction)
    radius = torch.rand(x.shape[0], device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return direction * radius * eps


def _step(grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return alpha * grad.sign()
    return alpha * grad / _flat_norm(grad)


def perturb(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: LossFn,
    target: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    init_delta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Maximise ``loss_fn(logits, target)`` over the ``norm`` ball of radius ``eps`` around ``x``.

    The general PGD loop behind :func:`pgd` and :func:`fgsm` (TRADES uses it with a KL loss).
    The model must already be in the mode the caller wants; this function only differentiates
    with respect to the input. ``init_delta`` (if given) replaces the random start.
    """
    threat = ThreatModel(norm, eps)
    norm, eps = threat.norm, threat.eps
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    alpha = 2.5 * eps / steps if alpha is None else float(alpha)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    x = x.detach()
    if init_delta is not None:
        delta = _project(init_delta.detach().to(x), eps, norm)
    else:
        delta = _random_start(x, eps, norm) if random_start else torch.zeros_like(x)
    delta = ((x + delta).clamp(0.0, 1.0) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_fn(logits_of(model(x + delta)), target)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = _project(delta.detach() + _step(grad, alpha, norm), eps, norm)
        delta = ((x + delta).clamp(0.0, 1.0) - x).detach()
    return (x + delta).detach()


def _ce_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # sum, not mean: the step of each example does not depend on the batch size
    return F.cross_entropy(logits.float(), y, reduction="sum")


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", steps: int = 10,
    alpha: float | None = None, random_start: bool = True,
) -> torch.Tensor:
    """Untargeted PGD on the cross-entropy loss (Madry et al., ICLR 2018), batched.

    Returns adversarial inputs within the ``norm`` ball of radius ``eps`` around ``x`` and in
    [0, 1]. ``alpha`` defaults to ``2.5 * eps / steps``. The model runs in eval mode with
    frozen parameters and is restored afterwards; no parameter gradient is created.
    """
    with eval_mode(model):
        return perturb(
            model, x, _ce_sum, y, eps=eps, norm=norm, steps=steps, alpha=alpha, random_start=random_start
        )


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf") -> torch.Tensor:
    """The fast gradient (sign) method (Goodfellow et al., ICLR 2015): one step of size ``eps``
    from ``x`` (L2: one normalised-gradient step). Model mode and parameters as in :func:`pgd`."""
    with eval_mode(model):
        return perturb(model, x, _ce_sum, y, eps=eps, norm=norm, steps=1, alpha=eps, random_start=False)


def _share_correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: str | torch.device | None,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Share of ``(x, y)`` that ``model`` classifies correctly, in batches on ``device`` (default: the
    model's), each batch first replaced by ``attack(xb, yb)`` when given; eval mode, no gradients."""
    if len(x) == 0:
        raise ValueError("accuracy of an empty set is undefined (got 0 examples)")
    dev = device_for(model, device)
    correct = 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(dev)
        yb = y[start : start + batch_size].to(dev)
        if attack is not None:
            xb = attack(xb, yb)
        with torch.no_grad(), eval_mode(model, frozen=False):
            correct += int((logits_of(model(xb)).argmax(1) == yb).sum())
    return correct / len(x)


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on the tensors ``(x, y)``, in eval mode, in batches."""
    return _share_correct(model, x, y, batch_size, device)


def pgd_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 20, batch_size: int = 256,
    device: str | torch.device | None = None, **attack: Any,
) -> float:
    """Accuracy under PGD-``steps`` (random start), computed in batches; ``attack`` are the other
    keyword arguments of :func:`pgd` (``eps`` required, ``norm``, ``alpha``)."""
    return _share_correct(model, x, y, batch_size, device, lambda xb, yb: pgd(model, xb, yb, steps=steps, **attack))
