"""Training recipes for candidates: standard, PGD (Madry), TRADES and fast FGSM-RS.

- ``standard``: cross-entropy on clean inputs.
- ``pgd``: Madry et al., "Towards Deep Learning Models Resistant to Adversarial
  Attacks" (ICLR 2018): cross-entropy on PGD-k examples (random start).
- ``trades``: Zhang et al., "Theoretically Principled Trade-off between Robustness
  and Accuracy" (ICML 2019): CE(clean) + beta * KL(f(x_adv) || f(x)), x_adv from
  k steps maximising the KL from a 0.001 * N(0, 1) start.
- ``fgsm-rs``: Wong et al., "Fast is better than free" (ICLR 2020): one FGSM step
  of size 1.25 * eps from a uniform random start.

Adversarial examples are generated with the model in eval mode and its parameters
frozen (the TRADES reference code's choice; Madry-style code often attacks in train
mode): BatchNorm statistics are not updated by the k attack forwards and no weight
gradient is built during attack iterations. See docs/fidelity.md (Evaluator).

Each recipe is a :class:`Recipe` object in the ``RECIPES`` registry; :func:`register_recipe`
adds one (docs/internals.md, "Adding a recipe, an attack or a metric").
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustnas.plugins.errors import ConfigError

from ._registry import Registry
from ._utils import eval_mode, logits_of, resolve_device
from .attacks import _ce_sum, accuracy, perturb
from .data import DatasetBundle, ThreatModel

__all__ = ["SCHEDULES", "TrainConfig", "Recipe", "AdversarialRecipe", "StandardRecipe", "PGDRecipe",
           "TRADESRecipe", "FGSMRSRecipe", "RECIPES", "register_recipe", "adversarial_inputs", "train_step",
           "make_optimizer", "train_model"]

_logger = logging.getLogger(__name__)

SCHEDULES: tuple[str, ...] = ("cosine", "constant")


@dataclass
class TrainConfig:
    """How to train one candidate.

    ``eps``/``norm`` of None take the dataset's default threat model. ``attack_steps`` and
    ``attack_alpha`` (default ``2.5 * eps / steps``) set the inner attack of ``pgd`` and
    ``trades``; ``fgsm_alpha`` is the FGSM-RS step as a multiple of eps. ``amp`` applies on
    CUDA only. ``progress`` shows a rich progress bar when stderr is a terminal.
    """

    recipe: str = "pgd"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    eps: float | None = None
    norm: str | None = None
    attack_steps: int = 7
    attack_alpha: float | None = None
    trades_beta: float = 6.0
    fgsm_alpha: float = 1.25
    grad_clip: float | None = None
    amp: bool = False
    seed: int = 0
    track_val: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        RECIPES.lookup(self.recipe)  # ConfigError naming the valid recipes
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size", "attack_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if self.eps is not None or self.norm is not None:
            ThreatModel(self.norm or "linf", self.eps if self.eps is not None else 0.1)
        if self.trades_beta < 0 or self.fgsm_alpha <= 0:
            raise ConfigError("trades_beta must be >= 0 and fgsm_alpha > 0")

    def with_threat(self, threat: ThreatModel) -> "TrainConfig":
        """A copy whose missing eps/norm are filled from ``threat``."""
        return dataclasses.replace(
            self,
            eps=threat.eps if self.eps is None else self.eps,
            norm=threat.norm if self.norm is None else self.norm,
        )


def _threat(config: TrainConfig) -> ThreatModel:
    if config.eps is None:
        raise ConfigError(
            f"recipe {config.recipe!r} needs eps; set TrainConfig.eps or use train_model, "
            "which takes it from the dataset's default threat model"
        )
    return ThreatModel(config.norm or "linf", config.eps)


def _autocast(config: TrainConfig, device: torch.device) -> torch.autocast:
    return torch.autocast(
        device_type=device.type, dtype=torch.float16, enabled=bool(config.amp and device.type == "cuda")
    )


def _kl_sum(logits: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(logits.float(), dim=1), p_clean, reduction="sum")


class Recipe(abc.ABC):
    """A training recipe: the inputs of one batch, its loss, and its cost.

    :func:`train_step` asks the recipe named by ``TrainConfig.recipe`` for the inputs to train
    on (:meth:`inputs`; clean by default), then, in train mode and under the config's
    autocast, for the loss of the batch (:meth:`loss`; cross-entropy on those inputs by
    default). :meth:`passes` is the cost the comparison harness plans with. Register a new
    recipe with :func:`register_recipe`; recipes that train on an attack subclass
    :class:`AdversarialRecipe`.
    """

    #: The name ``TrainConfig.recipe`` (and ``--recipe``) selects the recipe by.
    name: ClassVar[str]

    @abc.abstractmethod
    def passes(self, attack_steps: int) -> int:
        """Forward-backward passes of one training example per step, with ``attack_steps``
        inner attack steps (``TrainConfig.attack_steps``)."""

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
        """The inputs the loss sees: ``x`` itself (clean training)."""
        return x

    def loss(
        self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor, config: TrainConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of the batch: ``x`` clean, ``x_in`` from :meth:`inputs`; ``logits``
        are those the step's reported accuracy is measured on. Default: cross-entropy on ``x_in``."""
        logits = logits_of(model(x_in)).float()
        return F.cross_entropy(logits, y), logits

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class AdversarialRecipe(Recipe):
    """A recipe that trains on adversarial inputs made by :meth:`attack`.

    :meth:`inputs` checks that the config has an eps, then runs :meth:`attack` with the model
    in eval mode and its parameters frozen (no BatchNorm update, no weight gradient; see the
    module docstring) under the config's autocast.
    """

    @abc.abstractmethod
    def attack(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, config: TrainConfig
    ) -> torch.Tensor:
        """Adversarial inputs for ``(x, y)`` within ``threat`` (e.g. with :func:`.attacks.perturb`)."""

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
        threat = _threat(config)
        with eval_mode(model), _autocast(config, x.device):
            return self.attack(model, x, y, threat, config)


