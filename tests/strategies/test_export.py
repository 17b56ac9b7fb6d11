"""The export of the robust DARTS-style strategies: DARTS' derivation never picks `none`."""

from __future__ import annotations

import tempfile

import pytest
import torch

from robustnas.plugins.evaluator import load_dataset
from robustnas.plugins.nni import classification_evaluator, run_experiment
from robustnas.search_spaces import get_space
from robustnas.strategies import DSRNA


def _trained(exclude_none: bool) -> DSRNA:
    bundle = load_dataset("digits")
    torch.manual_seed(0)
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=8, cells_per_stage=1)
    strategy = DSRNA(metric="jacobian", dataset=bundle, eval_batches=1, eval_pgd_steps=1, exclude_none=exclude_none)
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
