"""One-shot strategies on a table: the supernet trains on the table's own data, and what
the search exports is looked up in the table (no retraining).

:func:`run_one_shot` runs one (strategy, seed) unit: it builds the table's space with the
table's protocol (dataset, width, cells per stage), trains the strategy's supernet for
``epochs`` epochs (``batches`` batches each, if given) on the protocol's training split
through :func:`~robustnas.plugins.nni.run_experiment`, and looks up every exported cell
(one for DARTS-style strategies, TAM-NAS's Pareto front). A cell that a partial table does
not hold yet is measured with the table's own protocol (:meth:`Benchmark.evaluate`, seed 0:
the numbers the table will hold once it is complete) when ``missing="evaluate"``, and kept
in a :class:`LiveCells` cache so that no cell is trained twice; with ``missing="fail"`` it
is a failed query. See docs/benchmark.md, "One-shot strategies on the table".
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robustnas.plugins.errors import ConfigError
from robustnas.plugins.evaluator._utils import seed_everything

if TYPE_CHECKING:
    from ._table import Benchmark

__all__ = ["MISSING", "ONE_SHOT_ON_TABLE", "LiveCells", "OneShotRun", "run_one_shot"]

_logger = logging.getLogger(__name__)

#: One-shot strategies that run on a table (names of ``robustnas.strategies``).
ONE_SHOT_ON_TABLE: tuple[str, ...] = ("arnas", "dsrna", "dsrna-bound", "tamnas", "darts")
#: What happens to an exported cell that a partial table does not hold.
MISSING: tuple[str, ...] = ("evaluate", "fail")

#: Strategy name -> (registry name, keyword arguments). ``dsrna`` is DSRNA-Jacobian, the
#: paper's first variant; ``dsrna-bound`` its certified-bound variant (DSRNA-CB).
_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "arnas": ("arnas", {}),
    "dsrna": ("dsrna", {"metric": "jacobian"}),
    "dsrna-bound": ("dsrna", {"metric": "bound"}),
    "tamnas": ("tamnas", {}),
    "darts": ("darts", {}),
}


class LiveCells:
    """Cells measured with the table's protocol because a partial table lacked them: a JSON
    Lines file (one ``{"key", "metrics"}`` per line, fsync'd), read back on the next run.

    ``path=None`` keeps them in memory only. Every entry is the full metrics dict of
    :meth:`Benchmark.evaluate` (seed 0), the same the table's build writes for that cell.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._cells: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: measured again when needed
                    continue
                self._cells[str(row["key"])] = dict(row["metrics"])

    def __len__(self) -> int:
        return len(self._cells)

    def __contains__(self, key: str) -> bool:
        return key in self._cells

    def get(self, key: str) -> dict[str, Any] | None:
        found = self._cells.get(key)
        return None if found is None else dict(found)

    def entries(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._cells.values()]

    def keys(self) -> list[str]:
        return list(self._cells)

    def remember(self, key: str, metrics: Mapping[str, Any]) -> None:
        """Hold a cell another process measured and wrote to this file already (nothing written)."""
        with self._lock:
            self._cells.setdefault(key, json.loads(json.dumps(dict(metrics), default=float)))

    def add(self, key: str, metrics: Mapping[str, Any]) -> None:
        clean = json.loads(json.dumps(dict(metrics), default=float))
        with self._lock:
            self._cells[key] = clean
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "metrics": clean}, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def measure(self, bench: Benchmark, sample: Mapping[str, Any]) -> dict[str, Any]:
        """The table's metrics of ``sample``'s cell, measured now if neither the table nor
        this cache holds it (about 15 s on one CPU core for robust201-digits)."""
        key = bench.key(sample)
        cached = self.get(key)
        if cached is not None:
            return cached
        start = time.perf_counter()
        metrics = bench.evaluate(sample, seed=0)
        metrics.pop("sample", None)
        self.add(key, metrics)
        _logger.info("cell %s measured with the table's protocol in %.1f s (the partial table lacks it)",
                     key, time.perf_counter() - start)
        return self.get(key)  # type: ignore[return-value]


