"""Benchmark 6: scale-out, 2 Optuna workers on one journal file against 1 worker.

The same N architectures (drawn once by a seeded random sampler and enqueued as WAITING
trials, so both runs do exactly the same work) are evaluated by ``robustnas optuna-worker``
processes (``python -m robustnas.plugins.optuna``) sharing one Optuna journal file: first by
one worker, then by two. Each worker is a single-threaded process (OMP_NUM_THREADS=1, one
core). Reported: trials per minute over the span from the first trial start to the last
trial end (from the storage's timestamps), and over the whole wall time including process
start-up. Target: 2 workers >= 1.6 x the trials per minute of 1 worker.

Per-trial evaluator settings are the demo preset's ``search`` settings with 1 training
epoch and 32 attacked points, to keep the run within the ``make bench`` budget.

    .venv/bin/python benchmarks/bench_scaleout.py [--quick] [--trials N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "scaleout"
TARGET = 1.6
STUDY = "scaleout"


def _enqueue(storage: str, space, n: int, seed: int) -> list[dict]:
    """Create the study and enqueue ``n`` seeded random architectures; returns their params."""
    import optuna

    from robustnas.plugins.optuna import create_study, suggest_architecture

    draft = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    params = []
    for _ in range(n):
        trial = draft.ask()
        suggest_architecture(trial, space)
        params.append(dict(trial.params))
    study = create_study(("clean_acc", "robust_acc", "params"), storage=storage, study_name=STUDY,
                         sampler="random", seed=seed)
    for p in params:
        study.enqueue_trial(p, skip_if_exists=False)
    return params


def _run_workers(k: int, storage: str, n: int, space_args: list[str], evaluator: dict, log_dir: Path) -> dict:
    """Start ``k`` workers on ``storage``, wait for them, read the trial timestamps back."""
    import optuna

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, "-m", "robustnas.plugins.optuna", "--study", STUDY, "--storage", storage,
            "--n-trials", str(n), "--sampler", "random", "--log-level", "WARNING", "--poll", "0.5"]
    for a in space_args:
        base += ["--space-arg", a]
    for key, value in evaluator.items():
        base += ["--eval-arg", f"{key}={value}"]
    t0 = time.perf_counter()
    procs = []
    for i in range(k):
        log = open(log_dir / f"worker{k}-{i}.log", "w")
        procs.append((subprocess.Popen([*base, "--worker-index", str(i), "--seed", str(i)], env=env,
                                       stdout=log, stderr=subprocess.STDOUT, cwd=C.REPO_ROOT), log))
    codes = []
    for proc, log in procs:
        codes.append(proc.wait())
        log.close()
    wall = time.perf_counter() - t0
    if any(codes):
        tails = "\n".join((log_dir / f"worker{k}-{i}.log").read_text()[-2000:] for i in range(k))
        raise RuntimeError(f"worker exit codes {codes}; log tails:\n{tails}")
    study = optuna.load_study(study_name=STUDY, storage=_open(storage))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    per_trial = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    by_worker: dict[str, int] = {}
    for t in done:
        name = t.system_attrs.get("robustnas:worker", "?")
        by_worker[name] = by_worker.get(name, 0) + 1
    return {"workers": k, "complete": len(done), "wall_seconds": wall, "span_seconds": span,
            "trials_per_minute_span": 60.0 * len(done) / span, "trials_per_minute_wall": 60.0 * len(done) / wall,
            "mean_trial_seconds": sum(per_trial) / len(per_trial), "trials_by_worker": sorted(by_worker.values()),
            "params": sorted(str(sorted(t.params.items())) for t in done)}


def _open(storage: str):
    from robustnas.plugins.optuna import open_storage

    return open_storage(storage)


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="trials per run, even (6; quick 2)")
    args, info = C.start(p, argv)

    from robustnas.plugins.compare import PRESETS
    from robustnas.plugins.evaluator import load_dataset
    from robustnas.search_spaces import get_space

    n = args.trials or (2 if args.quick else 6)
    evaluator = {**PRESETS["demo"]["search"], "epochs": 1, "n_examples": 16 if args.quick else 32,
                 "dataset": "digits"}
    bundle = load_dataset("digits")
    space_kwargs, notes = C.demo_space_kwargs("arnas", bundle)
    space = get_space("arnas", **space_kwargs)
    space_args = [f"{k}={v}" for k, v in space_kwargs.items() if k in ("width", "num_cells")]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        for k in (1, 2):
            storage = f"journal://{Path(tmp) / f'{k}w.journal'}"
            _enqueue(storage, space, n, seed=0)
            runs[k] = _run_workers(k, storage, n, space_args, evaluator, Path(tmp))
    if runs[1]["params"] != runs[2]["params"]:
        notes.append("the two runs did not evaluate the same architectures (a worker sampled beyond the queue)")
    speedup = runs[2]["trials_per_minute_span"] / runs[1]["trials_per_minute_span"]
    speedup_wall = runs[2]["trials_per_minute_wall"] / runs[1]["trials_per_minute_wall"]
    for r in runs.values():
        r.pop("params")
    targets = [C.target("trials/min 2 workers over 1 worker", speedup, TARGET, ">=", " x")]
    results = {"speedup": speedup, "speedup_wall": speedup_wall, "one_worker": runs[1], "two_workers": runs[2]}
    config = {"trials": n, "space": "arnas", "space_kwargs": space_kwargs, "evaluator": evaluator,
              "storage": "Optuna JournalFileBackend (one file per run)", "threads_per_worker": 1,
              "architectures": "the same n seeded random architectures enqueued in both runs"}
    rows = [[f"{k} worker(s)", r["complete"], r["span_seconds"], r["trials_per_minute_span"],
             r["wall_seconds"], r["trials_per_minute_wall"], r["mean_trial_seconds"], r["trials_by_worker"]]
            for k, r in runs.items()]
    table = (f"Scale-out: {n} trials (same architectures) on one journal file, evaluator {evaluator}",
             ["run", "trials", "span s", "trials/min", "wall s", "trials/min (wall)", "s/trial", "per worker"], rows)
    C.finish(NAME, args, info, config, results, targets, notes, tables=[table], headline=(
        f"2 workers {runs[2]['trials_per_minute_span']:.2f} trials/min vs 1 worker "
        f"{runs[1]['trials_per_minute_span']:.2f} = {speedup:.2f} x ({n} trials)"),
        lines=[f"speed-up {speedup:.2f} x (first start to last end), {speedup_wall:.2f} x (wall, with start-up)"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
