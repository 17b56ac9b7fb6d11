"""Specification of the cell spaces (ARNAS, DSRNA) and of their use by NNI's own strategies."""

from __future__ import annotations

import math

import nni
import pytest
import torch
from nni.nas import strategy
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.experiment.config import SequentialEngineConfig
from pytorch_lightning import Callback
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from robustnas.search_spaces import (
    ARNAS_OPS, DARTS_OPS, ARNASSpace, DSRNASpace, build_model, export_record, get_space,
    named_architecture, random_sample, validate_sample,
)

torch.set_num_threads(1)

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)
TINY_CELLS = {"arnas": dict(width=4, num_cells=4), "dsrna": dict(width=4, num_cells=3)}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    # search_spaces depends on torch and NNI only, so its tests read scikit-learn's digits directly.
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(data.target)


def _space_kwargs(name: str, shape: tuple[int, int, int]) -> dict:
    return dict(input_shape=shape, num_classes=10, **TINY_CELLS.get(name, {}))


def _build_or_skip(name: str, shape: tuple[int, int, int]):
    try:
        return get_space(name, **_space_kwargs(name, shape))
    except ImportError as exc:  # tiny is written elsewhere; skip until it imports
        pytest.skip(f"space {name!r} not importable yet: {exc}")


# --------------------------------------------------------------------------- structure

@pytest.mark.parametrize("name", ["arnas", "dsrna", "tiny"])
@pytest.mark.parametrize("shape", [DIGITS, CIFAR], ids=["digits", "cifar"])
def test_random_architectures_give_finite_logits_of_shape_batch_by_classes(name, shape):
    space = _build_or_skip(name, shape)
    for seed in range(2):
        model = build_model(export_record(space, random_sample(space, seed=seed)))
        model.eval()
        logits = model(torch.rand(2, *shape))
        assert logits.shape == (2, 10)
        assert torch.isfinite(logits).all()


def test_arnas_space_has_three_cell_types_with_seven_ops_and_no_none():
    space = ARNASSpace(input_shape=DIGITS, num_classes=10, width=4, num_cells=4)
    mutables = space.simplify()
    assert {label.split("/")[0] for label in mutables} == {"accurate", "reduce", "robust"}
    # 3 cell types x 4 nodes x 2 edges x (op, input)
    assert len(mutables) == 3 * 4 * 2 * 2
    assert list(mutables["robust/op_5_1"].values) == list(ARNAS_OPS)
    assert "none" not in ARNAS_OPS and len(ARNAS_OPS) == 7
    # Node 4 (third intermediate node) may read the two inputs and nodes 2, 3.
    assert sorted(v for v in mutables["accurate/input_4_0"].values) == [0, 1, 2, 3]


def test_arnas_cell_placement_and_channel_ratio_one_two_two_for_twenty_cells():
    plan = ARNASSpace.cell_plan(20, 64, (32, 32))
    labels = [spec.label for spec in plan]
    assert [i for i, label in enumerate(labels) if label == "reduce"] == [6, 13]
    assert labels[:6] == ["accurate"] * 6 and labels[7:13] == ["accurate"] * 6
    assert labels[14:] == ["robust"] * 6
    assert {spec.channels for spec in plan[:6]} == {64}
    assert {spec.channels for spec in plan[6:]} == {128}  # second reduction keeps the channels
    assert plan[-1].resolution == (8, 8)


def test_dsrna_space_is_darts_with_none_and_channel_ratio_one_two_four():
    space = DSRNASpace(input_shape=DIGITS, num_classes=10, width=4, num_cells=3)
    mutables = space.simplify()
    assert {label.split("/")[0] for label in mutables} == {"normal", "reduce"}
    assert list(mutables["normal/op_2_0"].values) == list(DARTS_OPS)
    assert DARTS_OPS[0] == "none" and len(DARTS_OPS) == 8
    assert [spec.channels for spec in DSRNASpace.cell_plan(8, 16, (32, 32))] == [16, 16, 32, 32, 32, 64, 64, 64]


def test_released_arnas_genotype_has_4_52m_parameters_in_the_cifar10_configuration():
    # Paper/authors' code: about 4.5 M parameters (C=64, 20 cells, auxiliary head not counted).
    model = build_model({"space": "arnas", "format": 1, "sample": named_architecture("arnas", "arnas"),
                         "kwargs": dict(input_shape=CIFAR, num_classes=10, width=64, num_cells=20)})
    assert math.isclose(_params(model), 4.520e6, rel_tol=0.01)


def test_darts_v2_has_3_349342m_parameters_in_the_darts_evaluation_configuration():
    model = build_model({"space": "dsrna", "format": 1, "sample": named_architecture("dsrna", "darts_v2"),
                         "kwargs": dict(input_shape=CIFAR, num_classes=10, width=36, num_cells=20)})
    assert math.isclose(_params(model), 3.349342e6, rel_tol=0.01)


def test_auxiliary_head_adds_logits_only_in_training_mode():
    space = ARNASSpace(input_shape=CIFAR, num_classes=10, width=4, num_cells=4, auxiliary=True)
    model = space.freeze(random_sample(space, seed=0))
    x = torch.rand(2, *CIFAR)
    logits, aux_logits = model.train()(x)
    assert logits.shape == aux_logits.shape == (2, 10)
    assert model.eval()(x).shape == (2, 10)


