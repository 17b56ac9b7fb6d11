"""Small helpers shared by the evaluator modules (private)."""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np

import torch
from torch import nn


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output: the tensor itself, or the first item of a tuple/list."""
    if isinstance(output, (tuple, list)):
        if not output:
            raise ValueError("the model returned an empty tuple/list; expected logits first")
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model returned {type(output).__name__}; expected a logits tensor")
    return output


class LogitsOnly(nn.Module):
    """Wraps a model whose forward returns ``(logits, ...)`` so that it returns the logits only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(x))


@contextlib.contextmanager
def preserved_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Restore the train/eval flag of every submodule of ``model`` on exit, whatever the body set
    (``model.train(was_training)`` would instead give every submodule the top module's flag)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def eval_mode(model: nn.Module, frozen: bool = True) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (and, if ``frozen``, stop its parameters requiring grad);
    restore the train/eval flag of every submodule and every ``requires_grad`` on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()] if frozen else []
    with preserved_mode(model):
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> cuda when available, else cpu; anything else as torch reads it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: nn.Module, default: torch.device | None = None) -> torch.device:
    """The device of a model's first parameter or buffer (``default``, else cpu, for a stateless model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu") if default is None else default


def device_for(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """Where to run ``model``: ``device`` as :func:`resolve_device` reads it, else (``None``) the
    device the model is on (:func:`model_device`)."""
    return model_device(model) if device is None else resolve_device(device)


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy's and Python's global generators: a task's result then depends on its
    seed only, not on what ran before it in the same process (so ``jobs`` > 1 gives the results of
    one process). NNI's ``space.freeze(sample)`` keeps the weights the space was built with, so
    this comes before any space is built. NumPy takes the seed modulo 2**32."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
