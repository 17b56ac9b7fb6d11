"""Building blocks shared by the DARTS-style cell spaces.

The candidate operations are NNI's own (``nni.nas.hub.pytorch.nasnet.OPS``: the
DARTS implementations of sep_conv, dil_conv, pools, skip and zero), so NNI's
one-shot machinery recognises every module. This module only adds what NNI's
NASNet hub does not have: an in-model input normalisation and an auxiliary
head that works at any resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from nni.nas.hub.pytorch.nasnet import OPS
from nni.nas.hub.pytorch.utils.nn import DropPath
from torch import nn

__all__ = ["ARNAS_OPS", "DARTS_OPS", "Normalize", "AuxiliaryHead", "make_op"]

#: The 7 ARNAS candidate operations (no ``none``), in DARTS ``PRIMITIVES`` order.
ARNAS_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

#: The 8 DARTS candidate operations (with ``none``), DARTS ``PRIMITIVES`` order.
DARTS_OPS: tuple[str, ...] = ("none",) + ARNAS_OPS


def make_op(name: str, channels: int, stride: int, drop_path_prob: float = 0.0) -> nn.Module:
    """One candidate operation from NNI's ``OPS`` table (affine BatchNorm).

    As in DARTS (``model.py``), drop-path wraps every operation except the identity.
    """
    op = OPS[name](channels, stride, True)
    if drop_path_prob > 0 and not isinstance(op, nn.Identity):
        return nn.Sequential(op, DropPath(drop_path_prob))
    return op


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so inputs stay in [0, 1].

    Attacks then work in input space with the usual eps (the papers' common setting).
    ``mean`` and ``std`` are buffers: saved with the weights, never trained.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean {list(mean)} and std {list(std)} must have the same length")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class AuxiliaryHead(nn.Module):
    """DARTS' CIFAR auxiliary classifier (Liu et al., ICLR 2019, ``model.py``).

    Same layers and parameter count as DARTS; the first pooling is DARTS'
    ``AvgPool2d(5, stride=3)`` on an 8x8 map and an adaptive 2x2 average pool on
    any other resolution (docs/fidelity.md, "Search spaces").
    """

    def __init__(self, channels: int, num_classes: int, resolution: int) -> None:
        super().__init__()
        pool: nn.Module
        if resolution == 8:
            pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        else:
            pool = nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.flatten(1))


def check_normalization(mean: Optional[Sequence[float]], std: Optional[Sequence[float]],
                        in_channels: int) -> None:
    """Raise a clear error when ``mean``/``std`` do not fit the input channels."""
    if (mean is None) != (std is None):
        raise ValueError(f"give both mean and std or neither, got mean={mean!r}, std={std!r}")
    if mean is not None and std is not None:
        for name, value in (("mean", mean), ("std", std)):
            if len(value) not in (1, in_channels):
                raise ValueError(
                    f"{name}={list(value)} has {len(value)} values; "
                    f"expected 1 or {in_channels} (the input channels)"
                )