def test_normalisation_lives_inside_the_model():
    kwargs = dict(input_shape=DIGITS, num_classes=10, width=4, num_cells=3)
    sample = random_sample(DSRNASpace(**kwargs), seed=3)
    plain = DSRNASpace(**kwargs).freeze(sample)
    normed = DSRNASpace(**kwargs, mean=[0.5], std=[0.25]).freeze(sample)
    normed.load_state_dict(plain.state_dict(), strict=False)
    plain.eval(), normed.eval()
    x = torch.rand(2, *DIGITS)
    assert torch.allclose(normed(x), plain((x - 0.5) / 0.25), atol=1e-5)


@pytest.mark.parametrize("cls", [ARNASSpace, DSRNASpace])
def test_shape_too_small_for_two_reductions_is_refused_with_shape_and_reductions(cls):
    with pytest.raises(ValueError, match=r"\(1, 3, 3\).*2 stride-2 reductions"):
        cls(input_shape=(1, 3, 3), num_classes=10, width=4, num_cells=4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_cells=3), "num_cells must be an int >= 4"),
        (dict(width=5), "width must be an even int"),
        (dict(input_shape=(8, 8)), "input_shape must be"),
        (dict(mean=[0.5]), "both mean and std"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, match):
    base = dict(input_shape=DIGITS, num_classes=10, width=4, num_cells=4)
    with pytest.raises(ValueError, match=match):
        ARNASSpace(**{**base, **kwargs})


def test_freeze_keeps_the_constructor_arguments_and_fixes_every_choice():
    space = ARNASSpace(input_shape=DIGITS, num_classes=7, width=4, num_cells=4, dropout=0.1)
    model = space.freeze(named_architecture("arnas", "arnas"))
    assert model.space_kwargs == space.space_kwargs
    assert model.space_kwargs["input_shape"] == [1, 8, 8]
    assert model.simplify() == {}  # nothing left to choose


# --------------------------------------------------------------------------- NNI strategies

def _quick_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """A cheap NNI trial: 3 SGD steps on digits, report accuracy on 64 held-out digits."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i * 32:(i + 1) * 32]), y[i * 32:(i + 1) * 32]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[-64:]).argmax(1) == y[-64:]).float().mean().item()
    nni.report_final_result(accuracy)


def _run(space, evaluator, search, tmp_path, model_format: str) -> NasExperiment:
    config = NasExperimentConfig(execution_engine=SequentialEngineConfig(), model_format=model_format)
    config.max_trial_number = 3
    config.experiment_working_directory = str(tmp_path)
    experiment = NasExperiment(space, evaluator, search, config)
    experiment.run()
    experiment.stop()
    return experiment


@pytest.mark.parametrize("name", ["arnas", "dsrna"])
@pytest.mark.parametrize("make_strategy", [
    strategy.Random, lambda: strategy.RegularizedEvolution(population_size=2, sample_size=1),
], ids=["Random", "RegularizedEvolution"])
def test_nni_multi_trial_strategies_complete_three_trials_with_valid_samples(name, make_strategy, digits, tmp_path):
    space = get_space(name, **_space_kwargs(name, DIGITS))
    x, y = digits
    experiment = _run(space, FunctionalEvaluator(_quick_accuracy, x=x, y=y), make_strategy(), tmp_path, "simplified")
    trials = list(experiment.strategy.list_models(sort=False, limit=None))
    assert len(trials) == 3
    assert all(0.0 <= trial.metric <= 1.0 for trial in trials)
    for sample in experiment.export_top_models(top_k=3, formatter="dict"):
        assert validate_sample(space, sample) == sample


class _ArchSnapshot(Callback):
    """Remembers the architecture weights when training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.initial = {n: p.detach().clone() for n, p in pl_module.named_parameters() if "_arch_alpha" in n}


@pytest.mark.parametrize("name", ["arnas", "dsrna"])
def test_nni_darts_trains_the_architecture_and_exports_a_rebuildable_sample(name, digits, tmp_path):
    space = get_space(name, **_space_kwargs(name, DIGITS))
    x, y = digits
    snapshot = _ArchSnapshot()
    evaluator = Classification(
        train_dataloaders=DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32),
        val_dataloaders=DataLoader(TensorDataset(x[256:512], y[256:512]), batch_size=32),
        num_classes=10, learning_rate=0.01, max_epochs=1, limit_train_batches=4, limit_val_batches=2,
        accelerator="cpu", callbacks=[snapshot], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    search = strategy.DARTS(arc_learning_rate=0.05)
    experiment = _run(space, evaluator, search, tmp_path, "raw")

    final = {n: p.detach() for n, p in search.oneshot_module.named_parameters() if "_arch_alpha" in n}
    # one alpha vector per edge and cell type, shared by all cells of that type
    assert len(snapshot.initial) > 0 and set(final) == set(snapshot.initial)
    assert max((final[n] - snapshot.initial[n]).abs().max().item() for n in final) > 1e-2

    sample = experiment.export_top_models(formatter="dict")[0]
    record = export_record(space, sample)
    model = build_model(record)
    model.eval()
    assert model(x[:2]).shape == (2, 10)
