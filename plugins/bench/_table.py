"""A benchmark table in memory: lookups, bests, fronts, noise and validity, and packing.

:func:`load_benchmark` reads a packed table (``<name>.json.gz``: the build's metadata and
rows), a build folder (``rows.jsonl`` + ``meta.json``, also while a build is running), or
NAS-RobBench-201's published JSON (:mod:`._nasrobbench`). A lookup canonicalises the
sample (isomorphic cells share one entry) and copies one dict: microseconds. Each row of a
table is a :class:`TableRow` (one phase of one cell under one seed), JSON on disk.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import statistics
import zlib
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustnas.plugins.errors import ConfigError, DataError
from robustnas.plugins.evaluator.metrics import METRIC_DIRECTIONS

from ._build import META_FILE, ROWS_FILE, read_rows
from ._protocol import PHASES, Protocol, run_cell
from ._spaces import space_adapter

__all__ = ["BENCHMARKS", "Benchmark", "TableRow", "available_benchmarks", "load_benchmark", "pack_table"]

DATA_DIR = Path(__file__).resolve().parent / "data"

#: Shipped tables: name -> packed file in the package's data folder.
BENCHMARKS: dict[str, str] = {"robust201-digits": "robust201-digits.json.gz"}

#: Which way each table metric is better (for ``best`` and ``pareto_front``): the training time the
#: table records, then the evaluator's directions (a live view of ``METRICS``).
DIRECTIONS: Mapping[str, str] = ChainMap({"train_seconds": "minimize"}, METRIC_DIRECTIONS)  # type: ignore[arg-type]
_SEED_METRICS = ("clean_acc", "fgsm_acc", "pgd_acc")


@dataclass(frozen=True)
class TableRow:
    """One row of a table: the measurements of one ``phase`` (``main``, ``seed``,
    ``autoattack``, ``validity``) of the cell ``key`` under training seed ``seed``.

    ``sample`` is the cell's representative NNI sample (needed by ``main`` and ``autoattack``
    rows); ``seconds``, ``device`` and ``finished`` say how long the task took, where, and when
    (UTC). ``to_dict()`` is the line of ``rows.jsonl`` (fields left None are not written, as
    NAS-RobBench-201's rows have none of the three); ``from_dict`` raises :class:`DataError`
    naming a missing, unknown or ill-typed key.
    """

    phase: str
    key: str
    seed: int
    metrics: dict[str, Any]
    sample: dict[str, Any] | None = None
    seconds: float | None = None
    device: str | None = None
    finished: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> "TableRow":
        """The inverse of :meth:`to_dict`."""
        keys = list(cls.__dataclass_fields__)
        if not isinstance(data, Mapping):
            raise DataError(f"a table row must be a mapping with keys {keys}, got {type(data).__name__}")
        missing = [key for key in ("phase", "key", "seed", "metrics") if key not in data]
        unknown = [key for key in data if key not in keys]
        if missing or unknown:
            bad = f"lacks key(s) {missing}" if missing else f"has unknown key(s) {unknown}"
            raise DataError(f"a table row {bad}; a row has {keys} (the last four optional)")
        phase, key, seed = data["phase"], data["key"], data["seed"]
        if phase not in PHASES:
            raise DataError(f"unknown phase {phase!r} in a row of cell {key!r}; valid phases: {', '.join(PHASES)}")
        if not isinstance(key, str) or isinstance(seed, bool) or not isinstance(seed, int):
            raise DataError(f"a table row's key must be a string and its seed an integer, got {key!r} and {seed!r}")
        if not isinstance(data["metrics"], Mapping):
            raise DataError(f"row['metrics'] of cell {key!r} must be a mapping, got {type(data['metrics']).__name__}")
        sample = data.get("sample")
        if sample is None and phase in ("main", "autoattack") or sample is not None and not isinstance(sample, Mapping):
            raise DataError(f"the {phase} row of cell {key!r} needs row['sample'], a dict {{label: choice}}; "
                            f"got {sample!r}")
        return cls(phase=phase, key=key, seed=seed, metrics=dict(data["metrics"]),
                   sample=None if sample is None else dict(sample), seconds=data.get("seconds"),
                   device=data.get("device"), finished=data.get("finished"))

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON types (a copy; optional fields that are None are left out)."""
        row: dict[str, Any] = {"phase": self.phase, "key": self.key, "seed": self.seed, "metrics": dict(self.metrics)}
        optional = {"sample": None if self.sample is None else dict(self.sample), "seconds": self.seconds,
                    "device": self.device, "finished": self.finished}
        row.update((name, value) for name, value in optional.items() if value is not None)
        return row


def available_benchmarks() -> list[str]:
    """Names accepted by :func:`load_benchmark` without a ``path``."""
    return sorted(BENCHMARKS)


class Benchmark:
    """One robustness table: every cell of a space under one protocol (docs/benchmark.md).

    Example:

    >>> from robustnas.plugins.bench import load_benchmark
    >>> bench = load_benchmark("robust201-digits")
    >>> sample = bench.architectures()[0]          # a cell the table holds
    >>> metrics = bench.query(sample)
    >>> sample in bench, metrics["key"] == bench.key(sample), 0.0 <= metrics["pgd_acc"] <= 1.0
    (True, True, True)
    """

    def __init__(self, meta: Mapping[str, Any], rows: Sequence[TableRow | Mapping[str, Any]], source: str) -> None:
        self.meta = dict(meta)
        self.name: str = self.meta.get("name", "table")
        self.source = source
        self.protocol = Protocol.from_dict(self.meta["protocol"]) if "protocol" in self.meta else None
        self._adapter = space_adapter(self.meta.get("space", self.protocol.space if self.protocol else "robust201"))
        self._threat = self.meta.get("threat") or _threat_of(self.protocol)
        self._entries: dict[str, dict[str, Any]] = {}
        self._by_seed: dict[str, dict[int, dict[str, float]]] = {}  # key -> seed -> seed metrics
        self._validity: dict[str, dict[str, Any]] = {}
        for row in rows:
            self._add(row)
        for key, entry in self._entries.items():
            runs = self._by_seed.get(key, {})
            entry["seeds"] = len(runs)
            if len(runs) >= 2:
                for m in _SEED_METRICS:
                    entry[f"{m}_sd"] = statistics.stdev(run[m] for run in runs.values())

    # ------------------------------------------------------------------ loading
    def _add(self, row: TableRow | Mapping[str, Any]) -> None:
        if not isinstance(row, TableRow):
            try:
                row = TableRow.from_dict(row)
            except DataError as err:
                raise DataError(f"{self.source}: {err}") from None
        phase, key, seed, metrics = row.phase, row.key, row.seed, row.metrics
        if phase in ("main", "seed"):
            self._by_seed.setdefault(key, {})[seed] = {m: float(metrics[m]) for m in _SEED_METRICS}
        if phase == "main":
            entry = self._entries.setdefault(key, {})
            robust = entry.get("robust_acc")  # an autoattack row may have come first
            entry.update(_entry(metrics, self._threat, self.protocol), key=key, sample=dict(row.sample or {}))
            entry["n_examples"] = entry["n_examples"] or self.meta.get("test_examples")
            if entry["robust_acc"] is None and robust is not None:
                entry["robust_acc"] = robust
        elif phase == "autoattack":
            entry = self._entries.setdefault(key, {"key": key, "sample": dict(row.sample or {}), "flags": []})
            entry.update(robust_acc=metrics["robust_acc"], attack=metrics.get("aa_mode"),
                         aa_examples=metrics.get("aa_examples"))
        elif phase == "validity":
            self._validity[key] = dict(metrics)

    # ------------------------------------------------------------------ the table API
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sample: Mapping[str, Any]) -> bool:
        return self._adapter.key_of(sample) in self._entries

    @property
    def size(self) -> int:
        """How many cells the space has (the table's length once complete)."""
        return len(self._adapter.keys())

    @property
    def complete(self) -> bool:
        """Whether every cell of the space has an entry."""
        return len(self._entries) == self.size

    def key(self, sample: Mapping[str, Any]) -> str:
        """The canonical key of ``sample`` (isomorphic samples share it)."""
        return self._adapter.key_of(sample)

    def query(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """The table's metrics of ``sample`` (a copy): the evaluator's keys, ``fgsm_acc``,
        ``key``, and ``<metric>_sd`` over training seeds where they were measured.
        ``robust_acc`` is None for cells outside the AutoAttack subset."""
        key = self._adapter.key_of(sample)
        entry = self._entries.get(key)
        if entry is None:
            state = "is complete" if self.complete else f"has {len(self)} of {len(self._adapter.keys())} cells so far"
            raise KeyError(f"cell {key!r} is not in table {self.name!r}, which {state}")
        result = dict(entry)
        result["sample"] = dict(entry["sample"])
        result["flags"] = list(entry["flags"])
        return result

    def space(self) -> Any:
        """The NNI ModelSpace the table covers (built with the protocol's arguments)."""
        from robustnas.search_spaces import get_space

        if self.protocol is not None:
            return get_space(self.protocol.space, **self.protocol.space_kwargs)
        return get_space(self.meta.get("space", "robust201"), **self.meta.get("space_kwargs", {}))

    def architectures(self) -> list[dict[str, Any]]:
        """One representative sample per cell in the table, in key order."""
        return [dict(self._entries[k]["sample"]) for k in sorted(self._entries)]

    def entries(self) -> list[dict[str, Any]]:
        """Every entry (copies), in key order."""
        return [dict(self._entries[k]) for k in sorted(self._entries)]

    def values(self, metric: str) -> np.ndarray:
        """``metric`` of every entry in key order (NaN where not measured)."""
        return np.array([_num(self._entries[k].get(metric)) for k in sorted(self._entries)], dtype=float)

    def best(self, metric: str = "pgd_acc") -> dict[str, Any]:
        """The entry with the best ``metric`` (ties: smaller params, then key)."""
        direction = _direction(metric)
        candidates = [e for e in self._entries.values() if e.get(metric) is not None]
        if not candidates:
            raise DataError(f"table {self.name!r} has no value of {metric!r}")
        sign = -1.0 if direction == "maximize" else 1.0
        return dict(min(candidates, key=lambda e: (sign * e[metric], e.get("params", 0), e["key"])))

    def pareto_front(self, objectives: Sequence[str] = ("clean_acc", "pgd_acc", "params")) -> list[dict[str, Any]]:
        """The non-dominated entries under ``objectives`` (directions from the metric names)."""
        from robustnas.strategies.pareto import pareto_front_mask

        directions = [_direction(m) for m in objectives]
        entries = [e for e in self._entries.values() if all(e.get(m) is not None for m in objectives)]
        if not entries:
            return []
        points = np.array([[float(e[m]) for m in objectives] for e in entries])
        mask = pareto_front_mask(points, directions)
        return sorted((dict(e) for e, keep in zip(entries, mask) if keep), key=lambda e: e["key"])

    def evaluate(self, sample: Mapping[str, Any], seed: int = 0, device: str = "cpu") -> dict[str, Any]:
        """Re-run the table's protocol on one cell with the shared evaluator (the honesty check):
        the same keys as :meth:`query`, measured now."""
        from robustnas.plugins.evaluator import load_dataset

        if self.protocol is None:
            raise ConfigError(f"table {self.name!r} has no protocol to re-run")
        key = self._adapter.key_of(sample)
        representative = self._adapter.sample_of(key)
        bundle = load_dataset(self.protocol.dataset, seed=self.protocol.data_seed)
        metrics, _ = run_cell(self.protocol, bundle, representative, seed=seed, device=device)
        entry = _entry(metrics, self._threat, self.protocol)
        entry.update(key=key, sample=representative)
        return entry

    # ------------------------------------------------------------------ noise and validity
    def noise(self) -> dict[str, Any]:
        """Seed-to-seed noise: per metric, the mean SD over cells with extra seeds and the
        Spearman and Kendall rank correlations between seed 0 and each extra seed."""
        from scipy.stats import kendalltau, spearmanr

        result: dict[str, Any] = {"cells": 0}
        per_metric: dict[str, dict[str, Any]] = {}
        full = {k: runs for k, runs in self._by_seed.items() if k in self._entries and {0, 1, 2} <= set(runs)}
        result["cells"] = len(full)
        if len(full) < 3:
            return result
        for m in _SEED_METRICS:
            arr = np.array([[full[k][seed][m] for seed in (0, 1, 2)] for k in sorted(full)])
            sds = arr.std(axis=1, ddof=1)
            taus = [float(kendalltau(arr[:, 0], arr[:, j]).statistic) for j in (1, 2)]
            rhos = [float(spearmanr(arr[:, 0], arr[:, j]).statistic) for j in (1, 2)]
            per_metric[m] = {"mean_sd": float(sds.mean()), "median_sd": float(np.median(sds)),
                             "kendall_tau": float(np.mean(taus)), "spearman": float(np.mean(rhos))}
        result["metrics"] = per_metric
        return result

    def validity(self) -> dict[str, Any]:
        """Rank agreement between the table's protocol and the strong one on the validity
        cells: Kendall tau and Spearman of PGD accuracy (table) against the strong protocol's
        PGD and AutoAttack accuracy, and of clean accuracy."""
        from scipy.stats import kendalltau, spearmanr

        keys = sorted(k for k in self._validity if k in self._entries)
        result: dict[str, Any] = {"cells": len(keys)}
        if len(keys) < 3:
            return result
        pairs = {"pgd_acc~strong_pgd_acc": ("pgd_acc", "pgd_acc"),
                 "pgd_acc~strong_robust_acc": ("pgd_acc", "robust_acc"),
                 "clean_acc~strong_clean_acc": ("clean_acc", "clean_acc")}
        for name, (ours, strong) in pairs.items():
            a = [self._entries[k][ours] for k in keys]
            b = [self._validity[k][strong] for k in keys]
            result[name] = {"kendall_tau": float(kendalltau(a, b).statistic),
                            "spearman": float(spearmanr(a, b).statistic)}
        return result

    def summary(self) -> dict[str, Any]:
        """Coverage, noise, validity and the best cells, as printed by ``robustnas bench info``."""
        n_aa = sum(1 for e in self._entries.values() if e.get("robust_acc") is not None)
        out: dict[str, Any] = {
            "name": self.name, "source": self.source, "cells": len(self), "space_cells": len(self._adapter.keys()),
            "autoattack_cells": n_aa, "validity_cells": len(self._validity),
            "protocol": self.protocol.to_dict() if self.protocol else None,
        }
        if len(self):
            for metric in ("clean_acc", "pgd_acc"):
                best = self.best(metric)
                out[f"best_{metric}"] = {"value": best[metric], "key": best["key"], "params": best.get("params")}
            if n_aa:
                best = self.best("robust_acc")
                out["best_robust_acc"] = {"value": best["robust_acc"], "key": best["key"]}
            out["pareto_front_size"] = len(self.pareto_front())
        out["noise"] = self.noise()
        out["validity"] = self.validity()
        return out


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _direction(metric: str) -> str:
    base = metric[:-3] if metric.endswith("_sd") else metric
    if base not in DIRECTIONS:
        raise ConfigError(f"unknown table metric {metric!r}; valid metrics: {sorted(DIRECTIONS)}")
    return "minimize" if metric.endswith("_sd") else DIRECTIONS[base]


def _threat_of(protocol: Protocol | None) -> dict[str, Any]:
    if protocol is None:
        return {"norm": None, "eps": None}
    from robustnas.plugins.evaluator import DEFAULT_THREATS

    threat = DEFAULT_THREATS.get(protocol.dataset)
    return {"norm": getattr(threat, "norm", None), "eps": getattr(threat, "eps", None)}


def _entry(metrics: Mapping[str, Any], threat: Mapping[str, Any], protocol: Protocol | None) -> dict[str, Any]:
    """An evaluator-style metrics dict from the measurements of one cell."""
    entry = {
        "clean_acc": metrics.get("clean_acc"), "fgsm_acc": metrics.get("fgsm_acc"), "pgd_acc": metrics.get("pgd_acc"),
        "robust_acc": metrics.get("robust_acc"), "params": metrics.get("params"), "flops": metrics.get("flops"),
        "latency_ms": None, "train_seconds": metrics.get("train_seconds"), "eval_seconds": metrics.get("eval_seconds"),
        "norm": threat.get("norm"), "eps": threat.get("eps"),
        "attack": metrics.get("aa_mode"), "aa_examples": metrics.get("aa_examples"),
        "dataset": protocol.dataset if protocol else None, "recipe": protocol.recipe if protocol else None,
        "epochs": protocol.epochs if protocol else None, "n_examples": metrics.get("n_examples"),
        "flags": list(metrics.get("flags", [])),
    }
    return entry


# ---------------------------------------------------------------------- loading and packing
def load_benchmark(name: str = "robust201-digits", path: str | os.PathLike | None = None, **options: Any) -> Benchmark:
    """A robustness table by name (shipped with the package), or from ``path``: a packed
    ``.json.gz`` or a build folder. ``load_benchmark("nasrobbench201", path=".../NAS-RobBench-201_all.json",
    dataset="cifar10", eps=3.0)`` reads NAS-RobBench-201's published files (``meta=`` names its
    ``meta.json`` when it is not beside the results)."""
    if name == "nasrobbench201":
        if path is None:
            raise ConfigError("benchmark 'nasrobbench201' is not shipped: pass path= to its NAS-RobBench-201_all.json")
        from ._nasrobbench import load_nasrobbench

        return load_nasrobbench(path, **options)
    if options:
        raise ConfigError(f"options {sorted(options)} apply to 'nasrobbench201' only")
    if path is None:
        if name not in BENCHMARKS:
            raise ConfigError(f"unknown benchmark {name!r}; valid benchmarks: "
                              f"{', '.join(available_benchmarks() + ['nasrobbench201 (with path=)'])}")
        path = DATA_DIR / BENCHMARKS[name]
        if not path.exists():
            raise DataError(f"the data file of benchmark {name!r} is missing: {path} (reinstall robustnas, or "
                            "build it with `robustnas bench build` and `robustnas bench pack`)")
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.exists():
        raise DataError(f"benchmark file {path} does not exist")
    meta, rows = _read_packed(path)
    return Benchmark(meta, rows, str(path))


def _load_folder(folder: Path) -> Benchmark:
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise DataError(f"{folder} is not a benchmark build folder: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{meta_path} is not valid JSON: {err}") from err
    return Benchmark(meta, read_rows(folder / ROWS_FILE), str(folder))


def _read_packed(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        with gzip.open(path, "rt") as handle:
            data = json.load(handle)
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(f"benchmark file {path} is truncated or not gzip data ({err}); "
                        "reinstall robustnas or re-pack the table") from err
    except json.JSONDecodeError as err:
        raise DataError(f"benchmark file {path} does not hold valid JSON ({err})") from err
    if not isinstance(data, dict) or "meta" not in data or "rows" not in data:
        raise DataError(f"benchmark file {path} lacks 'meta' and 'rows'; it was not written by `robustnas bench pack`")
    return data["meta"], data["rows"]


def pack_table(folder: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Write a build folder's metadata and rows as one gzip'ed JSON (rows sorted; no timestamp
    in the gzip header, so re-packing the same rows gives the same bytes)."""
    folder = Path(folder)
    bench = _load_folder(folder)  # validates the folder
    meta = dict(bench.meta)
    rows = sorted((TableRow.from_dict(r) for r in read_rows(folder / ROWS_FILE)), key=lambda r: (r.phase, r.key, r.seed))
    name = meta.get("name", folder.name)
    dest = Path(dest) if dest else DATA_DIR / f"{name}.json.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"meta": meta, "rows": [row.to_dict() for row in rows]}, sort_keys=True, separators=(",", ":"))
    tmp = dest.with_name(f".{dest.name}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(text.encode())
    os.replace(tmp, dest)
    return dest
