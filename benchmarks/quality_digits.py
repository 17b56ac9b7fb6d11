"""Search quality on digits: the architectures ARNAS, DSRNA and TAM-NAS return against random ones.

Each of the three strategies searches the ARNAS space on scikit-learn's digits (input
(1, 8, 8), the demo preset's space arguments: width 8, 4 cells) with one stated budget,
through ``robustnas.plugins.compare.run_search`` (one-shot strategies inside an NNI
experiment, with the run's threat model); its top-1 architecture (``run_search``'s ranking)
is kept. Five random architectures of the same space are drawn with
``random_sample(space, seed=i)``, i = 0..4. All eight are retrained from scratch by ONE
final evaluator configuration (PGD adversarial training, AutoAttack ``fast``; initial
weights seeded by ``--seed``) and measured: clean accuracy, PGD-20 accuracy, AutoAttack
accuracy, parameters. ``--tiny`` adds a second, separate row group: TAM-NAS on its own
``tiny`` space against five random ``tiny`` architectures, retrained by the same recipe.

Writes the table, the command, the machine, the budgets and a reading to ``--out``
(``docs/results.md``) and the raw numbers to ``benchmarks/results/quality_digits.json``.

    .venv/bin/python benchmarks/quality_digits.py [--quick] [--seed 0] [--tiny] [--out docs/results.md]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from robustnas.plugins._io import write_text_atomic  # noqa: E402

NAME = "quality_digits"
SEARCHED = {"arnas": "ARNAS", "dsrna": "DSRNA", "tamnas": "TAM-NAS"}
N_RANDOM = 5
#: Above this 1-minute load average the script runs torch single-threaded (a shared machine).
HIGH_LOAD = 3.0
COLUMNS = ("clean_acc", "pgd_acc", "robust_acc", "params")


def settings(quick: bool) -> dict[str, Any]:
    """The budgets: the same space, search and final evaluator for every architecture."""
    from robustnas.plugins.compare import PRESETS

    demo = PRESETS["demo"]
    final = {"recipe": "pgd", "epochs": 8, "batch_size": 64, "aa_mode": "fast", "n_examples": 200}
    tamnas = {"population_size": 6, "generations": 3, "val_batches": 2, "bn_batches": 4}
    budget = {"search_epochs": 2, "search_batches": 17}  # 17 batches of 64 = one epoch of digits' 1078 points
    if quick:
        final = {**final, "epochs": 1, "n_examples": 32}
        tamnas = {"population_size": 2, "generations": 1, "val_batches": 1, "bn_batches": 1}
        budget = {"search_epochs": 1, "search_batches": 2}
    return {
        "dataset": "digits",
        "space": "arnas",
        "space_kwargs": dict(demo["space_kwargs"]),
        **budget,
        "dsrna": {"metric": "jacobian"},
        "tamnas": tamnas,
        # one-shot strategies only take the bundle and threat model from the search evaluator
        "search": dict(demo["search"]),
        "final": final,
        "random_seeds": list(range(N_RANDOM)),
    }


def compare_config(budget: dict[str, Any], strategy: str, seed: int, space: str, space_kwargs: dict[str, Any],
                   out: str) -> Any:
    """The comparison settings of one strategy's search; every retraining uses their ``final`` part."""
    from robustnas.plugins.compare import CompareConfig

    kwargs = {"dsrna": dict(budget["dsrna"]), "tamnas": {**budget["tamnas"], "seed": seed}}
    config = CompareConfig(
        preset="quality-digits", dataset=budget["dataset"], space=space, space_kwargs=dict(space_kwargs),
        strategies=[strategy], strategy_kwargs=kwargs, seeds=[seed], search_epochs=budget["search_epochs"],
        search_batches=budget["search_batches"], top_k=1, search=dict(budget["search"]),
        final=dict(budget["final"]), out=out)
    config.validate()
    return config


def search(config: Any, strategy: str, seed: int) -> dict[str, Any]:
    """Top-1 entry of one ``run_search`` (``{"record", "search_metrics", "search_cost"}``)."""
    from robustnas.plugins.compare import run_search

    found = run_search(config, strategy, seed)
    if not found:
        raise RuntimeError(f"{strategy} returned no architecture")
    return found[0]