class StandardRecipe(Recipe):
    """Cross-entropy on clean inputs."""

    name = "standard"

    def passes(self, attack_steps: int) -> int:
        return 1


class PGDRecipe(AdversarialRecipe):
    """Madry et al. (ICLR 2018): cross-entropy on PGD-``attack_steps`` examples (random start)."""

    name = "pgd"

    def passes(self, attack_steps: int) -> int:
        return attack_steps + 1

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
               config: TrainConfig) -> torch.Tensor:
        return perturb(model, x, _ce_sum, y, eps=threat.eps, norm=threat.norm, steps=config.attack_steps,
                       alpha=config.attack_alpha)


class TRADESRecipe(AdversarialRecipe):
    """Zhang et al. (ICML 2019): CE(clean) + ``trades_beta`` * KL(f(x_adv) || f(x)), x_adv from
    ``attack_steps`` steps on the KL from a 0.001 * N(0, 1) start."""

    name = "trades"

    def passes(self, attack_steps: int) -> int:
        return attack_steps + 2

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
               config: TrainConfig) -> torch.Tensor:
        with torch.no_grad():
            p_clean = F.softmax(logits_of(model(x)).float(), dim=1)
        return perturb(
            model, x, _kl_sum, p_clean, eps=threat.eps, norm=threat.norm, steps=config.attack_steps,
            alpha=config.attack_alpha, init_delta=0.001 * torch.randn_like(x),
        )

    def loss(
        self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor, config: TrainConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits_of(model(x)).float()
        logits_adv = logits_of(model(x_in)).float()
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return F.cross_entropy(logits, y) + config.trades_beta * robust, logits


class FGSMRSRecipe(AdversarialRecipe):
    """Wong et al. (ICLR 2020): one FGSM step of ``fgsm_alpha`` * eps from a uniform random start."""

    name = "fgsm-rs"

    def passes(self, attack_steps: int) -> int:
        return 2

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
               config: TrainConfig) -> torch.Tensor:
        return perturb(model, x, _ce_sum, y, eps=threat.eps, norm=threat.norm, steps=1,
                       alpha=config.fgsm_alpha * threat.eps, random_start=True)


#: Training recipes by name, in registration order (built-ins: standard, pgd, trades, fgsm-rs).
RECIPES: Registry[Recipe] = Registry("recipe", "recipes", Recipe,
                                     (StandardRecipe(), PGDRecipe(), TRADESRecipe(), FGSMRSRecipe()))


def register_recipe(recipe: Recipe) -> Recipe:
    """Make ``recipe`` selectable by its name (``TrainConfig(recipe=...)``, ``--recipe``).

    A name already registered raises :class:`ConfigError`. Returns ``recipe``.
    """
    return RECIPES.register(recipe)


