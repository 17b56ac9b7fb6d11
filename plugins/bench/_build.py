"""Building a benchmark table: resumable, killable at any moment, in several processes.

Rows are appended to ``rows.jsonl`` in the build folder, one JSON object per finished
task, flushed and fsync'ed; a run started again reads what is there, drops a line cut
short by a kill, and runs only what is missing. Nothing is lost but the tasks in
flight, and nothing is measured twice. Progress and an ETA go to the terminal and to
``build.log`` in the same folder.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from robustnas.plugins._io import write_text_atomic
from robustnas.plugins.errors import ConfigError, DataError
from robustnas.plugins.evaluator._utils import resolve_device

from ._protocol import PHASES, Protocol, run_cell
from ._spaces import space_adapter

__all__ = ["Plan", "Task", "build_table", "plan_tasks", "read_rows"]

_logger = logging.getLogger(__name__)

ROWS_FILE = "rows.jsonl"
META_FILE = "meta.json"
LOG_FILE = "build.log"


@dataclass(frozen=True)
class Plan:
    """Which cells get which extra measurements (subset sizes of issue-level protocol).

    The cells are visited in one fixed random order (``order_seed``), so a partial table is a
    uniform random sample of the space. The first ``aa_random`` cells of that order get
    AutoAttack with their main run, the first ``seed_cells`` get ``extra_seeds`` more training
    seeds, the first ``validity_cells`` the strong protocol; once every main row is in, the
    ``aa_top`` cells with the best PGD accuracy get AutoAttack too.
    """

    order_seed: int = 0
    aa_random: int = 200
    aa_top: int = 300
    seed_cells: int = 300
    extra_seeds: tuple[int, ...] = (1, 2)
    validity_cells: int = 100

    def to_dict(self) -> dict[str, Any]:
        return {"order_seed": self.order_seed, "aa_random": self.aa_random, "aa_top": self.aa_top,
                "seed_cells": self.seed_cells, "extra_seeds": list(self.extra_seeds),
                "validity_cells": self.validity_cells}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        data = dict(data)
        data["extra_seeds"] = tuple(data.get("extra_seeds", (1, 2)))
        return cls(**data)


@dataclass(frozen=True)
class Task:
    """One unit of the build: a phase of one cell under one training seed."""

    phase: str
    key: str
    seed: int = 0
    autoattack: bool = False

    @property
    def id(self) -> tuple[str, str, int]:
        return (self.phase, self.key, self.seed)


def cell_order(keys: Iterable[str], order_seed: int) -> list[str]:
    """The fixed random visiting order of the cells."""
    ordered = sorted(keys)
    random.Random(order_seed).shuffle(ordered)
    return ordered


def plan_tasks(keys: list[str], plan: Plan, main_rows: dict[str, dict[str, Any]] | None = None) -> list[Task]:
    """Every task of the build, in the order they are run.

    Extra seeds and validity runs are interleaved with the first main runs so that the
    table's noise and validity are known early; the top-PGD AutoAttack tasks exist only once
    ``main_rows`` covers every cell.
    """
    order = cell_order(keys, plan.order_seed)
    tasks: list[Task] = []
    for index, key in enumerate(order):
        tasks.append(Task("main", key, 0, autoattack=index < plan.aa_random))
        if index < plan.seed_cells:
            tasks.extend(Task("seed", key, s) for s in plan.extra_seeds)
        if index < plan.validity_cells:
            tasks.append(Task("validity", key, 0))
    if main_rows is not None and len(main_rows) == len(order):
        have_aa = set(order[: plan.aa_random])
        ranked = sorted(order, key=lambda k: (-main_rows[k]["metrics"]["pgd_acc"], k))
        tasks.extend(Task("autoattack", key, 0) for key in ranked[: plan.aa_top] if key not in have_aa)
    return tasks


def read_rows(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The rows of a ``rows.jsonl``; a last line cut short by a kill is dropped (and, with
    ``repair``, cut from the file). Any other bad line is an error naming the file and line."""
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    good_end = 0
    offset = 0
    for number, line in enumerate(lines, start=1):
        end = offset + len(line) + 1
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                if number == len(lines):  # the last line, without its newline: a write cut short
                    _logger.warning("%s: dropping an incomplete last line (%d bytes)", path, len(line))
                    break
                raise DataError(f"{path}: line {number} is not valid JSON ({err}); the build table is corrupt") from err
            rows.append(row)
        if number < len(lines):
            good_end = end
        offset = end
    if repair and good_end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
    return rows


