"""One JSON normalisation (plugins/_io.to_json) and one sample key (search_spaces sample_key, NNI's
``arch_key``) for every layer that writes samples and metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustnas.plugins._io import to_json
from robustnas.plugins.nni import arch_key
from robustnas.search_spaces import get_space, random_sample
from robustnas.search_spaces._records import sample_key, validate_sample
from robustnas.strategies.pareto import ParetoArchive


@dataclasses.dataclass
class Threat:
    norm: str
    eps: float


def test_to_json_gives_plain_json_types_for_what_records_hold():
    value = {
        "acc": np.float32(0.5), "params": np.int64(1200), "flag": np.bool_(True), "loss": torch.tensor(2.5),
        "shape": (1, 8, 8), "curve": np.array([0.25, 0.5]), "threat": Threat("linf", 0.1),
        "path": Path("/tmp/run"), 3: "three",
    }
    plain = to_json(value)
    assert plain == {"acc": 0.5, "params": 1200, "flag": True, "loss": 2.5, "shape": [1, 8, 8],
                     "curve": [0.25, 0.5], "threat": {"norm": "linf", "eps": 0.1}, "path": "/tmp/run", "3": "three"}
    assert json.loads(json.dumps(plain)) == plain
    assert [type(plain[k]) for k in ("acc", "params", "flag", "loss")] == [float, int, bool, float]


def test_to_json_names_a_type_it_cannot_write():
    with pytest.raises(TypeError, match="object is not JSON-serialisable"):
        to_json({"model": object()})


def test_sample_key_is_the_arch_key_written_to_nni_metrics_and_run_folders():
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=8, cells_per_stage=1)
    sample = random_sample(space, seed=0)
    # the keys the previous arch_key wrote for these samples (computed with it before the move):
    # metrics and run folders already on disk keep their names
    assert sample_key(sample) == arch_key(sample) == "dedc6f3fa189434a"
    odd = {"normal/op_2_0": "sep_conv_3x3", "normal/input_2_0": (0,), "width": np.int64(3)}
    assert sample_key(odd) == "f2cf1473ef3c85e8"
    assert sample_key(dict(reversed(list(sample.items())))) == sample_key(sample)


def test_an_archive_keeps_one_record_per_sample_whatever_its_python_types():
    archive = ParetoArchive(("clean_acc", "params"))
    archive.add({"sample": {"op": "conv", "inputs": (0, 1)}, "metrics": {"clean_acc": 0.5, "params": 10}})
    archive.add({"sample": {"inputs": [0, 1], "op": "conv"}, "metrics": {"clean_acc": np.float64(0.7), "params": 10}})
    assert len(archive) == 1 and archive.records[0]["metrics"]["clean_acc"] == 0.7


def test_a_sample_with_a_choice_that_is_no_json_value_is_refused_naming_it():
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=8, cells_per_stage=1)
    sample = {**random_sample(space, seed=0), "cell/0_1": object()}
    with pytest.raises(ValueError, match="JSON values.*object is not JSON-serialisable"):
        validate_sample(space, sample)
