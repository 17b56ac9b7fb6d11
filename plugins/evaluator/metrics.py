"""Size and speed of a model: parameters, FLOPs and CPU latency."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._utils import eval_mode, logits_of


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        seen[id(p)] = p.numel()
    return int(sum(seen.values()))


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be positive sizes such as (C, H, W), got {input_shape!r}")
    return shape


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on one image of ``input_shape`` (C, H, W), in eval mode.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add
    as 2 FLOPs (so FLOPs = 2 x MACs) for matmul and convolution; element-wise ops
    (ReLU, BatchNorm in eval, pooling, additions) are not counted.
    """
    shape = _check_shape(input_shape)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(1, *shape, device=device)
    counter = FlopCounterMode(display=False)
    with eval_mode(model, frozen=False), torch.no_grad(), counter:
        logits_of(model(x))
    return int(counter.get_total_flops())


def measure_latency(
    model: nn.Module, input_shape: Sequence[int], repeats: int = 20, warmup: int = 3
) -> float:
    """Median CPU wall time in milliseconds of one forward pass on one image (batch 1).

    Runs on a CPU copy of the model in eval mode without gradients; the model itself is
    neither moved nor changed.
    """
    shape = _check_shape(input_shape)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats!r}, {warmup!r}")
    on_cpu = all(t.device.type == "cpu" for t in list(model.parameters()) + list(model.buffers()))
    cpu_model = model if on_cpu else copy.deepcopy(model).cpu()
    x = torch.rand(1, *shape)
    times: list[float] = []
    with eval_mode(cpu_model, frozen=False), torch.inference_mode():
        for _ in range(warmup):
            cpu_model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            cpu_model(x)
            times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))
