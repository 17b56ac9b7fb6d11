"""Benchmark 8: one-shot diagnostics on the robust201-digits table (docs/benchmark.md, "Diagnostics").

Each one-shot strategy (NNI's DARTS, ARNAS, DSRNA with its Jacobian and with its bound metric,
TAM-NAS) trains its supernet on the table's data (digits, the protocol's split seed) and space
(robust201, width 8, one cell per stage) through the real NNI path, as ``compare_on_table`` runs it
(``robustnas.plugins.bench.run_one_shot``: batch 64, every training batch each epoch), once per seed
(Python, NumPy and torch seeded with ``seed`` before the space is built; TAM-NAS also gets
``seed``). Then, with ``robustnas.plugins.bench._diagnostics``:

1. Kendall's tau between the supernet's own scores of the table's cells (log-probability under
   the architecture weights; TAM-NAS: PGD accuracy with inherited weights) and the table's PGD
   accuracy, over up to 100 cells the table holds (all of them while it holds fewer);
2. the share of parameter-free edges (none, skip_connect, avg_pool_3x3) in each export, as chosen
   and mapped to its isomorphism class's representative (the form of the table's cells),
   against the table's top 5 % and all its cells;
3. DSRNA's Jacobian term and interval bound of every held cell's network at initialisation, as
   the protocol builds it, and their Spearman correlation with the table's PGD accuracy,
   beside the parameter count as the baseline proxy.

Descriptive: no target. Writes ``benchmarks/results/diagnostics.json``.

    .venv/bin/python benchmarks/bench_diagnostics.py [--quick] [--seeds 0 1 2] [--epochs 5]

Defaults: 5 epochs, seeds 0, 1, 2: 931 s measured on one thread of the project's 2-core machine
under a load average of 5 to 6 (one seed took 150 s at a load of 4; ``--seeds 0`` is the
few-minute run). ``--quick``: 1 epoch of 4 batches, seed 0, 20 cells (under a minute).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "diagnostics"
EPOCHS = 5
SEEDS = (0, 1, 2)
RANK_CELLS = 100
TOP = 0.05
PGD_STEPS = C.ONE_SHOT_PGD_STEPS

#: name -> (registry name, keyword arguments).
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    **C.ONE_SHOT_RUNS,
    "tamnas": ("tamnas", {"attack_steps": PGD_STEPS, "population_size": 8, "generations": 3}),
}
#: name -> its name among ``robustnas.plugins.bench.ONE_SHOT_ON_TABLE``.
ON_TABLE = {"darts": "darts", "arnas": "arnas", "dsrna-jacobian": "dsrna", "dsrna-bound": "dsrna-bound",
            "tamnas": "tamnas"}


def search(bench: Any, name: str, seed: int, epochs: int, batches: int | None,
           quick: bool) -> tuple[Any, dict[str, Any], float]:
    """Train one strategy's supernet on the table's data and space (:func:`run_one_shot`, which
    gives the threat-aware ones the table's threat model and TAM-NAS ``seed``); returns
    (strategy, NNI's top export, seconds)."""
    from robustnas.plugins.bench import run_one_shot

    kwargs = dict(RUNS[name][1])
    if name == "tamnas" and quick:
        kwargs.update(population_size=4, generations=1)
    with C.silenced():
        run = run_one_shot(bench, ON_TABLE[name], seed, epochs=epochs, batches=batches, strategy_kwargs=kwargs,
                           missing="fail")
    return run.strategy, run.exported[0], run.search_seconds


def gamma_summary(strategy: Any) -> dict[str, Any] | None:
    """ARNAS's MGDA weight of the natural-loss gradient over its architecture steps."""
    history = list(getattr(strategy, "gamma_history", []) or [])
    if not history:
        return None
    return {"steps": len(history), "mean": sum(history) / len(history), "min": min(history), "max": max(history),
            "share_zero": sum(g == 0.0 for g in history) / len(history),
            "share_one": sum(g == 1.0 for g in history) / len(history)}


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                   help=f"search seeds per strategy (default: {' '.join(map(str, SEEDS))}; --quick: 0)")
    p.add_argument("--epochs", type=int, default=None, help=f"supernet epochs (default {EPOCHS}; --quick: 1)")
    args, info = C.start(p, argv)

    from robustnas.plugins.bench import load_benchmark
    from robustnas.plugins.bench._diagnostics import (
        parameter_free_share, ranking_agreement, table_cells, table_parameter_free_share, zero_cost_proxies,
    )
    from robustnas.plugins.evaluator import load_dataset

    bench = load_benchmark("robust201-digits")
    protocol = bench.protocol
    bundle = load_dataset(protocol.dataset, seed=protocol.data_seed)
    epochs = args.epochs or (1 if args.quick else EPOCHS)
    seeds = [0] if args.quick and args.seeds == list(SEEDS) else args.seeds
    batches = 4 if args.quick else None
    n_rank = 20 if args.quick else RANK_CELLS
    cells = table_cells(bench, n=n_rank, seed=0)
    t_start = time.perf_counter()

    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for name in RUNS:
            strategy, export, search_seconds = search(bench, name, seed, epochs, batches, args.quick)
            t0 = time.perf_counter()
            extra: dict[str, Any] = {}
            if hasattr(strategy, "evaluate_subnet"):
                # TAM-NAS: supernet_scores(strategy, cells) is the inherited PGD accuracy of each cell;
                # one scoring gives its inherited clean accuracy too, ranked against the same table metric
                scored = [strategy.evaluate_subnet(cell) for cell in cells]
                ranking = ranking_agreement(bench, [m["pgd_acc"] for m in scored], samples=cells, metric="pgd_acc")
                extra["ranking_by_inherited_clean_acc"] = ranking_agreement(
                    bench, [m["clean_acc"] for m in scored], samples=cells, metric="pgd_acc")
            else:
                ranking = ranking_agreement(bench, strategy, samples=cells, metric="pgd_acc")
            score_seconds = time.perf_counter() - t0
            held = export in bench
            run = {
                "strategy": name, "seed": seed, "search_seconds": search_seconds, "score_seconds": score_seconds,
                "ranking": ranking, "export": export, "export_key": bench.key(export), "export_in_table": held,
                "export_pgd_acc": bench.query(export)["pgd_acc"] if held else None,
                "export_share": parameter_free_share([export]),
                "export_share_canonical": parameter_free_share([export], canonical=True),
            }
            run.update(extra)
            gamma = gamma_summary(strategy)
            if gamma is not None:
                run["arnas_gamma"] = gamma
            runs.append(run)
            print(f"  {name} seed {seed}: searched {search_seconds:.1f} s, tau {ranking['kendall_tau']} "
                  f"(p {ranking['p_value']}, n {ranking['n']}), scored in {score_seconds:.1f} s", flush=True)

    per_strategy: dict[str, dict[str, Any]] = {}
    for name in RUNS:
        mine = [r for r in runs if r["strategy"] == name]
        taus = [r["ranking"]["kendall_tau"] for r in mine if r["ranking"]["kendall_tau"] is not None]
        per_strategy[name] = {
            "seeds": len(mine), "kendall_tau_mean": sum(taus) / len(taus) if taus else None,
            "kendall_tau_range": [min(taus), max(taus)] if taus else None,
            "exports_share": parameter_free_share([r["export"] for r in mine]),
            "exports_share_canonical": parameter_free_share([r["export"] for r in mine], canonical=True),
        }
    table_share = table_parameter_free_share(bench, metric="pgd_acc", top=TOP)
    t0 = time.perf_counter()
    proxies = zero_cost_proxies(bench, metric="pgd_acc", cells=cells[:20] if args.quick else None, seed=0)
    proxy_seconds = time.perf_counter() - t0
    total = time.perf_counter() - t_start

    notes = []
    if not bench.complete:
        notes.append(f"the table is partial: {len(bench)} of 6466 cells (a uniform random subset); rankings use "
                     f"{len(cells)} cells, the zero-cost proxies {proxies['n']}")
    notes.append("table_noise: the table's own seed-to-seed rank agreement of pgd_acc (Kendall tau of seed 0 against "
                 "seeds 1 and 2 on the cells with three seeds): the tau that retraining every cell with another seed "
                 "reaches, a reference for a supernet's tau")
    notes.append("parameter-free edges: none, skip_connect, avg_pool_3x3; the table's cells are their isomorphism "
                 "classes' representatives (fewest convolution weights), so exports are compared in that form too "
                 "(export_share_canonical); export_share is the export as the strategy chose it")
    notes.append("supernet score: sum over the 6 edges of log softmax(alpha)[op] (DARTS-style); TAM-NAS: PGD-10 "
                 "accuracy with inherited, BN-recalibrated weights on its 4 validation batches (and, as "
                 "ranking_by_inherited_clean_acc, its inherited clean accuracy); TAM-NAS's export is NNI's top model, "
                 "its first-front member with the highest inherited PGD accuracy, then clean accuracy, then fewest params")
    notes.append("zero-cost rho is for the proxy oriented larger = more robust (-jacobian_norm, bound) and params; "
                 "rho > 0: the proxy predicts the table's PGD accuracy")
    config = {
        "table": bench.name, "table_cells": len(bench), "rank_cells": len(cells), "metric": "pgd_acc",
        "epochs": epochs, "limit_train_batches": batches, "batch_size": 64, "seeds": seeds,
        "runs": {k: {"registry": v[0], **v[1]} for k, v in RUNS.items()}, "top": TOP,
        "threat": {"norm": bundle.threat.norm, "eps": bundle.threat.eps},
        "proxies": proxies["settings"],
    }
    noise = bench.noise()
    results = {"runs": runs, "per_strategy": per_strategy, "table_share": table_share, "zero_cost": proxies,
               "table_noise": {"cells": noise["cells"], **noise.get("metrics", {}).get("pgd_acc", {})},
               "seconds": {"total": total, "proxies": proxy_seconds}}
    rho = proxies["spearman"]
    headline = (f"Kendall tau (supernet vs table pgd_acc, n={len(cells)}): "
                + ", ".join(f"{k} {v['kendall_tau_mean']:.2f}" for k, v in per_strategy.items()
                            if v["kendall_tau_mean"] is not None)
                + f"; zero-cost Spearman (n={proxies['n']}): jacobian {rho['jacobian']['rho']:.2f}, "
                  f"bound {rho['bound']['rho']:.2f}, params {rho['params']['rho']:.2f}")
    share_rows = []
    for name, s in per_strategy.items():
        c = s["exports_share_canonical"]
        share_rows.append([f"exports {name} (canon.)", c["edges"], c["parameter_free"], c["none"], c["skip_connect"],
                           c["avg_pool_3x3"]])
    for label, part in ((f"table top {TOP:.0%} ({table_share['top']['cells']} cells)", table_share["top"]),
                        (f"table, all {table_share['all']['cells']} cells", table_share["all"])):
        share_rows.append([label, part["edges"], part["parameter_free"], part["none"], part["skip_connect"],
                           part["avg_pool_3x3"]])
    tables = [
        (f"Supernet ranking vs the table (pgd_acc), {epochs} epoch(s), n = {len(cells)} of {len(bench)} held cells",
         ["strategy", "seed", "search s", "tau", "p", "spearman", "top cell pgd", "pct",
          "export pf", "export pf (canon.)", "export pgd"],
         [[r["strategy"], r["seed"], r["search_seconds"], r["ranking"]["kendall_tau"], r["ranking"]["p_value"],
           r["ranking"]["spearman"], r["ranking"]["top_cell"]["pgd_acc"],
           r["ranking"]["top_cell"]["percentile"], r["export_share"]["parameter_free"],
           r["export_share_canonical"]["parameter_free"],
           "-" if r["export_pgd_acc"] is None else r["export_pgd_acc"]] for r in runs]),
        (f"Per strategy over {len(seeds)} seed(s)",
         ["strategy", "tau mean", "tau min", "tau max", "exports pf", "exports pf (canon.)"],
         [[name, v["kendall_tau_mean"], *(v["kendall_tau_range"] or [None, None]),
           v["exports_share"]["parameter_free"], v["exports_share_canonical"]["parameter_free"]]
          for name, v in per_strategy.items()]),
        ("Share of parameter-free edges", ["cells", "edges", "param-free", "none", "skip", "avg_pool"], share_rows),
        (f"Zero-cost proxies at initialisation vs the table's pgd_acc (n = {proxies['n']}, {proxy_seconds:.1f} s)",
         ["proxy (larger = more robust)", "spearman rho", "p"],
         [["-jacobian_norm (DSRNA R_jacobian)", rho["jacobian"]["rho"], rho["jacobian"]["p_value"]],
          ["bound (DSRNA R_bound, IBP)", rho["bound"]["rho"], rho["bound"]["p_value"]],
          ["params (baseline)", rho["params"]["rho"], rho["params"]["p_value"]]]),
    ]
    lines = []
    for r in runs:
        if "arnas_gamma" in r:
            g = r["arnas_gamma"]
            lines.append(f"ARNAS seed {r['seed']}: MGDA gamma mean {g['mean']:.3f} over {g['steps']} steps, "
                         f"0 at {g['share_zero']:.0%} of them, 1 at {g['share_one']:.0%}")
    for r in runs:
        if "ranking_by_inherited_clean_acc" in r:
            c = r["ranking_by_inherited_clean_acc"]
            lines.append(f"{r['strategy']} seed {r['seed']}: inherited PGD accuracy takes "
                         f"{r['ranking']['distinct_scores']} distinct values over the cells; ranked by inherited "
                         f"clean accuracy instead: tau {c['kendall_tau']:.3f} (p {c['p_value']:.3g}, "
                         f"{c['distinct_scores']} distinct values)")
    if noise.get("metrics"):
        lines.append(f"the table's own seed-to-seed Kendall tau of pgd_acc: "
                     f"{noise['metrics']['pgd_acc']['kendall_tau']:.2f} ({noise['cells']} cells with 3 seeds)")
    lines.append(f"total {total:.0f} s")
    C.finish(NAME, args, info, config, results, [], notes, headline=headline, tables=tables, lines=lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
