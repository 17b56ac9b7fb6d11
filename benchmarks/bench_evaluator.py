"""Benchmark 3: throughput of the shared evaluator with the demo preset, and where the time goes.

Random architectures of the demo-preset ARNAS space go one after the other through
``RobustnessEvaluator.evaluate`` with the demo preset's ``search`` settings (the settings a
multi-trial search evaluates its candidates with). Reported: candidates per hour (3600 / mean
wall seconds per candidate, model construction included) and the split of that time into
training (attack generation vs. weight updates and validation), clean accuracy, PGD-20
evaluation, AutoAttack, size/latency measurement and the rest. The split comes from timing
wrappers placed around the evaluator's own functions for the run (no library change).

    .venv/bin/python benchmarks/bench_evaluator.py [--quick] [--candidates N]
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "evaluator"

#: (module, function name, bucket): the evaluator's stages, timed where ``evaluate`` looks them up.
_STAGES = (
    ("robustnas.plugins.evaluator._evaluator", "train_model", "training"),
    ("robustnas.plugins.evaluator.training", "adversarial_inputs", "training: attack generation"),
    ("robustnas.plugins.evaluator._evaluator", "accuracy", "clean accuracy"),
    ("robustnas.plugins.evaluator._evaluator", "pgd_accuracy", "PGD-20 evaluation"),
    ("robustnas.plugins.evaluator._evaluator", "autoattack_evaluation", "AutoAttack"),
    ("robustnas.plugins.evaluator._evaluator", "zero_gradient_share", "gradient-masking checks"),
    ("robustnas.plugins.evaluator._evaluator", "count_flops", "size and latency"),
    ("robustnas.plugins.evaluator._evaluator", "measure_latency", "size and latency"),
)


@contextlib.contextmanager
def stage_timers(seconds: dict[str, float]) -> Iterator[dict[str, float]]:
    """Wrap the evaluator's stage functions so that each call adds its wall time to ``seconds``."""
    import importlib

    originals = []
    for module_name, attr, bucket in _STAGES:
        module = importlib.import_module(module_name)
        original = getattr(module, attr)

        @functools.wraps(original)
        def timed(*args: Any, _f=original, _b=bucket, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                seconds[_b] = seconds.get(_b, 0.0) + time.perf_counter() - t0

        originals.append((module, attr, original))
        setattr(module, attr, timed)
    try:
        yield seconds
    finally:
        for module, attr, original in originals:
            setattr(module, attr, original)


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=None, help="random candidates to evaluate (3; quick 1)")
    args = p.parse_args(argv)
    C.setup(args)

    import torch

    from robustnas.plugins.compare import PRESETS
    from robustnas.plugins.evaluator import EvaluatorConfig, RobustnessEvaluator
    from robustnas.search_spaces import build_model, export_record, get_space, random_sample

    info = C.machine()
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
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        with stage_timers(seconds):
            torch.manual_seed(i)
            model = build_model(export_record(space, random_sample(space, seed=i)))
            metrics = evaluator.evaluate(model)
        total = time.perf_counter() - t0
        seconds["training: weight updates and validation"] = (
            seconds.get("training", 0.0) - seconds.get("training: attack generation", 0.0))
        accounted = sum(v for k, v in seconds.items() if not k.startswith("training:"))
        seconds["other (model build, checks)"] = total - accounted
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
    path = C.write_result(NAME, args, info, config, results, [], notes, headline=(
        f"{per_hour:.0f} candidates/hour ({mean_total:.1f} s each): training {100 * share.get('training', 0):.0f}% "
        f"(attack generation {100 * share.get('training: attack generation', 0):.0f}%), AutoAttack "
        f"{100 * share.get('AutoAttack', 0):.0f}%, PGD-20 {100 * share.get('PGD-20 evaluation', 0):.0f}%"))
    order = ["training", "training: attack generation", "training: weight updates and validation",
             "clean accuracy", "PGD-20 evaluation", "AutoAttack", "size and latency", "other (model build, checks)"]
    rows = [[b, mean_stage[b], 100 * share[b]] for b in order if b in mean_stage]
    C.print_table(
        f"Evaluator throughput, demo preset search settings {search} on digits, "
        f"{n} random ARNAS candidates (width {space_kwargs.get('width')}, {space_kwargs.get('num_cells')} cells)",
        ["stage", "mean s / candidate", "% of total"], rows)
    print(f"  {per_hour:.1f} candidates per hour ({mean_total:.1f} s per candidate); no target (descriptive)")
    C.print_targets([], info, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
