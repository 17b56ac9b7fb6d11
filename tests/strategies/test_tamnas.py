"""Specification of the TAM-NAS strategy: adversarial one-shot supernet + NSGA-II over subnets."""

from __future__ import annotations

import json

import pytest
import torch
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.experiment import NasExperiment

from robustnas.plugins.evaluator import count_params, load_dataset
from robustnas.search_spaces.tiny import TinyRobustSpace
from robustnas.strategies.pareto import METRIC_DIRECTIONS
from robustnas.strategies.tamnas import TAMNAS, recalibrate_batchnorm

torch.set_num_threads(1)
OBJECTIVES = ("clean_acc", "pgd_acc", "params")


def _dominates(a: dict, b: dict) -> bool:
    signs = {o: (1 if METRIC_DIRECTIONS[o] == "maximize" else -1) for o in OBJECTIVES}
    at_least = all(signs[o] * a[o] >= signs[o] * b[o] for o in OBJECTIVES)
    return at_least and any(a[o] != b[o] for o in OBJECTIVES)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One short TAM-NAS run on digits: 4 supernet epochs of PGD-2 training, NSGA-II 6 x 2."""
    torch.manual_seed(0)
    bundle = load_dataset("digits")
    space = TinyRobustSpace(input_shape=bundle.input_shape, num_classes=10,
                            stages=[(1, 16, 1), (2, 32, 2)], blocks=["mb_e3_k3", "basic_k3", "skip"])
    evaluator = Classification(
        train_dataloaders=DataLoader(bundle.train, batch_size=64, shuffle=True),
        val_dataloaders=DataLoader(bundle.val, batch_size=256),
        max_epochs=4, num_classes=10, learning_rate=0.01,
        enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False,
    )
    strategy = TAMNAS(eps=0.1, attack_steps=2, population_size=6, generations=2,
                      eval_batches=0, eval_pgd_steps=5, bn_batches=4, seed=0)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(tmp_path_factory.mktemp("nni"))
    try:
        experiment.run()
        exported = experiment.export_top_models(top_k=100, formatter="dict")
    finally:
        experiment.stop()
    return strategy, exported, bundle


def test_front_is_non_dominated_and_spans_several_sizes(searched):
    strategy, _, _ = searched
    front = strategy.pareto_front()
    assert len(strategy.archive) >= 6 and front
    for a in front:
        assert not any(_dominates(b["metrics"], a["metrics"]) for b in strategy.archive.records)
    assert len({r["metrics"]["params"] for r in front}) >= 2
    assert strategy.hypervolume() > 0


def test_inherited_weights_score_above_chance_and_attacks_hurt(searched):
    strategy, _, _ = searched
    records = strategy.archive.records
    assert max(r["metrics"]["clean_acc"] for r in records) > 0.3  # chance is 0.1
    for r in records:
        m = r["metrics"]
        assert m["pgd_acc"] <= m["clean_acc"]
        assert m["weights"] == "inherited" and m["attack"] == "pgd-5" and m["n_examples"] == 269
        assert m["params"] == count_params(strategy.supernet.freeze(r["sample"]))


def test_exported_top_models_are_the_front(searched):
    strategy, exported, _ = searched
    front = [r["sample"] for r in strategy.pareto_front()]
    assert len(exported) == len(front)
    assert all(sample in front for sample in exported)
    best = max(strategy.pareto_front(), key=lambda r: r["metrics"]["pgd_acc"])
    assert exported[0] == best["sample"]


def test_layer_statistics_count_the_front_choices(searched):
    strategy, _, _ = searched
    stats = strategy.layer_statistics()
    assert stats["front_size"] == len(strategy.pareto_front())
    assert [row["layer"] for row in stats["rows"]] == ["layer0", "layer1", "layer2"]
    for row in stats["rows"]:
        assert sum(row["block"].values()) == sum(row["width"].values()) == stats["front_size"]
    assert "| layer | block | width |" in stats["markdown"]


def test_state_dict_keeps_the_archive_as_json(searched):
    strategy, _, _ = searched
    state = json.loads(json.dumps(strategy.state_dict()))
    restored = TAMNAS(eps=0.1)
    restored._archive.load_state_dict(state["archive"])
    assert restored.pareto_front() == strategy.pareto_front()


def test_batchnorm_recalibration_replaces_running_stats_by_the_batch_average(searched):
    strategy, _, bundle = searched
    sample = strategy.pareto_front()[0]["sample"]
    model = strategy.supernet.freeze(sample).eval()
    bn = model.stem[1]
    before = bn.running_mean.clone()
    x, _ = bundle.tensors("train", n=128)
    batches = [(x[:64], None), (x[64:], None)]
    recalibrate_batchnorm(model, batches)
    with torch.no_grad():
        expected = torch.stack([model.stem[0](b).mean(dim=(0, 2, 3)) for b, _ in batches]).mean(0)
    assert not torch.allclose(bn.running_mean, before)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)
    assert bn.momentum == 0.1 and not model.training


def test_finetuning_the_front_from_supernet_weights_improves_robustness(searched):
    strategy, _, _ = searched
    before = {json.dumps(r["sample"], sort_keys=True): r["metrics"]["pgd_acc"] for r in strategy.pareto_front()}
    front = strategy.finetune_front(epochs=1)
    tuned = [r["finetuned_metrics"] for r in front]
    assert all(m["weights"] == "finetuned-1" for m in tuned)
    assert sum(m["pgd_acc"] for m in tuned) / len(tuned) > sum(before.values()) / len(before)
    model = strategy.subnet(front[0]["sample"])
    inherited = strategy.subnet(front[0]["sample"], finetuned=False)
    assert not torch.equal(model.stem[0].weight, inherited.stem[0].weight)


def test_bad_arguments_name_the_valid_values():
    with pytest.raises(ValueError, match="pgd_acc"):
        TAMNAS(objectives=("clean_acc", "accuracy"))
    with pytest.raises(ValueError, match="population_size"):
        TAMNAS(population_size=1)
    with pytest.raises(ValueError, match="norm"):
        TAMNAS(norm="l3")
