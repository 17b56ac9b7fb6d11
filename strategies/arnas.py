"""ARNAS: differentiable search for accurate and robust architectures (Ou, Feng, Sun, CVPR 2024).

Weights train on PGD adversarial examples; the architecture follows the
minimum-norm (MGDA) combination of two gradients: of the natural loss on a
clean validation batch and of ``adv_weight`` times the adversarial loss on its
PGD version.
"""

from __future__ import annotations

from typing import Any

import torch

from robustnas.plugins.evaluator import pgd

from ._oneshot import Batch, RobustDartsModule, RobustOneShotStrategy, flat, unflat

__all__ = ["ARNAS", "ArnasLightningModule", "mgda_two_task"]


def mgda_two_task(u1: torch.Tensor, u2: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Minimum-norm point of the segment between two gradients (two-task MGDA closed form).

    Returns ``gamma = clamp(((u2 - u1) . u2) / ||u2 - u1||^2, 0, 1)`` and the direction
    ``gamma * u1 + (1 - gamma) * u2`` (Sener & Koltun, NeurIPS 2018; used by ARNAS,
    Ou et al., CVPR 2024). Tensors of any (equal) shape are treated as flat vectors;
    when ``u1 == u2`` every gamma gives the same point and ``gamma = 0.5``.
    """
    if u1.shape != u2.shape:
        raise ValueError(f"gradients must have the same shape, got {tuple(u1.shape)} and {tuple(u2.shape)}")
    diff = (u2 - u1).double()
    denom = float((diff * diff).sum())
    if denom == 0.0 or not torch.isfinite(torch.tensor(denom)):
        gamma = 0.5
    else:
        gamma = float((diff * u2.double()).sum()) / denom
        gamma = min(1.0, max(0.0, gamma))
    return gamma, gamma * u1 + (1.0 - gamma) * u2


class ArnasLightningModule(RobustDartsModule):
    """The ARNAS search step (see :class:`ARNAS`)."""

    def __init__(self, training_module: Any, *, eps: float, norm: str, alpha: float, pgd_steps: int,
                 adv_weight: float, **kwargs: Any) -> None:
        super().__init__(training_module, **kwargs)
        self.eps = eps
        self.norm = norm
        self.alpha = alpha
        self.pgd_steps = pgd_steps
        self.adv_weight = adv_weight
        self.gamma_history: list[float] = []

    def adversarial(self, batch: Batch) -> Batch:
        """PGD examples of a batch (the evaluator's PGD: eval mode, frozen weights, random start)."""
        x, y = batch[0], batch[1]
        x_adv = pgd(self.model, x, y, eps=self.eps, norm=self.norm, steps=self.pgd_steps,
                    alpha=self.alpha, random_start=True)
        return [x_adv, y, *batch[2:]]

    def prepare_train_batch(self, batch: Batch) -> Batch:
        return self.adversarial(batch)

    def architecture_gradient(self, train_batch: Batch, val_batch: Batch) -> list[torch.Tensor]:
        x, y = val_batch[0], val_batch[1]
        x_adv = self.adversarial(val_batch)[0]
        u1 = self.gradient(lambda: self.criterion_loss(x, y), train_batch)
        u2 = self.gradient(lambda: self.adv_weight * self.criterion_loss(x_adv, y), train_batch)
        gamma, direction = mgda_two_task(flat(u1), flat(u2))
        self.gamma_history.append(gamma)
        self.log("arnas/gamma", gamma)
        return unflat(direction, u1)


class ARNAS(RobustOneShotStrategy):
    """ARNAS (Ou, Feng, Sun, "Towards Accurate and Robust Architectures via Neural Architecture
    Search", CVPR 2024) as an NNI one-shot strategy.

    Each step: (1) architecture step: ``u1`` = gradient of the natural loss on the clean
    validation batch, ``u2`` = gradient of ``adv_weight`` x the loss on its PGD version;
    the architecture optimiser (Adam, lr 3e-4, betas (0.5, 0.999), wd 1e-3) follows the MGDA
    direction ``gamma * u1 + (1 - gamma) * u2`` (:func:`mgda_two_task`); (2) weight step on
    PGD-``pgd_steps`` examples of the training batch with SGD (momentum 0.9, wd 3e-4, cosine
    from ``weight_lr`` to ``weight_lr_min``) and gradient clipping at 5.

    Use it like NNI's ``DARTS()`` with a Lightning ``Classification`` evaluator whose
    ``train_dataloaders`` are the weight-training half and ``val_dataloaders`` the
    architecture half. ``gamma`` is logged each step (``arnas/gamma``) and kept in
    :attr:`gamma_history`.

    Parameters
    ----------
    eps, norm, dataset
        Threat model of the PGD examples; defaults to ``dataset``'s default threat, else L-inf 8/255.
    alpha
        PGD step size; default ``eps / 4`` (2/255 at 8/255, as in the paper).
    pgd_steps
        PGD steps during search (7 in the paper).
    adv_weight
        Weight ``lambda`` of the adversarial loss in ``u2`` (0.1 in the paper).
    unrolled
        Second-order DARTS gradient for both ``u1`` and ``u2`` (the authors' choice);
        first-order by default (docs/fidelity.md).
    weight_optimizer
        ``"sgd"`` (the paper's recipe) or ``"evaluator"`` (the evaluator's optimiser, as NNI DARTS).
    **kwargs
        The rest of :class:`~robustnas.strategies._oneshot.RobustOneShotStrategy` (the fields of
        :class:`~robustnas.strategies._oneshot.DartsSettings`, ``unrolled`` and ``weight_optimizer``
        among them) and NNI DARTS.

    Example (two search steps on digits, in a small ARNAS space; NNI's files go to ``./nni``):

    >>> from robustnas.plugins.evaluator import load_dataset
    >>> from robustnas.plugins.nni import classification_evaluator, run_experiment
    >>> from robustnas.search_spaces import ARNASSpace
    >>> from robustnas.strategies import ARNAS
    >>> bundle = load_dataset("digits")
    >>> space = ARNASSpace(input_shape=bundle.input_shape, num_classes=bundle.num_classes, width=2, num_cells=4)
    >>> strategy = ARNAS(dataset=bundle, pgd_steps=1, val_batches=1, eval_pgd_steps=1)
    >>> evaluator = classification_evaluator(bundle, batch_size=16, max_epochs=1, limit_train_batches=2)
    >>> result = run_experiment(space, strategy, evaluator, working_dir="nni")
    >>> record = strategy.pareto_front()[0]       # the exported architecture, supernet-level metrics
    >>> record["sample"] == result.top_models[0]["sample"], len(strategy.gamma_history)
    (True, 2)
    """

    module_class = ArnasLightningModule

    def __init__(self, *, eps: float | None = None, alpha: float | None = None, pgd_steps: int = 7,
                 adv_weight: float = 0.1, **kwargs: Any) -> None:
        super().__init__(eps=eps, **kwargs)
        if pgd_steps < 1:
            raise ValueError(f"pgd_steps must be >= 1, got {pgd_steps}")
        if adv_weight <= 0:
            raise ValueError(f"adv_weight must be > 0, got {adv_weight}")
        self.alpha = self.eps / 4 if alpha is None else float(alpha)
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.pgd_steps = pgd_steps
        self.adv_weight = adv_weight

    def module_kwargs(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "alpha": self.alpha, "pgd_steps": self.pgd_steps,
                "adv_weight": self.adv_weight}

    @property
    def gamma_history(self) -> list[float]:
        """MGDA weight of the natural-loss gradient at every architecture step."""
        return list(getattr(self.oneshot_module, "gamma_history", []))

    def extra_metrics(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        history = self.gamma_history
        if not history:
            return {"gamma_steps": 0}
        tensor = torch.tensor(history)
        return {"gamma_mean": float(tensor.mean()), "gamma_last": history[-1], "gamma_min": float(tensor.min()),
                "gamma_max": float(tensor.max()), "gamma_steps": len(history)}