def random_records(space_name: str, space_kwargs: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """``random_sample(space, seed=i)`` for each seed, as JSON records."""
    from robustnas.search_spaces import export_record, get_space, random_sample

    space = get_space(space_name, **space_kwargs)
    return [export_record(space, random_sample(space, seed=i)) for i in seeds]


def run_group(title: str, space_name: str, space_kwargs: dict[str, Any], strategies: list[str],
              budget: dict[str, Any], seed: int, tmp: str) -> dict[str, Any]:
    """Search with ``strategies``, draw the random architectures, retrain all (``compare.retrain``,
    with the budget's ``final`` settings); rows and verdicts."""
    from robustnas.plugins.compare import retrain

    rows: list[dict[str, Any]] = []
    configs = {s: compare_config(budget, s, seed, space_name, space_kwargs, str(Path(tmp) / f"{space_name}-{s}"))
               for s in strategies}
    for strategy, config in configs.items():
        print(f"[{title}] {SEARCHED[strategy]}: search", flush=True)
        entry = search(config, strategy, seed)
        print(f"[{title}] {SEARCHED[strategy]}: retrain ({entry['search_cost']['wall_seconds']:.0f} s search)",
              flush=True)
        rows.append({"name": SEARCHED[strategy], "kind": "searched", "strategy": strategy,
                     "record": entry["record"], "search_metrics": entry["search_metrics"],
                     "search_cost": entry["search_cost"], "metrics": retrain(config, entry["record"], seed)})
    settings_of_final = configs[strategies[0]]  # every strategy's config holds the same final settings
    base = {"input_shape": [1, 8, 8], "num_classes": 10, **space_kwargs}
    for i, record in zip(budget["random_seeds"], random_records(space_name, base, budget["random_seeds"])):
        print(f"[{title}] random #{i}: retrain", flush=True)
        rows.append({"name": f"random #{i}", "kind": "random", "random_seed": i, "record": record,
                     "metrics": retrain(settings_of_final, record, seed)})
    randoms = [r["metrics"] for r in rows if r["kind"] == "random"]
    median = {k: float(statistics.median(m[k] for m in randoms)) for k in COLUMNS}
    n = rows[0]["metrics"]["n_examples"]
    # binomial standard error of an AutoAttack accuracy near the median random's, in points
    se = 100 * math.sqrt(max(median["robust_acc"] * (1 - median["robust_acc"]), 1e-12) / n)
    for r in rows:
        if r["kind"] == "searched":
            margin = 100 * (r["metrics"]["robust_acc"] - median["robust_acc"])
            r["beats_median_random_aa"] = bool(margin > 0)
            r["aa_margin_points"] = round(margin, 2)
    return {"title": title, "space": space_name, "space_kwargs": base, "rows": rows, "random_median": median,
            "random_robust_range": [min(m["robust_acc"] for m in randoms), max(m["robust_acc"] for m in randoms)],
            "aa_standard_error_points": round(se, 2)}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(group: dict[str, Any]) -> list[str]:
    """The Markdown table of one row group."""
    lines = ["| architecture | clean acc % | PGD-20 acc % | AutoAttack acc % | params | search s "
             "| beats median random on AutoAttack |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in group["rows"]:
        m = r["metrics"]
        if r["kind"] == "searched":
            verdict = (f"{'yes' if r['beats_median_random_aa'] else 'no'} "
                       f"({r['aa_margin_points']:+.1f} points)")
            secs = f"{r['search_cost']['wall_seconds']:.0f}"
        else:
            verdict, secs = "", "-"
        lines.append(f"| {r['name']} | {_pct(m['clean_acc'])} | {_pct(m['pgd_acc'])} | {_pct(m['robust_acc'])} "
                     f"| {m['params']:,} | {secs} | {verdict} |")
    med = group["random_median"]
    lines.append(f"| **random median** | {_pct(med['clean_acc'])} | {_pct(med['pgd_acc'])} "
                 f"| {_pct(med['robust_acc'])} | {int(med['params']):,} | - | |")
    return lines


def reading(group: dict[str, Any]) -> str:
    """A factual reading of one group's numbers against the noise of one seed."""
    searched = [r for r in group["rows"] if r["kind"] == "searched"]
    wins = [r["name"] for r in searched if r["beats_median_random_aa"]]
    se, (lo, hi) = group["aa_standard_error_points"], group["random_robust_range"]
    se_diff = math.sqrt(2) * se  # standard error of the difference of two such accuracies
    clear = [r["name"] for r in searched if abs(r["aa_margin_points"]) > 2 * se_diff]
    text = (f"{len(wins)} of {len(searched)} searched architecture(s) beat the median random architecture on "
            f"AutoAttack accuracy ({', '.join(wins) if wins else 'none'}). The five random architectures "
            f"span {_pct(lo)}-{_pct(hi)}% AutoAttack accuracy; one AutoAttack accuracy on "
            f"{searched[0]['metrics']['n_examples']} test points has a binomial standard error of about "
            f"{se:.1f} points, a difference of two about {se_diff:.1f}. ")
    text += (f"Margins above two standard errors of a difference ({2 * se_diff:.1f} points): {', '.join(clear)}."
             if clear else f"No searched architecture differs from the median random one by more than two "
                           f"standard errors of a difference ({2 * se_diff:.1f} points).")
    med_params = group["random_median"]["params"]
    text += " Size: " + ", ".join(
        f"{r['name']} {r['metrics']['params']:,} parameters ({r['metrics']['params'] / med_params:.2f} x the median "
        "random)" for r in searched) + "."
    for r in searched:
        if "robust_acc" not in r["search_metrics"] and r["search_cost"]["candidates"] > 1:
            text += (f" {r['name']}'s top-1 is the first of its search front as the strategy orders it (its "
                     "supernet scores carry no `robust_acc`, so `run_search` keeps that order"
                     + ("; TAM-NAS sorts its front by size, so this is the smallest network on the front"
                        if r["strategy"] == "tamnas" else "") + "), scored on the supernet "
                     f"at clean {_pct(r['search_metrics'].get('clean_acc', float('nan')))}% / PGD "
                     f"{_pct(r['search_metrics'].get('pgd_acc', float('nan')))}%.")
    near_chance = [r["name"] for r in group["rows"] if r["metrics"]["clean_acc"] < 0.2]
    if near_chance:
        text += (f" Clean accuracy near chance (10 classes) for {', '.join(near_chance)}: these networks "
                 "did not learn, and their robust accuracies say nothing about robustness.")
    return text


def markdown(data: dict[str, Any]) -> str:
    """The whole ``docs/results.md`` page from the JSON result."""
    cfg, info, res = data["config"], data["machine"], data["results"]
    quick = data["quick"]
    final = cfg["final"]
    lines = [
        "# Results: searched against random architectures on digits",
        "",
        *(["> **QUICK RUN (`--quick`, minimal budgets): these numbers check the script, they say nothing "
           "about the strategies.**", ""] if quick else []),
        "The architectures that ARNAS, DSRNA and TAM-NAS return, and five random architectures of the "
        "same space, each retrained from scratch by the shared evaluator with one recipe and measured "
        "on the same test points.",
        "",
        "Command (from the repository root):",
        "",
        "```",
        data["command"],
        "```",
        "",
        f"- date (UTC): {data['date']}; total wall time {res['wall_seconds'] / 60:.1f} min",
        f"- machine: {info['cpu']}, nproc {info['usable_cores']} ({info['cores']} cores), torch {info['torch']} "
        f"with {info['torch_threads']} thread(s) ({res['threads_reason']}), python {info['python']}; "
        f"load average (1/5/15 min) at start {info['loadavg_start']}, at end {info['loadavg_end']} "
        "(a machine shared with other work)",
        f"- data: scikit-learn digits (input 1x8x8, 10 classes), threat model "
        f"{res['groups'][0]['rows'][0]['metrics']['norm']} eps {res['groups'][0]['rows'][0]['metrics']['eps']} "
        "(the dataset's default)",
        f"- space: `{cfg['space']}` {cfg['space_kwargs']} for every architecture of the main table",
        f"- search budget (each strategy, seed {cfg['seed']}): {cfg['search_epochs']} supernet epoch(s) of "
        f"{cfg['search_batches']} batches of 64 for ARNAS (PGD-7 supernet training, first order) and DSRNA "
        f"(metric `{cfg['dsrna']['metric']}`); TAM-NAS: {cfg['search_epochs']} supernet epoch(s) of "
        f"{cfg['search_batches']} batches, then population {cfg['tamnas']['population_size']} x "
        f"{cfg['tamnas']['generations']} generations of subnets scored on the supernet "
        f"(val_batches {cfg['tamnas']['val_batches']}, bn_batches {cfg['tamnas']['bn_batches']}); "
        "top-1 architecture as `run_search` ranks it",
        f"- random: `random_sample(space, seed=i)`, i = {', '.join(map(str, cfg['random_seeds']))}",
        f"- final recipe (all architectures): `{final['recipe']}` adversarial training, {final['epochs']} epochs, "
        f"batch {final['batch_size']}, initial weights and evaluator seed {cfg['seed']}; clean accuracy on the "
        f"whole test split, PGD-20 and AutoAttack (`{final['attack']}` mode: APGD-CE + APGD-T) on the first "
        f"{final['n_examples']} test points",
        "- search s: wall seconds of the search alone (retraining not included)",
        "",
    ]
    for group in res["groups"]:
        lines += [f"## {group['title']}", "", *table(group), "", reading(group), ""]
    lines += [
        "## Reading",
        "",
        f"These are tiny budgets on a tiny dataset: {cfg['search_epochs']} supernet epoch(s), "
        f"{cfg['tamnas']['population_size'] * cfg['tamnas']['generations']} TAM-NAS subnets, "
        f"{final['epochs']} epoch(s) of retraining, one seed for everything. Differences of a few points "
        "are within the noise of one seed (the test-point standard error above, plus the spread of retraining "
        "from other "
        "initial weights, which this run does not measure). Gaps larger than the test-point noise (named "
        "above) are real for this seed and recipe, but may come from the selection rule and the network's "
        "size rather than from what the search learned about robustness. The table shows that the three strategies run "
        "end to end through the NNI experiment and return architectures that the shared evaluator retrains "
        "and attacks like any other; whichever way the comparison goes, one seed at this budget is not evidence "
        "that a strategy beats or loses to random search. For that, "
        "use several seeds and larger budgets (`robustnas compare --preset small`, "
        "`benchmarks/bench_search_quality.py`).",
        "",
        "Raw numbers (architecture records, search-phase metrics, every metric of every retrain): "
        "`benchmarks/results/quality_digits.json`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="minimal budgets (checks the script in minutes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the searches and of every retrain (0)")
    p.add_argument("--tiny", action="store_true",
                   help="add TAM-NAS on its own tiny space against five random tiny architectures")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch threads (default: torch's own, or 1 when the load average is above {HIGH_LOAD})")
    p.add_argument("--out", default=str(C.REPO_ROOT / "docs" / "results.md"), help="Markdown page to write")
    args = p.parse_args(argv)
    import torch

    load = C.loadavg()
    if args.threads is not None:
        threads, reason = args.threads, "--threads"
    elif load is not None and load[0] > HIGH_LOAD:
        threads, reason = 1, f"1-minute load {load[0]} > {HIGH_LOAD} at start"
    else:
        threads, reason = torch.get_num_threads(), "torch's default"
    torch.set_num_threads(threads)
    C.quiet()
    info = C.machine()
    budget = settings(args.quick)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quality-digits-") as tmp:
        groups = [run_group(f"ARNAS space {budget['space_kwargs']}", budget["space"], budget["space_kwargs"],
                            list(SEARCHED), budget, args.seed, tmp)]
        if args.tiny:
            groups.append(run_group("Optional second group: TAM-NAS on its own `tiny` space (default arguments) "
                                    "against random `tiny` architectures", "tiny", {}, ["tamnas"], budget,
                                    args.seed, tmp))
    wall = time.perf_counter() - t0

    targets = []
    for g in groups:
        for r in g["rows"]:
            if r["kind"] == "searched":
                t = C.target(f"{r['name']} on {g['space']}: AutoAttack acc minus median random (points)",
                             r["aa_margin_points"], 0.0, ">=")
                t["met"], t["target"] = r["beats_median_random_aa"], "> 0"
                targets.append(t)
    results = {"wall_seconds": wall, "threads_reason": reason, "groups": groups}
    config = {**copy.deepcopy(budget), "seed": args.seed, "tiny": args.tiny}
    ns = argparse.Namespace(quick=args.quick, out=str(C.RESULTS_DIR))
    headline = "; ".join(
        f"{r['name']} ({g['space']}) AutoAttack {_pct(r['metrics']['robust_acc'])}% vs median random "
        f"{_pct(g['random_median']['robust_acc'])}%" for g in groups for r in g["rows"] if r["kind"] == "searched")
    path = C.write_result(NAME, ns, info, config, results, targets,
                          notes=["quick run: minimal budgets"] if args.quick else [], headline=headline)

    data = json.loads(path.read_text())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, markdown(data))
    for g in groups:
        C.print_table(g["title"], ["architecture", "clean %", "PGD-20 %", "AA %", "params", "search s"],
                      [[r["name"], 100 * r["metrics"]["clean_acc"], 100 * r["metrics"]["pgd_acc"],
                        100 * r["metrics"]["robust_acc"], r["metrics"]["params"],
                        r["search_cost"]["wall_seconds"] if r["kind"] == "searched" else "-"] for r in g["rows"]]
                      + [["random median", *(100 * g["random_median"][k] for k in COLUMNS[:3]),
                          g["random_median"]["params"], "-"]])
    C.print_targets(targets, info, path)
    print(f"  wrote {args.out}; {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
