"""Benchmark 5: search quality at equal budget, each strategy against random search, over seeds.

Every (strategy, seed) unit runs ``robustnas.plugins.compare.run_search`` on the same space
(the demo preset's ARNAS space), data and budget, and the top ``top_k`` architectures it
returns (first front of what the search measured, most robust first: the compare harness's
rule) are retrained from scratch by the harness's own ``retrain`` and measured by the same
``final`` evaluator (PGD-7 adversarial training, AutoAttack ``fast``). Budget per seed: ``budget`` candidates for random
search and Optuna NSGA-II (each trained and attacked by the ``search`` evaluator, the demo's
FGSM-RS one; NSGA-II's population is the compare default, a third of the budget, so it runs
three generations), ``budget`` subnets for TAM-NAS (population a third of the budget, three
generations, scored on its supernet), ``search_epochs`` supernet epochs of ``search_batches``
batches of 64 for ARNAS, DSRNA (Jacobian) and TAM-NAS. The median random architecture comes
from ``median_n`` further architectures per seed drawn by ``random_sample`` and retrained by
the same final evaluator.

Reported per strategy (mean over seeds, and per seed): hypervolume of the retrained top-k
over (clean accuracy up, AutoAttack accuracy up, parameters down; one reference point for the
whole run: accuracies 0, parameters 1.1 x the largest retrained model) and best AutoAttack
accuracy; for random search and NSGA-II also the hypervolume of all their candidates as the
search evaluator measured them (the front each search found, before retraining). Targets:
TAM-NAS and Optuna NSGA-II above random search on mean (retrained) hypervolume; ARNAS and
DSRNA (mean best AutoAttack accuracy) above the median random architecture. Each margin is
printed with its standard error over seeds, so a miss (or a win) smaller than the spread
between seeds reads as what it is.

Units run in ``--jobs`` single-threaded processes (default 2, one per core).

    .venv/bin/python benchmarks/bench_search_quality.py [--quick] [--jobs 2]
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "search_quality"
STRATEGIES = ("arnas", "dsrna", "tamnas", "optuna-nsga2", "random")
HV_OBJECTIVES = ("clean_acc", "robust_acc", "params")
#: Rough relative cost, to start the longest units first (better balance over the workers).
_COST_ORDER = {"random": 0, "optuna-nsga2": 1, "median": 2, "arnas": 3, "tamnas": 4, "dsrna": 5}
#: Strategies whose every candidate has search-evaluator metrics (their search-time front is scored too).
MULTI_TRIAL = ("random", "optuna-nsga2")


def settings(quick: bool) -> dict[str, Any]:
    """The budget of the comparison (the same for every strategy)."""
    from robustnas.plugins.compare import PRESETS

    demo = PRESETS["demo"]
    if quick:
        return {"space_kwargs": {"width": 4, "num_cells": 4}, "seeds": [0], "budget": 4, "top_k": 1, "median_n": 1,
                "search_epochs": 1, "search_batches": 3,
                "search": {"recipe": "fgsm-rs", "epochs": 1, "batch_size": 64, "aa_mode": "fast", "n_examples": 32},
                "final": {"recipe": "pgd", "epochs": 1, "batch_size": 64, "aa_mode": "fast", "n_examples": 32}}
    return {"space_kwargs": dict(demo["space_kwargs"]), "seeds": [0, 1, 2], "budget": 9, "top_k": 2, "median_n": 4,
            "search_epochs": 1, "search_batches": 8, "search": dict(demo["search"]), "final": dict(demo["final"])}


def _config(budget: dict[str, Any], strategy: str, out: str) -> Any:
    from robustnas.plugins.compare import CompareConfig, population_for

    return CompareConfig(
        preset="bench", dataset="digits", space="arnas", space_kwargs=dict(budget["space_kwargs"]),
        strategies=[strategy], seeds=list(budget["seeds"]), budget=budget["budget"],
        search_epochs=budget["search_epochs"], search_batches=budget["search_batches"],
        # multi-trial searches return every candidate (their search-time front); the first top_k are retrained
        top_k=budget["budget"] if strategy in MULTI_TRIAL else budget["top_k"],
        strategy_kwargs={"tamnas": {"population_size": population_for(budget["budget"]),
                                    "generations": max(1, budget["budget"] // population_for(budget["budget"])),
                                    "val_batches": 2, "bn_batches": 4}},
        search=dict(budget["search"]), final=dict(budget["final"]), out=out)


def _median_architectures(config: Any, seed: int, n: int) -> list[dict[str, Any]]:
    """``n`` architectures drawn uniformly from the space (seeds ``1000 * seed + i``), as records."""
    from robustnas.plugins.evaluator import load_dataset
    from robustnas.search_spaces import export_record, get_space, random_sample

    bundle = load_dataset(config.dataset)
    space = get_space(config.space, input_shape=tuple(bundle.input_shape), num_classes=bundle.num_classes,
                      **config.space_kwargs)
    return [export_record(space, random_sample(space, seed=1000 * seed + i)) for i in range(n)]


def run_unit(strategy: str, seed: int, budget: dict[str, Any], out: str, threads: int) -> dict[str, Any]:
    """Search once and retrain the top-k it returns (or, for ``median``, retrain random draws)."""
    import torch

    C.quiet()
    torch.set_num_threads(threads)
    from robustnas.plugins.compare import retrain, run_search

    t0 = time.perf_counter()
    try:
        config = _config(budget, "random" if strategy == "median" else strategy, str(Path(out) / f"{strategy}-{seed}"))
        Path(config.out).mkdir(parents=True, exist_ok=True)
        config.validate()
        if strategy == "median":
            found = [{"record": r, "search_metrics": {}, "search_cost": {"candidates": 0, "wall_seconds": 0.0}}
                     for r in _median_architectures(config, seed, budget["median_n"])]
            chosen = found
        else:
            with C.silenced():
                found = run_search(config, strategy, seed)
            chosen = found[: budget["top_k"]]
        rows = [{"strategy": strategy, "seed": seed, "rank": rank, "record": entry["record"],
                 "search_cost": entry["search_cost"], "metrics": retrain(config, entry["record"], seed)}
                for rank, entry in enumerate(chosen)]
        searched = [entry["search_metrics"] for entry in found] if strategy in MULTI_TRIAL else []
        return {"strategy": strategy, "seed": seed, "rows": rows, "searched": searched,
                "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - one failing unit is reported, the others still count
        return {"strategy": strategy, "seed": seed, "rows": [], "searched": [], "seconds": time.perf_counter() - t0,
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}


def hypervolume(rows: list[dict[str, Any]], reference: list[float]) -> float:
    """Hypervolume of ``rows`` as a fraction of the reference box (1 x 1 x reference parameters)."""
    from robustnas.strategies.pareto import hypervolume as hv

    if not rows:
        return 0.0
    points = [[r["metrics"][k] for k in HV_OBJECTIVES] for r in rows]
    return hv(points, reference, ["maximize", "maximize", "minimize"]) / reference[2]


def standard_error(values: list[float]) -> float | None:
    """Standard error of the mean of ``values`` (sample deviation over sqrt n); None below two values.

    For a hypervolume margin the values are per-seed differences to random search on the same
    seed (a paired comparison); for a best-AutoAttack margin they are the strategy's per-seed
    bests (the median random architecture is one fixed number).
    """
    if len(values) < 2:
        return None
    return statistics.stdev(values) / len(values) ** 0.5


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES),
                   help="strategies to run (random is always run)")
    args, info = C.start(p, argv)
    from robustnas.plugins.compare import population_for
    from robustnas.plugins.report import hypervolume_reference

    budget = settings(args.quick)
    names = [s for s in STRATEGIES if s in args.strategies or s == "random"]
    units = sorted(((s, seed) for s in [*names, "median"] for seed in budget["seeds"]),
                   key=lambda u: (_COST_ORDER[u[0]], u[1]))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            futures = [pool.submit(run_unit, s, seed, budget, tmp, args.threads) for s, seed in units]
            done = [f.result() for f in futures]
    wall = time.perf_counter() - t0

    notes = [f"{u['strategy']} seed {u['seed']} failed: {u['error']}" for u in done if "error" in u]
    all_rows = [r for u in done for r in u["rows"]]
    reference = hypervolume_reference(all_rows)
    random_all = [r for r in all_rows if r["strategy"] == "median"]
    random_median = statistics.median([r["metrics"]["robust_acc"] for r in random_all]) if random_all else float("nan")
    searched = {(u["strategy"], u["seed"]): [m for m in u["searched"] if set(HV_OBJECTIVES) <= set(m)]
                for u in done if u["searched"]}
    search_reference = hypervolume_reference([{"metrics": m} for ms in searched.values() for m in ms]) \
        if searched else None
    per: dict[str, dict[str, Any]] = {}
    for s in names:
        seeds: dict[int, dict[str, Any]] = {}
        for seed in budget["seeds"]:
            rows = sorted((r for r in all_rows if r["strategy"] == s and r["seed"] == seed), key=lambda r: r["rank"])
            if not rows:
                continue
            scored = rows[: budget["top_k"]]
            seeds[seed] = {"hypervolume": hypervolume(scored, reference),
                           "best_robust_acc": max(r["metrics"]["robust_acc"] for r in scored),
                           "best_clean_acc": max(r["metrics"]["clean_acc"] for r in scored),
                           "retrained": len(scored),
                           "candidates": rows[0]["search_cost"]["candidates"],
                           "search_seconds": rows[0]["search_cost"]["wall_seconds"]}
            if (s, seed) in searched:
                seeds[seed]["search_hypervolume"] = hypervolume(
                    [{"metrics": m} for m in searched[(s, seed)]], search_reference)
        vals = list(seeds.values())
        per[s] = {"seeds": seeds, "n_seeds": len(vals),
                  **{f"mean_{k}": (statistics.fmean(v[k] for v in vals) if vals else float("nan"))
                     for k in ("hypervolume", "best_robust_acc", "best_clean_acc", "candidates", "search_seconds")}}
        if vals and all("search_hypervolume" in v for v in vals):
            per[s]["mean_search_hypervolume"] = statistics.fmean(v["search_hypervolume"] for v in vals)
    targets = []
    for s in ("tamnas", "optuna-nsga2"):
        if s in per and per[s]["n_seeds"]:
            margin = per[s]["mean_hypervolume"] - per["random"]["mean_hypervolume"]
            paired = [v["hypervolume"] - per["random"]["seeds"][seed]["hypervolume"]
                      for seed, v in per[s]["seeds"].items() if seed in per["random"]["seeds"]]
            targets.append(C.target(f"{s} mean hypervolume minus random's", margin, 0.0, ">=",
                                    se=standard_error(paired)))
    for s in ("arnas", "dsrna"):
        if s in per and per[s]["n_seeds"]:
            margin = per[s]["mean_best_robust_acc"] - random_median
            targets.append(C.target(f"{s} mean best AutoAttack acc minus median random architecture", margin, 0.0, ">=",
                                    se=standard_error([v["best_robust_acc"] for v in per[s]["seeds"].values()])))
    for t in targets:  # strictly above: a tie is not a win
        t["met"] = t["met"] and t["value"] > 0
        t["target"] = "> 0"
    results = {"wall_seconds": wall, "hypervolume_reference": reference, "random_median_robust_acc": random_median,
               "search_hypervolume_reference": search_reference,
               "random_architectures": len(random_all), "strategies": per,
               "units": [{k: u[k] for k in ("strategy", "seed", "seconds") } | ({"error": u["error"]} if "error" in u else {})
                         for u in done],
               "rows": [{k: r[k] for k in ("strategy", "seed", "rank", "metrics")} | {"sample": r["record"]["sample"]}
                        for r in all_rows]}
    config = {**budget, "dataset": "digits", "space": "arnas", "strategies": names, "jobs": args.jobs,
              "threads_per_job": args.threads,
              "strategy_settings": {"arnas": "PGD-7, first order, search_epochs supernet epochs",
                                    "dsrna": "metric jacobian, search_epochs supernet epochs",
                                    "tamnas": (f"population {population_for(budget['budget'])}, "
                                               f"{max(1, budget['budget'] // population_for(budget['budget']))} "
                                               "generations"),
                                    "optuna-nsga2": (f"make_sampler('nsga2', seed, population_size="
                                                     f"{population_for(budget['budget'])})"),
                                    "random": "NNI Random"}}
    rows = [[s, per[s]["n_seeds"], per[s]["mean_candidates"], per[s]["mean_hypervolume"],
             100 * per[s]["mean_best_robust_acc"], 100 * per[s]["mean_best_clean_acc"], per[s]["mean_search_seconds"]]
            for s in names]
    table = (f"Search quality at equal budget on digits, ARNAS space {budget['space_kwargs']}: {budget['budget']} "
             f"candidates / {budget['search_epochs']} supernet epoch(s) of {budget['search_batches']} batches per "
             f"seed, top {budget['top_k']} retrained ({budget['final']}); seeds {budget['seeds']}; "
             f"{wall / 60:.1f} min on {args.jobs} processes",
             ["strategy", "seeds", "candidates", "hypervolume", "best AA %", "best clean %", "search s"], rows)
    C.finish(NAME, args, info, config, results, targets, notes, tables=[table], headline=(
        "mean hypervolume " + ", ".join(f"{s} {per[s]['mean_hypervolume']:.3g}" for s in names)
        + "; mean best AutoAttack " + ", ".join(f"{s} {100 * per[s]['mean_best_robust_acc']:.1f}%" for s in names)
        + f"; median random architecture {100 * random_median:.1f}%"
        + "".join(f"; search-time hypervolume {s} {per[s]['mean_search_hypervolume']:.3g}"
                  for s in MULTI_TRIAL if "mean_search_hypervolume" in per.get(s, {}))),
        lines=[f"median random architecture: AutoAttack {100 * random_median:.1f}% over {len(random_all)} retrained"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
