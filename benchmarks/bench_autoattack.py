"""Benchmark 2: AutoAttack ``fast`` against ``standard`` mode, same model, same points.

One adversarially trained model (the released ARNAS genotype in the demo-preset ARNAS
space, trained on digits with the demo preset's ``final`` recipe: PGD-7 adversarial
training), attacked on the same first ``n`` test points (200: 0.5-point resolution) by
``autoattack_accuracy`` in both modes. Reported: the speed-up (standard seconds / fast seconds) and the robust-accuracy
gap (fast minus standard, in points; fast runs a subset of standard's attacks, so the gap
is >= 0), plus each attack's share of the time. Targets: speed-up >= 4, gap <= 1.5 points.

    .venv/bin/python benchmarks/bench_autoattack.py [--quick]
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "autoattack"
SPEEDUP_TARGET = 4.0
GAP_TARGET = 1.5

_AFTER = re.compile(r"robust accuracy after (?P<attack>[A-Z-]+): (?P<acc>[\d.]+)% \(total time (?P<t>[\d.]+) s\)")


class _AttackLog(logging.Handler):
    """Collects pyautoattack's 'robust accuracy after <attack>' lines: accuracy and elapsed time."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.steps: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _AFTER.search(record.getMessage())
        if match:
            self.steps.append({"attack": match["attack"].lower(), "robust_acc": float(match["acc"]) / 100,
                               "elapsed_s": float(match["t"])})


def timed_autoattack(model, x, y, *, mode: str, threat, batch_size: int) -> dict:
    """Run ``autoattack_accuracy`` once; wall seconds, robust accuracy and the per-attack log."""
    from robustnas.plugins.evaluator import autoattack_accuracy

    handler = _AttackLog()
    log = logging.getLogger("auto-attack")
    old_level = log.level
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    log.propagate = False
    try:
        t0 = time.perf_counter()
        robust, _ = autoattack_accuracy(model, x, y, norm=threat.norm, eps=threat.eps, mode=mode,
                                        batch_size=batch_size, seed=0)
        seconds = time.perf_counter() - t0
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = True
    per_attack, previous = [], 0.0
    for step in handler.steps:
        per_attack.append({**step, "seconds": step["elapsed_s"] - previous})
        previous = step["elapsed_s"]
    return {"seconds": seconds, "robust_acc": robust, "attacks": per_attack}


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n-examples", type=int, default=None,
                   help="attacked test points (default: 200, or the demo preset's final n_examples if larger; "
                        "quick 64)")
    p.add_argument("--epochs", type=int, default=None,
                   help="adversarial training epochs (default: the demo preset's final epochs; quick 2)")
    args, info = C.start(p, argv)

    import torch

    from robustnas.plugins.compare import PRESETS
    from robustnas.plugins.evaluator import (
        EvaluatorConfig, RobustnessEvaluator, accuracy, pgd_accuracy, train_model,
    )
    from robustnas.search_spaces import build_model, export_record, get_space, named_architecture

    final = dict(PRESETS["demo"]["final"])
    if args.epochs or args.quick:
        final["epochs"] = args.epochs or 2
    # 200 points at least: the gap target (1.5 points) needs a resolution finer than 1 point
    final["n_examples"] = args.n_examples or (64 if args.quick else max(200, final["n_examples"]))
    evaluator = RobustnessEvaluator(EvaluatorConfig(dataset="digits", progress=False, **final))
    bundle, threat, cfg = evaluator.bundle, evaluator.threat, evaluator.config
    space_kwargs, notes = C.demo_space_kwargs("arnas", bundle)
    torch.manual_seed(0)
    model = build_model(export_record(get_space("arnas", **space_kwargs), named_architecture("arnas", "arnas")))
    history = train_model(model, bundle, evaluator.train_config(), device="cpu")
    x_test, y_test = bundle.tensors("test")
    x, y = x_test[: cfg.n_examples], y_test[: cfg.n_examples]
    torch.manual_seed(0)
    clean = accuracy(model, x_test, y_test)
    clean_points = accuracy(model, x, y)
    pgd20 = pgd_accuracy(model, x, y, eps=threat.eps, norm=threat.norm, steps=20)

    runs = {mode: timed_autoattack(model, x, y, mode=mode, threat=threat, batch_size=cfg.eval_batch_size)
            for mode in ("fast", "standard")}
    speedup = runs["standard"]["seconds"] / runs["fast"]["seconds"]
    gap = 100.0 * (runs["fast"]["robust_acc"] - runs["standard"]["robust_acc"])
    targets = [C.target("speed-up standard/fast", speedup, SPEEDUP_TARGET, ">=", " x"),
               C.target("robust-accuracy gap fast - standard (points)", gap, GAP_TARGET, "<=", " points")]
    if runs["standard"]["robust_acc"] == 0.0:
        notes.append("standard AutoAttack left no robust point: the later attacks never ran, so the speed-up "
                     "says nothing about them; train longer")
    results = {"train_seconds": history["train_seconds"], "clean_acc_test": clean,
               "clean_acc_points": clean_points, "pgd20_acc": pgd20, "speedup": speedup, "gap_points": gap,
               **{mode: run for mode, run in runs.items()}}
    config = {"model": "ARNAS released genotype", "space_kwargs": space_kwargs, "dataset": "digits",
              "threat": threat.to_dict(), "training": {k: v for k, v in evaluator.train_config().__dict__.items()},
              "n_examples": len(x), "batch_size": cfg.eval_batch_size,
              "fast": "APGD-CE (1 restart) + APGD-T (3 targets)", "standard": "APGD-CE, APGD-T (9), FAB-T (9), Square 5000"}
    rows = []
    for mode, run in runs.items():
        parts = ", ".join(f"{a['attack']} {a['seconds']:.1f}s->{100 * a['robust_acc']:.1f}%" for a in run["attacks"])
        rows.append([mode, run["seconds"], 100 * run["robust_acc"], parts])
    table = (f"AutoAttack fast vs standard on {len(x)} digits test points (L-inf eps {threat.eps:.3g}); model "
             f"trained {cfg.epochs} epochs PGD-{cfg.train_attack_steps}: clean {100 * clean:.1f}%, PGD-20 "
             f"{100 * pgd20:.1f}%", ["mode", "seconds", "robust %", "per attack (time -> robust acc after it)"], rows)
    C.finish(NAME, args, info, config, results, targets, notes, tables=[table], headline=(
        f"standard {runs['standard']['seconds']:.0f} s / fast {runs['fast']['seconds']:.0f} s = {speedup:.1f} x; "
        f"robust acc fast {100 * runs['fast']['robust_acc']:.1f}% vs standard "
        f"{100 * runs['standard']['robust_acc']:.1f}% (gap {gap:.1f} points, {len(x)} points)"),
        lines=[f"speed-up {speedup:.2f} x, gap {gap:.2f} points"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
