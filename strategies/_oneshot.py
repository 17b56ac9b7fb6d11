"""Shared machinery of the robust differentiable (DARTS-style) strategies ARNAS and DSRNA.

:class:`RobustDartsModule` is NNI's :class:`DartsLightningModule` with the two
phases of a search step split into overridable hooks:

- :meth:`RobustDartsModule.prepare_train_batch` (ARNAS: PGD examples of the batch),
- :meth:`RobustDartsModule.architecture_gradient` (the gradient the architecture
  optimiser follows; first-order, or DARTS' second-order unrolled approximation
  through :meth:`RobustDartsModule.unrolled_gradient`),
- :meth:`RobustDartsModule.weight_loss`.

:class:`RobustOneShotStrategy` is NNI's :class:`~nni.nas.strategy.DARTS` plus the
threat model, the paper's weight optimiser (SGD, cosine schedule; :class:`DartsSettings`)
and a record of the result (exported architecture with supernet-level metrics) for
``pareto_front()``. :class:`RobustOneShotMixin` is what TAM-NAS shares with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
import nni.nas.strategy  # noqa: F401  (first: NNI 3.0's import cycle, strategies/_nni.py)
from nni.nas.oneshot.pytorch.strategy import DARTS
from torch import nn

from robustnas.plugins.evaluator import DEFAULT_THREATS, DatasetBundle, ThreatModel, accuracy, pgd_accuracy
from robustnas.plugins._deprecation import Renamed
from robustnas.plugins.evaluator._utils import logits_of, model_device, preserved_mode

from .pareto import ParetoArchive

_logger = logging.getLogger(__name__)

WEIGHT_OPTIMIZERS = ("sgd", "evaluator")
DEFAULT_EPS = 8 / 255

Batch = Sequence[torch.Tensor]

#: ``eval_batches`` of ARNAS and DSRNA is ``val_batches`` (the same count; 0, which measured no
#: batch and failed after the search, is refused when the strategy is built).
RENAMED_EVAL_BATCHES = Renamed("eval_batches", "val_batches")


def check_batches(name: str, value: int | None) -> int | None:
    """``value`` if it is a count of batches (an integer >= 1) or None (every batch), else ``ValueError``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be an integer >= 1, or None for every batch; got {value!r}")
    return value


def resolve_threat(eps: float | None, norm: str | None, dataset: str | DatasetBundle | None) -> tuple[float, str]:
    """``(eps, norm)`` from explicit values, else the dataset's default threat, else L-inf 8/255."""
    default = None
    if isinstance(dataset, DatasetBundle):
        default = dataset.threat
    elif isinstance(dataset, str):
        if dataset not in DEFAULT_THREATS:
            raise ValueError(f"unknown dataset {dataset!r}; datasets with a default threat: {sorted(DEFAULT_THREATS)}")
        default = DEFAULT_THREATS[dataset]
    elif dataset is not None:
        raise TypeError(f"dataset must be a name or a DatasetBundle, got {type(dataset).__name__}")
    if eps is None:
        eps = default.eps if default is not None else DEFAULT_EPS
    if norm is None:
        norm = default.norm if default is not None else "linf"
    threat = ThreatModel(norm, eps)  # validates, naming the valid norms
    return threat.eps, threat.norm


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[nn.Module]:
    """Restore ``model``'s buffers (BatchNorm running statistics) on exit."""
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for b, b0 in zip(model.buffers(), saved):
                b.copy_(b0)


