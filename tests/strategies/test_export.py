"""The export of the robust DARTS-style strategies: DARTS' derivation never picks `none`, and
``max_parameter_free`` caps the parameter-free edges of a cell (P-DARTS)."""

from __future__ import annotations

import tempfile

import pytest
import torch

from robustnas.plugins.evaluator import load_dataset
from robustnas.plugins.nni import classification_evaluator, run_experiment
from robustnas.search_spaces import get_space
from robustnas.strategies import DSRNA


def _trained(exclude_none: bool, **kwargs) -> DSRNA:
    bundle = load_dataset("digits")
    torch.manual_seed(0)
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=8, cells_per_stage=1)
    strategy = DSRNA(metric="jacobian", dataset=bundle, eval_batches=1, eval_pgd_steps=1, exclude_none=exclude_none,
                     **kwargs)
    with tempfile.TemporaryDirectory() as workdir:
        run_experiment(space, strategy, classification_evaluator(bundle, max_epochs=1, limit_train_batches=2),
                       working_dir=workdir)
    return strategy


@pytest.mark.parametrize("exclude_none", [True, False])
def test_an_edge_whose_strongest_weight_is_none_exports_its_strongest_other_op_unless_told_otherwise(exclude_none):
    strategy = _trained(exclude_none)
    module = strategy.oneshot_module
    probs = module.export_probs()
    label = sorted(probs)[0]
    ops = list(probs[label])
    with torch.no_grad():  # make `none` the strongest on one edge, conv_3x3 the runner-up
        for m in module.supernet_modules():
            if getattr(m, "label", None) == label:
                m._arch_alpha.copy_(torch.tensor([5.0 if op == "none" else 4.0 if op == "conv_3x3" else 0.0
                                                  for op in ops]))
    exported = module.export()
    assert exported[label] == ("conv_3x3" if exclude_none else "none")
    assert strategy.final_record()["sample"][label] == exported[label]


def test_a_cap_keeps_the_strongest_parameter_free_edges_and_gives_the_rest_their_best_parametric_op():
    strategy = _trained(True, max_parameter_free=2)
    module = strategy.oneshot_module
    labels = sorted(module.export_probs())
    with torch.no_grad():  # every edge prefers skip_connect, more strongly the later its label
        for m in module.supernet_modules():
            label = getattr(m, "label", None)
            if label in labels:
                strength = 3.0 + labels.index(label)
                m._arch_alpha.copy_(torch.tensor([strength if op == "skip_connect" else 2.0 if op == "conv_1x1"
                                                  else 0.0 for op in m.names]))
    exported = module.export()
    assert [exported[label] for label in labels] == ["conv_1x1"] * (len(labels) - 2) + ["skip_connect"] * 2
    assert strategy.final_record()["sample"] == exported


def test_a_cap_must_be_a_non_negative_integer():
    with pytest.raises(ValueError, match="max_parameter_free must be None or an integer >= 0, got -1"):
        DSRNA(max_parameter_free=-1)
