"""Datasets of the shared evaluator: splits, ranges, threat models and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustnas.plugins.evaluator import DATASETS, DEFAULT_THREATS, ThreatModel, load_dataset


def test_digits_is_a_stratified_60_15_25_split_of_the_1797_images_in_unit_range():
    bundle = load_dataset("digits")
    sizes = [len(bundle.train), len(bundle.val), len(bundle.test)]
    assert sum(sizes) == 1797
    assert sizes == pytest.approx([0.60 * 1797, 0.15 * 1797, 0.25 * 1797], abs=10)
    x, y = bundle.tensors("test")
    assert x.shape == (len(bundle.test), 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # stratified: every class holds 25 % of its images in the test split (+- rounding)
    counts = torch.bincount(y, minlength=10)
    assert int(counts.min()) >= 43 and int(counts.max()) <= 47
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10
    assert bundle.threat == DEFAULT_THREATS["digits"]


def test_digits_split_is_fixed_by_the_seed():
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert torch.equal(a.tensors("test")[0], b.tensors("test")[0])
    assert not torch.equal(a.tensors("test")[0], c.tensors("test")[0])


def test_loader_batches_and_tensors_prefix_agree():
    bundle = load_dataset("digits")
    xb, yb = next(iter(bundle.loader("test", batch_size=16)))
    x, y = bundle.tensors("test", n=16)
    assert torch.equal(xb, x) and torch.equal(yb, y)
    with pytest.raises(ValueError, match="unknown split 'dev'.*train, val, test"):
        bundle.tensors("dev")


def test_synthetic_shape_classes_and_sizes_are_configurable():
    bundle = load_dataset("synthetic", input_shape=(3, 6, 6), num_classes=5, n_train=50, n_val=10, n_test=20)
    x, y = bundle.tensors("train")
    assert x.shape == (50, 3, 6, 6) and set(y.tolist()) == set(range(5))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert (len(bundle.val), len(bundle.test), bundle.num_classes) == (10, 20, 5)


def test_default_threat_models_follow_the_literature():
    assert DEFAULT_THREATS["cifar10"] == ThreatModel("linf", 8 / 255)
    assert DEFAULT_THREATS["svhn"].eps == pytest.approx(8 / 255)
    assert DEFAULT_THREATS["mnist"].eps == 0.3 and DEFAULT_THREATS["fashion-mnist"].eps == 0.1


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.5, float("nan")])
def test_threat_model_rejects_eps_outside_unit_interval(eps):
    with pytest.raises(ValueError, match="eps must be in \\(0, 1\\]"):
        ThreatModel("linf", eps)


def test_threat_model_rejects_unknown_norm():
    with pytest.raises(ValueError, match="unknown norm 'l1'.*linf, l2"):
        ThreatModel("l1", 0.1)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as err:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(err.value)


def test_torchvision_dataset_without_local_root_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="download=True.*place"):
        load_dataset("cifar10", root=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("svhn", root=tmp_path)  # root exists but holds no files


def test_empty_split_is_rejected():
    with pytest.raises(ValueError, match="must be >= 1"):
        load_dataset("synthetic", n_val=0)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_accepts_nhwc_uint8_and_scales_to_unit_range(tmp_path):
    rng = np.random.default_rng(0)
    path = _write_npz(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 256, (40, 5, 5, 3), dtype=np.uint8),
        y_train=np.arange(40) % 4,
        x_test=rng.integers(0, 256, (12, 5, 5, 3), dtype=np.uint8),
        y_test=np.arange(12) % 4,
    )
    bundle = load_dataset("npz", path=path, val_fraction=0.25, eps=0.05)
    x, _ = bundle.tensors("train")
    assert bundle.input_shape == (3, 5, 5) and bundle.num_classes == 4
    assert len(bundle.train) + len(bundle.val) == 40 and 8 <= len(bundle.val) <= 10 and len(bundle.test) == 12
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and x.dtype == torch.float32
    assert bundle.threat == ThreatModel("linf", 0.05)


def test_npz_accepts_nchw_float(tmp_path):
    rng = np.random.default_rng(0)
    path = _write_npz(
        tmp_path / "d.npz",
        x_train=rng.random((20, 1, 7, 7), dtype=np.float32), y_train=np.arange(20) % 2,
        x_test=rng.random((6, 1, 7, 7), dtype=np.float32), y_test=np.arange(6) % 2,
    )
    assert load_dataset("npz", path=path).input_shape == (1, 7, 7)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"x_test": None}, "missing arrays \\['x_test'\\]"),
        ({"x_train": np.full((20, 1, 4, 4), 2.0, np.float32)}, "must lie in \\[0, 1\\]"),
        ({"y_train": np.arange(19)}, "1-D array of 20 labels"),
        ({"x_test": np.zeros((6, 1, 5, 5), np.float32)}, "x_train images have shape \\(1, 4, 4\\)"),
        ({"y_test": np.full(6, 0.5)}, "integer class labels"),
        ({"x_train": np.zeros((0, 1, 4, 4), np.float32), "y_train": np.zeros(0, np.int64)}, "must not be empty"),
    ],
)
def test_npz_validation_names_the_problem(tmp_path, change, message):
    arrays = {
        "x_train": np.zeros((20, 1, 4, 4), np.float32), "y_train": np.arange(20) % 2,
        "x_test": np.zeros((6, 1, 4, 4), np.float32), "y_test": np.arange(6) % 2,
    }
    arrays.update(change)
    path = _write_npz(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(ValueError, match=message):
        load_dataset("npz", path=path)


def test_npz_needs_a_path_to_an_existing_file(tmp_path):
    with pytest.raises(ValueError, match="needs path="):
        load_dataset("npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("npz", path=tmp_path / "nope.npz")
