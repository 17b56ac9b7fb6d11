"""Subnets of a trained one-shot supernet: BatchNorm recalibration and scoring (private).

Used by :class:`~robustnas.strategies.tamnas.TAMNAS`. A subnet is frozen from
the supernet with NNI's weight-preserving ``freeze``; its BatchNorm statistics
are then re-estimated on a few training batches (the supernet's running stats
mix all paths; Guo et al., "Single Path One-Shot NAS", ECCV 2020) before it is
scored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from robustnas.plugins.evaluator import count_flops, count_params
from robustnas.plugins.evaluator._utils import model_device, preserved_mode
from robustnas.plugins.evaluator.attacks import accuracy, pgd_accuracy

__all__ = ["SCORABLE_METRICS", "recalibrate_batchnorm", "score_subnet", "take_batches"]

#: Metrics :func:`score_subnet` can compute, and so the objectives TAMNAS accepts.
SCORABLE_METRICS = ("clean_acc", "pgd_acc", "params", "flops")

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def take_batches(loader: Iterable[Any], n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` ``(x, y)`` batches of a loader (all of them when ``n`` is 0 or less)."""
    batches = []
    for i, batch in enumerate(loader):
        if 0 < n <= i:
            break
        x, y = batch[0], batch[1]
        batches.append((x, y))
    return batches


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Sequence[tuple[torch.Tensor, Any]] | Sequence[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running mean and variance of ``model`` on ``batches``.

    Running stats are reset and accumulated as an exact average over the batches
    (momentum ``None``), in train mode and without gradients; momentum and the
    train/eval flags are restored afterwards. Returns the number of BN layers.
    """
    layers = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not layers or not batches:
        return len(layers)
    momenta = [m.momentum for m in layers]
    device = model_device(model)
    with preserved_mode(model):
        try:
            for m in layers:
                m.reset_running_stats()
                m.momentum = None
            model.train()
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
        finally:
            for m, momentum in zip(layers, momenta):
                m.momentum = momentum
    return len(layers)


def score_subnet(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str,
    pgd_steps: int,
    metrics: Sequence[str] = SCORABLE_METRICS,
    seed: int = 0,
) -> dict[str, Any]:
    """Clean accuracy, PGD accuracy, parameters (and FLOPs if asked) of ``model`` on ``(x, y)``.

    PGD has a random start; its randomness is seeded by ``seed`` without touching
    the global RNG state, so two scorings of one model agree.
    """
    unknown = [m for m in metrics if m not in SCORABLE_METRICS]
    if unknown:
        raise ValueError(f"cannot score metric(s) {unknown}; scorable: {list(SCORABLE_METRICS)}")
    start = time.perf_counter()
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    out: dict[str, Any] = {
        "clean_acc": accuracy(model, x, y),
        "params": count_params(model),
    }
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out["pgd_acc"] = pgd_accuracy(model, x, y, eps=eps, norm=norm, steps=pgd_steps)
    if "flops" in metrics:
        out["flops"] = count_flops(model, tuple(x.shape[1:]))
    out.update({
        "norm": norm,
        "eps": float(eps),
        "attack": f"pgd-{pgd_steps}",
        "n_examples": int(len(y)),
        "eval_seconds": time.perf_counter() - start,
    })
    return out
