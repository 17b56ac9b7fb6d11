"""The evaluator's small shared helpers: one mode save/restore, one logits rule, one model device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustnas.plugins.evaluator import load_dataset
from robustnas.plugins.evaluator._utils import eval_mode, logits_of, model_device, preserved_mode
from robustnas.plugins.evaluator.bounds import certified_accuracy


def mixed_mode_net() -> nn.Module:
    """A digits classifier whose batch norm is frozen in eval mode while the rest trains."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    net.train()
    net[2].eval()
    return net


def flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_preserved_mode_restores_every_submodule_flag_even_after_an_error():
    net = mixed_mode_net()
    before = flags(net)
    with pytest.raises(RuntimeError, match="inside"), preserved_mode(net):
        net.eval()
        raise RuntimeError("inside")
    assert flags(net) == before and before.count(False) == 1
    with eval_mode(net):
        assert not any(flags(net)) and not any(p.requires_grad for p in net.parameters())
    assert flags(net) == before and all(p.requires_grad for p in net.parameters())


def test_certified_accuracy_gives_back_a_mixed_mode_model_as_it_was():
    net = mixed_mode_net()
    x, y = load_dataset("digits").tensors("test", 32)
    before = flags(net)
    with torch.no_grad():
        clean = float((net.eval()(x).argmax(1) == y).float().mean())
    net.train()
    net[2].eval()
    assert certified_accuracy(net, x, y, eps=0.0) == pytest.approx(clean)  # at eps 0: the clean accuracy
    assert flags(net) == before


def test_logits_of_takes_the_first_output_and_names_what_is_not_a_tensor():
    z = torch.zeros(2, 3)
    assert logits_of(z) is z and logits_of((z, torch.ones(1))) is z
    with pytest.raises(TypeError, match="returned dict"):
        logits_of({"logits": z})
    with pytest.raises(ValueError, match="empty"):
        logits_of(())


def test_model_device_falls_back_to_buffers_then_the_default():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.BatchNorm1d(2, affine=False)) == torch.device("cpu")
    assert model_device(nn.ReLU(), default=torch.device("meta")) == torch.device("meta")