class OneShotRun:
    """What :func:`run_one_shot` returns: the exported ``queries`` (``(seconds, sample,
    metrics or None)``, as the multi-trial units record them, seconds counted from the start
    of the search), the trained ``strategy`` object (for diagnostics), ``search_seconds``
    (supernet training and the strategy's own selection), ``live`` (how many exports a
    partial table lacked and the protocol measured) and ``exported``: NNI's top models in its
    order (``run_experiment(...).exported``; TAM-NAS's first is its pick from the front, while
    ``queries`` hold its whole front)."""

    def __init__(self, queries: list[tuple[float, dict[str, Any], dict[str, Any] | None]], strategy: Any,
                 search_seconds: float, live: int, exported: list[dict[str, Any]] | None = None) -> None:
        self.queries, self.strategy, self.search_seconds, self.live = queries, strategy, search_seconds, live
        self.exported = list(exported or [])


def check_one_shot(name: str) -> None:
    if name not in _VARIANTS:
        raise ConfigError(f"one-shot strategy {name!r} does not run on a table; valid: {', '.join(ONE_SHOT_ON_TABLE)}")


def _strategy(name: str, seed: int, bundle: Any, kwargs: Mapping[str, Any]) -> Any:
    from robustnas.strategies import get_strategy, is_threat_aware, takes_seed

    registry_name, defaults = _VARIANTS[name]
    options = {**defaults, **dict(kwargs)}
    if is_threat_aware(registry_name):  # ours take the table's threat; NNI's DARTS trains on clean data
        options = {"eps": bundle.threat.eps, "norm": bundle.threat.norm, **options}
    if "seed" not in options and takes_seed(registry_name):
        options["seed"] = seed
    return get_strategy(registry_name, **options)


def _exports(strategy: Any, result: Any) -> list[dict[str, Any]]:
    if hasattr(strategy, "pareto_front"):
        samples = [dict(r["sample"]) for r in strategy.pareto_front()]
    else:
        samples = [dict(s) for s in result.exported]
    if not samples:
        raise RuntimeError(f"{type(strategy).__name__} exported no architecture")
    return samples


def run_one_shot(bench: Benchmark, name: str, seed: int, *, epochs: int = 1, batches: int | None = None,
                 batch_size: int = 64, strategy_kwargs: Mapping[str, Any] | None = None,
                 missing: str = "evaluate", live: LiveCells | None = None,
                 working_dir: str | os.PathLike | None = None) -> OneShotRun:
    """Train one one-shot strategy on the table's data and look up its exports.

    The space is the table's (``bench.protocol``'s space and ``space_kwargs``), built after
    seeding Python, NumPy and torch with ``seed`` (so a seed's run repeats exactly on one
    machine); the data are the protocol's dataset and split (``data_seed``); the threat
    model is the dataset's (the table's). ``strategy_kwargs`` go to the strategy over the
    defaults. ``missing``: see the module docstring.
    """
    from robustnas.plugins.evaluator import load_dataset
    from robustnas.plugins.nni import classification_evaluator, run_experiment
    from robustnas.search_spaces import get_space

    check_one_shot(name)
    if missing not in MISSING:
        raise ConfigError(f"missing must be one of {', '.join(MISSING)}, got {missing!r}")
    protocol = bench.protocol
    if protocol is None:
        raise ConfigError(f"table {bench.name!r} has no protocol: its data and space are unknown")
    for label, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, (int, np.integer))
                                or batches < 1):
        raise ConfigError(f"batches must be None or an integer >= 1, got {batches!r}")
    live = live if live is not None else LiveCells()

    bundle = load_dataset(protocol.dataset, seed=protocol.data_seed)
    start = time.perf_counter()
    seed_everything(seed)
    space = get_space(protocol.space, **dict(protocol.space_kwargs))
    strategy = _strategy(name, seed, bundle, strategy_kwargs or {})
    evaluator = classification_evaluator(bundle, batch_size=batch_size, max_epochs=int(epochs),
                                         limit_train_batches=batches)
    with tempfile.TemporaryDirectory(prefix="robustnas-oneshot-") as tmp:
        result = run_experiment(space, strategy, evaluator, working_dir=working_dir or tmp)
    samples = _exports(strategy, result)
    search_seconds = time.perf_counter() - start

    queries: list[tuple[float, dict[str, Any], dict[str, Any] | None]] = []
    measured = 0
    for sample in samples:
        cell = dict(sample)
        try:
            metrics = bench.query(cell)
            metrics.pop("sample", None)
        except KeyError:
            key = bench.key(cell)
            if missing == "fail":
                metrics = None
            else:
                measured += key not in live
                metrics = {**live.measure(bench, cell), "key": key}
        queries.append((search_seconds, cell, metrics))
    return OneShotRun(queries, strategy, search_seconds, measured, [dict(s) for s in result.exported])