def adversarial_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The inputs a recipe trains on (clean for ``standard``; for ``trades`` the KL attack)."""
    return RECIPES.lookup(config.recipe).inputs(model, x, y, config)


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One optimisation step of ``config.recipe`` on the batch ``(x, y)`` (already on the
    model's device). Returns ``{"loss", "acc"}``; ``acc`` is measured on the inputs the loss
    was computed on (adversarial for ``pgd``/``fgsm-rs``, clean for ``standard``/``trades``)."""
    recipe = RECIPES.lookup(config.recipe)
    x_in = adversarial_inputs(model, x, y, config)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with _autocast(config, x.device):
        loss, logits = recipe.loss(model, x, x_in, y, config)
    if scaler is not None:
        scaler.scale(loss).backward()
        if config.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
    acc = (logits.detach().argmax(1) == y).float().mean()
    return {"loss": float(loss.detach()), "acc": float(acc)}


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay, as the recipes use."""
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and sys.stderr.isatty()),
        transient=True,
    )


def train_model(
    model: nn.Module,
    bundle: DatasetBundle,
    config: TrainConfig | None = None,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Train ``model`` in place on ``bundle.train`` with ``config.recipe``.

    Returns a history dict: per-epoch ``loss``, ``train_acc`` (on the inputs trained on),
    ``val_acc`` (clean, when ``track_val``), ``lr`` and ``seconds``, plus ``recipe``,
    ``eps``, ``norm``, ``epochs``, ``train_seconds``. The model is moved to ``device``.
    A non-finite loss stops training with a ``FloatingPointError``.
    """
    config = (config or TrainConfig()).with_threat(bundle.threat)
    if len(bundle.train) == 0:
        raise ValueError(f"dataset {bundle.name!r}: the train split is empty")
    dev = resolve_device(device)
    model.to(dev)
    use_amp = bool(config.amp and dev.type == "cuda")
    if config.amp and not use_amp:
        _logger.warning("amp=True applies on CUDA only; training on %s in float32", dev)
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(len(bundle.train) / config.batch_size)
    total = config.epochs * steps_per_epoch
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        if config.schedule == "cosine"
        else None
    )
    history: dict[str, Any] = {"loss": [], "train_acc": [], "val_acc": [], "lr": [], "seconds": []}
    forked = [dev] if dev.type == "cuda" else []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=forked), _progress(config.progress) as bar:
        torch.manual_seed(config.seed)
        task = bar.add_task(f"{config.recipe} training", total=total, status="")
        for epoch in range(config.epochs):
            t0 = time.perf_counter()
            loss_sum = acc_sum = 0.0
            n_seen = 0
            loader = bundle.loader("train", config.batch_size, shuffle=True, seed=config.seed + epoch)
            for step, (xb, yb) in enumerate(loader):
                xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
                out = train_step(model, xb, yb, optimizer, config, scaler)
                if not math.isfinite(out["loss"]):
                    raise FloatingPointError(
                        f"non-finite training loss ({out['loss']}) at epoch {epoch + 1}, step {step + 1} "
                        f"of recipe {config.recipe!r} with lr={optimizer.param_groups[0]['lr']:.4g}; "
                        f"try a lower lr (e.g. {config.lr / 10:.3g}) or grad_clip"
                    )
                if scheduler is not None:
                    scheduler.step()
                loss_sum += out["loss"] * len(yb)
                acc_sum += out["acc"] * len(yb)
                n_seen += len(yb)
                bar.update(task, advance=1, status=f"epoch {epoch + 1}/{config.epochs} loss {out['loss']:.3f}")
            history["loss"].append(loss_sum / n_seen)
            history["train_acc"].append(acc_sum / n_seen)
            history["lr"].append(optimizer.param_groups[0]["lr"])
            if config.track_val and len(bundle.val) > 0:
                xv, yv = bundle.tensors("val")
                history["val_acc"].append(accuracy(model, xv, yv, device=dev))
            history["seconds"].append(time.perf_counter() - t0)
            _logger.info(
                "epoch %d/%d: loss %.4f, train acc %.4f%s, %.1f s",
                epoch + 1, config.epochs, history["loss"][-1], history["train_acc"][-1],
                f", val acc {history['val_acc'][-1]:.4f}" if history["val_acc"] else "",
                history["seconds"][-1],
            )
    model.eval()
    history.update(
        recipe=config.recipe,
        eps=config.eps,
        norm=config.norm,
        epochs=config.epochs,
        train_seconds=time.perf_counter() - start,
    )
    return history
