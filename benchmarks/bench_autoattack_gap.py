"""Benchmark 2b: AutoAttack ``fast`` against ``standard`` mode on a table of models, L-inf and L2.

Seven small digits models (an MLP, a BatchNorm CNN, a max-pool CNN, a residual BatchNorm
CNN, an average-pool CNN; PGD, TRADES, FGSM-RS and standard training), each trained for
10 epochs (batch 32, lr 0.05) at the threat it is attacked under: L-inf 0.2 (the digits
default) and L2 1.0. Each is attacked on the same first ``n`` test points (200: 0.5-point
resolution) by ``autoattack_evaluation`` in ``fast`` and ``standard`` mode; for L2 also by
the ``fast`` mode before issue 17 (APGD-CE + APGD-T with 3 targets). Reported per model:
robust accuracy of each, the gap fast - standard in points and the CPU speed-up
(standard CPU seconds / fast CPU seconds). Target: every gap <= 1.5 points.

    .venv/bin/python benchmarks/bench_autoattack_gap.py [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "autoattack_gap"
GAP_TARGET = 1.5
THREATS = (("linf", 0.2), ("l2", 1.0))


def _models() -> list[tuple[str, str, Callable[[], Any]]]:
    """(name, training recipe, factory) of the benchmarked models."""
    import torch.nn.functional as F
    from torch import nn

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 16, 3, padding=1)
            self.block = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
            self.fc = nn.Linear(16 * 16, 10)

        def forward(self, x):  # noqa: ANN001, ANN202
            h = F.relu(self.stem(x))
            h = h + self.block(h)
            return self.fc(F.max_pool2d(h, 2).flatten(1))

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                             nn.Linear(64, 10))

    def bn_cnn() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )

    def pool_cnn() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, 10))

    def avg_cnn() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10))

    return [
        ("mlp", "pgd", mlp), ("bn-cnn", "pgd", bn_cnn), ("bn-cnn", "trades", bn_cnn),
        ("maxpool-cnn", "trades", pool_cnn), ("residual-bn", "fgsm-rs", Residual),
        ("avgpool-cnn", "pgd", avg_cnn), ("bn-cnn", "standard", bn_cnn),
    ]


def _attack(model, x, y, norm: str, eps: float, mode: str) -> dict[str, float]:
    from robustnas.plugins.evaluator.autoattack import autoattack_evaluation

    t0 = time.process_time()
    result = autoattack_evaluation(model, x, y, norm=norm, eps=eps, mode=mode, seed=0, device="cpu")
    return {"robust_acc": result.robust_acc, "cpu_s": time.process_time() - t0}


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n-examples", type=int, default=None, help="attacked test points (200; quick 50)")
    args = p.parse_args(argv)
    C.setup(args)

    import torch

    from robustnas.plugins.evaluator import TrainConfig, accuracy, load_dataset, train_model
    from robustnas.plugins.evaluator import autoattack as aa

    info = C.machine()
    n = args.n_examples or (50 if args.quick else 200)
    epochs = 2 if args.quick else 10
    bundle = load_dataset("digits")
    x, y = bundle.tensors("test", n)
    rows: list[dict[str, Any]] = []
    for norm, eps in THREATS:
        for name, recipe, factory in _models():
            torch.manual_seed(0)
            model = factory()
            train_model(model, bundle, TrainConfig(recipe=recipe, epochs=epochs, batch_size=32, lr=0.05, eps=eps,
                                                   norm=norm, progress=False), device="cpu")
            model.eval()
            row: dict[str, Any] = {"norm": norm, "eps": eps, "model": name, "recipe": recipe,
                                   "clean_acc": accuracy(model, x, y)}
            row["fast"] = _attack(model, x, y, norm, eps, "fast")
            row["standard"] = _attack(model, x, y, norm, eps, "standard")
            if norm == "l2":  # the fast mode before issue 17: APGD-CE + APGD-T (3 targets)
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
    path = C.write_result(NAME, args, info, config, {"rows": rows}, targets, headline=(
        f"largest gap: L-inf {worst['linf']:.1f} points, L2 {worst['l2']:.1f} points ({n} points per model)"))
    C.print_table(
        f"AutoAttack fast vs standard on {n} digits test points (CPU seconds)",
        ["threat", "model", "recipe", "clean", "fast", "standard", "gap pts", "fast CPU s", "std CPU s", "speed-up",
         "fast before (L2)"],
        [[f"{r['norm']} {r['eps']:g}", r["model"], r["recipe"], r["clean_acc"], r["fast"]["robust_acc"],
          r["standard"]["robust_acc"], r["gap_points"], r["fast"]["cpu_s"], r["standard"]["cpu_s"], r["speedup"],
          r.get("fast_before", {}).get("robust_acc", "")] for r in rows])
    C.print_targets(targets, info, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
