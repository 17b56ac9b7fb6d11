"""The NNI adapter: the shared evaluator inside NasExperiments, and the raw metric dicts back out."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.strategy import Random, RandomOneShot

from robustnas.plugins.errors import ConfigError
from robustnas.plugins.evaluator import METRIC_KEYS, load_dataset
from robustnas.plugins.nni import (
    MetricsCollector,
    arch_key,
    classification_evaluator,
    robust_evaluator,
    run_experiment,
)
from robustnas.search_spaces import build_model, get_space

CHEAP = dict(dataset="digits", recipe="standard", epochs=1, lr=0.1, attack="fast", n_examples=8,
             pgd_eval_steps=2, latency_repeats=1, progress=False)
TINY_STAGES = [[1, 8, 1], [1, 16, 2]]


@pytest.fixture(scope="module")
def space():
    return get_space("tiny", input_shape=(1, 8, 8), num_classes=10, stages=TINY_STAGES)


def _n_params(record: dict) -> int:
    return sum(p.numel() for p in build_model(record).parameters())


def test_robust_evaluator_in_a_nas_experiment_with_random_reports_dicts_the_collector_keeps(space, tmp_path):
    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = 3
    config.experiment_working_directory = str(tmp_path)
    experiment = NasExperiment(space, robust_evaluator(CHEAP), Random(seed=0), config)
    collector = MetricsCollector(space).attach(experiment)
    experiment.run()
    experiment.stop()

    records = collector.records
    assert len(records) == 3 and all(r["status"] == "trained" for r in records)
    for record, model in zip(records, experiment._engine.list_models()):
        metrics = record["metrics"]
        assert set(METRIC_KEYS) | {"default"} <= set(metrics)
        assert metrics["default"] == metrics["robust_acc"]
        assert 0.0 <= metrics["robust_acc"] <= 1.0 and metrics["n_examples"] == 8
        assert model.metric == metrics["default"]  # NNI itself kept only the scalar
        assert record["sample"] == model.sample
        assert record["record"]["space"] == "tiny" and _n_params(record["record"]) == metrics["params"]


def test_run_experiment_ranks_top_models_by_the_default_metric_and_negates_minimised_ones(space, tmp_path):
    result = run_experiment(space, Random(seed=1), robust_evaluator(CHEAP, default="params"),
                            max_trial_number=3, top_k=1, working_dir=tmp_path)
    assert len(result.records) == 3
    assert all(r["metrics"]["default"] == -r["metrics"]["params"] for r in result.records)
    smallest = min(result.records, key=lambda r: r["metrics"]["params"])
    assert result.top_models == [smallest] and result.exported == [smallest["sample"]]
    front = result.front(("clean_acc", "params"))
    assert smallest in front or any(r["metrics"]["params"] == smallest["metrics"]["params"] for r in front)


def test_classification_evaluator_trains_a_one_shot_supernet_on_the_bundle_splits(space, tmp_path):
    bundle = load_dataset("digits")
    evaluator = classification_evaluator(bundle, batch_size=32, max_epochs=1, limit_train_batches=4,
                                         limit_val_batches=2)
    assert evaluator.train_dataloaders.dataset is bundle.train
    assert evaluator.val_dataloaders.dataset is bundle.val
    assert evaluator.trainer.checkpoint_callback is None and evaluator.trainer.logger is None

    result = run_experiment(space, RandomOneShot(), evaluator, working_dir=tmp_path)
    metrics = evaluator.trainer.callback_metrics
    assert {"train_loss", "val_acc"} <= set(metrics) and torch.isfinite(metrics["train_loss"])
    assert evaluator.trainer.global_step == 4  # limit_train_batches was honoured
    exported = result.exported[0]
    assert space.freeze(exported)(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_bad_inputs_to_the_adapter_raise_clear_errors(space):
    with pytest.raises(ValueError, match="unknown default metric 'accuracy'.*robust_acc"):
        robust_evaluator(CHEAP, default="accuracy")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        robust_evaluator({**CHEAP, "dataset": "imagenet"})
    with pytest.raises(TypeError, match="NasExperiment or an ExecutionEngine"):
        MetricsCollector().attach(space)
    with pytest.raises(ValueError, match="unknown engine 'remote'; valid engines: sequential, ts"):
        run_experiment(space, Random(), robust_evaluator(CHEAP), engine="remote")


# ---------------------------------------------------------------- NNI's strategies on every space
@pytest.fixture(scope="module")
def cell_space():
    return get_space("dsrna", input_shape=(1, 8, 8), num_classes=10, width=4, num_cells=3)


def test_legacy_space_turns_cell_input_choices_into_tuner_choices_and_back(cell_space):
    from nni.mutable import CategoricalMultiple

    from robustnas.strategies._nni import LegacySpace
    from robustnas.search_spaces import random_sample

    mutables = cell_space.simplify()
    legacy = LegacySpace(mutables)
    inputs = {label: m for label, m in mutables.items() if isinstance(m, CategoricalMultiple)}
    assert len(inputs) == 16 and set(legacy.legacy) == set(mutables)  # 2 cell types x 4 nodes x 2 inputs
    node5 = inputs["normal/input_5_0"]
    assert node5.n_chosen == 1 and legacy.legacy["normal/input_5_0"] == {"_type": "choice", "_value": [0, 1, 2, 3, 4]}
    assert legacy.legacy["normal/op_5_0"] == mutables["normal/op_5_0"].as_legacy_dict()
    for seed in range(5):
        sample = random_sample(cell_space, seed=seed)
        parameters = legacy.to_parameters(sample)
        assert all(isinstance(parameters[label], int) for label in inputs)
        assert legacy.to_sample(parameters) == sample
    pairs = LegacySpace.combinations(CategoricalMultiple([0, 1, 2, 3], n_chosen=2, label="x"))
    assert pairs == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert len(LegacySpace.combinations(CategoricalMultiple([0, 1, 2], label="y"))) == 8  # any subset


FAST = {**CHEAP, "n_examples": 4, "escalate": False, "batch_size": 256}


def test_nni_tpe_and_any_nni_tuner_search_the_cell_space_through_run_experiment(cell_space, tmp_path, caplog):
    from nni.algorithms.hpo.evolution_tuner import EvolutionTuner
    from nni.nas.strategy import TPE as NNITPE

    from robustnas.plugins.nni import TPE, HPOStrategy

    assert TPE(seed=0).tuner.optimize_mode.value == "maximize"
    with caplog.at_level("WARNING"):
        result = run_experiment(cell_space, NNITPE(seed=0), robust_evaluator(FAST, train=False),
                                max_trial_number=2, working_dir=tmp_path / "tpe")
    assert "minimises the reported 'default'" in caplog.text  # NNI's TPE() keeps TpeTuner's 'minimize'
    assert isinstance(result.experiment.strategy, HPOStrategy)
    evolution = HPOStrategy(EvolutionTuner(optimize_mode="maximize", population_size=2))
    result2 = run_experiment(cell_space, evolution, robust_evaluator(FAST, train=False), max_trial_number=2,
                             working_dir=tmp_path / "evolution")
    for record in result.records + result2.records:
        assert record["status"] == "trained" and record["metrics"]["arch_key"] == arch_key(record["sample"])
        assert isinstance(record["sample"]["normal/input_2_0"], list)


def test_proxyless_cell_trains_both_architecture_weights_of_a_reduction_cell(cell_space):
    from robustnas.strategies._nni import Proxyless, ProxylessMixedCell

    space = get_space("dsrna", input_shape=(1, 8, 8), num_classes=10, width=4, num_cells=3)
    strategy = Proxyless()
    supernet = strategy.mutate_model(space)
    cells = [m for m in supernet.modules() if isinstance(m, ProxylessMixedCell)]
    assert [c.label for c in cells] == ["normal", "reduce", "reduce"]
    # Every edge a convolution (a "none" edge would make its input choice irrelevant); inputs sampled.
    memo: dict = {label: "sep_conv_3x3" for label in space.simplify() if "/op_" in label}
    torch.manual_seed(0)
    for cell in cells:
        memo.update(cell.resample(memo))
    assert memo["reduce/input_5_0"][0] in range(5) and "sep_conv_3x3" in cells[1].op_names
    loss = nn.functional.cross_entropy(supernet(torch.rand(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for label in ("reduce/op_2_0", "reduce/input_3_0", "normal/op_4_1", "normal/input_5_1"):
        grad = cells[1 if label.startswith("reduce") else 0]._alpha(label).grad
        assert grad is not None and grad.abs().sum() > 0, label
    exported = {}
    for cell in cells:
        exported.update(cell.export(exported))
    assert exported["reduce/input_4_1"] == [int(torch.argmax(cells[1]._alpha("reduce/input_4_1")))]
    assert build_model({"space": "dsrna", "kwargs": cell_space.space_kwargs, "sample": exported})


def test_rl_strategies_need_the_rl_extra_or_run(cell_space):
    from robustnas.strategies import get_strategy

    try:
        import tianshou  # noqa: F401
        import gym  # noqa: F401
    except ImportError:
        for name in ("enas", "policy-rl"):
            with pytest.raises(ConfigError, match=r"robustnas\[rl\]"):
                get_strategy(name)
    else:
        assert get_strategy("enas").reward_metric_name == "val_acc"


def test_collector_pairs_metrics_by_arch_key_when_the_engine_names_the_wrong_model(space):
    from nni.nas.execution import ExecutionEngine
    from nni.nas.execution.event import FinalMetricEvent, TrainingEndEvent
    from nni.nas.space import ModelStatus, SimplifiedModelSpace

    from robustnas.search_spaces import random_sample

    class HoldingEngine(ExecutionEngine):  # submits without running, as the training service does
        def __init__(self):
            super().__init__()
            self.models = []

        def submit_models(self, *models):
            self.models.extend(models)

        def list_models(self, status=None):
            return list(self.models)

        def idle_worker_available(self):
            return True

        def budget_available(self):
            return True

        def shutdown(self):
            pass

        def load_state_dict(self, state_dict):
            pass

        def state_dict(self):
            return {}

    engine = HoldingEngine()
    collector = MetricsCollector(space).attach(engine)
    executable = SimplifiedModelSpace.from_model(space, robust_evaluator(CHEAP))
    samples = [random_sample(space, seed=s) for s in (0, 1)]
    models = [executable.freeze(s) for s in samples]
    engine.submit_models(*models)
    assert [r["status"] for r in collector.records] == ["training", "training"]
    for model, other in ((models[0], samples[1]), (models[1], samples[0])):  # crossed, as NNI's REST API lists them
        engine.dispatch_model_event(FinalMetricEvent(model, {"default": 0.5, "arch_key": arch_key(other),
                                                             "params": _n_params({"space": "tiny",
                                                                                  "kwargs": space.space_kwargs,
                                                                                  "sample": other})}))
        engine.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Trained))
    collector.detach()
    for record in collector.records:
        assert record["metrics"]["arch_key"] == arch_key(record["sample"])
        assert record["metrics"]["params"] == _n_params(record["record"]) and record["status"] == "trained"
    assert "submit_models" not in engine.__dict__ and not collector._models


def test_arch_key_is_canonical_and_reported_with_the_metrics(space):
    from robustnas.plugins.nni import evaluate_candidate
    from robustnas.search_spaces import random_sample

    sample = random_sample(space, seed=3)
    assert arch_key(sample) == arch_key(dict(reversed(list(sample.items())))) and len(arch_key(sample)) == 16
    assert arch_key(sample) != arch_key(random_sample(space, seed=4))
    report = evaluate_candidate(space.freeze(sample), robust_evaluator(CHEAP).arguments["config"], train=False,
                                sample=sample)
    assert report["arch_key"] == arch_key(sample)


def test_wait_for_manager_polls_past_nnis_three_seconds_then_names_the_port(tmp_path):
    import socket
    import time as _time

    from nni.experiment import launcher

    from robustnas.plugins.nni import wait_for_manager

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    original = launcher._check_rest_server
    start = _time.monotonic()
    with wait_for_manager(4.0), pytest.raises(TimeoutError, match=f"port {port} within 4 s"):
        launcher._check_rest_server(port)
    assert _time.monotonic() - start >= 4.0
    assert launcher._check_rest_server is original
    with pytest.raises(ValueError, match="timeout must be a positive"):
        with wait_for_manager(0):
            pass
