"""Benchmark 2b: AutoAttack ``fast`` against ``standard`` mode on a table of models, L-inf and L2.

Seven small digits models (an MLP, a BatchNorm CNN, a max-pool CNN, a residual BatchNorm
CNN, an average-pool CNN; PGD, TRADES, FGSM-RS and standard training), each trained for
10 epochs (batch 32, lr 0.05) at the threat it is attacked under: L-inf 0.2 (the digits
default) and L2 1.0. Each is attacked on the same first ``n`` test points (200: 0.5-point
resolution) by ``autoattack_evaluation`` in ``fast`` and ``standard`` mode; for L2 also by a
cheaper ``fast`` (APGD-CE + APGD-T with 3 targets, no FAB-T: ``fast_before``, the L2 mode's
former setting). Reported per model:
robust accuracy of each, the gap fast - standard in points and the CPU speed-up
(standard CPU seconds / fast CPU seconds). Target: every gap <= 1.5 points.

    .venv/bin/python benchmarks/bench_autoattack_gap.py [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "autoattack_gap"
GAP_TARGET = 1.5
THREATS = (("linf", 0.2), ("l2", 1.0))
#: (model, training recipe) of the benchmarked models (``_common.digits_models`` names).
MODELS = (("mlp", "pgd"), ("bn-cnn", "pgd"), ("bn-cnn", "trades"), ("maxpool-cnn", "trades"),
          ("residual-bn", "fgsm-rs"), ("avgpool-cnn", "pgd"), ("bn-cnn", "standard"))


def _attack(model, x, y, norm: str, eps: float, mode: str) -> dict[str, float]:
    from robustnas.plugins.evaluator.autoattack import autoattack_evaluation

    t0 = time.process_time()
    result = autoattack_evaluation(model, x, y, norm=norm, eps=eps, mode=mode, seed=0, device="cpu")
    return {"robust_acc": result.robust_acc, "cpu_s": time.process_time() - t0}


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n-examples", type=int, default=None, help="attacked test points (200; quick 50)")
    args, info = C.start(p, argv)

    from robustnas.plugins.evaluator import accuracy, load_dataset
    from robustnas.plugins.evaluator import autoattack as aa

    n = args.n_examples or (50 if args.quick else 200)
    epochs = 2 if args.quick else 10
    bundle = load_dataset("digits")
    x, y = bundle.tensors("test", n)
    factories = C.digits_models()
    rows: list[dict[str, Any]] = []
    for norm, eps in THREATS:
        for name, recipe in MODELS:
            model = C.train_briefly(factories[name], bundle, recipe, epochs, eps, norm)
            row: dict[str, Any] = {"norm": norm, "eps": eps, "model": name, "recipe": recipe,
                                   "clean_acc": accuracy(model, x, y)}
            row["fast"] = _attack(model, x, y, norm, eps, "fast")
            row["standard"] = _attack(model, x, y, norm, eps, "standard")
            if norm == "l2":  # fast_before: APGD-CE + APGD-T (3 targets), no FAB-T
                saved = aa.FAST_MODE["l2"]
                aa.FAST_MODE["l2"] = (3, 0)
                try:
                    row["fast_before"] = _attack(model, x, y, norm, eps, "fast")
                finally:
                    aa.FAST_MODE["l2"] = saved
            row["gap_points"] = 100.0 * (row["fast"]["robust_acc"] - row["standard"]["robust_acc"])
            row["speedup"] = row["standard"]["cpu_s"] / row["fast"]["cpu_s"]
            rows.append(row)
            print(f"  {norm} {eps:g} {name} ({recipe}): clean {row['clean_acc']:.3f}, fast "
                  f"{row['fast']['robust_acc']:.3f}, standard {row['standard']['robust_acc']:.3f}, gap "
                  f"{row['gap_points']:.1f} points, speed-up {row['speedup']:.1f} x", flush=True)
    worst = {norm: max(r["gap_points"] for r in rows if r["norm"] == norm) for norm, _ in THREATS}
    targets = [C.target(f"largest gap fast - standard, {norm} (points)", worst[norm], GAP_TARGET, "<=", " points")
               for norm, _ in THREATS]
    config = {"dataset": "digits", "n_examples": n, "epochs": epochs, "threats": [list(t) for t in THREATS],
              "fast": {k: {"apgd_t_targets": v[0], "fab_t_targets": v[1]} for k, v in aa.FAST_MODE.items()},
              "standard": "APGD-CE, APGD-T (9), FAB-T (9), Square 5000"}
    table = (f"AutoAttack fast vs standard on {n} digits test points (CPU seconds)",
             ["threat", "model", "recipe", "clean", "fast", "standard", "gap pts", "fast CPU s", "std CPU s",
              "speed-up", "fast before (L2)"],
             [[f"{r['norm']} {r['eps']:g}", r["model"], r["recipe"], r["clean_acc"], r["fast"]["robust_acc"],
               r["standard"]["robust_acc"], r["gap_points"], r["fast"]["cpu_s"], r["standard"]["cpu_s"], r["speedup"],
               r.get("fast_before", {}).get("robust_acc", "")] for r in rows])
    C.finish(NAME, args, info, config, {"rows": rows}, targets, tables=[table], headline=(
        f"largest gap: L-inf {worst['linf']:.1f} points, L2 {worst['l2']:.1f} points ({n} points per model)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
