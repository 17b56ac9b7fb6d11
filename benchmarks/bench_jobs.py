"""Benchmark 9: `compare --jobs 2` on Ray against `--jobs 1` (one process), and Ray against Dask.

Part 1, the comparison: the same small comparison runs twice as ``robustnas --threads 1 compare``
processes, with ``--jobs 1`` (this process, no engine) and ``--jobs 2`` (a private local Ray
instance, one single-threaded worker per job). Reported: the wall seconds of each command (process
start, imports, the engine's start and every task included), their ratio (target >= 1.7 x on a
2-core machine), whether the two ``results.json`` agree on everything but the measured durations
(they must), the engine's start-up seconds, and the best ratio the units allow (the total task
seconds of the one-job run over the longest unit, or half the total, whichever is larger).

Part 2, the engines: in a fresh process each, a private local instance of Ray and of Dask
distributed (``LocalCluster``, worker processes) with 2 one-CPU workers: seconds to start, to run
the first 2 tasks (worker start), the median round trip of a no-op task, the CPU the idle engine
burns (cores, over 5 s), the memory of the engine's processes, and seconds to stop. An engine that
is not installed is skipped with a note.

The full comparison: ``random`` and ``optuna-nsga2`` on seeds 0 and 1 (4 units of like cost), the
demo preset's space and evaluators, budget 2, top 1. ``--quick``: a tiny comparison of seconds a
unit, to show the script works (its ratio means little: start-up dominates).

    .venv/bin/python benchmarks/bench_jobs.py [--quick] [--skip-engines]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "jobs"
TARGET = 1.7

_QUICK_EVAL = {"batch_size": 32, "aa_mode": "fast", "eps": 0.1, "recipe": "standard", "pgd_eval_steps": 5,
               "latency_repeats": 1, "escalate": False}
#: The compared comparison. Full: the demo preset's space and evaluators on 4 units of like cost.
FULL = {"preset": "demo", "strategies": ["random", "optuna-nsga2"], "seeds": [0, 1], "budget": 2, "top_k": 1}
QUICK = {"preset": "demo", "space_kwargs": {"width": 4, "num_cells": 4}, "strategies": ["random", "optuna-nsga2"],
         "seeds": [0], "budget": 2, "top_k": 1,
         "search": {**_QUICK_EVAL, "epochs": 1, "n_examples": 4},
         "final": {**_QUICK_EVAL, "epochs": 2, "n_examples": 8}}


# ---------------------------------------------------------------------------- part 2: the engines
def _noop(x: int) -> int:
    return x


def _on_main_thread(_: int) -> bool:
    """Whether a task runs on its worker's main thread (where Python lets code install signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()


def _tree() -> tuple[int, float, float]:
    """Processes, resident MB and CPU seconds of this process and all its descendants."""
    import psutil

    me = psutil.Process()
    procs, rss, cpu = 0, 0.0, 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            rss += proc.memory_info().rss / 1e6
            cpu += times.user + times.system + times.children_user + times.children_system
            procs += 1
        except psutil.Error:
            pass
    return procs, rss, cpu


def _probe(engine: str, workers: int = 2, round_trips: int = 30, idle: float = 5.0) -> dict:
    """Start ``engine`` with ``workers`` one-CPU workers and measure it (runs in its own process)."""
    t0 = time.perf_counter()
    if engine == "ray":
        import logging

        import ray

        from robustnas.plugins._parallel import _LOCAL_OBJECT_STORE_BYTES

        # The settings of robustnas.plugins._parallel.RayExecutor.
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, object_store_memory=_LOCAL_OBJECT_STORE_BYTES)
        def run(xs, fn=_noop):
            remote = ray.remote(fn).options(num_cpus=1, max_retries=0)
            return ray.get([remote.remote(x) for x in xs])

        def stop():
            ray.shutdown()
        version = ray.__version__
    else:
        import dask
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)

        def run(xs, fn=_noop):
            return client.gather(client.map(fn, xs, pure=False))

        def stop():
            client.close()
            cluster.close()
        version = dask.__version__
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(range(workers))
    first = time.perf_counter() - t0
    trips = []
    for i in range(round_trips):
        t0 = time.perf_counter()
        run([i])
        trips.append(time.perf_counter() - t0)
    main_thread = all(run(range(workers), _on_main_thread))
    procs, rss, cpu0 = _tree()
    time.sleep(idle)
    _, _, cpu1 = _tree()
    t0 = time.perf_counter()
    stop()
    return {"engine": engine, "version": version, "workers": workers, "start_seconds": start,
            "first_tasks_seconds": first, "task_round_trip_ms": 1e3 * statistics.median(trips),
            "idle_cpu_cores": (cpu1 - cpu0) / idle, "task_on_main_thread": main_thread, "processes": procs,
            "rss_mb": rss, "stop_seconds": time.perf_counter() - t0}


def _engines(notes: list[str]) -> dict:
    out = {}
    for engine, module in (("ray", "ray"), ("dask", "distributed")):
        code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
        if subprocess.call([sys.executable, "-c", code]) != 0:
            notes.append(f"{engine} is not installed: its engine probe was skipped")
            continue
        proc = subprocess.run([sys.executable, __file__, "--probe", engine], capture_output=True, text=True,
                              cwd=C.REPO_ROOT, timeout=600)
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"the {engine} probe failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        out[engine] = json.loads(line)
    return out


