"""Fixtures of the bound tests (test_bounds*.py): briefly trained digits models and a DSRNA supernet."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def briefly_trained(digits: Any) -> Callable[[Callable[[], nn.Module]], nn.Module]:
    """``briefly_trained(factory)``: ``factory()`` called after ``torch.manual_seed(0)``, trained 4
    epochs with the standard recipe (batch 64, lr 0.05) on digits and put in eval mode; cached per
    test module and factory."""
    from robustnas.plugins.evaluator import TrainConfig, train_model

    cache: dict[Callable[[], nn.Module], nn.Module] = {}

    def get(factory: Callable[[], nn.Module]) -> nn.Module:
        if factory not in cache:
            torch.manual_seed(0)
            model = factory()
            train_model(model, digits, TrainConfig(recipe="standard", epochs=4, batch_size=64, lr=0.05,
                                                   progress=False, track_val=False), device="cpu")
            cache[factory] = model.eval()
        return cache[factory]

    return get


@pytest.fixture(scope="module")
def dsrna_supernet(digits: Any) -> nn.Module:
    """NNI's DARTS supernet of the DSRNA space (1x8x8, width 4, 3 cells), seeded 0, with
    architecture weights drawn from N(0, 1) and BatchNorm statistics of 128 digits training
    points, in eval mode."""
    from nni.nas.strategy import DARTS

    from robustnas.search_spaces import DSRNASpace

    torch.manual_seed(0)
    space = DSRNASpace(input_shape=(1, 8, 8), num_classes=10, width=4, num_cells=3)
    net = DARTS().mutate_model(space)
    with torch.no_grad():  # non-uniform architecture weights, non-trivial BatchNorm statistics
        for name, p in net.named_parameters():
            if "_arch_alpha" in name:
                p.normal_(0, 1)
    x, _ = digits.tensors("train", 128)
    net.train()
    with torch.no_grad():
        net(x)
    return net.eval()
