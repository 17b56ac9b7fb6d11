"""DSRNA: differentiable search of robust neural architectures (Hosseini, Yang, Xie, CVPR 2021).

DARTS whose architecture objective is ``val_loss - gamma * R`` with a
differentiable robustness metric ``R``: the (negative) input-Jacobian norm, a
certified lower bound of the logit margin from interval bound propagation
through the supernet's mixed ops, or their sum.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from robustnas.plugins._deprecation import Renamed, warn
from robustnas.plugins.evaluator._utils import logits_of
from robustnas.plugins.evaluator.bounds import BOUND_METHODS, certified_accuracy, margin_lower_bound

from ._oneshot import Batch, RobustDartsModule, RobustOneShotStrategy, preserved_buffers

__all__ = ["DSRNA", "DsrnaLightningModule", "DsrnaRegularizer", "jacobian_norm", "input_jacobian_norm", "bound_metric",
           "METRICS", "JACOBIAN_MODES", "BOUND_REDUCTIONS"]

METRICS = ("jacobian", "bound", "combined")
JACOBIAN_MODES = ("exact", "projection")
BOUND_REDUCTIONS = ("ce", "margin")

#: DSRNA's ``warmup_epochs`` (epochs without ``R``) is ``regularizer_warmup_epochs``: NNI DARTS'
#: ``warmup_epochs`` (epochs without architecture steps) is DSRNA's ``arch_warmup_epochs``.
_RENAMED_WARMUP = Renamed("warmup_epochs", "regularizer_warmup_epochs")


def jacobian_norm(model: nn.Module, x: torch.Tensor, **options: Any) -> torch.Tensor:
    """Mean over the batch of an input-Jacobian norm of ``model`` at ``x`` (DSRNA's Jacobian metric):
    :func:`input_jacobian_norm` of ``model(x)``, whose keyword ``options`` it takes."""
    x = x.detach().requires_grad_(True)
    return input_jacobian_norm(logits_of(model(x)), x, **options)


def input_jacobian_norm(
    logits: torch.Tensor,
    x: torch.Tensor,
    *,
    q: float = 1,
    mode: str = "exact",
    n_proj: int = 1,
    create_graph: bool = True,
) -> torch.Tensor:
    """Mean over the batch of an input-Jacobian norm, from ``logits`` computed from ``x``
    (``x.requires_grad``), so that a loss and the metric share one forward pass (and one update
    of batch-norm statistics); :func:`jacobian_norm` runs the forward itself.

    ``mode="exact"``: the ``q``-norm of the input gradient of the top logit (per example),
    as in the DSRNA code. ``mode="projection"``: ``sqrt(K * mean_v ||v^T J||_q^2)`` over
    ``n_proj`` random unit vectors ``v`` in logit space (for ``q=2`` a consistent estimate of
    the Frobenius norm ``||J||_F``, since ``E ||v^T J||^2 = ||J||_F^2 / K``; Hoffman et al.,
    2019). ``q=1`` pairs with L-inf attacks,
    ``q=2`` with L2. ``create_graph=True`` keeps it differentiable w.r.t. the parameters.
    """
    if mode not in JACOBIAN_MODES:
        raise ValueError(f"unknown jacobian mode {mode!r}; valid: {', '.join(JACOBIAN_MODES)}")
    if q not in (1, 2):
        raise ValueError(f"q must be 1 or 2, got {q!r}")
    if n_proj < 1:
        raise ValueError(f"n_proj must be >= 1, got {n_proj}")
    if mode == "exact":
        top = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(top, x, create_graph=create_graph, retain_graph=True)
        return grad.flatten(1).norm(p=q, dim=1).mean()
    squares = []
    for _ in range(n_proj):
        v = torch.randn_like(logits)
        v = v / v.norm(dim=1, keepdim=True)
        (grad,) = torch.autograd.grad((logits * v).sum(), x, create_graph=create_graph, retain_graph=True)
        squares.append(grad.flatten(1).norm(p=q, dim=1) ** 2)
    return (torch.stack(squares).mean(0) * logits.shape[1]).sqrt().mean()


def bound_metric(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", reduction: str = "ce",
    method: str = "interval",
) -> torch.Tensor:
    """DSRNA's certified-bound metric ``R_bound`` from certified margin bounds (larger = more robust).

    ``reduction="ce"``: minus the cross-entropy of the worst-case logits ``-lb`` (the IBP
    robust loss of Gowal et al., 2018; smooth and scale-robust). ``"margin"``: the mean
    over the batch of the minimum margin lower bound. ``method``: ``"interval"`` (interval
    bound propagation) or ``"crown"`` (linear bounds as the paper uses; tighter, costlier,
    docs/fidelity.md).
    """
    if reduction not in BOUND_REDUCTIONS:
        raise ValueError(f"unknown bound reduction {reduction!r}; valid: {', '.join(BOUND_REDUCTIONS)}")
    lb = margin_lower_bound(model, x, y, eps, norm, method=method)
    if reduction == "margin":
        return lb.min(1).values.mean()
    worst_logits = -lb.masked_fill(torch.isinf(lb), 0.0)
    return -F.cross_entropy(worst_logits, y)


@dataclasses.dataclass(frozen=True)
class DsrnaRegularizer:
    """DSRNA's robustness term ``R`` and its weights, as :class:`DSRNA` takes them (its keyword
    arguments of the same names; ``regularizer_warmup_epochs``: the first epochs, plain
    cross-entropy without ``R``).
    Checked on construction: an unknown name or a negative weight raises ``ValueError`` naming it."""

    metric: str
    gamma: float
    q: float
    jacobian_mode: str
    n_proj: int
    bound_reduction: str
    bound_method: str
    weight_reg: float
    regularizer_warmup_epochs: int

    def __post_init__(self) -> None:
        for name, value, valid in (("DSRNA metric", self.metric, METRICS),
                                   ("jacobian_mode", self.jacobian_mode, JACOBIAN_MODES),
                                   ("bound_reduction", self.bound_reduction, BOUND_REDUCTIONS),
                                   ("bound_method", self.bound_method, BOUND_METHODS)):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        if self.q not in (1, 2):
            raise ValueError(f"q must be 1 or 2, got {self.q!r}")
        for name, value in (("gamma", self.gamma), ("weight_reg", self.weight_reg),
                            ("regularizer_warmup_epochs", self.regularizer_warmup_epochs)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    @property
    def warmup_epochs(self) -> int:
        """Deprecated name of :attr:`regularizer_warmup_epochs`."""
        warn(_RENAMED_WARMUP.message("DsrnaRegularizer"))
        return self.regularizer_warmup_epochs


class DsrnaLightningModule(RobustDartsModule):
    """The DSRNA search step (see :class:`DSRNA`)."""

    def __init__(self, training_module: Any, *, regularizer: DsrnaRegularizer, eps: float, norm: str,
                 **kwargs: Any) -> None:
        super().__init__(training_module, **kwargs)
        self.regularizer = regularizer
        self.eps = eps
        self.norm = norm
        self.r_history: list[float] = []

    def robustness(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``R`` on a batch (larger = more robust), differentiable w.r.t. weights and architecture.

        ``logits`` must come from ``x`` with ``x.requires_grad`` (one shared forward pass).
        """
        reg = self.regularizer
        r = logits.new_zeros(())
        if reg.metric in ("jacobian", "combined"):
            r = r - input_jacobian_norm(logits, x, q=reg.q, mode=reg.jacobian_mode, n_proj=reg.n_proj)
        if reg.metric in ("bound", "combined"):
            r = r + bound_metric(self.model, x.detach(), y, eps=self.eps, norm=self.norm,
                                 reduction=reg.bound_reduction, method=reg.bound_method)
        return r

    def regularized(self) -> bool:
        """Whether the ``R`` terms are on (after ``regularizer_warmup_epochs`` of plain cross-entropy)."""
        return self.trainer.current_epoch >= self.regularizer.regularizer_warmup_epochs

    def _arch_objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma = self.regularizer.gamma
        if not (gamma and self.regularized()):
            return self.criterion_loss(x, y)
        x = x.detach().requires_grad_(True)
        with _capture_output(self.model) as captured:
            loss = self.criterion_loss(x, y)
        r = self.robustness(x, y, captured[0])
        self.r_history.append(float(r.detach()))
        self.log("dsrna/R", r.detach())
        return loss - gamma * r

    def architecture_gradient(self, train_batch: Batch, val_batch: Batch) -> list[torch.Tensor]:
        x, y = val_batch[0], val_batch[1]
        return self.gradient(lambda: self._arch_objective(x, y), train_batch)

    def _with_weight_reg(self, loss_fn: Any, batch: Batch) -> torch.Tensor:
        weight_reg = self.regularizer.weight_reg
        if not (weight_reg and self.regularized()):
            return loss_fn(batch)
        x = batch[0].detach().requires_grad_(True)
        with _capture_output(self.model) as captured:
            loss = loss_fn([x, *batch[1:]])
        return loss - weight_reg * self.robustness(x, batch[1], captured[0])

    def weight_objective(self, batch: Batch) -> torch.Tensor:
        return self._with_weight_reg(super().weight_objective, batch)

    def weight_loss(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._with_weight_reg(lambda b: super(DsrnaLightningModule, self).weight_loss(b, batch_idx), batch)


@contextlib.contextmanager
def _capture_output(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Capture the logits of the next forward of ``model`` (to share it between loss and ``R``)."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not captured:
            captured.append(logits_of(output))

    handle = model.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


#: DSRNA's default cap on parameter-free edges per cell at export (P-DARTS' M; docs/fidelity.md).
DSRNA_MAX_PARAMETER_FREE = 2


class DSRNA(RobustOneShotStrategy):
    """DSRNA (Hosseini, Yang, Xie, "DSRNA: Differentiable Search of Robust Neural
    Architectures", CVPR 2021) as an NNI one-shot strategy.

    DARTS with the architecture loss ``val_loss - gamma * R``:

    - ``metric="jacobian"``: ``R = -E_x ||J(x)||_q`` (:func:`jacobian_norm`, exact input
      gradient of the top logit, or ``jacobian_mode="projection"``);
    - ``metric="bound"``: ``R`` from certified lower bounds of the logit margins within
      ``eps`` through the mixed ops (:func:`bound_metric`): interval bound propagation, or
      with ``bound_method="crown"`` the linear bounds the paper uses (docs/fidelity.md);
    - ``metric="combined"``: ``R_bound + R_jacobian``.

    No adversarial training during search. The first ``regularizer_warmup_epochs`` use plain
    cross-entropy (no ``R`` term) while the architecture keeps updating (docs/fidelity.md;
    ``warmup_epochs`` is its deprecated name); the first ``arch_warmup_epochs`` (NNI DARTS'
    ``warmup_epochs``; default 0, as the paper) train the weights only, before any architecture step;
    ``weight_reg > 0`` also subtracts ``weight_reg * R`` from the weight loss (the first
    author's re-implementation uses 1e-4). Optimisers as DARTS (weights SGD 0.025 cosine,
    momentum 0.9, wd 3e-4; architecture Adam 3e-4, betas (0.5, 0.999), wd 1e-3).

    The export is DARTS' derivation (never ``none``) with at most ``max_parameter_free=2``
    parameter-free edges per cell (P-DARTS' cap, a deviation from the paper: on the
    ``robust201-digits`` table it cut DSRNA-Jacobian's regret from 0.33 to 0.15 over 8 seeds
    and left DSRNA-bound's unchanged; docs/fidelity.md). ``max_parameter_free=None`` restores
    the paper's export.

    Example (two search steps on digits, in a small DARTS space; NNI's files go to ``./nni``):

    >>> from robustnas.plugins.evaluator import load_dataset
    >>> bundle = load_dataset("digits")
    >>> from robustnas.search_spaces import DSRNASpace
    >>> space = DSRNASpace(input_shape=bundle.input_shape, num_classes=bundle.num_classes, width=2, num_cells=3)
    >>> from robustnas.strategies import DSRNA
    >>> strategy = DSRNA(metric="jacobian", gamma=0.01, dataset=bundle, val_batches=1, eval_pgd_steps=1)
    >>> from robustnas.plugins.nni import classification_evaluator, run_experiment
    >>> _ = run_experiment(space, strategy, classification_evaluator(bundle, batch_size=16, limit_train_batches=2),
    ...                    working_dir="nni")
    >>> sorted(strategy.pareto_front()[0]["metrics"])
    ['certified_acc', 'clean_acc', 'eps', 'jacobian_norm', 'margin_lower_bound', 'n_examples', 'norm', 'params', 'pgd_acc']
    >>> len(strategy.oneshot_module.r_history)    # R at each architecture step
    2
    """

    module_class = DsrnaLightningModule
    renamed_arguments = RobustOneShotStrategy.renamed_arguments + (_RENAMED_WARMUP,)

    def __init__(
        self,
        *,
        metric: str = "jacobian",
        gamma: float = 0.01,
        q: float = 1,
        jacobian_mode: str = "exact",
        n_proj: int = 1,
        bound_reduction: str = "ce",
        bound_method: str = "interval",
        weight_reg: float = 0.0,
        regularizer_warmup_epochs: int = 0,
        arch_warmup_epochs: int = 0,
        warmup_epochs: int | None = None,
        **kwargs: Any,
    ) -> None:
        if warmup_epochs is not None:
            regularizer_warmup_epochs = _RENAMED_WARMUP.value(warmup_epochs, "DSRNA")
        if not isinstance(arch_warmup_epochs, int) or arch_warmup_epochs < 0:
            raise ValueError(f"arch_warmup_epochs must be an integer >= 0, got {arch_warmup_epochs!r}")
        kwargs.setdefault("max_parameter_free", DSRNA_MAX_PARAMETER_FREE)
        super().__init__(warmup_epochs=arch_warmup_epochs, **kwargs)
        #: The robustness term and its weights (checked here, before any search).
        self.regularizer = DsrnaRegularizer(
            metric=metric, gamma=gamma, q=q, jacobian_mode=jacobian_mode, n_proj=n_proj,
            bound_reduction=bound_reduction, bound_method=bound_method, weight_reg=weight_reg,
            regularizer_warmup_epochs=regularizer_warmup_epochs,
        )

    def module_kwargs(self) -> dict[str, Any]:
        return {"regularizer": self.regularizer, "eps": self.eps, "norm": self.norm}

    def extra_metrics(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """``jacobian_norm`` with batch statistics (as the search objective sees the supernet;
        running statistics are left untouched), and eval-mode IBP ``margin_lower_bound`` and
        ``certified_acc`` at the strategy's ``eps``."""
        with preserved_buffers(model):
            model.train()
            jac = float(jacobian_norm(model, x, q=self.regularizer.q, create_graph=False).detach())
        model.eval()
        with torch.no_grad():
            margin = float(margin_lower_bound(model, x, y, self.eps, self.norm).min(1).values.mean())
        certified = certified_accuracy(model, x, y, self.eps, self.norm)
        return {"jacobian_norm": jac, "margin_lower_bound": margin, "certified_acc": certified}