# ---------------------------------------------------------------------------- part 1: the comparison
def _compare(config: Path, out: Path, jobs: int, log: Path) -> dict:
    """One ``robustnas compare`` process; its wall seconds, the engine's start-up, its results."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "robustnas.plugins.cli", "--threads", "1", "compare", "--config", str(config),
           "--jobs", str(jobs), "--out", str(out)]
    t0 = time.perf_counter()
    with open(log, "w") as fh:  # stderr is a file: one progress line per finished step
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=C.REPO_ROOT, env=env)
    wall = time.perf_counter() - t0
    text = log.read_text()
    if code != 0:
        raise RuntimeError(f"compare --jobs {jobs} exited with {code}:\n{text[-3000:]}")
    ready = re.search(r"ready in ([0-9.]+) s", text)
    return {"jobs": jobs, "wall_seconds": wall, "engine_start_seconds": float(ready[1]) if ready else None,
            "results": json.loads((out / "results.json").read_text())}


def _units(results: dict) -> dict[str, float]:
    """Seconds of each unit's tasks (its search, then its retrainings), from results.json."""
    units: dict[str, float] = {}
    for row in results["rows"]:
        key = f"{row['strategy']} seed {row['seed']}"
        m = row["metrics"]
        units.setdefault(key, row["search_cost"]["wall_seconds"])
        units[key] += m["train_seconds"] + m["eval_seconds"]
    return units


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--skip-engines", action="store_true", help="skip part 2 (Ray against Dask)")
    p.add_argument("--probe", choices=["ray", "dask"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:  # a child process of part 2
        print(json.dumps(_probe(args.probe)), flush=True)
        return 0
    C.setup(args)
    from robustnas.plugins.compare import CompareConfig, without_times

    info = C.machine()
    notes: list[str] = []
    options = QUICK if args.quick else FULL
    CompareConfig.from_options({**options, "out": "unused", "jobs": 2})  # bad options fail here, before any run
    import yaml

    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        config = Path(tmp) / "compare.yaml"
        config.write_text(yaml.safe_dump(options))
        runs = {jobs: _compare(config, Path(tmp) / f"jobs{jobs}", jobs, Path(tmp) / f"jobs{jobs}.log")
                for jobs in (1, 2)}
    identical = all(without_times(runs[1]["results"][k]) == without_times(runs[2]["results"][k])
                    for k in ("fingerprint", "done", "rows", "failures"))
    if not identical:
        notes.append("the --jobs 2 results differ from the --jobs 1 results (beyond measured durations)")
    units = _units(runs[1]["results"])
    units_two = _units(runs[2]["results"])  # longer than units: the two jobs slowed each other (or others did)
    total = sum(units.values())
    ideal = total / max(total / 2, max(units.values()))
    speedup = runs[1]["wall_seconds"] / runs[2]["wall_seconds"]
    engines = {} if args.skip_engines else _engines(notes)
    for r in runs.values():
        r["rows"] = len(r.pop("results")["rows"])
    targets = [C.target("wall time, compare --jobs 1 over --jobs 2", speedup, TARGET, ">=", " x"),
               C.target("results identical to --jobs 1 (1 = yes)", float(identical), 1.0, ">=")]
    results = {"speedup": speedup, "identical": identical, "one_job": runs[1], "two_jobs": runs[2],
               "unit_task_seconds": units, "unit_task_seconds_two_jobs": units_two, "ideal_speedup": ideal,
               "engines": engines}
    cfg = {"compare": options, "threads_per_process": 1, "engine": "ray (robustnas.plugins._parallel)"}
    tables = [(f"compare --jobs 1 against --jobs 2 ({len(units)} units)", ["run", "wall s", "engine start s", "rows"],
               [[f"--jobs {k}", r["wall_seconds"], r["engine_start_seconds"] or "-", r["rows"]]
                for k, r in runs.items()]),
              ("task seconds of each unit (search, then retraining)", ["unit", "--jobs 1", "--jobs 2"],
               [[u, s, units_two.get(u, "-")] for u, s in units.items()])]
    if engines:
        tables.append(("engines, 2 one-CPU workers (fresh process each)",
                       ["engine", "version", "start s", "first 2 tasks s", "round trip ms", "idle cores",
                        "processes", "RSS MB", "stop s", "task on main thread"],
                       [[e["engine"], e["version"], e["start_seconds"], e["first_tasks_seconds"],
                         e["task_round_trip_ms"], e["idle_cpu_cores"], e["processes"], e["rss_mb"], e["stop_seconds"],
                         e["task_on_main_thread"]] for e in engines.values()]))
    C.finish(NAME, args, info, cfg, results, targets, notes, tables=tables, headline=(
        f"--jobs 2 {runs[2]['wall_seconds']:.1f} s vs --jobs 1 {runs[1]['wall_seconds']:.1f} s = {speedup:.2f} x "
        f"(units allow {ideal:.2f} x; Ray ready in {runs[2]['engine_start_seconds']} s); "
        f"results {'identical' if identical else 'DIFFERENT'}"))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
