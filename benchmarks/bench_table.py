"""Benchmark table: one lookup against a live evaluation of the same cell, and NNI/Optuna over the table.

Measures, in one run on one machine: the seconds of ``Benchmark.query`` (median of many
lookups, isomorphic samples included) against ``Benchmark.evaluate`` (the protocol re-run on
the same cell), the speed-up between them, and the wall seconds of an NNI ``Random`` search
and an Optuna NSGA-II study of 50 trials each over the table.

    .venv/bin/python benchmarks/bench_table.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "table"
SPEEDUP_TARGET = 1e5  # a lookup should be at least this many times faster than re-training the cell


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--lookups", type=int, default=20000, help="lookups timed (default 20000)")
    args, info = C.start(p, argv)

    import numpy as np
    import optuna

    import nni.nas.strategy as strategy
    from robustnas.plugins.bench import BenchmarkObjective, TableEvaluator, load_benchmark
    from robustnas.plugins.nni import run_experiment
    from robustnas.plugins.optuna import create_study
    from robustnas.search_spaces.robust201 import all_samples, canonical_key

    bench = load_benchmark("robust201-digits")
    entry = bench.entries()[len(bench) // 2]
    members = [s for s in all_samples() if canonical_key(s) == entry["key"]]
    n = 2000 if args.quick else args.lookups
    t0 = time.perf_counter()
    for i in range(n):
        bench.query(members[i % len(members)])
    lookup = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    fresh = bench.evaluate(entry["sample"], seed=0)
    live = time.perf_counter() - t0
    speedup = live / lookup

    with C.silenced():
        t0 = time.perf_counter()
        result = run_experiment(bench.space(), strategy.Random(seed=0), TableEvaluator(), max_trial_number=50)
        nni_seconds = time.perf_counter() - t0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = BenchmarkObjective(bench)
    study = create_study(objective.objectives, sampler="nsga2", seed=0)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=50)
    optuna_seconds = time.perf_counter() - t0

    notes = [f"table holds {len(bench)} of 6466 cells; trials on cells not yet in it fail at once"] if not bench.complete else []
    results = {
        "lookup_us": lookup * 1e6, "live_evaluate_s": live, "speedup": speedup, "cell": entry["key"],
        "isomorphic_samples": len(members), "table_pgd_acc": entry["pgd_acc"], "live_pgd_acc": fresh["pgd_acc"],
        "nni_random_50_trials_s": nni_seconds,
        "nni_found": sum(r["metrics"] is not None for r in result.records),
        "optuna_nsga2_50_trials_s": optuna_seconds,
        "optuna_complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
        "table_cells": len(bench),
    }
    targets = [C.target("lookup speed-up over a live evaluation", speedup, SPEEDUP_TARGET, ">=", " x")]
    config = {"table": "robust201-digits", "lookups": n, "protocol": bench.protocol.to_dict()}
    table = ("Table lookups against the live protocol on one cell", ["what", "seconds", "pgd_acc"],
             [[f"lookup (mean of {n})", lookup, entry["pgd_acc"]], ["evaluate (seed 0)", live, fresh["pgd_acc"]],
              ["NNI Random, 50 trials", nni_seconds, ""], ["Optuna NSGA-II, 50 trials", optuna_seconds, ""]])
    C.finish(NAME, args, info, config, results, targets, notes, tables=[table], headline=(
        f"lookup {lookup * 1e6:.1f} us vs live evaluate {live:.1f} s = {speedup:,.0f} x; NNI Random 50 trials "
        f"{nni_seconds:.2f} s, Optuna NSGA-II 50 trials {optuna_seconds:.2f} s"))
    return 0 if np.isfinite(speedup) else 1


if __name__ == "__main__":
    sys.exit(main())
