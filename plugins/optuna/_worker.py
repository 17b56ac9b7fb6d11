"""Optuna workers: processes that share one study through a storage and stop at N trials.

A worker joins ``--study`` in ``--storage``, builds the space and the shared evaluator, and
runs trials until the study holds ``--n-trials`` COMPLETE trials (counted over all workers).
Each running trial writes a heartbeat (trial system attribute ``robustnas:heartbeat``, Unix
time) every ``--heartbeat`` seconds; a RUNNING trial whose heartbeat is older than ``--grace``
seconds belongs to a worker that died (SIGKILL, lost machine): any worker marks it FAIL
(reason in the user attribute ``fail_reason``) and re-queues its parameters as a WAITING trial,
which the next ``study.ask()`` of any worker runs again. Workers look for such trials between
trials and, from the heartbeat thread, at every beat of their own running trial (so a worker
busy with a long trial still re-queues a lost one). This works on every storage (journal
files, SQLite, PostgreSQL, MySQL), unlike Optuna's own heartbeat, which is RDB-only.
SIGINT / SIGTERM stop a worker after it marks its running trial FAIL and re-queues it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ._objective import ATTR_FAIL, RobustObjective
from ._samplers import SAMPLERS
from ._storage import create_study
from robustnas.plugins.errors import ConfigError
from robustnas.plugins._deprecation import show_deprecations
from robustnas.plugins.evaluator import EvaluatorConfig, add_evaluator_options, given_options

_logger = logging.getLogger(__name__)

HEARTBEAT_ATTR = "robustnas:heartbeat"
WORKER_ATTR = "robustnas:worker"
RETRY_ATTR = "retry_of"
_ACTIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


class WorkerInterrupted(BaseException):
    """Raised in the main thread by SIGINT / SIGTERM (a BaseException, so objectives don't catch it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """SIGINT / SIGTERM: raise at once only while a candidate is being evaluated.

    Raising inside a storage call could leave the journal file's lock half-released, so
    elsewhere the signal is remembered and raised at the next safe point (:meth:`check`).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._interruptible = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self._interruptible:
            self._interruptible = False
            raise WorkerInterrupted(signum)

    def check(self) -> None:
        if self.received is not None:
            raise WorkerInterrupted(self.received)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        self.check()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False


class _InterruptibleEvaluator:
    """The worker's evaluator: training and attacks may be interrupted by a signal."""

    def __init__(self, evaluator: Any, signals: _Signals) -> None:
        self._evaluator, self._signals = evaluator, signals

    def evaluate(self, model: Any, **kwargs: Any) -> dict[str, Any]:
        with self._signals.interruptible():
            return self._evaluator.evaluate(model, **kwargs)


class _Heartbeat:
    """Writes the heartbeat of one running trial from a daemon thread, and reaps stale trials.

    With ``grace``, each beat also fails and re-queues the other RUNNING trials whose heartbeat
    is older than ``grace`` seconds (:func:`reap_stale_trials`): a worker busy with a long trial
    still re-queues the trial of a worker that died, instead of waiting until its own trial ends.
    """

    def __init__(self, study: optuna.Study, trial_id: int, interval: float, grace: float | None = None) -> None:
        self._study, self._trial_id, self._interval, self._grace = study, trial_id, interval, grace
        self._storage = study._storage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self) -> None:
        while True:
            try:
                self._storage.set_trial_system_attr(self._trial_id, HEARTBEAT_ATTR, time.time())
            except (UpdateFinishedTrialError, RuntimeError) as exc:
                _logger.warning("heartbeat of trial id %d stopped: %s", self._trial_id, exc)
                return
            if self._grace is not None:
                try:
                    reap_stale_trials(self._study, self._grace, exclude=(self._trial_id,))
                except Exception as exc:  # noqa: BLE001 - best effort; the next beat or trial tries again
                    _logger.warning("reaping stale trials failed: %s: %s", type(exc).__name__, exc)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Enqueue a WAITING copy of ``trial``'s parameters (``user_attrs["retry_of"]`` = its number)."""
    study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False)
    _logger.info("trial %d re-queued (%s)", trial.number, reason)


