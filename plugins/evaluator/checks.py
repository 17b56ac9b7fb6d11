"""The evaluator's own checks for numbers that should not be trusted (gradient masking).

Athalye, Carlini and Wagner, "Obfuscated Gradients Give a False Sense of Security"
(ICML 2018), and Carlini et al., "On Evaluating Adversarial Robustness" (2019), list
the signs of a broken evaluation; Croce and Hein's AutoAttack ships some of them as
``checks.py`` (captured by :func:`~.autoattack.autoattack_evaluation`). The evaluator
adds three of its own, each a short flag string ``"code: detail"``:

- ``pgd-below-autoattack``: PGD accuracy below AutoAttack accuracy on the same points.
  AutoAttack's first attack is a stronger PGD; when a plain PGD-20 does better, the
  ensemble has missed something.
- ``robust-near-clean``: robust accuracy within ``NEAR_CLEAN`` (a point) of the clean
  accuracy of the same points, at an eps of at least ``NONTRIVIAL_EPS`` for its norm,
  for a model above twice chance. Real robust models lose far more at such radii.
- ``zero-input-gradient``: the share of attacked points whose margin loss
  ``max_{j != y} z_j - z_y`` has an exactly zero input gradient is above
  ``ZERO_GRADIENT_SHARE``. The margin, unlike cross-entropy, does not saturate on
  confident points, so a zero gradient means the model hides it (rounding,
  quantisation, non-differentiable preprocessing).
"""

from __future__ import annotations

import torch
from torch import nn

from ._utils import eval_mode, logits_of, model_device

__all__ = ["NONTRIVIAL_EPS", "NEAR_CLEAN", "ZERO_GRADIENT_SHARE", "EVALUATOR_FLAGS", "zero_gradient_share",
           "evaluator_flags", "flag_code"]

#: Smallest radius at which robust accuracy within a point of clean accuracy is suspicious
#: (8/255, the CIFAR-10 L-inf radius, and 0.5, the CIFAR-10 L2 radius of RobustBench).
NONTRIVIAL_EPS: dict[str, float] = {"linf": 8 / 255 - 1e-6, "l2": 0.5 - 1e-6}

#: Robust accuracy this close to clean accuracy (on the same points) is flagged.
NEAR_CLEAN = 0.01

#: Share of points with an exactly zero input gradient above which the model is flagged.
ZERO_GRADIENT_SHARE = 0.05

#: The codes of the evaluator's own flags (AutoAttack's are in ``autoattack.AA_FLAGS``).
EVALUATOR_FLAGS: tuple[str, ...] = (
    "pgd-below-autoattack",
    "robust-near-clean",
    "zero-input-gradient",
    "escalated-to-standard",
    "certify-unsupported",
)


def zero_gradient_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Share of points whose margin loss has an exactly zero gradient with respect to the input.

    The loss is ``max_{j != y} z_j - z_y`` (Carlini and Wagner 2017), which keeps a non-zero
    gradient on confident points where cross-entropy underflows. A model whose output does not
    depend differentiably on the input counts every point. Eval mode, parameters frozen.
    """
    if len(x) == 0:
        return 0.0
    dev = model_device(model)
    zero = 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].detach().to(dev, torch.float32).requires_grad_(True)
            yb = y[start:start + batch_size].to(dev, torch.long)
            with torch.enable_grad():
                z = logits_of(model(xb))
                if not z.requires_grad:
                    zero += len(xb)
                    continue
                true = z.gather(1, yb[:, None]).squeeze(1)
                other = z.masked_fill(torch.nn.functional.one_hot(yb, z.shape[1]).bool(), float("-inf"))
                loss = (other.max(1).values - true).sum()
                (grad,) = torch.autograd.grad(loss, xb, allow_unused=True)
            if grad is None:
                zero += len(xb)
            else:
                zero += int((grad.flatten(1).abs().sum(1) == 0).sum())
    return zero / len(x)


def evaluator_flags(
    *,
    clean_acc: float,
    robust_acc: float,
    pgd_acc: float,
    zero_share: float,
    norm: str,
    eps: float,
    num_classes: int,
) -> list[str]:
    """The evaluator's own flags for one model (see the module docstring); empty when clean.

    ``clean_acc`` is the clean accuracy of the attacked points, ``zero_share`` the result of
    :func:`zero_gradient_share` on them.
    """
    flags: list[str] = []
    if pgd_acc < robust_acc:
        flags.append(f"pgd-below-autoattack: PGD {pgd_acc:.3f} < AutoAttack {robust_acc:.3f}")
    if eps >= NONTRIVIAL_EPS[norm] and clean_acc > 2.0 / num_classes and clean_acc - robust_acc < NEAR_CLEAN:
        flags.append(f"robust-near-clean: robust {robust_acc:.3f}, clean {clean_acc:.3f} at {norm} eps {eps:.4g}")
    if zero_share > ZERO_GRADIENT_SHARE:
        flags.append(f"zero-input-gradient: {zero_share:.2f} of points")
    return flags


def flag_code(flag: str) -> str:
    """The code of a flag string (the part before the colon)."""
    return flag.split(":", 1)[0].strip()
