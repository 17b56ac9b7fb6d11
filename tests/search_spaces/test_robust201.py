"""The robust201 space: NAS-Bench-201's cell at small inputs and its isomorphism classes."""

import itertools

import pytest
import torch

from robustnas.search_spaces import available_spaces, get_space, random_sample
from robustnas.search_spaces.robust201 import (
    LABELS, OPS, all_samples, canonical_key, canonical_sample, unique_samples,
)


def test_the_space_has_15625_assignments_in_6466_isomorphism_classes():
    samples = all_samples()
    assert len(samples) == 5 ** 6 == 15625
    assert len({canonical_key(s) for s in samples}) == 6466
    assert len(unique_samples()) == 6466


def test_isomorphic_samples_share_key_and_representative():
    # A skip edge into node 1 followed by a conv into the output is the conv from the input.
    a = dict(zip(LABELS, ["skip_connect", "none", "none", "none", "conv_3x3", "none"]))
    b = dict(zip(LABELS, ["none", "none", "none", "conv_3x3", "none", "none"]))
    assert canonical_key(a) == canonical_key(b) == "#+#+(0)@conv_3x3"
    assert canonical_sample(a) == canonical_sample(b)
    # A convolution whose node feeds only 'none' edges is dead: the representative drops it.
    dead = dict(zip(LABELS, ["conv_3x3", "none", "none", "avg_pool_3x3", "none", "none"]))
    assert canonical_sample(dead) == dict(zip(LABELS, ["none", "none", "none", "avg_pool_3x3", "none", "none"]))


def test_isomorphic_samples_compute_the_same_function():
    # The conv sits on edge 1->3 after a skip in one cell, on edge 0->3 in the other.
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10)
    a = dict(zip(LABELS, ["skip_connect", "none", "none", "none", "conv_3x3", "avg_pool_3x3"]))
    b = dict(zip(LABELS, ["none", "none", "none", "conv_3x3", "none", "avg_pool_3x3"]))
    assert canonical_key(a) == canonical_key(b)
    ma, mb = space.freeze(a).eval(), space.freeze(b).eval()
    pa, pb = list(ma.parameters()) + list(ma.buffers()), list(mb.parameters()) + list(mb.buffers())
    assert [t.shape for t in pa] == [t.shape for t in pb]
    with torch.no_grad():
        for src, dst in zip(pa, pb):
            dst.copy_(src)
    x = torch.rand(16, 1, 8, 8)
    torch.testing.assert_close(ma(x), mb(x))
    c = dict(zip(LABELS, ["none", "none", "none", "conv_1x1", "none", "avg_pool_3x3"]))
    assert canonical_key(c) != canonical_key(a)


def test_space_builds_at_any_input_shape_and_is_registered():
    assert "robust201" in available_spaces()
    for shape in [(1, 8, 8), (1, 28, 28), (3, 32, 32)]:
        space = get_space("robust201", input_shape=shape, num_classes=10)
        assert list(space.simplify()) == list(LABELS)
        model = space.freeze(random_sample(space, seed=0))
        assert model(torch.rand(2, *shape)).shape == (2, 10)


def test_params_grow_with_the_convolutions_of_the_cell():
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10)
    sizes = {}
    for op in ("none", "conv_1x1", "conv_3x3"):
        model = space.freeze(dict.fromkeys(LABELS, op))
        sizes[op] = sum(p.numel() for p in model.parameters())
    assert sizes["none"] < sizes["conv_1x1"] < sizes["conv_3x3"]
    assert 10_000 < sizes["none"] and sizes["conv_3x3"] < 100_000


@pytest.mark.parametrize("bad, match", [
    ({**dict.fromkeys(LABELS, "none"), "cell/0_1": "sep_conv_3x3"}, "not a valid choice"),
    ({label: "none" for label in LABELS[:-1]}, "misses label"),
    ({**dict.fromkeys(LABELS, "none"), "cell/9_9": "none"}, "does not have"),
])
def test_bad_samples_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        canonical_key(bad)


def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match="input_shape"):
        get_space("robust201", input_shape=(8, 8), num_classes=10)
    with pytest.raises(ValueError, match="width"):
        get_space("robust201", input_shape=(1, 8, 8), num_classes=10, width=0)


def test_every_op_is_a_candidate_of_every_edge():
    space = get_space("robust201", input_shape=(1, 8, 8), num_classes=10)
    for label, mutable in space.simplify().items():
        assert list(mutable.values) == list(OPS), label
    assert set(itertools.chain.from_iterable(s.values() for s in unique_samples())) == set(OPS)
