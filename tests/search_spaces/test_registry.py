"""Specification of the space registry, JSON records, named architectures and genotypes."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint

import pytest
import torch

import robustnas.search_spaces._registry as registry
from robustnas.search_spaces import (
    NAMED_ARCHITECTURES, SPACES, ARNASSpace, DSRNASpace, available_spaces, build_model, export_record,
    genotype, get_space, load_record, named_architecture, random_sample, register_space,
    sample_from_genotype, save_record, validate_sample,
)

torch.set_num_threads(1)

SMALL = dict(input_shape=(1, 8, 8), num_classes=10, width=4, num_cells=4)


@pytest.fixture
def clean_registry(monkeypatch):
    """Run-time registrations and entry points of a test do not leak into others."""
    monkeypatch.setattr(registry, "SPACES", dict(registry.SPACES))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    return registry


# --------------------------------------------------------------------------- registry

def test_builtin_names_build_their_space_classes():
    assert {"arnas", "dsrna", "tiny"} <= set(available_spaces())
    assert isinstance(get_space("arnas", **SMALL), ARNASSpace)
    assert isinstance(get_space("dsrna", **SMALL), DSRNASpace)
    assert SPACES["tiny"] == "robustnas.search_spaces.tiny:TinyRobustSpace"  # lazy reference


def test_unknown_space_name_error_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown search space 'resnet'.*'arnas', 'dsrna'"):
        get_space("resnet")


def test_register_space_adds_a_name_and_refuses_silent_overwrite(clean_registry):
    def narrow_arnas(**kwargs):
        return ARNASSpace(width=4, num_cells=4, **kwargs)

    register_space("narrow", narrow_arnas)
    assert isinstance(clean_registry.get_space("narrow", input_shape=(1, 8, 8)), ARNASSpace)
    with pytest.raises(ValueError, match="already registered"):
        register_space("narrow", DSRNASpace)
    register_space("narrow", DSRNASpace, overwrite=True)
    assert clean_registry.SPACES["narrow"] is DSRNASpace


def test_lazy_reference_that_cannot_load_names_the_space_and_reference(clean_registry):
    register_space("ghost", "robustnas.search_spaces.does_not_exist:Ghost")
    with pytest.raises(ImportError, match="'ghost'.*does_not_exist:Ghost"):
        clean_registry.get_space("ghost")


def test_entry_points_of_the_group_are_discovered(clean_registry, monkeypatch):
    seen_groups = []

    def fake_entry_points(group):
        seen_groups.append(group)
        return [EntryPoint("plugin_arnas", "robustnas.search_spaces:ARNASSpace", group)]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert "plugin_arnas" in clean_registry.available_spaces()
    assert seen_groups == ["robustnas.search_spaces"]
    assert isinstance(clean_registry.get_space("plugin_arnas", **SMALL), ARNASSpace)


# --------------------------------------------------------------------------- records

def test_record_is_json_and_rebuilds_the_same_network(tmp_path):
    space = ARNASSpace(**SMALL)
    sample = random_sample(space, seed=11)
    record = export_record(space, sample)
    assert set(record) == {"space", "kwargs", "sample", "format"} and record["format"] == 1
    assert record["space"] == "arnas" and record["kwargs"]["input_shape"] == [1, 8, 8]

    path = save_record(record, tmp_path / "arch.json")
    loaded = load_record(path)
    assert loaded == json.loads(json.dumps(record))

    original, rebuilt = space.freeze(sample), build_model(loaded)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in original.parameters())
    rebuilt.load_state_dict(original.state_dict())  # same structure: every key and shape fits
    original.eval(), rebuilt.eval()
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(original(x), rebuilt(x))


def test_exporting_a_sample_with_a_bad_value_names_label_value_and_choices():
    space = DSRNASpace(**SMALL)
    sample = random_sample(space, seed=0)
    sample["normal/op_3_1"] = "conv_7x7"
    with pytest.raises(ValueError, match=r"'normal/op_3_1'.*'conv_7x7'.*valid choices.*'sep_conv_3x3'"):
        export_record(space, sample)
    sample = random_sample(space, seed=0)
    sample["reduce/input_2_0"] = [4]  # node 2 can only read inputs 0 and 1
    with pytest.raises(ValueError, match=r"'reduce/input_2_0'.*\[4\]"):
        validate_sample(space, sample)


def test_exporting_an_incomplete_or_foreign_sample_names_the_labels():
    space = ARNASSpace(**SMALL)
    sample = random_sample(space, seed=0)
    del sample["robust/op_5_1"]
    with pytest.raises(ValueError, match=r"misses 1 label.*'robust/op_5_1'"):
        export_record(space, sample)
    with pytest.raises(ValueError, match=r"does not have"):
        export_record(space, named_architecture("dsrna", "darts_v2") | random_sample(space))


def test_record_whose_sample_does_not_fit_its_space_is_refused():
    # DARTS-V2 names 'normal' cells, which the ARNAS space does not have.
    record = {"space": "arnas", "kwargs": SMALL, "sample": named_architecture("dsrna", "darts_v2"), "format": 1}
    with pytest.raises(ValueError, match="misses"):
        build_model(record)
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['sample'\]"):
        build_model({"space": "arnas", "kwargs": SMALL})
    with pytest.raises(ValueError, match="format 2 is not supported"):
        build_model({**record, "format": 2})


def test_named_architectures_fit_their_spaces_and_unknown_names_are_listed():
    assert validate_sample(ARNASSpace(**SMALL), named_architecture("arnas", "arnas"))
    assert validate_sample(DSRNASpace(**SMALL), named_architecture("dsrna", "darts_v2"))
    with pytest.raises(ValueError, match=r"unknown architecture 'darts_v1'.*\['darts_v2'\]"):
        named_architecture("dsrna", "darts_v1")
    with pytest.raises(ValueError, match="no named architectures for space 'resnet'"):
        named_architecture("resnet", "x")


def _strides(module: torch.nn.Module) -> list:
    return [sub.stride for sub in module.modules() if hasattr(sub, "stride")]


def test_darts_v2_sample_builds_the_same_cells_as_nnis_darts_v2():
    from nni.nas.hub.pytorch.nasnet import DARTS

    theirs = [cell for stage in DARTS.load_searched_model("darts-v2").stages for cell in stage]
    ours = build_model({"space": "dsrna", "format": 1, "sample": named_architecture("dsrna", "darts_v2"),
                        "kwargs": dict(input_shape=(3, 32, 32), num_classes=10, width=4, num_cells=20)}).cells
    assert len(ours) == len(theirs) == 20
    for our_cell, their_cell in zip(ours, theirs):
        for our_node, their_node in ((our_cell.ops, their_cell.ops), (our_cell.inputs, their_cell.inputs)):
            assert [[type(m).__name__ for m in node] for node in our_node] == \
                [[type(m).__name__ for m in node] for node in their_node]
        assert [[m.chosen for m in node] for node in our_cell.inputs] == \
            [[m.chosen for m in node] for node in their_cell.inputs]
        assert [[_strides(m) for m in node] for node in our_cell.ops] == \
            [[_strides(m) for m in node] for node in their_cell.ops]


def test_genotype_reads_like_darts_and_round_trips_to_the_sample():
    sample = named_architecture("arnas", "arnas")
    geno = genotype(sample, "arnas")
    assert geno._fields == ("accurate", "accurate_concat", "reduce", "reduce_concat", "robust", "robust_concat")
    assert geno.robust[:2] == [("dil_conv_5x5", 0), ("dil_conv_5x5", 1)]
    assert geno.accurate_concat == [2, 3, 4, 5]
    assert sample_from_genotype(geno._asdict()) == sample
    record = export_record(ARNASSpace(**SMALL), sample)
    assert genotype(record) == geno
    assert NAMED_ARCHITECTURES["arnas"]["arnas"]["reduce"] == geno.reduce


def test_genotype_of_a_non_cell_space_or_without_space_name_is_refused():
    with pytest.raises(ValueError, match="space_name is required"):
        genotype(named_architecture("arnas", "arnas"))
    with pytest.raises(ValueError, match="unknown search space"):
        genotype(named_architecture("arnas", "arnas"), "resnet")
