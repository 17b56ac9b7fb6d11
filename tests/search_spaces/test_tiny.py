"""Specification of TinyRobustSpace, TAM-NAS' layer-wise tiny-block and channel space."""

from __future__ import annotations


import pytest
import torch
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.experiment import NasExperiment
from nni.nas.strategy import DARTS, RandomOneShot

from robustnas.plugins.evaluator import count_params, load_dataset
from robustnas.search_spaces import build_model, export_record, get_space, random_sample
from robustnas.search_spaces.tiny import BLOCK_NAMES, TinyRobustSpace

torch.set_num_threads(1)
DIGITS_STAGES = [(1, 16, 1), (2, 32, 2)]


def _classification(bundle, epochs: int) -> Classification:
    return Classification(
        train_dataloaders=DataLoader(bundle.train, batch_size=64, shuffle=True),
        val_dataloaders=DataLoader(bundle.val, batch_size=256),
        max_epochs=epochs, num_classes=bundle.num_classes, learning_rate=0.01,
        enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False,
    )


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_random_subnets_return_logits_at_digits_and_cifar_shapes(shape):
    space = TinyRobustSpace(input_shape=shape, num_classes=10, mean=[0.5] * shape[0], std=[0.25] * shape[0])
    labels = space.simplify()
    assert len(labels) == 2 * sum(depth for depth, _, _ in space.space_kwargs["stages"])
    for seed in range(3):
        model = space.freeze(random_sample(space, seed=seed))
        out = model(torch.rand(2, *shape))
        assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_cifar_subnets_span_10k_to_2m_parameters():
    space = get_space("tiny", input_shape=(3, 32, 32), num_classes=10)
    smallest = count_params(space.freeze(space.smallest_sample()))
    largest = count_params(space.freeze(space.largest_sample()))
    assert 8_000 <= smallest <= 12_000
    assert 1_700_000 <= largest <= 2_200_000
    for seed in range(2):
        assert smallest <= count_params(space.freeze(random_sample(space, seed=seed))) <= largest
    # The smallest network skips every layer it may skip; the largest never does.
    assert sum(v == "skip" for v in space.smallest_sample().values()) == 6
    assert "skip" not in space.largest_sample().values()


def test_skip_is_offered_only_inside_a_stage_and_first_layers_keep_stride():
    space = TinyRobustSpace(input_shape=(3, 32, 32), num_classes=10)
    for plan in space.layer_plan:
        first = plan["index"] in (0, 2, 5, 8)
        assert ("skip" in plan["blocks"]) is (not first)
        assert plan["stride"] == (2 if plan["index"] in (2, 5, 8) else 1)
    assert set(space.layer_plan[1]["blocks"]) == set(BLOCK_NAMES)


def test_record_round_trip_rebuilds_the_same_architecture():
    space = TinyRobustSpace(input_shape=(1, 8, 8), num_classes=10, stages=DIGITS_STAGES)
    sample = random_sample(space, seed=3)
    record = export_record(space, sample)
    assert record["space"] == "tiny" and record["kwargs"]["stages"] == [list(s) for s in DIGITS_STAGES]
    model = build_model(record)
    assert count_params(model) == count_params(space.freeze(sample))


def test_bad_arguments_name_the_valid_values():
    with pytest.raises(ValueError, match="valid blocks"):
        TinyRobustSpace(input_shape=(1, 8, 8), blocks=["mb_e3_k3", "shuffle"])
    with pytest.raises(ValueError, match="stride"):
        TinyRobustSpace(input_shape=(1, 8, 8), stages=[(1, 8, 3)])
    with pytest.raises(ValueError, match="input_shape"):
        TinyRobustSpace(input_shape=(8, 8))


def test_random_one_shot_trains_the_supernet_and_exports_a_subnet_with_inherited_weights(tmp_path):
    bundle = load_dataset("digits")
    space = TinyRobustSpace(input_shape=bundle.input_shape, num_classes=10, stages=DIGITS_STAGES)
    strategy = RandomOneShot()
    experiment = NasExperiment(space, _classification(bundle, epochs=1), strategy)
    experiment.config.experiment_working_directory = str(tmp_path)
    try:
        experiment.run()
        (sample,) = experiment.export_top_models(formatter="dict")
    finally:
        experiment.stop()
    assert set(sample) == set(space.simplify())
    supernet = strategy.supernet
    subnet = supernet.freeze(sample)
    x, _ = bundle.tensors("val", n=16)
    assert subnet(x).shape == (16, 10)
    # Weight sharing: the subnet's stem and first conv are the supernet's (prefix slices).
    assert torch.equal(subnet.stem[0].weight, supernet.stem[0].weight)
    block = sample["layer0/block"]
    sub_conv = next(m for m in subnet.layers[0].modules() if isinstance(m, torch.nn.Conv2d))
    super_conv = next(m for m in supernet.layers[0][block].modules() if isinstance(m, torch.nn.Conv2d))
    out_ch, in_ch = sub_conv.weight.shape[:2]
    kh = sub_conv.weight.shape[2]
    offset = (super_conv.weight.shape[2] - kh) // 2
    assert torch.equal(sub_conv.weight, super_conv.weight[:out_ch, :in_ch, offset:offset + kh, offset:offset + kh])


def test_differentiable_strategies_are_refused_on_the_width_fitted_skip():
    space = TinyRobustSpace(input_shape=(1, 8, 8), num_classes=10, stages=[(2, 8, 1)], blocks=["sep_k3", "skip"])
    supernet = DARTS().mutate_model(space)
    with pytest.raises(TypeError, match="single-path"):
        supernet(torch.rand(2, 1, 8, 8))
