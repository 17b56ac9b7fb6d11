"""Optuna workers on a real PostgreSQL server: a worker killed with SIGKILL loses no completed
trial, its trial is failed and re-run, and a worker busy with its own trial reaps it.

The server comes from ``.ci/run`` (PostgreSQL from the Debian packages, on 127.0.0.1), which
exports ``ROBUSTNAS_TEST_POSTGRES_URL``; without it these tests skip, except in CI (``CI`` set),
where they must run. To run them on a developer machine with root:
``eval "$(bash .ci/run postgres)" && .venv/bin/pytest tests/plugins/test_optuna_postgres.py``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from robustnas.plugins.optuna import RobustObjective, Worker, create_study, open_storage, start_worker
from robustnas.plugins.optuna._worker import HEARTBEAT_ATTR, RETRY_ATTR, WORKER_ATTR
from robustnas.search_spaces import get_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

URL_VARIABLE = "ROBUSTNAS_TEST_POSTGRES_URL"
OBJECTIVES = ("clean_acc", "robust_acc", "params")
# Trials that train: one epoch on the synthetic set takes about 0.1 s on one core.
CHEAP = dict(dataset="synthetic", recipe="standard", lr=0.1, attack="fast", n_examples=8, pgd_eval_steps=2,
             latency_repeats=1)
TINY_STAGES = [[1, 8, 1], [1, 16, 2]]


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get(URL_VARIABLE)
    if not url:
        why = (f"{URL_VARIABLE} is not set (a postgresql:// URL of a test database; as root, "
               f"`eval \"$(bash .ci/run postgres)\"` installs and starts one and sets it)")
        if os.environ.get("CI"):
            pytest.fail(f"{why}; in CI .ci/run must set it")
        pytest.skip(why)
    return url


@pytest.fixture
def study_name(postgres_url: str):
    """A study name of its own in the shared test database; the study is deleted afterwards."""
    name = f"pytest-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=open_storage(postgres_url))
    except KeyError:
        pass


@pytest.fixture
def processes():
    """Worker processes started by a test; any still alive at the end are killed."""
    started: list[Any] = []
    yield started
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(10)


def _argv(url: str, study: str, n_trials: int, epochs: int, *extra: str) -> list[str]:
    return ["--study", study, "--storage", url, "--n-trials", str(n_trials), "--space", "tiny",
            "--space-arg", f"stages={TINY_STAGES}", "--sampler", "random", "--threads", "1", "--poll", "0.2",
            "--heartbeat", "0.5", "--grace", "3", "--log-level", "WARNING", "--epochs", str(epochs),
            *[f"--eval-arg={k}={v}" for k, v in CHEAP.items()], *extra]


def _worker_name(process: Any) -> str:
    return f"{socket.gethostname()}:{process.pid}"


def _trials(storage: Any, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return storage.get_all_trials(storage.get_study_id_from_name(study), deepcopy=False)
    except KeyError:  # the study is not created yet
        return []


def _training(trial: optuna.trial.FrozenTrial, worker: str) -> bool:
    """Is ``worker`` training ``trial`` (RUNNING, beating, all 4 parameters of the tiny space suggested)?"""
    return (trial.state == TrialState.RUNNING and len(trial.params) == 4 and HEARTBEAT_ATTR in trial.system_attrs
            and trial.system_attrs.get(WORKER_ATTR) == worker)


def _wait_until(condition, what: str, timeout: float = 90.0) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")


def _join(process: Any, timeout: float = 120.0) -> int:
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join(10)
        raise AssertionError(f"worker did not finish within {timeout:.0f} s")
    return process.exitcode


def test_two_workers_on_postgres_lose_no_completed_trial_and_rerun_the_trial_of_a_worker_killed_mid_trial(
        postgres_url, study_name, processes):
    storage = open_storage(postgres_url)
    n_trials = 5
    argv = _argv(postgres_url, study_name, n_trials, 8)  # ~1 s a trial: the kill lands mid-trial
    victim = start_worker([*argv, "--worker-index", "0"])
    processes.append(victim)
    survivor = start_worker([*argv, "--worker-index", "1"])
    processes.append(survivor)
    victim_name = _worker_name(victim)

    def victim_mid_trial() -> int | None:  # the victim completed a trial and trains the next one
        trials = _trials(storage, study_name)
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.system_attrs.get(WORKER_ATTR) == victim_name]
        training = [t.number for t in trials if _training(t, victim_name)]
        return training[0] if done and training else None

    killed = _wait_until(victim_mid_trial, "the victim completed a trial and trains another")
    victim.kill()
    _join(victim, 30)
    trials = _trials(storage, study_name)
    assert trials[killed].state == TrialState.RUNNING, "SIGKILL did not land mid-trial"
    before = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
    assert any(trials[n].system_attrs[WORKER_ATTR] == victim_name for n in before)

    assert _join(survivor) == 0
    trials = _trials(storage, study_name)
    complete = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
    assert len(complete) == n_trials
    # no completed trial is lost or changed, the killed worker's own included
    assert {n: complete.get(n) for n in before} == before
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # the killed trial is failed with the reason, and re-run once with its parameters
    assert trials[killed].state == TrialState.FAIL
    assert f"worker {victim_name} lost: no heartbeat" in trials[killed].user_attrs["fail_reason"]
    retries = [t for t in trials if t.user_attrs.get(RETRY_ATTR) == killed]
    assert len(retries) == 1
    assert retries[0].params == trials[killed].params
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].system_attrs[WORKER_ATTR] == _worker_name(survivor)
    assert set(OBJECTIVES) <= set(retries[0].user_attrs["metrics"])


class _LongTrialEvaluator:
    """An evaluator whose first candidate takes until the trial ``watch`` has been failed.

    It stands for a long training run: while it waits, the worker's main thread is busy inside
    it, so only the heartbeat thread of the worker can reap the watched trial.
    """

    def __init__(self, storage: Any, study: str) -> None:
        self.storage, self.study = storage, study
        self.watch: int | None = None  # trial id
        self.busy = threading.Event()
        self.seen: list[tuple[str, str]] = []  # (state of the watched trial when a candidate began, when it ended)

    def _state(self) -> TrialState:
        return self.storage.get_trial(self.watch).state

    def evaluate(self, model: Any, **kwargs: Any) -> dict[str, Any]:
        began = self._state()
        self.busy.set()
        deadline = time.time() + 30
        while self._state() == TrialState.RUNNING and time.time() < deadline:
            time.sleep(0.05)
        self.seen.append((began.name, self._state().name))
        return {"clean_acc": 0.5, "robust_acc": 0.25, "params": 1000.0}


def test_a_worker_busy_with_its_own_long_trial_reaps_a_killed_workers_trial_from_its_heartbeat_thread(
        postgres_url, study_name, processes):
    storage = open_storage(postgres_url)
    victim = start_worker(_argv(postgres_url, study_name, 2, 1000))  # its trial would take minutes
    processes.append(victim)
    victim_name = _worker_name(victim)
    killed = _wait_until(lambda: [t for t in _trials(storage, study_name) if _training(t, victim_name)],
                         "the victim trains a candidate")[0]

    evaluator = _LongTrialEvaluator(storage, study_name)
    evaluator.watch = killed._trial_id
    space = get_space("tiny", input_shape=(1, 8, 8), num_classes=10, stages=TINY_STAGES)
    study = create_study(OBJECTIVES, storage=postgres_url, study_name=study_name, sampler="random", seed=1)
    worker = Worker(study, RobustObjective(space, evaluator, OBJECTIVES), 2, heartbeat=0.5, grace=3.0, poll=0.2,
                    name="survivor")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert evaluator.busy.wait(60), "the surviving worker did not start its trial"
    victim.kill()  # while the survivor is inside its own trial
    _join(victim, 30)
    thread.join(120)
    assert not thread.is_alive(), "the surviving worker did not finish"
    assert not errors, errors

    # its first candidate began with the victim's trial RUNNING and ended when it was FAIL: reaped meanwhile
    assert evaluator.seen[0] == ("RUNNING", "FAIL")
    trials = _trials(storage, study_name)
    assert f"worker {victim_name} lost: no heartbeat" in trials[killed.number].user_attrs["fail_reason"]
    retries = [t for t in trials if t.user_attrs.get(RETRY_ATTR) == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state == TrialState.COMPLETE
    assert sorted(worker.completed) == sorted(t.number for t in trials if t.state == TrialState.COMPLETE)
    assert len(worker.completed) == 2 and retries[0].number in worker.completed