def unflat(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector back into tensors shaped like ``like``."""
    out, start = [], 0
    for t in like:
        out.append(vector[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


#: Operation names without parameters (DARTS, NAS-Bench-201 and the tiny space's ``skip``).
PARAMETER_FREE_OPS: frozenset[str] = frozenset({"none", "skip_connect", "avg_pool_3x3", "max_pool_3x3", "skip"})


def cap_parameter_free(sample: dict[str, Any], probs: Mapping[str, Any], cap: int,
                       free: Iterable[str] = PARAMETER_FREE_OPS) -> dict[str, Any]:
    """``sample`` with at most ``cap`` parameter-free edges per cell (P-DARTS, Chen et al. 2019).

    A cell is the labels that share a prefix before their last ``/`` (``cell/0_1``,
    ``normal/op_2_0``). Only edges whose choice also offers a parametric operation count. The
    excess edges whose exported operation has the lowest architecture probability take the
    strongest parametric operation of their edge instead; the strongest ``cap`` stay.

    Example::

        >>> probs = {"c/a": {"skip_connect": 0.6, "conv_3x3": 0.4},
        ...          "c/b": {"skip_connect": 0.9, "conv_3x3": 0.1}}
        >>> cap_parameter_free({"c/a": "skip_connect", "c/b": "skip_connect"}, probs, 1)
        {'c/a': 'conv_3x3', 'c/b': 'skip_connect'}
    """
    free = frozenset(free)
    sample = dict(sample)
    cells: dict[str, list[str]] = {}
    for label, p in probs.items():
        if isinstance(p, Mapping) and sample.get(label) in free and any(op not in free for op in p):
            cells.setdefault(label.rpartition("/")[0], []).append(label)
    for labels in cells.values():
        labels.sort(key=lambda label: (probs[label][sample[label]], label))
        for label in labels[: max(0, len(labels) - cap)]:
            p = probs[label]
            sample[label] = max((op for op in p if op not in free), key=p.__getitem__)
    return sample


@dataclasses.dataclass(frozen=True)
class DartsSettings:
    """How ARNAS and DSRNA search beyond NNI DARTS' own arguments; every field is also a keyword
    argument of the strategies (``ARNAS(weight_lr=0.05, unrolled=True)``).

    ``unrolled`` / ``unrolled_r``: DARTS' second-order architecture gradient and its finite-difference
    radius (:meth:`RobustDartsModule.unrolled_gradient`). ``weight_optimizer="sgd"``: the papers'
    weight optimiser, SGD with ``weight_momentum`` and ``weight_decay``, cosine from ``weight_lr``
    to ``weight_lr_min``; ``"evaluator"``: the evaluator's, as NNI DARTS. ``exclude_none``: the
    export never picks ``none`` while another operation exists (:meth:`RobustDartsModule.export`).
    """

    unrolled: bool = False
    unrolled_r: float = 0.01
    weight_optimizer: str = "sgd"
    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    weight_momentum: float = 0.9
    weight_decay: float = 3.0e-4
    exclude_none: bool = True
    max_parameter_free: int | None = None

    def __post_init__(self) -> None:
        if self.weight_optimizer not in WEIGHT_OPTIMIZERS:
            raise ValueError(
                f"unknown weight_optimizer {self.weight_optimizer!r}; valid: {', '.join(WEIGHT_OPTIMIZERS)}"
            )
        object.__setattr__(self, "exclude_none", bool(self.exclude_none))
        cap = self.max_parameter_free
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise ValueError(f"max_parameter_free must be None or an integer >= 0, got {cap!r}")

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> "DartsSettings":
        """The settings that ``kwargs`` names (taken out of it); the defaults for the rest."""
        return cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls) if f.name in kwargs})


class RobustDartsModule(DartsLightningModule):
    """DARTS search step with hooks for robust objectives (ARNAS, DSRNA).

    Differs from NNI's :class:`DartsLightningModule`: the architecture gradient
    comes from :meth:`architecture_gradient` (optionally second-order), and the
    weights can be trained with the papers' SGD + cosine schedule instead of
    the evaluator's optimiser.
    """

    def __init__(
        self,
        training_module: nn.Module,
        *,
        arc_learning_rate: float = 3.0e-4,
        gradient_clip_val: float | None = 5.0,
        log_prob_every_n_step: int = 10,
        warmup_epochs: int = 0,
        settings: DartsSettings | None = None,
    ) -> None:
        super().__init__(
            training_module,
            arc_learning_rate=arc_learning_rate,
            gradient_clip_val=gradient_clip_val,
            log_prob_every_n_step=log_prob_every_n_step,
            warmup_epochs=warmup_epochs,
        )
        self.settings = DartsSettings() if settings is None else settings
        self._alphas: list[nn.Parameter] | None = None

    def export(self) -> dict[str, Any]:
        """The argmax of each choice's architecture weights; with ``exclude_none`` (the
        default), an operation choice never exports ``none`` while another operation exists:
        DARTS' derivation (Liu et al. 2019, section 2.4: "excluding the zero operations"),
        which ARNAS and DSRNA inherit. NNI's ``DARTS`` keeps ``none`` in the argmax, as
        NAS-Bench-201's DARTS baseline does (docs/fidelity.md)."""
        sample = super().export()
        all_probs = self.export_probs()
        if self.settings.exclude_none:
            for label, probs in all_probs.items():
                if sample.get(label) == "none" and isinstance(probs, dict):
                    others = {op: p for op, p in probs.items() if op != "none"}
                    if others:
                        sample[label] = max(others, key=others.__getitem__)
        if self.settings.max_parameter_free is not None:
            sample = cap_parameter_free(sample, all_probs, self.settings.max_parameter_free)
        return sample

    # --- parameters and optimisers -------------------------------------------------

    def alphas(self) -> list[nn.Parameter]:
        """Architecture parameters, in a fixed order."""
        if self._alphas is None:
            self._alphas = self.arch_parameters()
        return self._alphas

    def weights(self) -> list[nn.Parameter]:
        """Trainable supernet weights (everything but the architecture parameters)."""
        arch = {id(p) for p in self.alphas()}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in arch]

    def configure_optimizers(self) -> Any:
        settings = self.settings
        if settings.weight_optimizer == "evaluator":
            return super().configure_optimizers()
        arch_optim = self.configure_architecture_optimizers()
        arch_optim.is_arch_optimizer = True  # type: ignore[attr-defined]
        sgd = torch.optim.SGD(self.weights(), lr=settings.weight_lr, momentum=settings.weight_momentum,
                              weight_decay=settings.weight_decay)
        max_epochs = self.trainer.max_epochs if self.trainer is not None else None
        if max_epochs is None or max_epochs < 1:
            total, interval = max(1, int(self.trainer.estimated_stepping_batches)), "step"
        else:
            total, interval = max_epochs, "epoch"
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=total, eta_min=settings.weight_lr_min)
        return [sgd, arch_optim], [{"scheduler": sched, "interval": interval}]

    def _weight_optimizer(self) -> torch.optim.Optimizer:
        optimizers = self.optimizers()
        if not isinstance(optimizers, list):
            optimizers = [optimizers]
        for opt in optimizers:
            if not getattr(opt, "is_arch_optimizer", False):
                return opt.optimizer if hasattr(opt, "optimizer") else opt
        raise RuntimeError("no weight optimizer configured")

    # --- losses ----------------------------------------------------------------------

    def criterion_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The evaluator's criterion (cross-entropy if it has none) on ``model(x)``; no logging."""
        criterion = getattr(self.training_module, "criterion", None) or F.cross_entropy
        return criterion(logits_of(self.training_module(x)), y)

    def prepare_train_batch(self, batch: Batch) -> Batch:
        """The batch the weights train on (hook: ARNAS replaces it by adversarial examples)."""
        return batch

    def weight_objective(self, batch: Batch) -> torch.Tensor:
        """The weight loss without logging (used by the unrolled virtual step)."""
        return self.criterion_loss(batch[0], batch[1])

    def weight_loss(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """The loss of the weight step; runs the evaluator's ``training_step`` so its metrics are logged."""
        out = self.training_module.training_step(batch, 2 * batch_idx + 1)
        return out["loss"] if isinstance(out, dict) else out

    def architecture_gradient(self, train_batch: Batch, val_batch: Batch) -> list[torch.Tensor]:
        """Gradient for the architecture optimiser (hook)."""
        return self.gradient(lambda: self.criterion_loss(val_batch[0], val_batch[1]), train_batch)

    def arch_phase(self) -> bool:
        """Whether this step updates the architecture (after NNI's ``warmup_epochs``)."""
        return self.warmup_epochs == 0 or self.trainer.current_epoch >= self.warmup_epochs

    # --- the search step -------------------------------------------------------------

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> torch.Tensor:
        arc_optim = self.architecture_optimizers()
        trn_batch = self.prepare_train_batch(batch["train"])
        val_batch = batch["val"]

        if self.arch_phase():
            self.resample()
            arc_optim.zero_grad()
            grads = self.architecture_gradient(trn_batch, val_batch)
            for p, g in zip(self.alphas(), grads):
                p.grad = g.detach().clone()
            arc_optim.step()

        self.resample()
        loss = self.weight_loss(trn_batch, batch_idx)
        self.advance_optimization(loss, batch_idx, self.gradient_clip_val)
        self.advance_lr_schedulers(batch_idx)
        if batch_idx % self.log_prob_every_n_step == 0:
            self.log_probs(self.export_probs())
        return loss.detach()

    def gradient(self, loss_fn: Callable[[], torch.Tensor], train_batch: Batch) -> list[torch.Tensor]:
        """d loss_fn / d alpha: first order, or unrolled (second order) with ``settings.unrolled``."""
        if self.settings.unrolled:
            return self.unrolled_gradient(loss_fn, train_batch)
        return self._grad(loss_fn(), self.alphas())

    @staticmethod
    def _grad(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    def unrolled_gradient(self, loss_fn: Callable[[], torch.Tensor], train_batch: Batch) -> list[torch.Tensor]:
        """DARTS' second-order approximation (Liu et al., ICLR 2019, Eq. 7-8).

        One virtual SGD step ``w' = w - xi * (grad_w L_train + wd * w)`` with the weight
        optimiser's current learning rate ``xi`` (momentum left out: docs/fidelity.md), the
        validation gradient at ``w'``, and the Hessian-vector product by central finite
        differences with ``r / ||grad_w' L_val||``. Weights and buffers are restored.
        """
        alphas, weights = self.alphas(), self.weights()
        group = self._weight_optimizer().param_groups[0]
        xi, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))
        saved = [p.detach().clone() for p in weights]

        def set_weights(values: Sequence[torch.Tensor]) -> None:
            with torch.no_grad():
                for p, v in zip(weights, values):
                    p.copy_(v)

        with preserved_buffers(self.model):
            try:
                g_train = self._grad(self.weight_objective(train_batch), weights)
                set_weights([w - xi * (g + wd * w) for w, g in zip(saved, g_train)])
                grads = self._grad(loss_fn(), list(alphas) + list(weights))
                d_alpha, d_w = grads[:len(alphas)], grads[len(alphas):]
                norm = float(flat(d_w).norm())
                if norm == 0.0:
                    return d_alpha
                step = self.settings.unrolled_r / norm
                hessian = []
                for sign in (1.0, -1.0):
                    set_weights([w + sign * step * d for w, d in zip(saved, d_w)])
                    hessian.append(self._grad(self.weight_objective(train_batch), alphas))
                return [da - xi * (hp - hn) / (2 * step) for da, hp, hn in zip(d_alpha, *hessian)]
            finally:
                set_weights(saved)


