"""The Optuna bridge: spaces as Optuna search spaces, studies, samplers, storages, workers, NNI strategy."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import nni
import numpy as np
import optuna
import pytest
import torch
from nni.mutable import Numerical
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace, MutableLinear
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from torch import nn

from robustnas.plugins.evaluator import METRIC_KEYS, EvaluatorConfig, RobustnessEvaluator
from robustnas.plugins.optuna import (
    SAMPLERS,
    OptunaStrategy,
    RobustObjective,
    create_study,
    make_sampler,
    open_storage,
    pareto_records,
    save_plots,
    start_worker,
    suggest_architecture,
)
from robustnas.search_spaces import build_model, get_space
from robustnas.strategies.pareto import pareto_front_mask

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The cheapest evaluator that still trains, attacks and measures: one epoch on digits.
CHEAP = dict(dataset="digits", recipe="standard", epochs=1, lr=0.1, attack="fast", n_examples=8,
             pgd_eval_steps=2, latency_repeats=1, progress=False)
TINY_STAGES = [[1, 8, 1], [1, 16, 2]]


class ToySpace(ModelSpace):
    """A small NNI space with every kind of mutable: LayerChoice, a 2-of-3 InputChoice, nni.choice."""

    def __init__(self) -> None:
        super().__init__()
        width = nni.choice("width", [8, 16])
        self.branches = nn.ModuleList([MutableLinear(64, width) for _ in range(3)])
        self.act = LayerChoice([nn.ReLU(), nn.Tanh()], label="act")
        self.inputs = InputChoice(3, n_chosen=2, label="inputs")
        self.head = MutableLinear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = [self.act(branch(x.flatten(1))) for branch in self.branches]
        return self.head(self.inputs(hidden))


@pytest.fixture(scope="module")
def evaluator() -> RobustnessEvaluator:
    return RobustnessEvaluator(EvaluatorConfig(**CHEAP))


def _tiny(evaluator: RobustnessEvaluator):
    bundle = evaluator.bundle
    return get_space("tiny", input_shape=bundle.input_shape, num_classes=bundle.num_classes, stages=TINY_STAGES)


def _assert_best_trials_non_dominated(study: optuna.Study) -> None:
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    mask = pareto_front_mask([t.values for t in complete], [d.name.lower() for d in study.directions])
    assert {t.number for t, keep in zip(complete, mask) if keep} == {t.number for t in study.best_trials}


# ---------------------------------------------------------------- space -> distributions
def test_suggest_architecture_maps_every_mutable_and_the_sample_freezes_the_space():
    space = ToySpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_inputs = set()
    for _ in range(12):
        trial = study.ask()
        sample = suggest_architecture(trial, space)
        assert set(sample) == {"width", "act", "inputs"}
        assert trial.distributions["width"] == CategoricalDistribution([8, 16])
        # the 2-of-3 input choice is one categorical over the C(3, 2) = 3 combinations
        assert sorted(trial.distributions["inputs"].choices) == ["[0, 1]", "[0, 2]", "[1, 2]"]
        assert len(sample["inputs"]) == 2 and len(set(sample["inputs"])) == 2
        seen_inputs.add(tuple(sample["inputs"]))
        model = space.freeze(sample)
        assert model(torch.rand(4, 1, 8, 8)).shape == (4, 10)
        assert model.branches[0].out_features == sample["width"]
        study.tell(trial, 0.0)
    assert len(seen_inputs) == 3


def test_suggest_architecture_maps_numerical_and_non_scalar_choices():
    class NumericSpace(ModelSpace):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nni.mutable.Numerical(0.1, 1.0, label="scale")
            self.lr = nni.mutable.Numerical(1e-4, 1e-1, log_distributed=True, label="lr")
            self.noise = nni.mutable.Numerical(mu=0.0, sigma=1.0, label="noise")
            self.kernel = nni.choice("kernel", [(3, 3), (5, 5)])
            self.add_mutable(self.scale)
            self.add_mutable(self.lr)
            self.add_mutable(self.noise)
            self.add_mutable(self.kernel)

    space = NumericSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    noises = []
    for _ in range(30):
        trial = study.ask()
        sample = suggest_architecture(trial, space)
        assert 0.1 <= sample["scale"] <= 1.0 and 1e-4 <= sample["lr"] <= 1e-1
        assert sample["kernel"] in [(3, 3), (5, 5)]
        assert space.simplify()["noise"].check_contains(sample) is None
        noises.append(sample["noise"])
        study.tell(trial, 0.0)
    assert trial.distributions["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert trial.distributions["kernel"] == CategoricalDistribution([0, 1])  # tuples are searched by position
    assert isinstance(trial.distributions["noise:quantile"], FloatDistribution)
    assert np.mean(noises) == pytest.approx(0.0, abs=0.6) and np.std(noises) == pytest.approx(1.0, abs=0.4)
    assert isinstance(space.simplify()["noise"], Numerical)


# ---------------------------------------------------------------- studies over real spaces
def test_nsga2_study_on_arnas_space_completes_trials_with_non_dominated_best_trials():
    # ARNAS cells are slow to train on CPU: train on a 20 % split to keep this test short
    evaluator = RobustnessEvaluator(EvaluatorConfig(**CHEAP, dataset_options={"fractions": [0.2, 0.1, 0.7]}))
    bundle = evaluator.bundle
    space = get_space("arnas", input_shape=bundle.input_shape, num_classes=bundle.num_classes, width=4,
                      num_cells=4)
    objective = RobustObjective(space, evaluator)
    study = create_study(objective.objectives, sampler="nsga2", seed=0, population_size=2)
    study.optimize(objective, n_trials=4)

    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    for trial in study.trials:
        metrics = trial.user_attrs["metrics"]
        assert set(METRIC_KEYS) <= set(metrics)
        assert 0.0 <= metrics["robust_acc"] <= 1.0 and 0.0 <= metrics["clean_acc"] <= 1.0
        assert trial.values == [metrics["clean_acc"], metrics["robust_acc"], metrics["params"]]
    _assert_best_trials_non_dominated(study)
    best = pareto_records(study)[0]
    rebuilt = build_model(best["record"])  # the stored record rebuilds the evaluated network
    assert sum(p.numel() for p in rebuilt.parameters()) == best["metrics"]["params"]


@pytest.fixture(scope="module")
def tpe_tiny_study(evaluator) -> optuna.Study:
    objective = RobustObjective(_tiny(evaluator), evaluator, objectives=("clean_acc", "params"))
    study = create_study(objective.objectives, sampler="tpe", seed=0, n_startup_trials=2)
    study.optimize(objective, n_trials=5)
    return study


def test_multi_objective_tpe_study_on_tiny_space_learns_and_gives_non_dominated_best_trials(tpe_tiny_study):
    study = tpe_tiny_study
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    assert study.metric_names == ["clean_acc", "params"]
    # one epoch on digits already beats chance (0.1) for the best candidate
    assert max(t.values[0] for t in study.trials) > 0.3
    _assert_best_trials_non_dominated(study)


def test_failed_candidate_fails_its_trial_with_the_reason_and_the_study_goes_on(evaluator):
    bundle = evaluator.bundle
    wrong = get_space("tiny", input_shape=bundle.input_shape, num_classes=3, stages=TINY_STAGES)
    objective = RobustObjective(wrong, evaluator)
    study = create_study(objective.objectives, sampler="random", seed=0)
    study.optimize(objective, n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("expected logits of shape (2, 10)" in t.user_attrs["fail_reason"] for t in study.trials)


def test_save_plots_writes_pareto_and_hypervolume_pngs(tpe_tiny_study, tmp_path):
    paths = save_plots(tpe_tiny_study, tmp_path / "plots")
    assert set(paths) == {"pareto_front", "hypervolume_history"}
    for path in paths.values():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# ---------------------------------------------------------------- NNI strategy
def test_optuna_strategy_runs_nsga2_inside_a_nas_experiment_with_a_non_dominated_front(evaluator, tmp_path):
    from robustnas.plugins.nni import robust_evaluator, run_experiment

    space = _tiny(evaluator)
    strategy = OptunaStrategy("nsga2", seed=0, population_size=2)
    result = run_experiment(space, strategy, robust_evaluator(CHEAP), max_trial_number=4, working_dir=tmp_path)

    study = strategy.study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len(result.records) == 4 and all(r["status"] == "trained" for r in result.records)
    # the strategy told Optuna the raw metric dicts, not NNI's `default` scalar
    assert all(t.values[2] == t.user_attrs["metrics"]["params"] for t in study.trials)
    front = strategy.pareto_front()
    _assert_best_trials_non_dominated(study)
    assert {r["number"] for r in front} == {t.number for t in study.best_trials}
    for record in front:
        model = build_model(record["record"])
        assert sum(p.numel() for p in model.parameters()) == record["metrics"]["params"]


# ---------------------------------------------------------------- storages and bad input
def test_storages_open_from_urls_and_paths_and_reopen_the_same_study(tmp_path):
    for url in (f"journal://{tmp_path / 'a.log'}", str(tmp_path / "b.jsonl"), f"sqlite:///{tmp_path / 'c.db'}",
                str(tmp_path / "d.db")):
        study = create_study(("clean_acc", "params"), storage=url, study_name="s", sampler="random")
        trial = study.ask()
        study.tell(trial, [0.5, 100.0])
        again = create_study(("clean_acc", "params"), storage=url, study_name="s", sampler="nsga2")
        assert [t.values for t in again.trials] == [[0.5, 100.0]], url
        assert again.metric_names == ["clean_acc", "params"]
    assert type(open_storage(None)).__name__ == "InMemoryStorage"


def test_bad_storage_urls_raise_errors_naming_them(tmp_path):
    for url in (f"sqlite:///{tmp_path}/missing/dir/x.db", "postgresql://user@localhost/db", "nonsense",
                f"journal://{tmp_path}/missing/dir/x.log"):
        with pytest.raises(ValueError, match="cannot open storage") as info:
            open_storage(url)
        assert url in str(info.value)


def test_unknown_sampler_and_objective_raise_errors_listing_valid_names(evaluator):
    with pytest.raises(ValueError, match="unknown sampler 'cmaes'.*nsga2, nsga3, tpe, gp, random, qmc"):
        make_sampler("cmaes")
    assert set(SAMPLERS) == {"nsga2", "nsga3", "tpe", "gp", "random", "qmc"}
    assert isinstance(make_sampler("nsga-ii", seed=0), optuna.samplers.NSGAIISampler)
    assert make_sampler("tpe")._multivariate is True
    with pytest.raises(ValueError, match=r"unknown objective metric\(s\) \['accuracy'\].*robust_acc"):
        RobustObjective(_tiny(evaluator), evaluator, objectives=("accuracy", "params"))
    with pytest.raises(ValueError, match="unknown objective"):
        create_study(("clean_acc", "size"))


def test_joining_an_existing_study_with_other_objectives_is_an_error(tmp_path):
    url = str(tmp_path / "study.log")
    create_study(("clean_acc", "robust_acc", "params"), storage=url, study_name="robust")
    with pytest.raises(ValueError, match="already exists with objectives .*'clean_acc', 'robust_acc', 'params'"):
        create_study(("clean_acc", "params"), storage=url, study_name="robust")
    with pytest.raises(ValueError, match="already exists"):  # same directions, other names
        create_study(("clean_acc", "pgd_acc", "flops"), storage=url, study_name="robust")


# ---------------------------------------------------------------- workers
def _worker_argv(storage: Path, n_trials: int, *extra: str) -> list[str]:
    return ["--study", "shared", "--storage", str(storage), "--n-trials", str(n_trials), "--space", "tiny",
            "--space-arg", f"stages={TINY_STAGES}", "--sampler", "nsga2", "--sampler-arg", "population_size=2",
            "--threads", "1", "--poll", "0.2", "--log-level", "WARNING",
            *[f"--eval-arg={k}={v}" for k, v in CHEAP.items()], *extra]


def _load(storage: Path) -> optuna.Study:
    return optuna.load_study(study_name="shared", storage=open_storage(str(storage)))


def _wait_for_running(storage: Path, exclude: set[int] = frozenset(), timeout: float = 60.0) -> int:
    """The number of a trial that a worker is training (all 4 parameters of the tiny space suggested)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if storage.exists() and storage.stat().st_size:
            try:
                running = [t for t in _load(storage).get_trials(states=(TrialState.RUNNING,))
                           if len(t.params) == 4 and "robustnas:heartbeat" in t.system_attrs and t.number not in exclude]
            except KeyError:  # the study is not created yet
                running = []
            if running:
                return running[0].number
        time.sleep(0.05)
    raise AssertionError("no trial started running")


