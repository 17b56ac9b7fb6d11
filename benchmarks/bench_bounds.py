"""Benchmark 10: linear (CROWN-style) bounds against interval bounds: tightness and cost.

Tightness: small digits models, each trained with one of the evaluator's recipes at L-inf
0.1 (an MLP, a BatchNorm CNN, a max-pool CNN, a residual BatchNorm CNN; PGD, TRADES and
FGSM-RS) plus a cell network of the DSRNA space (``random_sample(space, seed=0)``, width 4,
3 cells, standard training). On the first ``n`` test points and at each eps, for
``method="interval"`` and ``method="crown"``: certified accuracy (``certified_accuracy``),
the mean over points of the worst-case margin lower bound (``margin_lower_bound(...).min(1)``)
and the seconds each took; AutoAttack (fast mode) accuracy is the upper reference no
certified accuracy may exceed.

Cost in DSRNA: seconds per forward + backward of ``bound_metric`` (``reduction="ce"``, the
search default) through NNI's differentiable DARTS supernet of the DSRNA space (width 4,
3 cells, architecture weights drawn from N(0, 1)), in training mode as the search runs it,
gradient to the weights and architecture parameters; interval and crown interleaved for
``rounds`` rounds, ratio = median of the per-round ratios crown / interval, at two batch
sizes. Peak resident memory of the process after the interval steps and after the crown
steps is reported beside it.

Targets: no row where crown certifies fewer points than interval, and no model, eps and
point where the crown margin bound is below the interval one (by more than 1e-4).

    .venv/bin/python benchmarks/bench_bounds.py [--quick]
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "bounds"
TRAIN_EPS = 0.1
EPS_VALUES = (0.01, 0.02, 0.05)
METHODS = ("interval", "crown")


#: (model, training recipe) of the measured models: ``_common.digits_models`` names and a DSRNA cell.
MODELS = (("mlp", "pgd"), ("bn-cnn", "pgd"), ("maxpool-cnn", "trades"), ("residual-bn", "fgsm-rs"),
          ("dsrna-cell", "standard"))


def _factories() -> dict[str, Callable[[], Any]]:
    """``_common.digits_models`` and a cell network of the DSRNA space (width 4, 3 cells,
    ``random_sample(space, seed=0)``)."""

    def dsrna_cell() -> Any:
        from robustnas.search_spaces import get_space, random_sample

        space = get_space("dsrna", input_shape=(1, 8, 8), num_classes=10, width=4, num_cells=3)
        return space.freeze(random_sample(space, seed=0))

    return {**C.digits_models(), "dsrna-cell": dsrna_cell}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _tightness(bundle, n: int, epochs: int) -> list[dict[str, Any]]:
    import torch

    from robustnas.plugins.evaluator import accuracy
    from robustnas.plugins.evaluator.autoattack import autoattack_accuracy
    from robustnas.plugins.evaluator.bounds import certified_accuracy, margin_lower_bound

    x, y = bundle.tensors("test", n)
    factories = _factories()
    rows: list[dict[str, Any]] = []
    for name, recipe in MODELS:
        model = C.train_briefly(factories[name], bundle, recipe, epochs, TRAIN_EPS)
        clean = accuracy(model, x, y)
        for eps in EPS_VALUES:
            row: dict[str, Any] = {"model": name, "recipe": recipe, "eps": eps, "clean_acc": clean}
            with torch.no_grad():
                bounds = {}
                for method in METHODS:
                    t0 = time.perf_counter()
                    bounds[method] = margin_lower_bound(model, x, y, eps, method=method)
                    seconds = time.perf_counter() - t0
                    row[method] = {
                        "certified_acc": certified_accuracy(model, x, y, eps=eps, method=method),
                        "mean_margin_bound": float(bounds[method].min(1).values.mean()),
                        "seconds": seconds,
                    }
            finite = ~torch.isinf(bounds["interval"])
            row["min_gain"] = float((bounds["crown"] - bounds["interval"])[finite].min())
            row["autoattack_acc"], _ = autoattack_accuracy(model, x, y, norm="linf", eps=eps, mode="fast")
            row["cost_ratio"] = row["crown"]["seconds"] / row["interval"]["seconds"]
            rows.append(row)
            print(f"  {name} ({recipe}) eps {eps:g}: certified interval {row['interval']['certified_acc']:.3f}, "
                  f"crown {row['crown']['certified_acc']:.3f}, AutoAttack {row['autoattack_acc']:.3f}; mean margin "
                  f"bound {row['interval']['mean_margin_bound']:.3g} -> {row['crown']['mean_margin_bound']:.3g}",
                  flush=True)
    return rows


def _dsrna_cost(bundle, batches: tuple[int, ...], rounds: int) -> list[dict[str, Any]]:
    import torch
    from nni.nas.strategy import DARTS

    from robustnas.search_spaces import get_space
    from robustnas.strategies.dsrna import bound_metric

    torch.manual_seed(0)
    space = get_space("dsrna", input_shape=tuple(bundle.input_shape), num_classes=bundle.num_classes,
                      width=4, num_cells=3)
    net = DARTS().mutate_model(space)
    with torch.no_grad():
        for pname, p in net.named_parameters():
            if "_arch_alpha" in pname:
                p.normal_(0, 1)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    xs, ys = bundle.tensors("train")
    out = []
    for batch in batches:
        x, y = xs[:batch], ys[:batch]

        def step(method: str) -> Callable[[], None]:
            def run() -> None:
                r = bound_metric(net, x, y, eps=0.01, method=method)
                torch.autograd.grad(r, params, allow_unused=True)
            return run

        step("interval")()
        rss_interval = _peak_rss_mb()
        step("crown")()
        rss_crown = _peak_rss_mb()
        times = C.interleaved({m: step(m) for m in METHODS}, rounds=rounds, warmup=0)
        row = {
            "batch": batch,
            "interval_s": C.median(times["interval"]),
            "crown_s": C.median(times["crown"]),
            "ratio": C.paired_ratio(times["crown"], times["interval"]),
            "spread_crown": C.spread(times["crown"]),
            "peak_rss_mb_after_interval": round(rss_interval, 1),
            "peak_rss_mb_after_crown": round(rss_crown, 1),
        }
        out.append(row)
        print(f"  DSRNA bound_metric fwd+bwd, batch {batch}: interval {row['interval_s']:.3f} s, crown "
              f"{row['crown_s']:.3f} s, ratio {row['ratio']:.1f} x", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n-examples", type=int, default=None, help="test points per model (200; quick 50)")
    args, info = C.start(p, argv)

    from robustnas.plugins.evaluator import load_dataset

    n = args.n_examples or (50 if args.quick else 200)
    epochs = 2 if args.quick else 10
    batches = (8,) if args.quick else (8, 16)
    rounds = 2 if args.quick else 5
    bundle = load_dataset("digits")
    rows = _tightness(bundle, n, epochs)
    cost = _dsrna_cost(bundle, batches, rounds)

    fewer = sum(r["crown"]["certified_acc"] < r["interval"]["certified_acc"] for r in rows)
    worst_gain = min(r["min_gain"] for r in rows)
    above_aa = sum(r["crown"]["certified_acc"] > r["autoattack_acc"] for r in rows)
    targets = [
        C.target("rows where crown certifies fewer points than interval", fewer, 0, "<="),
        C.target("smallest crown - interval margin bound (any model, eps, point)", worst_gain, -1e-4, ">="),
        C.target("rows where crown certified accuracy exceeds AutoAttack accuracy", above_aa, 0, "<="),
    ]
    gains = [r["crown"]["certified_acc"] - r["interval"]["certified_acc"] for r in rows]
    big = cost[-1]
    headline = (f"crown certifies up to {100 * max(gains):.1f} percentage points more than interval (never fewer, "
                f"{len(rows)} model x eps rows); DSRNA bound_metric step {big['ratio']:.1f} x interval "
                f"({big['crown_s']:.2f} s vs {big['interval_s']:.3f} s, batch {big['batch']})")
    config = {"dataset": "digits", "n_examples": n, "epochs": epochs, "train_eps": TRAIN_EPS,
              "eps_values": list(EPS_VALUES), "dsrna_supernet": "DSRNASpace width 4, 3 cells, NNI DARTS mixed ops",
              "dsrna_batches": list(batches), "rounds": rounds}
    tables = [
        (f"Certified accuracy and mean worst-case margin bound, interval vs crown ({n} digits test points)",
         ["model", "recipe", "eps", "clean", "AA", "cert IBP", "cert CROWN", "margin IBP", "margin CROWN",
          "s IBP", "s CROWN"],
         [[r["model"], r["recipe"], r["eps"], r["clean_acc"], r["autoattack_acc"], r["interval"]["certified_acc"],
           r["crown"]["certified_acc"], r["interval"]["mean_margin_bound"], r["crown"]["mean_margin_bound"],
           r["interval"]["seconds"], r["crown"]["seconds"]] for r in rows]),
        ("DSRNA bound_metric: seconds per forward + backward (training mode)",
         ["batch", "interval s", "crown s", "ratio", "peak RSS MB after interval", "after crown"],
         [[c["batch"], c["interval_s"], c["crown_s"], c["ratio"], c["peak_rss_mb_after_interval"],
           c["peak_rss_mb_after_crown"]] for c in cost]),
    ]
    C.finish(NAME, args, info, config, {"rows": rows, "dsrna_cost": cost}, targets, headline=headline,
             tables=tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
