"""Shared helpers of the benchmark scripts: machine description, paired timing, JSON results.

Every ``bench_<name>.py`` script measures its numbers in one run on one machine, prints a
short table (ratio, absolute numbers, machine) and writes ``benchmarks/results/<name>.json``
with the layout of :func:`write_result`. Timings are taken as *interleaved rounds* (every
variant once per round, in the same order) and ratios as the median of the per-round ratios,
so that load from other processes on a shared machine hits both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from robustnas.plugins._io import write_text_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


class _LibraryNoise(logging.Filter):
    """Drops NNI's and Lightning's own records below ERROR (they re-enable INFO when an experiment starts)."""

    _NOISY = ("nni", "pytorch_lightning", "lightning")

    def filter(self, record: logging.LogRecord) -> bool:
        noisy = record.name.split(".")[0] in self._NOISY
        return not noisy or record.levelno >= logging.ERROR


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Send stdout to /dev/null meanwhile (NNI prints its experiment log to stdout)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def quiet() -> None:
    """Silence the known third-party warnings and info logs that would bury the tables."""
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="nni")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*treespec.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="pytorch_lightning")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning_fabric")
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
        if not any(isinstance(f, _LibraryNoise) for f in handler.filters):
            handler.addFilter(_LibraryNoise())
    for name in ("nni", "pytorch_lightning", "lightning", "lightning.pytorch", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import optuna
    from nni.runtime.log import silence_stdout

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    silence_stdout()  # NNI's own stdout handler of the experiment log


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes: ``--quick``, ``--threads``, ``--out``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (for development and CI)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per process (default 1: comparable across machines and "
                        "with the scale-out benchmark, which runs one single-threaded process per worker)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="folder of the JSON result (benchmarks/results)")
    return p


def setup(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (also for child processes) and quiet the logs."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    quiet()


def start(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """How every ``main()`` begins: parse ``argv`` with ``p``, apply it (:func:`setup`) and describe
    the machine; returns ``(args, machine info)``."""
    args = p.parse_args(argv)
    setup(args)
    return args, machine()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, torch threads and versions, load."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_start": loadavg(),
    }
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    """One line describing the machine, for the printed table."""
    return (f"machine: {info['cpu']}, {info['usable_cores']}/{info['cores']} cores, "
            f"torch {info['torch']} with {info['torch_threads']} thread(s), python {info['python']}, "
            f"load average at start {info['loadavg_start']}, at end {info.get('loadavg_end')}")


def interleaved(fns: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 1,
                sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds of each callable over ``rounds`` rounds; each round calls every callable once,
    in order, after ``warmup`` untimed rounds. ``sync`` (e.g. ``torch.cuda.synchronize``) runs
    before each clock read."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of ``num[i] / den[i]`` (paired: both measured in the same round)."""
    return median([a / b for a, b in zip(num, den)])


def spread(values: Sequence[float]) -> float:
    """Relative spread of repeated timings: (p75 - p25) / median (0 for fewer than 4 values)."""
    if len(values) < 4:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return float((q[2] - q[0]) / statistics.median(values))


def target(name: str, value: float, goal: float, kind: str, unit: str = "",
           se: float | None = None) -> dict[str, Any]:
    """One target check: ``kind`` is ``"<="`` (value at most goal) or ``">="``.

    ``se``: the standard error of ``value`` where it is a mean over seeds (shown as ``value ± se``).
    """
    if kind not in ("<=", ">="):
        raise ValueError(f"unknown target kind {kind!r}; valid: '<=', '>='")
    met = value <= goal if kind == "<=" else value >= goal
    out = {"name": name, "value": round(float(value), 4), "target": f"{kind} {goal}{unit}", "met": bool(met)}
    if se is not None:
        out["se"] = round(float(se), 4)
    return out


def value_text(t: Mapping[str, Any]) -> str:
    """A target's value, with ``± se`` when it has a standard error."""
    return f"{t['value']} ± {t['se']}" if t.get("se") is not None else f"{t['value']}"