def _join(process, timeout: float = 120.0) -> int:
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        raise AssertionError("worker did not finish in time")
    return process.exitcode


def test_two_worker_processes_complete_exactly_n_trials_between_them(tmp_path):
    storage = tmp_path / "journal.log"
    workers = [start_worker(_worker_argv(storage, 4, "--seed", "0", "--worker-index", str(i))) for i in range(2)]
    assert [_join(w) for w in workers] == [0, 0]

    study = _load(storage)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states and TrialState.FAIL not in states
    # a trial asked in a race for the last slot is skipped (PRUNED), never run as an extra
    assert all("skipped" in t.user_attrs for t in study.trials if t.state == TrialState.PRUNED)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert all(set(METRIC_KEYS) <= set(t.user_attrs["metrics"]) for t in complete)
    assert len({t.number for t in complete}) == 4


def test_interrupted_and_killed_workers_leave_a_study_that_a_new_worker_completes(tmp_path):
    storage = tmp_path / "journal.log"
    argv = _worker_argv(storage, 2, "--heartbeat", "0.5", "--grace", "2")
    slow = [*argv, "--eval-arg", "epochs=30"]  # so that the signals land while a candidate trains

    first = start_worker(slow)  # SIGTERM: fails its running trial with the reason and re-queues it
    interrupted = _wait_for_running(storage)
    first.terminate()
    assert _join(first, 60) == 128 + signal.SIGTERM
    study = _load(storage)
    assert study.trials[interrupted].state == TrialState.FAIL
    assert "SIGTERM" in study.trials[interrupted].user_attrs["fail_reason"]
    assert [t.user_attrs.get("retry_of") for t in study.get_trials(states=(TrialState.WAITING,))] == [interrupted]

    second = start_worker(slow)  # SIGKILL: its trial stays RUNNING until its heartbeat goes stale
    killed = _wait_for_running(storage, exclude={interrupted})
    second.kill()
    _join(second, 30)
    assert _load(storage).trials[killed].state == TrialState.RUNNING

    assert _join(start_worker(argv)) == 0
    study = _load(storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert "no heartbeat" in study.trials[killed].user_attrs["fail_reason"]
    for lost in (interrupted, killed):  # both lost trials were re-run with their parameters
        retries = [t for t in study.trials if t.user_attrs.get("retry_of") == lost]
        assert len(retries) == 1 and retries[0].params == study.trials[lost].params
        assert retries[0].state in (TrialState.COMPLETE, TrialState.FAIL)