class _Log:
    """Progress lines to ``build.log`` (always) and to the terminal (a bar) or stderr (lines)."""

    def __init__(self, folder: Path, total: int, done: int, quiet: bool) -> None:
        self.handle = open(folder / LOG_FILE, "a", buffering=1)
        self.total, self.done, self.quiet = total, done, quiet
        self.start = time.monotonic()
        self.started_done = done
        self.seconds: dict[str, list[float]] = {p: [] for p in PHASES}

    def line(self, text: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.handle.write(f"{stamp} {text}\n")
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def eta(self, remaining: dict[str, int], workers: int) -> str:
        elapsed = time.monotonic() - self.start
        finished = self.done - self.started_done
        if finished == 0:
            return "ETA unknown"
        rate = elapsed / finished  # wall seconds per task so far
        costs = {p: (sum(v) / len(v)) for p, v in self.seconds.items() if v}
        if costs:
            mean_cost = sum(sum(v) for v in self.seconds.values()) / finished
            seconds = sum(n * costs.get(p, mean_cost) for p, n in remaining.items()) * rate / max(mean_cost, 1e-9)
        else:
            seconds = rate * sum(remaining.values())
        return f"ETA {_duration(seconds)}"

    def close(self) -> None:
        self.handle.close()


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


_WORKER: dict[str, Any] = {}


def _init_worker(protocol_dict: dict[str, Any], device: str, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    torch.set_num_threads(threads)
    protocol = Protocol.from_dict(protocol_dict)
    _WORKER.update(protocol=protocol, device=device, adapter=space_adapter(protocol.space),
                   bundle=_load_bundle(protocol), parent=os.getppid())


def _load_bundle(protocol: Protocol):
    from robustnas.plugins.evaluator import load_dataset

    return load_dataset(protocol.dataset, seed=protocol.data_seed)


def _run_task(task: Task) -> dict[str, Any]:
    if os.getppid() != _WORKER["parent"]:  # the build was killed: do not start new work
        os._exit(0)
    protocol: Protocol = _WORKER["protocol"]
    sample = _WORKER["adapter"].sample_of(task.key)
    start = time.perf_counter()
    metrics, model = run_cell(protocol, _WORKER["bundle"], sample, seed=task.seed,
                              phase="validity" if task.phase == "validity" else "main",
                              device=_WORKER["device"])
    if task.phase == "main" and task.autoattack or task.phase == "autoattack":
        aa, _ = run_cell(protocol, _WORKER["bundle"], sample, seed=task.seed, phase="autoattack",
                         device=_WORKER["device"], model=model)
        metrics["robust_acc"] = aa["robust_acc"]
        metrics["aa_examples"], metrics["aa_mode"] = aa["aa_examples"], aa["aa_mode"]
        metrics["eval_seconds"] = round(metrics["eval_seconds"] + aa["eval_seconds"], 3)
    if task.phase in ("seed", "autoattack", "validity"):
        metrics.pop("params", None), metrics.pop("flops", None)
    return {
        "phase": task.phase, "key": task.key, "seed": task.seed, "sample": sample, "metrics": metrics,
        "seconds": round(time.perf_counter() - start, 3), "device": str(_device_name(_WORKER["device"])),
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _device_name(device: str) -> str:
    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def _meta(protocol: Protocol, plan: Plan, name: str) -> dict[str, Any]:
    import nni
    import optuna

    bundle = _load_bundle(protocol)
    return {
        "name": name, "format": 1, "protocol": protocol.to_dict(), "plan": plan.to_dict(),
        "test_examples": len(bundle.test), "threat": {"norm": bundle.threat.norm, "eps": bundle.threat.eps},
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "nni": nni.__version__,
                     "optuna": optuna.__version__},
        "machine": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count()},
    }


def build_table(
    folder: str | os.PathLike,
    *,
    name: str = "robust201-digits",
    protocol: Protocol | None = None,
    plan: Plan | None = None,
    workers: int = 1,
    threads: int = 1,
    device: str = "cpu",
    limit: int | None = None,
    phases: Iterable[str] = PHASES,
    quiet: bool = False,
) -> dict[str, int]:
    """Run (or continue) the build of table ``name`` in ``folder``; returns counts per phase.

    The folder's ``meta.json`` fixes the protocol and plan at the first run; a later run
    with a different protocol is refused (its rows would not be comparable). ``limit`` stops
    after that many tasks (for a timed slice of the build); ``phases`` restricts the build to
    some phases. Safe to kill at any moment: run it again to continue.
    """
    folder = Path(folder)
    protocol = protocol or Protocol()
    plan = plan or Plan()
    phases = tuple(phases)
    bad = [p for p in phases if p not in PHASES]
    if bad:
        raise ConfigError(f"unknown phase(s) {bad}; valid phases: {', '.join(PHASES)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but torch sees no CUDA device; use --device cpu")
    adapter = space_adapter(protocol.space)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / META_FILE
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("protocol") != protocol.to_dict() or meta.get("plan") != plan.to_dict():
            raise ConfigError(
                f"{meta_path} was built with another protocol or plan ({meta.get('protocol')}, {meta.get('plan')}); "
                "build into a new folder to change them"
            )
    else:
        write_text_atomic(meta_path, json.dumps(_meta(protocol, plan, name), indent=2) + "\n")
    rows_path = folder / ROWS_FILE
    rows = read_rows(rows_path, repair=True)
    done = {(r["phase"], r["key"], r["seed"]) for r in rows}
    keys = adapter.keys()
    main_rows = {r["key"]: r for r in rows if r["phase"] == "main"}
    tasks = [t for t in plan_tasks(keys, plan, main_rows) if t.phase in phases]
    todo = [t for t in tasks if t.id not in done]
    if limit is not None:
        todo = todo[:limit]
    log = _Log(folder, total=len(tasks), done=len(tasks) - len([t for t in tasks if t.id not in done]), quiet=quiet)
    remaining = {p: sum(1 for t in todo if t.phase == p) for p in PHASES}
    log.line(f"build {name}: {log.done}/{log.total} tasks done, {len(todo)} to run now "
             f"({', '.join(f'{p} {n}' for p, n in remaining.items() if n)}), {workers} worker(s) on {device}")
    counts = {p: 0 for p in PHASES}
    if not todo:
        log.close()
        return counts
    try:
        for row in _results(todo, protocol, device, workers, threads):
            # opened for each row: a rows file replaced meanwhile (git checkout, git stash) gets the
            # row, where a handle kept open would write to the replaced file and lose it
            with open(rows_path, "a") as out:
                out.write(json.dumps(row, sort_keys=True) + "\n")
                out.flush()
                os.fsync(out.fileno())
            counts[row["phase"]] += 1
            remaining[row["phase"]] -= 1
            log.done += 1
            log.seconds[row["phase"]].append(row["seconds"])
            m = row["metrics"]
            shown = " ".join(f"{k} {m[k]:.3f}" for k in ("clean_acc", "fgsm_acc", "pgd_acc", "robust_acc") if k in m)
            log.line(f"[{log.done}/{log.total}] {row['phase']} seed {row['seed']} {row['key'][:40]}: {shown} "
                     f"({row['seconds']:.1f} s) {log.eta(remaining, workers)}")
        if "autoattack" in phases and limit is None:  # top-PGD AutoAttack once the main pass is complete
            rows = read_rows(rows_path)
            main_rows = {r["key"]: r for r in rows if r["phase"] == "main"}
            done = {(r["phase"], r["key"], r["seed"]) for r in rows}
            extra = [t for t in plan_tasks(keys, plan, main_rows) if t.phase == "autoattack" and t.id not in done]
            if extra:
                log.close()
                more = build_table(folder, name=name, protocol=protocol, plan=plan, workers=workers,
                                   threads=threads, device=device, phases=("autoattack",), quiet=quiet)
                return {p: counts[p] + more[p] for p in PHASES}
    finally:
        if not log.handle.closed:
            log.line(f"stopped: {sum(counts.values())} task(s) written this run")
            log.close()
    return counts


def _results(todo: list[Task], protocol: Protocol, device: str, workers: int, threads: int) -> Iterator[dict[str, Any]]:
    if workers == 1:
        _init_worker(protocol.to_dict(), device, threads)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for task in todo:
            yield _run_task(task)
        return
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(protocol.to_dict(), device, threads))
    try:
        yield from pool.imap_unordered(_run_task, todo, chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()