def command_line() -> str:
    """The command that produced this result, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO_ROOT)
    except ValueError:
        pass
    return " ".join([".venv/bin/python", shlex.quote(str(script)), *map(shlex.quote, sys.argv[1:])])


def write_result(name: str, args: argparse.Namespace, info: dict[str, Any], config: Mapping[str, Any],
                 results: Mapping[str, Any], targets: Sequence[Mapping[str, Any]],
                 notes: Sequence[str] = (), headline: str = "") -> Path:
    """Write ``<out>/<name>.json`` atomically and return its path.

    Layout: ``benchmark``, ``command``, ``quick``, ``date`` (UTC), ``machine``, ``headline`` (one
    line: the ratio with its absolute numbers), ``config`` (what was measured), ``results``
    (absolute numbers), ``targets`` (each ``name``, ``value``, ``target``, ``met``), ``notes``.
    """
    info["loadavg_end"] = loadavg()
    data = {
        "benchmark": name,
        "command": command_line(),
        "quick": bool(args.quick),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "headline": headline,
        "config": dict(config),
        "results": dict(results),
        "targets": list(targets),
        "notes": list(notes),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    return path


Table = tuple[str, Sequence[str], Sequence[Sequence[Any]]]


def finish(name: str, args: argparse.Namespace, info: dict[str, Any], config: Mapping[str, Any],
           results: Mapping[str, Any], targets: Sequence[Mapping[str, Any]], notes: Sequence[str] = (),
           headline: str = "", tables: Sequence[Table] = (), lines: Sequence[str] = ()) -> Path:
    """How every ``main()`` ends: :func:`write_result`, then each ``(title, header, rows)`` of
    ``tables`` (:func:`print_table`), each of ``lines``, and :func:`print_targets`; returns the
    JSON's path."""
    path = write_result(name, args, info, config, results, targets, notes, headline=headline)
    for title, header, rows in tables:
        print_table(title, header, rows)
    for line in lines:
        print(f"  {line}")
    print_targets(targets, info, path)
    return path


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table on stdout (benchmarks are scripts: printing is their output)."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def print_targets(targets: Sequence[Mapping[str, Any]], info: Mapping[str, Any], path: Path) -> None:
    """The headline, the notes, the target lines, the machine line and where the JSON went."""
    data = json.loads(Path(path).read_text())
    if data.get("headline"):
        print(f"  {data['headline']}")
    for note in data.get("notes", []):
        print(f"  note: {note}")
    for t in targets:
        print(f"  target {t['name']}: {value_text(t)} (goal {t['target']}) -> {'MET' if t['met'] else 'MISSED'}")
    print("  " + machine_line(info))
    print(f"  wrote {path}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e5:
            return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def digits_models() -> dict[str, Callable[[], Any]]:
    """Factories of the small digits (1x8x8, 10 classes) networks the attack and bound benchmarks
    train: an MLP, a BatchNorm CNN, a max-pool CNN, a residual BatchNorm CNN, an average-pool CNN."""
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

    return {"mlp": mlp, "bn-cnn": bn_cnn, "maxpool-cnn": pool_cnn, "residual-bn": Residual, "avgpool-cnn": avg_cnn}


def train_briefly(factory: Callable[[], Any], bundle: Any, recipe: str, epochs: int, eps: float,
                  norm: str = "linf") -> Any:
    """``factory()`` built after ``torch.manual_seed(0)`` and trained with ``recipe`` at the threat
    ``(norm, eps)`` for ``epochs`` epochs (batch 32, lr 0.05) on CPU; returned in eval mode."""
    import torch

    from robustnas.plugins.evaluator import TrainConfig, train_model

    torch.manual_seed(0)
    model = factory()
    train_model(model, bundle, TrainConfig(recipe=recipe, epochs=epochs, batch_size=32, lr=0.05, eps=eps, norm=norm,
                                           progress=False), device="cpu")
    return model.eval()


#: PGD steps of the one-shot strategies that attack while they search (ARNAS, TAM-NAS).
ONE_SHOT_PGD_STEPS = 7
#: The one-shot strategies both one-shot benchmarks run: name -> (registry name, keyword arguments).
#: Their supernets' own metrics are not used, so ARNAS's and DSRNA's evaluation is the cheapest
#: (1 batch, PGD-1).
ONE_SHOT_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "darts": ("darts", {}),
    "arnas": ("arnas", {"pgd_steps": ONE_SHOT_PGD_STEPS, "val_batches": 1, "eval_pgd_steps": 1}),
    "dsrna-jacobian": ("dsrna", {"metric": "jacobian", "val_batches": 1, "eval_pgd_steps": 1}),
    "dsrna-bound": ("dsrna", {"metric": "bound", "val_batches": 1, "eval_pgd_steps": 1}),
}


def demo_space_kwargs(space_name: str, bundle: Any) -> tuple[dict[str, Any], list[str]]:
    """The demo preset's space arguments for ``space_name`` on ``bundle``, made valid.

    Returns ``(kwargs, notes)``. Where the preset asks for fewer cells than the space allows
    (ARNAS needs 4 so that robust cells exist), the minimum is used and a note says so.
    """
    from robustnas.plugins.compare import PRESETS
    from robustnas.search_spaces import get_space

    demo = PRESETS["demo"]
    kwargs = dict(demo["space_kwargs"]) if demo["space"] == space_name else {}
    base = {"input_shape": tuple(bundle.input_shape), "num_classes": bundle.num_classes}
    notes: list[str] = []
    try:
        get_space(space_name, **base, **kwargs)
    except ValueError as exc:
        if "num_cells" not in str(exc):
            raise
        asked = kwargs.get("num_cells")
        kwargs["num_cells"] = 4
        get_space(space_name, **base, **kwargs)
        notes.append(f"the demo preset asks {space_name} num_cells={asked}, which the space rejects "
                     f"({exc}); used num_cells=4")
    return {**base, **kwargs}, notes
