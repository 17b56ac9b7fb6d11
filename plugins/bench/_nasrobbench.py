"""Reading NAS-RobBench-201 (Wu et al., ICLR 2024) from its published JSON files.

The benchmark ships two files, read here as its own loader (``nasrobbench201.py`` of the
authors' repository) reads them:

- ``meta.json``: ``{"ids": {"<id>": {"nb201-string": "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|",
  "isomorph": "<id of the evaluated cell>"}}}``;
- ``NAS-RobBench-201_all.json``: ``{dataset: {"<id>": {metric: {"1": value}}}}`` with metric
  names such as ``val_fgsm_3.0_acc`` and ``val_pgd_3.0_acc`` (attack, eps in /255).

Operations are NAS-Bench-201's names (``nor_conv_3x3``, ...), mapped to NNI's. The clean
accuracy's key is not shown in the authors' documentation; the first of :data:`CLEAN_KEYS`
present is used (docs/benchmark.md says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robustnas.plugins.errors import ConfigError, DataError

__all__ = ["CLEAN_KEYS", "load_nasrobbench", "parse_nb201_string"]

_OP_NAMES = {"none": "none", "skip_connect": "skip_connect", "nor_conv_1x1": "conv_1x1",
             "nor_conv_3x3": "conv_3x3", "avg_pool_3x3": "avg_pool_3x3"}
#: Candidate keys of clean accuracy, in order of preference.
CLEAN_KEYS: tuple[str, ...] = ("val_clean_acc", "val_acc", "clean_acc", "val_natural_acc")
_INPUTS = {"cifar10": ([3, 32, 32], 10), "cifar100": ([3, 32, 32], 100), "imagenet": ([3, 16, 16], 120)}


def parse_nb201_string(text: str) -> dict[str, str]:
    """A robust201 sample from a NAS-Bench-201 string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    from robustnas.search_spaces.robust201 import EDGES, LABELS

    nodes = text.strip().split("+")
    if len(nodes) != 3:
        raise DataError(f"NAS-Bench-201 string {text!r} does not have 3 nodes")
    edge_op: dict[tuple[int, int], str] = {}
    for target, node in enumerate(nodes, start=1):
        for item in filter(None, node.strip("|").split("|")):
            op, _, source = item.partition("~")
            if op not in _OP_NAMES or not source.isdigit():
                raise DataError(f"NAS-Bench-201 string {text!r}: cannot read edge {item!r}; "
                                f"operations are {sorted(_OP_NAMES)}")
            edge_op[(int(source), target)] = _OP_NAMES[op]
    missing = [e for e in EDGES if e not in edge_op]
    if missing:
        raise DataError(f"NAS-Bench-201 string {text!r} misses edge(s) {missing}")
    return {label: edge_op[edge] for label, edge in zip(LABELS, EDGES)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"NAS-RobBench-201 file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise DataError(f"NAS-RobBench-201 file {path} is not valid JSON (truncated?): {err}") from err


def load_nasrobbench(path: str | Path, meta: str | Path | None = None, dataset: str = "cifar10",
                     eps: float = 3.0) -> Any:
    """NAS-RobBench-201 as a :class:`~robustnas.plugins.bench.Benchmark` (one dataset, one eps).

    ``path`` is ``NAS-RobBench-201_all.json``; ``meta`` its ``meta.json`` (default: beside it).
    ``eps`` picks the metrics ``val_fgsm_<eps>_acc`` / ``val_pgd_<eps>_acc`` (in /255).
    """
    from ._table import Benchmark

    path = Path(path)
    meta_path = Path(meta) if meta is not None else path.with_name("meta.json")
    meta_data, results = _read_json(meta_path), _read_json(path)
    if not isinstance(meta_data, dict) or not isinstance(meta_data.get("ids"), dict):
        raise DataError(f"{meta_path} lacks the 'ids' mapping of NAS-RobBench-201's meta.json")
    if not isinstance(results, dict) or dataset not in results:
        have = sorted(results) if isinstance(results, dict) else []
        raise ConfigError(f"dataset {dataset!r} is not in {path}; it holds {have}")
    if dataset not in _INPUTS:
        raise ConfigError(f"unknown NAS-RobBench-201 dataset {dataset!r}; valid: {sorted(_INPUTS)}")
    tag = f"{float(eps):.1f}"
    fgsm_key, pgd_key = f"val_fgsm_{tag}_acc", f"val_pgd_{tag}_acc"
    rows = []
    for arch_id, info in meta_data["ids"].items():
        if str(info.get("isomorph")) != str(arch_id):
            continue  # evaluated under its isomorph's id
        metrics_of = results[dataset].get(str(arch_id))
        if metrics_of is None:
            continue
        if pgd_key not in metrics_of:
            raise DataError(f"{path}: architecture {arch_id} has no {pgd_key!r}; its metrics are {sorted(metrics_of)}")

        def value(key: str) -> float | None:
            item = metrics_of.get(key)
            return None if item is None else float(item["1"] if isinstance(item, dict) else item)

        clean = next((value(k) for k in CLEAN_KEYS if k in metrics_of), None)
        sample = parse_nb201_string(info["nb201-string"])
        from robustnas.search_spaces.robust201 import canonical_key

        rows.append({"phase": "main", "key": canonical_key(sample), "seed": 0, "sample": sample,
                     "metrics": {"clean_acc": clean, "fgsm_acc": value(fgsm_key), "pgd_acc": value(pgd_key),
                                 "nasrobbench_id": arch_id}})
    if not rows:
        raise DataError(f"{path} holds no evaluated architecture of meta file {meta_path} for {dataset!r}")
    shape, classes = _INPUTS[dataset]
    table_meta = {
        "name": f"nasrobbench201-{dataset}", "format": "nasrobbench201", "space": "robust201",
        "space_kwargs": {"input_shape": shape, "num_classes": classes, "width": 16, "cells_per_stage": 5},
        "threat": {"norm": "linf", "eps": float(eps) / 255}, "source_files": [str(path), str(meta_path)],
    }
    return Benchmark(table_meta, rows, str(path))
