"""Benchmark 4: one-shot search cost per epoch against NNI's plain DARTS, and the pass-count ideal.

Every strategy runs the real NNI path (``run_experiment(space, strategy, classification_evaluator)``)
on the same space (the demo-preset ARNAS space), the same digits data and batch (64, the
compare harness's one-shot evaluator): NNI's ``DARTS`` (first order), ``ARNAS`` (PGD-7,
MGDA, first order), ``DSRNA`` with each metric (``jacobian``, ``bound``, ``combined``) and
``TAMNAS``'s supernet training (its NSGA-II subnet search after training is skipped: it is
not part of a search epoch). A Lightning callback times every training step; seconds per
epoch = median step time (first step of a run dropped as warm-up) x steps per epoch. DARTS
runs first and again after every strategy; a strategy's ratio divides by the mean of the
two DARTS runs around it, so that load changes on a shared machine cancel out.

The ideal ratio to DARTS comes from counting the passes each step needs, with unit costs
measured on the same supernet and batch in the same run (see ``STEP_PASSES``):

=================  ==========================================================================
pass               what is timed (batch 64)
=================  ==========================================================================
``full``           supernet, train mode: forward + backward to every parameter
``arch``           supernet, train mode: forward + backward to the architecture weights only
``attack``         supernet, eval mode, parameters frozen: forward + gradient to the input
``jacobian``       forward, input gradient of the top logit with ``create_graph``, then the
                   gradient of ``CE - gamma * (-||J||_1)`` to the architecture (double backward)
``bound``          forward (CE) + interval bound propagation (centre and radius) + backward
                   of ``CE - gamma * R_bound`` to the architecture
``combined``       both of the above in one objective
``path_full``      one uniformly sampled single path (TAM-NAS supernet): forward + full backward
``path_attack``    the same path, eval mode: forward + input gradient
``path_resample``  drawing a path (timed alone and taken out of the two above)
=================  ==========================================================================

Per step: DARTS = arch step (NNI back-propagates the full graph: ``full``) + weight step
(``full``); ARNAS = PGD-7 on the validation batch (7 ``attack``) + ``u1`` and ``u2`` (2
``arch``) + PGD-7 on the training batch (7 ``attack``) + weight step (``full``); DSRNA =
its arch objective (``jacobian`` / ``bound`` / ``combined``) + ``full``; TAM-NAS = 7
``path_attack`` + ``path_full`` + ``path_resample``. The naive count (every forward+backward
pair costs the same, a double backward 2 pairs, IBP 2 pairs) is reported beside it. Target:
measured ratio within 1.25 x of the measured-unit ideal.

    .venv/bin/python benchmarks/bench_oneshot.py [--quick] [--steps N]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "oneshot"
TARGET = 1.25
BATCH = 64
PGD_STEPS = C.ONE_SHOT_PGD_STEPS

#: What each measured strategy runs: registry name and keyword arguments.
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    **C.ONE_SHOT_RUNS,
    "dsrna-combined": ("dsrna", {"metric": "combined", "val_batches": 1, "eval_pgd_steps": 1}),
    "tamnas": ("tamnas", {"attack_steps": PGD_STEPS}),
}

#: Passes per search step (pass name -> count), and the naive count in forward+backward pairs.
STEP_PASSES: dict[str, dict[str, int]] = {
    "darts": {"full": 2},
    "arnas": {"attack": 2 * PGD_STEPS, "arch": 2, "full": 1},
    "dsrna-jacobian": {"jacobian": 1, "full": 1},
    "dsrna-bound": {"bound": 1, "full": 1},
    "dsrna-combined": {"combined": 1, "full": 1},
    "tamnas": {"path_attack": PGD_STEPS, "path_full": 1, "path_resample": 1},
}
NAIVE_PAIRS: dict[str, float] = {
    "darts": 2, "arnas": 2 * PGD_STEPS + 3, "dsrna-jacobian": 1 + 2 + 1, "dsrna-bound": 1 + 2 + 1,
    "dsrna-combined": 1 + 2 + 2 + 1, "tamnas": PGD_STEPS + 1,
}


def _step_timer() -> Any:
    import pytorch_lightning as pl

    class StepTimer(pl.Callback):
        """Wall seconds of every training step (the whole ``training_step``, optimisers included)."""

        def __init__(self) -> None:
            self.steps: list[float] = []
            self._t0 = 0.0

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.steps.append(time.perf_counter() - self._t0)

    return StepTimer()


def _strategy(name: str, eps: float) -> Any:
    from robustnas.strategies import TAMNAS, get_strategy

    registry_name, kwargs = RUNS[name]
    if registry_name == "tamnas":
        class SupernetOnlyTAMNAS(TAMNAS):
            """TAM-NAS without its post-training NSGA-II search (not part of a search epoch)."""

            def search(self) -> list[dict[str, Any]]:
                return []

        return SupernetOnlyTAMNAS(eps=eps, population_size=2, generations=1, **kwargs)
    if registry_name != "darts":
        kwargs = {"eps": eps, **kwargs}
    return get_strategy(registry_name, **kwargs)


def run_epoch(name: str, space_kwargs: dict, bundle: Any, steps: int) -> tuple[list[float], Any]:
    """Run one search epoch of ``steps`` steps; returns the step times and the strategy."""
    from robustnas.plugins.nni import classification_evaluator, run_experiment
    from robustnas.search_spaces import get_space

    import torch

    torch.manual_seed(0)
    timer = _step_timer()
    strategy = _strategy(name, bundle.threat.eps)
    evaluator = classification_evaluator(bundle, batch_size=BATCH, max_epochs=1, limit_train_batches=steps,
                                         callbacks=[timer])
    with C.silenced():
        run_experiment(get_space("arnas", **space_kwargs), strategy, evaluator)
    if len(timer.steps) != steps:
        raise RuntimeError(f"{name}: expected {steps} timed steps, got {len(timer.steps)}")
    return timer.steps, strategy


def unit_costs(darts: Any, tamnas: Any, x: Any, y: Any, eps: float, rounds: int) -> dict[str, list[float]]:
    """Seconds of each pass of ``STEP_PASSES`` on the trained supernets, interleaved rounds."""
    import torch
    import torch.nn.functional as F

    from robustnas.plugins.evaluator._utils import eval_mode
    from robustnas.strategies.dsrna import bound_metric, input_jacobian_norm

    net = darts.supernet
    alphas = list(darts.oneshot_module.arch_parameters())
    params = [p for p in net.parameters() if p.requires_grad]
    gamma = 0.01

    def logits(model: Any, inp: Any) -> Any:
        out = model(inp)
        return out[0] if isinstance(out, (tuple, list)) else out

    def full(model: Any = net, plist: Any = params) -> None:
        model.train()
        loss = F.cross_entropy(logits(model, x), y)
        torch.autograd.grad(loss, plist, allow_unused=True)

    def arch() -> None:
        net.train()
        torch.autograd.grad(F.cross_entropy(logits(net, x), y), alphas, allow_unused=True)

    def attack(model: Any = net) -> None:
        with eval_mode(model):
            delta = torch.zeros_like(x, requires_grad=True)
            torch.autograd.grad(F.cross_entropy(logits(model, x + delta), y, reduction="sum"), delta)

    def robust_objective(jac: bool, bound: bool) -> None:
        net.train()
        xg = x.detach().requires_grad_(True)
        out = logits(net, xg)
        r = out.new_zeros(())
        if jac:
            r = r - input_jacobian_norm(out, xg, q=1)
        if bound:
            r = r + bound_metric(net, x, y, eps=eps)
        torch.autograd.grad(F.cross_entropy(out, y) - gamma * r, alphas, allow_unused=True)

    path_net = tamnas.supernet
    path_params = [p for p in path_net.parameters() if p.requires_grad]
    module = tamnas.oneshot_module

    def path_full() -> None:
        module.resample()
        full(path_net, path_params)

    def path_attack() -> None:
        module.resample()
        attack(path_net)

    fns = {"full": full, "arch": arch, "attack": attack,
           "jacobian": lambda: robust_objective(True, False), "bound": lambda: robust_objective(False, True),
           "combined": lambda: robust_objective(True, True), "path_full": path_full, "path_attack": path_attack,
           "path_resample": module.resample}
    times = C.interleaved(fns, rounds=rounds, warmup=1)
    # each path pass above drew its own path; a step draws one: count the draw once, apart
    for kind in ("path_full", "path_attack"):
        times[kind] = [max(t - r, 0.0) for t, r in zip(times[kind], times["path_resample"])]
    return times


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="training steps per measured epoch (5; quick 3)")
    p.add_argument("--only", nargs="+", choices=list(RUNS), help="measure these strategies (darts always)")
    args, info = C.start(p, argv)

    from robustnas.plugins.evaluator import load_dataset

    bundle = load_dataset("digits")
    space_kwargs, notes = C.demo_space_kwargs("arnas", bundle)
    steps = args.steps or (3 if args.quick else 5)
    others = [n for n in RUNS if n != "darts" and (not args.only or n in args.only)]
    names = ["darts"] + others
    steps_per_epoch = math.ceil(len(bundle.train) / BATCH)

    # DARTS runs before the first strategy and after every one: each strategy's baseline is the
    # mean of the two DARTS runs around it, so a change of machine load during the benchmark
    # cancels out of its ratio (and shows up as drift between DARTS runs).
    step_times: dict[str, list[float]] = {}
    strategies: dict[str, Any] = {}
    wall: dict[str, float] = {}
    darts_runs: list[list[float]] = []
    baseline: dict[str, float] = {}
    for name in ["darts"] + [n for pair in zip(others, ["darts"] * len(others)) for n in pair]:
        t0 = time.perf_counter()
        times, strategies[name] = run_epoch(name, space_kwargs, bundle, steps)
        if name == "darts":
            darts_runs.append(times)
            if len(darts_runs) > 1:
                previous = others[len(darts_runs) - 2]
                baseline[previous] = (C.median(darts_runs[-2][1:]) + C.median(darts_runs[-1][1:])) / 2
        else:
            step_times[name], wall[name] = times, time.perf_counter() - t0
    step_times["darts"] = [t for run in darts_runs for t in run]
    darts_medians = [C.median(run[1:]) for run in darts_runs]
    baseline["darts"] = C.median([t for run in darts_runs for t in run[1:]])
    wall["darts"] = float("nan")

    x, y = bundle.tensors("train", n=BATCH)
    if "tamnas" not in strategies:
        _, strategies["tamnas"] = run_epoch("tamnas", space_kwargs, bundle, 1)
    units = unit_costs(strategies["darts"], strategies["tamnas"], x, y, bundle.threat.eps, rounds=3 if args.quick else 5)
    unit = {k: C.median(v) for k, v in units.items()}

    def step_cost(name: str) -> float:
        return sum(count * unit[kind] for kind, count in STEP_PASSES[name].items())

    results: dict[str, Any] = {"unit_seconds": unit, "unit_relative_spread": {k: C.spread(v) for k, v in units.items()},
                               "steps_per_epoch": steps_per_epoch, "strategies": {},
                               "darts_run_median_steps": darts_medians,
                               "darts_drift": max(darts_medians) / min(darts_medians)}
    rows, targets = [], []
    for name in names:
        med = baseline["darts"] if name == "darts" else C.median(step_times[name][1:])
        ratio = med / baseline[name]
        ideal = step_cost(name) / step_cost("darts")
        naive = NAIVE_PAIRS[name] / NAIVE_PAIRS["darts"]
        results["strategies"][name] = {
            "step_seconds": step_times[name], "median_step_seconds": med,
            "seconds_per_epoch": med * steps_per_epoch, "run_wall_seconds": wall[name],
            "ratio_to_darts": ratio, "ideal_ratio": ideal, "naive_pair_ratio": naive,
            "ratio_over_ideal": ratio / ideal, "passes": STEP_PASSES[name], "ideal_step_seconds": step_cost(name),
            "darts_baseline_step_seconds": baseline[name]}
        rows.append([name, med * steps_per_epoch, med, ratio, ideal, ratio / ideal, naive])
        if name != "darts":
            targets.append(C.target(f"{name} epoch / DARTS epoch over ideal {ideal:.2f}", ratio / ideal, TARGET, "<="))
    config = {"space": "arnas", "space_kwargs": space_kwargs, "dataset": "digits", "batch_size": BATCH,
              "timed_steps_per_run": steps - 1, "warmup_steps_dropped": 1, "pgd_steps": PGD_STEPS,
              "strategies": {n: {"registry": RUNS[n][0], **RUNS[n][1]} for n in names},
              "step_passes": STEP_PASSES, "naive_pairs": NAIVE_PAIRS,
              "darts": "NNI DARTS, first order, evaluator optimiser (Adam 1e-3)"}
    table = (f"One-shot search cost on the demo ARNAS supernet (width {space_kwargs.get('width')}, "
             f"{space_kwargs.get('num_cells')} cells), digits, batch {BATCH}; medians of {steps - 1} steps, "
             f"epoch = {steps_per_epoch} steps",
             ["strategy", "s / epoch", "s / step", "ratio to DARTS", "ideal (units)", "ratio / ideal", "naive pairs"],
             rows)
    C.finish(NAME, args, info, config, results, targets, notes, tables=[table], headline="; ".join(
        f"{n} {results['strategies'][n]['seconds_per_epoch']:.0f} s/epoch"
        + ("" if n == "darts" else f" ({results['strategies'][n]['ratio_to_darts']:.2f} x DARTS, ideal "
                                   f"{results['strategies'][n]['ideal_ratio']:.2f})") for n in names),
        lines=["DARTS step (ms) in its runs around the others: " + ", ".join(f"{1e3 * m:.0f}" for m in darts_medians)
               + f" (drift {results['darts_drift']:.2f}; each ratio uses the two runs around it)",
               "unit passes (ms): " + ", ".join(f"{k} {1e3 * v:.0f}" for k, v in unit.items())])
    return 0


if __name__ == "__main__":
    sys.exit(main())
