"""ARNAS and DSRNA spaces share one constructor (DartsCellSpace); each declares only what differs."""

from __future__ import annotations

import pytest

from robustnas.search_spaces import ARNASSpace, DSRNASpace, build_model, export_record, random_sample

CONSTRUCTOR = ["input_shape", "num_classes", "width", "num_cells", "auxiliary", "dropout", "drop_path_prob",
               "mean", "std"]


@pytest.mark.parametrize("space_cls, width", [(ARNASSpace, 24), (DSRNASpace, 16)])
def test_each_space_has_the_shared_constructor_and_its_own_default_width(space_cls, width):
    space = space_cls(input_shape=(1, 8, 8), num_cells=4)
    assert list(space.space_kwargs) == CONSTRUCTOR
    assert space.space_kwargs["width"] == width and space.plan[0].channels == width
    # NNI reads the constructor's defaults from the signature (its ``args``), not from a wrapper
    assert set(space.args) == set(CONSTRUCTOR) and space.args["num_cells"] == 4 and space.args["dropout"] == 0.0


@pytest.mark.parametrize("space_cls", [ARNASSpace, DSRNASpace])
def test_a_record_of_either_space_rebuilds_the_same_network(space_cls):
    space = space_cls(input_shape=(1, 8, 8), width=4, num_cells=4)
    record = export_record(space, random_sample(space, seed=1))
    model = build_model(record)
    assert type(model) is space_cls and model.space_kwargs == space.space_kwargs
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in space.freeze(record["sample"]).parameters())
