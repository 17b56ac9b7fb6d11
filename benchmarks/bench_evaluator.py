"""Benchmark 3: throughput of the shared evaluator with the demo preset, and where the time goes.

Random architectures of the demo-preset ARNAS space go one after the other through
``RobustnessEvaluator.evaluate`` with the demo preset's ``search`` settings (the settings a
multi-trial search evaluates its candidates with). Reported: candidates per hour (3600 / mean
wall seconds per candidate, model construction included) and the split of that time into
training, clean accuracy, PGD-20 evaluation, AutoAttack, the gradient-masking checks,
size/latency measurement and the rest. The split is the evaluator's own: the stage seconds
``RobustnessEvaluator.evaluate(model, timings=...)`` reports.

    .venv/bin/python benchmarks/bench_evaluator.py [--quick] [--candidates N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "evaluator"

#: The evaluator's stages (``robustnas.plugins.evaluator._evaluator.STAGES``) -> the printed bucket.
BUCKETS = {
    "train": "training",
    "clean_acc": "clean accuracy",
    "pgd": "PGD-20 evaluation",
    "autoattack": "AutoAttack",
    "checks": "gradient-masking checks",
    "certify": "certification",
    "size": "size and latency",
    "latency": "size and latency",
}
OTHER = "other (model build and the rest)"


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=None, help="random candidates to evaluate (3; quick 1)")
    args, info = C.start(p, argv)

    import torch

    from robustnas.plugins.compare import PRESETS
    from robustnas.plugins.evaluator import EvaluatorConfig, RobustnessEvaluator
    from robustnas.search_spaces import build_model, export_record, get_space, random_sample

    search = dict(PRESETS["demo"]["search"])
    notes: list[str] = []
    if args.quick:
        search["epochs"] = 1
        notes.append("quick: 1 training epoch instead of the preset's "
                     f"{PRESETS['demo']['search']['epochs']}")
    n = args.candidates or (1 if args.quick else 3)
    evaluator = RobustnessEvaluator(EvaluatorConfig(dataset="digits", progress=False, **search))
    space_kwargs, space_notes = C.demo_space_kwargs("arnas", evaluator.bundle)
    notes += space_notes
    space = get_space("arnas", **space_kwargs)

    per_candidate = []
    for i in range(n):
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        torch.manual_seed(i)
        model = build_model(export_record(space, random_sample(space, seed=i)))
        metrics = evaluator.evaluate(model, timings=stages)
        total = time.perf_counter() - t0
        seconds: dict[str, float] = {}
        for stage, value in stages.items():
            seconds[BUCKETS[stage]] = seconds.get(BUCKETS[stage], 0.0) + value
        seconds[OTHER] = total - sum(seconds.values())
        per_candidate.append({"seed": i, "total_seconds": total, "stages": seconds,
                              "metrics": {k: metrics[k] for k in ("clean_acc", "pgd_acc", "robust_acc", "params")}})

    mean_total = sum(c["total_seconds"] for c in per_candidate) / n
    buckets = sorted({k for c in per_candidate for k in c["stages"]})
    mean_stage = {b: sum(c["stages"].get(b, 0.0) for c in per_candidate) / n for b in buckets}
    share = {b: mean_stage[b] / mean_total for b in buckets}
    per_hour = 3600.0 / mean_total
    results = {"candidates_per_hour": per_hour, "mean_seconds_per_candidate": mean_total,
               "mean_stage_seconds": mean_stage, "stage_share": share, "candidates": per_candidate}
    config = {"space": "arnas", "space_kwargs": space_kwargs, "evaluator": evaluator.config.to_dict(),
              "candidates": n, "sampling": "random_sample(space, seed=i), i = 0..n-1"}
    order = [*dict.fromkeys(BUCKETS.values()), OTHER]
    rows = [[b, mean_stage[b], 100 * share[b]] for b in order if b in mean_stage]
    table = (f"Evaluator throughput, demo preset search settings {search} on digits, "
             f"{n} random ARNAS candidates (width {space_kwargs.get('width')}, {space_kwargs.get('num_cells')} cells)",
             ["stage", "mean s / candidate", "% of total"], rows)
    C.finish(NAME, args, info, config, results, [], notes, tables=[table], headline=(
        f"{per_hour:.0f} candidates/hour ({mean_total:.1f} s each): training {100 * share.get('training', 0):.0f}%, "
        f"AutoAttack {100 * share.get('AutoAttack', 0):.0f}%, PGD-20 {100 * share.get('PGD-20 evaluation', 0):.0f}%"),
        lines=[f"{per_hour:.1f} candidates per hour ({mean_total:.1f} s per candidate); no target (descriptive)"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