def reap_stale_trials(study: optuna.Study, grace: float, exclude: Collection[int] = ()) -> list[int]:
    """Fail and re-queue RUNNING trials whose heartbeat is older than ``grace`` seconds.

    Only trials that carry a heartbeat are considered (a trial run by plain ``study.optimize``
    has none), less those whose trial id is in ``exclude`` (the caller's own). When several
    workers reap at once, the storage lets exactly one of them finish the trial; only that one
    re-queues it. Workers call it between trials and from each running trial's heartbeat
    thread. Returns the numbers of the reaped trials.
    """
    reaped = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.system_attrs.get(HEARTBEAT_ATTR)
        if beat is None or trial._trial_id in exclude or now - float(beat) <= grace:
            continue
        reason = f"worker {trial.system_attrs.get(WORKER_ATTR, '?')} lost: no heartbeat for {now - beat:.0f} s"
        try:
            study._storage.set_trial_user_attr(trial._trial_id, ATTR_FAIL, reason)
            if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker reaped it (or its worker came back and finished it)
        _logger.warning("trial %d failed: %s", trial.number, reason)
        requeue(study, trial, reason)
        reaped.append(trial.number)
    return reaped


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def _ahead_of(study: optuna.Study, number: int) -> int:
    """Trials that count towards the target and were created before trial ``number``."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=_ACTIVE) if t.number < number)


class Worker:
    """Runs trials of ``objective`` on ``study`` until it holds ``n_trials`` COMPLETE trials.

    Trial numbers decide races: a freshly asked trial runs only if fewer than ``n_trials``
    COMPLETE / RUNNING / WAITING trials precede it; otherwise it is told PRUNED (user attribute
    ``skipped``) -- so N trials get done between all workers, none more. Optuna's
    ``MaxTrialsCallback`` stops only after a trial ends and overshoots with concurrent workers.
    Heartbeats are ours, not Optuna's RDB-only ones; see docs/fidelity.md (Optuna bridge).
    """

    def __init__(self, study: optuna.Study, objective: RobustObjective, n_trials: int, *,
                 heartbeat: float = 10.0, grace: float = 60.0, poll: float = 2.0,
                 max_failures: int | None = None, name: str | None = None) -> None:
        if n_trials < 1:
            raise ConfigError(f"n_trials must be >= 1, got {n_trials!r}")
        if not 0 < heartbeat < grace:
            raise ConfigError(f"need 0 < heartbeat < grace, got heartbeat={heartbeat!r}, grace={grace!r}")
        self._signals = _Signals()
        self.objective = copy.copy(objective)
        self.objective.evaluator = _InterruptibleEvaluator(objective.evaluator, self._signals)
        self.study, self.n_trials = study, n_trials
        self.heartbeat, self.grace, self.poll = heartbeat, grace, poll
        self.max_failures = n_trials if max_failures is None else max_failures
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.completed: list[int] = []
        self.failed: list[int] = []

    def _run_one(self, trial: optuna.Trial) -> None:
        with _Heartbeat(self.study, trial._trial_id, self.heartbeat, grace=self.grace):
            values = self.objective(trial)
        try:
            frozen = self.study.tell(trial, values)
        except UpdateFinishedTrialError:
            _logger.warning("trial %d was reaped while running (heartbeat too late); its retry runs it again",
                            trial.number)
            return
        (self.completed if frozen.state == TrialState.COMPLETE else self.failed).append(trial.number)

    def _next(self) -> bool:
        """Run at most one trial; False once the study is done."""
        self._signals.check()
        reap_stale_trials(self.study, self.grace)
        counts = _counts(self.study)
        done = counts[TrialState.COMPLETE]
        if done >= self.n_trials:
            _logger.info("worker %s: study %r has %d/%d complete trials; done (%d by this worker)",
                         self.name, self.study.study_name, done, self.n_trials, len(self.completed))
            return False
        if len(self.failed) >= self.max_failures:
            raise RuntimeError(f"worker {self.name}: {len(self.failed)} failed trials (see their "
                               f"'{ATTR_FAIL}' user attribute); stopping")
        if counts[TrialState.WAITING] == 0 and done + counts[TrialState.RUNNING] >= self.n_trials:
            time.sleep(self.poll)  # the last trials run elsewhere; reap them if their worker dies
            return True
        trial = self.study.ask()
        try:
            self.study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, self.name)
            if _ahead_of(self.study, trial.number) >= self.n_trials:
                trial.set_user_attr("skipped", f"{self.n_trials} trials were already under way")
                self.study.tell(trial, state=TrialState.PRUNED)
                return True
            _logger.info("worker %s: trial %d started (%d/%d complete)", self.name, trial.number, done,
                         self.n_trials)
            self._run_one(trial)
        except optuna.TrialPruned as exc:
            self.study.tell(trial, state=TrialState.PRUNED)
            _logger.info("trial %d pruned: %s", trial.number, exc)
        except WorkerInterrupted as exc:
            try:
                trial.set_user_attr(ATTR_FAIL, f"worker {self.name} interrupted by {exc}")
                requeue(self.study, self.study.tell(trial, state=TrialState.FAIL), f"interrupted by {exc}")
            except UpdateFinishedTrialError:
                pass  # the signal came after the trial was told: nothing to undo
            raise
        return True

    def run(self) -> int:
        """Run until the study is done; returns the number of trials this worker completed.

        In the main thread, SIGINT / SIGTERM raise :class:`WorkerInterrupted` after the running
        trial is failed and re-queued (or after the trial in hand is told, outside evaluation).
        """
        handled = (signal.SIGINT, signal.SIGTERM)
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, self._signals.handler) for sig in handled} if main else {}
        try:
            while self._next():
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return len(self.completed)


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _key_values(pairs: Sequence[str], what: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{what} {pair!r} must look like KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = _parse_value(value)
    return out


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``robustnas optuna-worker`` to ``parser``."""
    parser.add_argument("--study", required=True, help="study name (created if missing)")
    parser.add_argument("--storage", required=True,
                        help="journal:///path.log, a .log path, sqlite:///file.db, postgresql://..., mysql://...")
    parser.add_argument("--n-trials", type=int, required=True,
                        help="complete trials the study should hold, counted over all workers")
    parser.add_argument("--config", help="YAML file: evaluator fields under 'evaluator', and optionally "
                                         "space, space_kwargs, sampler, sampler_kwargs, objectives, seed")
    parser.add_argument("--space", help="search space name (arnas, dsrna, tiny); default arnas")
    parser.add_argument("--space-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="space constructor argument (YAML value), e.g. width=8; repeatable")
    parser.add_argument("--objectives", help="comma-separated metric names; default clean_acc,robust_acc,params")
    parser.add_argument("--sampler", help=f"one of {', '.join(SAMPLERS)}; default nsga2")
    parser.add_argument("--sampler-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler constructor argument, e.g. population_size=8; repeatable")
    parser.add_argument("--seed", type=int, help="sampler seed (offset by --worker-index)")
    parser.add_argument("--worker-index", type=int, default=0, help="distinct per worker for distinct seeds")
    add_evaluator_options(parser)
    parser.add_argument("--eval-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="any other EvaluatorConfig field; repeatable")
    parser.add_argument("--heartbeat", type=float, default=10.0, help="seconds between heartbeats (10)")
    parser.add_argument("--grace", type=float, default=60.0,
                        help="seconds without heartbeat after which a RUNNING trial is failed and re-queued (60)")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between checks while waiting (2)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads of this worker (default: torch's); use 1 when workers share cores")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {"space": "arnas", "space_kwargs": {}, "sampler": "nsga2", "sampler_kwargs": {},
                                "objectives": ["clean_acc", "robust_acc", "params"], "seed": None,
                                "evaluator": {}}
    if args.config:
        import yaml

        loaded = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        unknown = sorted(set(loaded) - set(settings))
        if unknown:
            raise ConfigError(f"unknown keys {unknown} in {args.config}; valid keys: {', '.join(settings)}")
        settings.update(loaded)
    for key in ("space", "sampler", "seed"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.objectives:
        settings["objectives"] = [name.strip() for name in args.objectives.split(",") if name.strip()]
    settings["space_kwargs"] = {**settings["space_kwargs"], **_key_values(args.space_arg, "--space-arg")}
    settings["sampler_kwargs"] = {**settings["sampler_kwargs"], **_key_values(args.sampler_arg, "--sampler-arg")}
    # each source with the deprecated names renamed before they merge (a flag wins over the file)
    evaluator = EvaluatorConfig.upgrade(dict(settings["evaluator"]))
    evaluator.update(given_options(vars(args)))
    evaluator.update(EvaluatorConfig.upgrade(_key_values(args.eval_arg, "--eval-arg")))
    evaluator.setdefault("progress", False)
    settings["evaluator"] = evaluator
    return settings


def worker_command(args: argparse.Namespace) -> int:
    """Run one worker from parsed ``add_worker_arguments`` options; returns the exit status.

    0 when the study holds ``--n-trials`` complete trials, 128 + signal number after SIGINT /
    SIGTERM (the running trial is failed and re-queued), 2 for bad input, 1 when this worker's
    candidates keep failing.
    """
    from robustnas.plugins.evaluator import RobustnessEvaluator
    from robustnas.search_spaces import get_space

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        settings = _settings(args)
        evaluator = RobustnessEvaluator(EvaluatorConfig.from_dict(settings["evaluator"]))
        bundle = evaluator.bundle
        space_kwargs = {"input_shape": tuple(bundle.input_shape), "num_classes": bundle.num_classes,
                        **settings["space_kwargs"]}
        space = get_space(settings["space"], **space_kwargs)
        objective = RobustObjective(space, evaluator, settings["objectives"])
        seed = None if settings["seed"] is None else int(settings["seed"]) + args.worker_index
        study = create_study(objective.objectives, storage=args.storage, study_name=args.study,
                             sampler=settings["sampler"], seed=seed, **settings["sampler_kwargs"])
        worker = Worker(study, objective, args.n_trials, heartbeat=args.heartbeat, grace=args.grace,
                        poll=args.poll)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        _logger.error("optuna-worker: %s", exc)
        return 2
    _logger.info("worker %s joined study %r (%s): space %s %s, objectives %s", worker.name, args.study,
                 args.storage, settings["space"], json.dumps(settings["space_kwargs"]), list(objective.objectives))
    try:
        worker.run()
    except WorkerInterrupted as exc:
        _logger.warning("worker %s stopped by %s; the study can be resumed", worker.name, exc)
        return 128 + exc.signum
    except RuntimeError as exc:
        _logger.error("%s", exc)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m robustnas.plugins.optuna`` (the same as ``robustnas optuna-worker``)."""
    parser = argparse.ArgumentParser(prog="python -m robustnas.plugins.optuna", description=__doc__.split("\n")[0])
    add_worker_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    with warnings.catch_warnings():  # the display of deprecated names is this command's only
        show_deprecations()
        args = parser.parse_args(argv)
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return worker_command(args)


def _process_main(argv: list[str]) -> None:
    raise SystemExit(main(argv))


def start_worker(argv: Sequence[str], context: str = "forkserver") -> multiprocessing.process.BaseProcess:
    """Start one worker process running ``python -m robustnas.plugins.optuna <argv>``.

    With the default ``forkserver`` context the heavy imports (torch, NNI, Lightning) are done
    once in the fork server and every further worker starts in well under a second; the
    workers share nothing but the storage. ``process.exitcode`` is :func:`worker_command`'s.
    """
    ctx = multiprocessing.get_context(context)
    if context == "forkserver":
        ctx.set_forkserver_preload([__name__, "robustnas.search_spaces", "robustnas.plugins.evaluator"])
    process = ctx.Process(target=_process_main, args=(list(argv),), name="optuna-worker")
    process.start()
    return process