class RobustOneShotMixin:
    """What ARNAS, DSRNA and TAM-NAS add to NNI's one-shot strategies, mixed in before NNI's class:
    the threat model they train and score under (``eps``, ``norm``, or a dataset's default:
    :meth:`_set_threat`), and their records in a :class:`~robustnas.strategies.pareto.ParetoArchive`
    (``self._archive``): the front, and the archive in the strategy's checkpoint.
    """

    #: Takes the threat model (``eps``, ``norm``): ``robustnas.strategies.is_threat_aware``.
    threat_aware: bool = True
    _archive: ParetoArchive

    def _set_threat(self, eps: float | None, norm: str | None, dataset: str | DatasetBundle | None) -> None:
        """``self.eps`` and ``self.norm`` from :func:`resolve_threat`."""
        self.eps, self.norm = resolve_threat(eps, norm, dataset)

    def pareto_front(self) -> list[dict[str, Any]]:
        """The first non-dominated front of the archived records (``{"sample", "metrics", ...}``)."""
        return self._archive.front()

    def state_dict(self) -> dict:
        """NNI's one-shot checkpoint plus the archive of records (JSON-able)."""
        return {**super().state_dict(), "archive": self._archive.state_dict()}  # type: ignore[misc]

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the archive (and NNI's state); archived records are kept when the search reruns."""
        if "archive" in state_dict:
            self._archive.load_state_dict(state_dict["archive"])
        super().load_state_dict(state_dict)  # type: ignore[misc]


class RobustOneShotStrategy(RobustOneShotMixin, DARTS):
    """NNI's DARTS strategy with a threat model, the papers' weight optimiser and result records.

    Besides the arguments below and NNI DARTS' own (``warmup_epochs``: epochs that train the
    weights only, before any architecture step), it takes the fields of :class:`DartsSettings`
    as keyword arguments. ``val_batches`` validation batches (None: every batch) and
    ``eval_pgd_steps`` PGD steps measure the final record; ``eval_batches`` is the deprecated
    name of ``val_batches``.
    Subclasses set :attr:`module_class` and pass their own keyword arguments to it
    through :meth:`module_kwargs`. One record per run: ``pareto_front()`` has it.
    """

    module_class: type[RobustDartsModule] = RobustDartsModule
    objectives: tuple[str, ...] = ("clean_acc", "pgd_acc", "params")
    #: Arguments that were renamed; the old names still work, with a DeprecationWarning.
    renamed_arguments: tuple[Renamed, ...] = (RENAMED_EVAL_BATCHES,)

    def __init__(
        self,
        *,
        eps: float | None = None,
        norm: str | None = None,
        dataset: str | DatasetBundle | None = None,
        arc_learning_rate: float = 3.0e-4,
        gradient_clip_val: float | None = 5.0,
        warmup_epochs: int = 0,
        log_prob_every_n_step: int = 10,
        val_batches: int | None = 4,
        eval_pgd_steps: int = 10,
        eval_batches: int | None = None,
        **kwargs: Any,
    ) -> None:
        if eval_batches is not None:
            val_batches = RENAMED_EVAL_BATCHES.value(eval_batches, type(self).__name__)
        if kwargs.get("penalty") is not None:
            raise ValueError(f"{type(self).__name__} does not support NNI DARTS' profiler penalty")
        kwargs.pop("penalty", None)
        #: The search settings besides NNI DARTS' own: the :class:`DartsSettings` fields of ``kwargs``.
        self.settings = DartsSettings.pop_from(kwargs)
        super().__init__(arc_learning_rate=arc_learning_rate, gradient_clip_val=gradient_clip_val,
                         log_prob_every_n_step=log_prob_every_n_step, warmup_epochs=warmup_epochs, **kwargs)
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        #: Validation batches the final record is measured on (None: every batch).
        self.val_batches = check_batches("val_batches" if eval_batches is None else "eval_batches", val_batches)
        self._set_threat(eps, norm, dataset)
        self.eval_pgd_steps = eval_pgd_steps
        self._archive = ParetoArchive(self.objectives)
        self._val_loader_fn: Callable[[], Any] | None = None

    def module_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :attr:`module_class` besides the common ones (hook)."""
        return {}

    def configure_oneshot_module(self, training_module: nn.Module) -> BaseOneShotLightningModule:
        return self.module_class(
            training_module,
            arc_learning_rate=self.arc_learning_rate,
            gradient_clip_val=self.gradient_clip_val,
            log_prob_every_n_step=self.log_prob_every_n_step,
            warmup_epochs=self.warmup_epochs,
            settings=self.settings,
            **self.module_kwargs(),
        )

    def train_dataloader(self, train_dataloader_fn, val_dataloader_fn):  # noqa: ANN001
        self._val_loader_fn = val_dataloader_fn
        return super().train_dataloader(train_dataloader_fn, val_dataloader_fn)

    # --- results ---------------------------------------------------------------------

    def _run(self) -> None:
        super()._run()
        record = self.final_record()
        self._archive.add(record)
        _logger.info("%s finished: %s", type(self).__name__, record["metrics"])

    def extra_metrics(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Method-specific metrics of the final supernet on the validation tensors (hook)."""
        return {}

    def _val_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._val_loader_fn is None:
            raise RuntimeError("the strategy has no validation loader; was it run?")
        xs, ys = [], []
        for x, y, *_ in itertools.islice(self._val_loader_fn(), self.val_batches):
            xs.append(x)
            ys.append(y)
        if not xs:
            raise RuntimeError("the validation loader is empty")
        return torch.cat(xs), torch.cat(ys)

    def final_record(self) -> dict[str, Any]:
        """The exported architecture with supernet-level metrics on the validation split.

        ``clean_acc`` and ``pgd_acc`` (PGD-``eval_pgd_steps``) are measured on the
        supernet with its final architecture weights, not on the exported
        architecture retrained; ``params`` is the exported architecture's size.
        """
        module = self.oneshot_module
        module.set_model(self.supernet)
        sample = module.export()
        model = self.supernet
        device = model_device(model)
        x, y = self._val_tensors()
        x, y = x.to(device), y.to(device)
        with preserved_mode(model):
            metrics: dict[str, Any] = {
                "clean_acc": accuracy(model, x, y),
                "pgd_acc": pgd_accuracy(model, x, y, eps=self.eps, norm=self.norm, steps=self.eval_pgd_steps),
                "params": self._exported_params(sample),
                "eps": self.eps,
                "norm": self.norm,
                "n_examples": int(len(y)),
            }
            metrics.update(self.extra_metrics(model, x, y))
        return {"sample": sample, "metrics": metrics, "level": "supernet", "strategy": type(self).__name__.lower()}

    def _exported_params(self, sample: dict[str, Any]) -> int:
        frozen = self.model_space.freeze(sample).executable_model()
        return int(sum(p.numel() for p in frozen.parameters()))

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every result record (``{"sample", "metrics", ...}``), JSON-able."""
        return self._archive.records
