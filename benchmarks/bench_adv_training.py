"""Benchmark 1: adversarial training cost, a PGD-k training step against a clean step.

Same model, same batch, same optimiser: the time of ``train_step`` with recipe ``pgd``
(k = 7 and 10 attack steps) over the time of ``train_step`` with recipe ``standard``,
against the ideal k + 1 (k attack forward/backward passes plus the weight step, each
costed as one clean step). Target: measured / ideal <= 1.10 on CPU.

Also measured, to ground the ideal: one attack pass alone (eval-mode forward plus the
gradient with respect to the input, parameters frozen) and a plain eval forward, so that
``(k * attack_pass + clean_step) / clean_step`` gives the ratio that the per-pass costs
predict; ``overhead`` is the measured ratio over that prediction (loop and projection cost).

Model: the released ARNAS genotype in the demo-preset ARNAS space on digits (1x8x8), batch
32 (the evaluator's default batch size).

    .venv/bin/python benchmarks/bench_adv_training.py [--quick] [--batch-size 32]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "adv_training"
TARGET = 1.10


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the evaluator's, 32)")
    p.add_argument("--steps", type=int, nargs="+", default=[7, 10], help="PGD steps k to measure (7 10)")
    args, info = C.start(p, argv)

    import torch

    from robustnas.plugins.evaluator import EvaluatorConfig, TrainConfig, load_dataset, train_step
    from robustnas.plugins.evaluator._utils import eval_mode
    from robustnas.plugins.evaluator.training import make_optimizer
    from robustnas.search_spaces import build_model, export_record, get_space, named_architecture

    torch.manual_seed(0)
    bundle = load_dataset("digits")
    space_kwargs, notes = C.demo_space_kwargs("arnas", bundle)
    model = build_model(export_record(get_space("arnas", **space_kwargs), named_architecture("arnas", "arnas")))
    batch = args.batch_size or EvaluatorConfig().batch_size
    x, y = bundle.tensors("train", n=batch)
    eps = bundle.threat.eps
    clean_cfg = TrainConfig(recipe="standard", eps=eps, progress=False)
    optimizer = make_optimizer(model, clean_cfg)
    pgd_cfgs = {k: TrainConfig(recipe="pgd", eps=eps, attack_steps=k, progress=False) for k in args.steps}

    def attack_pass() -> None:  # one PGD iteration's model work: eval forward + input gradient
        with eval_mode(model):
            delta = torch.zeros_like(x, requires_grad=True)
            loss = torch.nn.functional.cross_entropy(model(x + delta), y, reduction="sum")
            torch.autograd.grad(loss, delta)

    def eval_forward() -> None:
        with torch.no_grad(), eval_mode(model, frozen=False):
            model(x)

    fns = {"clean_step": lambda: train_step(model, x, y, optimizer, clean_cfg),
           "attack_pass": attack_pass, "eval_forward": eval_forward}
    for k, cfg in pgd_cfgs.items():
        fns[f"pgd{k}_step"] = (lambda c=cfg: train_step(model, x, y, optimizer, c))
    rounds = 4 if args.quick else 15
    times = C.interleaved(fns, rounds=rounds, warmup=2)

    clean = times["clean_step"]
    results: dict = {"seconds_median": {n: C.median(t) for n, t in times.items()},
                     "relative_spread": {n: round(C.spread(t), 3) for n, t in times.items()},
                     "attack_pass_over_clean_step": C.paired_ratio(times["attack_pass"], clean),
                     "eval_forward_over_clean_step": C.paired_ratio(times["eval_forward"], clean)}
    rows, targets = [], []
    for k in args.steps:
        ratio = C.paired_ratio(times[f"pgd{k}_step"], clean)
        predicted = k * results["attack_pass_over_clean_step"] + 1.0
        results[f"pgd{k}"] = {"ratio": ratio, "ideal": k + 1, "ratio_over_ideal": ratio / (k + 1),
                              "predicted_from_passes": predicted, "overhead_over_prediction": ratio / predicted}
        rows.append([f"PGD-{k} / clean", ratio, k + 1, ratio / (k + 1), predicted, ratio / predicted,
                     1e3 * C.median(times[f"pgd{k}_step"])])
        targets.append(C.target(f"PGD-{k} step / clean step over ideal {k + 1}", ratio / (k + 1), TARGET, "<="))
    config = {"model": "ARNAS released genotype", "space": "arnas", "space_kwargs": space_kwargs,
              "dataset": "digits", "batch_size": batch, "eps": eps, "rounds": rounds, "warmup_rounds": 2,
              "optimizer": "SGD (TrainConfig defaults)", "attack": "PGD L-inf, random start, eval mode"}
    table = (f"Adversarial training cost (batch {batch}, ARNAS genotype width {space_kwargs.get('width')}, "
             f"{space_kwargs.get('num_cells')} cells, digits; medians of {rounds} interleaved rounds)",
             ["ratio", "measured", "ideal k+1", "measured/ideal", "from passes", "overhead", "step ms"], rows)
    C.finish(NAME, args, info, config, results, targets, notes, tables=[table], headline="; ".join(
        f"PGD-{k} step {1e3 * results['seconds_median'][f'pgd{k}_step']:.0f} ms / clean step "
        f"{1e3 * results['seconds_median']['clean_step']:.0f} ms = {results[f'pgd{k}']['ratio']:.2f} "
        f"(ideal {k + 1}, {results[f'pgd{k}']['ratio_over_ideal']:.2f} x ideal)" for k in args.steps),
        lines=[f"clean step {1e3 * C.median(clean):.1f} ms, attack pass {1e3 * C.median(times['attack_pass']):.1f} "
               f"ms ({results['attack_pass_over_clean_step']:.2f} clean steps), eval forward "
               f"{1e3 * C.median(times['eval_forward']):.1f} ms"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
