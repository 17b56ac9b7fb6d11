"""The benchmark protocol: how one cell of the table is trained and measured.

One :class:`Protocol` is applied to every cell, so the table's numbers are comparable
with each other and reproducible with :func:`run_cell` (and ``Benchmark.evaluate``).
The default is the protocol of ``robust201-digits``, chosen by measurement
(docs/benchmark.md, "Protocol").
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from robustnas.plugins.evaluator import (
    DatasetBundle, TrainConfig, accuracy, autoattack_accuracy, count_flops, count_params, fgsm, pgd_accuracy,
    train_model,
)
from robustnas.plugins.errors import ConfigError
from robustnas.plugins.evaluator._utils import resolve_device
from robustnas.plugins.evaluator.autoattack import MODES
from robustnas.plugins.evaluator.training import RECIPES
from robustnas.search_spaces import get_space

__all__ = ["PHASES", "Protocol", "build_cell", "run_cell"]

#: What a row of the build measures: ``main`` (every cell, seed 0), ``seed`` (extra training
#: seeds of a random subset), ``autoattack`` (AutoAttack on the seed-0 model of a subset) and
#: ``validity`` (the strong protocol on a random subset).
PHASES: tuple[str, ...] = ("main", "seed", "autoattack", "validity")


@dataclass(frozen=True)
class Protocol:
    """Training and evaluation settings shared by every cell of a table.

    ``recipe``/``epochs``/``batch_size``/``lr`` train the cell (SGD, momentum 0.9,
    weight decay 5e-4, cosine schedule, the evaluator's recipes); clean, FGSM and
    PGD-``pgd_steps`` accuracy are measured on the whole test split at the dataset's
    default eps; AutoAttack (``aa_mode``) on the first ``aa_examples`` test points.
    ``strong_*`` is the reference protocol of the validity check.
    """

    dataset: str = "digits"
    space: str = "robust201"
    space_kwargs: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"input_shape": [1, 8, 8], "num_classes": 10, "width": 8, "cells_per_stage": 1}
    )
    data_seed: int = 0
    recipe: str = "fgsm-rs"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.1
    pgd_steps: int = 20
    aa_mode: str = "fast"
    aa_examples: int = 200
    strong_recipe: str = "pgd"
    strong_epochs: int = 30
    strong_attack_steps: int = 7
    strong_aa_mode: str = "fast"

    def __post_init__(self) -> None:
        for name in ("recipe", "strong_recipe"):
            if getattr(self, name) not in RECIPES:
                raise ConfigError(f"{name} {getattr(self, name)!r} is unknown; valid recipes: {', '.join(RECIPES)}")
        for name in ("aa_mode", "strong_aa_mode"):
            if getattr(self, name) not in MODES:
                raise ConfigError(f"{name} {getattr(self, name)!r} is unknown; valid modes: {', '.join(MODES)}")
        for name in ("epochs", "batch_size", "pgd_steps", "aa_examples", "strong_epochs", "strong_attack_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"protocol {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"protocol lr must be a positive number, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (stored in the table's metadata)."""
        data = dataclasses.asdict(self)
        data["space_kwargs"] = dict(self.space_kwargs)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Protocol":
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown protocol key(s) {unknown}; valid keys: {sorted(valid)}")
        return cls(**data)

    def train_config(self, seed: int, strong: bool = False) -> TrainConfig:
        """The training settings of one run (``strong``: the validity check's reference)."""
        if strong:
            return TrainConfig(recipe=self.strong_recipe, epochs=self.strong_epochs, batch_size=self.batch_size,
                               lr=self.lr, attack_steps=self.strong_attack_steps, seed=seed,
                               track_val=False, progress=False)
        return TrainConfig(recipe=self.recipe, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           seed=seed, track_val=False, progress=False)


def build_cell(protocol: Protocol, sample: Mapping[str, Any], seed: int) -> torch.nn.Module:
    """The frozen network of ``sample`` with the initial weights of training seed ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # before the space: NNI's freeze keeps the weights the space was built with
        space = get_space(protocol.space, **protocol.space_kwargs)
        return space.freeze(dict(sample))


def run_cell(
    protocol: Protocol,
    bundle: DatasetBundle,
    sample: Mapping[str, Any],
    *,
    seed: int = 0,
    phase: str = "main",
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train (unless ``model`` is given) and measure one cell under ``protocol``.

    ``main`` and ``seed`` measure clean, FGSM and PGD accuracy on the whole test split,
    params, FLOPs and seconds; ``autoattack`` measures AutoAttack on ``aa_examples``
    points (of ``model``, or of a fresh seed-``seed`` training); ``validity`` trains with
    the strong protocol and measures clean, PGD and AutoAttack on the whole test split.
    Returns ``(metrics, trained model)``.
    """
    if phase not in PHASES:
        raise ConfigError(f"unknown phase {phase!r}; valid phases: {', '.join(PHASES)}")
    dev = resolve_device(device)
    threat = bundle.threat
    metrics: dict[str, Any] = {}
    if model is None:
        model = build_cell(protocol, sample, seed)
        history = train_model(model, bundle, protocol.train_config(seed, strong=phase == "validity"), device=dev)
        metrics["train_seconds"] = round(float(history["train_seconds"]), 3)
    model.to(dev).eval()
    x, y = bundle.tensors("test")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        if phase in ("main", "seed", "validity"):
            metrics["clean_acc"] = accuracy(model, x, y, batch_size=len(x), device=dev)
            metrics["pgd_acc"] = pgd_accuracy(model, x, y, eps=threat.eps, norm=threat.norm,
                                              steps=protocol.pgd_steps, batch_size=len(x), device=dev)
        if phase in ("main", "seed"):
            adv = fgsm(model.to(dev), x.to(dev), y.to(dev), eps=threat.eps, norm=threat.norm)
            with torch.no_grad():
                metrics["fgsm_acc"] = int((model(adv).argmax(1).cpu() == y).sum()) / len(y)
        if phase in ("autoattack", "validity"):
            n = len(x) if phase == "validity" else min(protocol.aa_examples, len(x))
            mode = protocol.strong_aa_mode if phase == "validity" else protocol.aa_mode
            metrics["robust_acc"], _ = autoattack_accuracy(model, x[:n], y[:n], norm=threat.norm, eps=threat.eps,
                                                           mode=mode, batch_size=n, seed=seed, device=dev,
                                                           num_classes=bundle.num_classes)
            metrics["aa_examples"] = n
            metrics["aa_mode"] = mode
    if phase == "main":
        metrics["params"] = count_params(model)
        metrics["flops"] = count_flops(model, bundle.input_shape)
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 3)
    return metrics, model
