"""Head to head on the table: the 20-seed multi-trial comparison's wall seconds, and one-shot
supernet epochs on the table's space against NNI's DARTS.

Measures, in one run on one machine:

- the wall seconds of ``compare_on_table`` with NNI Random, RegularizedEvolution, Optuna
  NSGA-II and TPE, 20 seeds, 100 queries each, with ``missing="fail"`` (every query is one
  lookup, as on a complete table; target: within 60 s), and the same for 3 seeds with
  ``missing="auto"`` on a partial table (misses skipped, which costs extra lookups);
- seconds per supernet epoch of ARNAS, DSRNA (Jacobian and bound), TAM-NAS and NNI DARTS on
  the ``robust201`` space with the table's data (digits, width 8): the difference between a
  3-epoch and a 1-epoch run of :func:`run_one_shot`, so fixed costs (building the supernet,
  TAM-NAS's NSGA-II over subnets, the export) cancel, reported as a ratio to DARTS.

    .venv/bin/python benchmarks/bench_table_compare.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "table_compare"
SECONDS_TARGET = 60.0  # the 20-seed multi-trial comparison on a complete table, 2 cores
MULTI_TRIAL = ["random", "evolution", "optuna-nsga2", "optuna-tpe"]
ONE_SHOT = ["darts", "arnas", "dsrna", "dsrna-bound", "tamnas"]


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    args, info = C.start(p, argv)

    from robustnas.plugins.bench import BENCH_PRESET, compare_on_table, load_benchmark, run_one_shot

    bench = load_benchmark("robust201-digits")
    seeds = list(range(5 if args.quick else 20))
    budget = 20 if args.quick else 100

    with C.silenced():
        t0 = time.perf_counter()
        failing = compare_on_table(bench, MULTI_TRIAL, seeds=seeds, budget=budget, missing="fail")
        fail_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        auto = compare_on_table(bench, MULTI_TRIAL, seeds=seeds[:3], budget=budget, missing="auto")
        auto_seconds = time.perf_counter() - t0

    per_epoch: dict[str, float] = {}
    kwargs = BENCH_PRESET["strategy_kwargs"]
    epochs = (1, 2) if args.quick else (1, 3)
    for name in ONE_SHOT:
        runs = []
        for e in epochs:
            with C.silenced():
                run = run_one_shot(bench, name, 0, epochs=e, strategy_kwargs=kwargs.get(name), missing="fail")
            runs.append(run.search_seconds)
        per_epoch[name] = (runs[1] - runs[0]) / (epochs[1] - epochs[0])
    ratios = {name: per_epoch[name] / per_epoch["darts"] for name in ONE_SHOT}

    results = {
        "multi_trial_seconds_complete_table_cost": fail_seconds,
        "multi_trial_seconds_partial_table_auto_3_seeds": auto_seconds,
        "queries_per_unit_auto": {s: auto["strategies"][s]["queries"] for s in MULTI_TRIAL},
        "units": len(MULTI_TRIAL) * len(seeds), "seeds": len(seeds), "budget": budget,
        "skipped_per_unit": {s: auto["strategies"][s]["skipped"] for s in MULTI_TRIAL},
        "wall_seconds_per_unit_fail": {s: failing["strategies"][s]["wall_seconds"]["mean"] for s in MULTI_TRIAL},
        "seconds_per_supernet_epoch": per_epoch, "epoch_ratio_to_darts": ratios,
        "table_cells": len(bench),
    }
    targets = [C.target(f"{len(seeds)}-seed multi-trial comparison, one lookup per query", fail_seconds,
                        SECONDS_TARGET, "<=", " s")]
    notes = [f"table holds {len(bench)} of {bench.size} cells; missing='fail' charges one lookup per query, "
             "the cost of a complete table"] if not bench.complete else []
    config = {"strategies": MULTI_TRIAL, "one_shot": ONE_SHOT, "epochs": list(epochs),
              "strategy_kwargs": kwargs}
    C.finish(NAME, args, info, config, results, targets, notes, headline=(
        f"{len(seeds)} seeds x {len(MULTI_TRIAL)} strategies x {budget} queries: {fail_seconds:.1f} s "
        f"({auto_seconds:.1f} s for 3 seeds skipping misses on {len(bench)} cells); supernet epoch vs DARTS: "
        + ", ".join(f"{n} {r:.1f}x" for n, r in ratios.items() if n != "darts")),
        tables=[("One-shot supernet epochs on robust201 (digits)", ["strategy", "s per epoch", "x DARTS"],
                 [[n, per_epoch[n], ratios[n]] for n in ONE_SHOT])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
