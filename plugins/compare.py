"""Head-to-head comparison of search strategies on one space, one dataset and one budget.

``compare(config)`` runs every strategy for every seed, retrains the architectures each one returns
with the shared evaluator under one recipe and one threat model, and writes a run folder:

- ``results.json``: the configuration and one row per retrained architecture (strategy, seed,
  architecture record, metrics, search cost), rewritten atomically after every finished unit;
- ``report.md``: one row per strategy (mean and spread over seeds), computed from ``results.json``;
- ``pareto.png``: clean against AutoAttack accuracy, marker size by parameters;
- ``optuna.journal``: the Optuna storage of the Optuna samplers' studies (each study carries the
  run's fingerprint);
- ``nni/``: NNI's experiment files (checkpoints, logs) of the NNI searches.

An interrupted run continues with ``resume=True``: finished (strategy, seed) units are not redone,
and Optuna studies continue from their storage. ``jobs`` > 1 (or a ``cluster`` address) runs the
units' searches and retrainings as tasks on Ray (:mod:`robustnas.plugins._parallel`), with the
same results as one process: every task seeds itself before it builds anything. Everything is
validated (names, numbers, nested evaluator and strategy settings, the device, the data, the
engine's settings) before the run folder is created. A failing
candidate (an exception, a NaN loss, out of memory) fails its own trial only; its reason is kept in
``results.json`` (``failures``) and in the report, and a unit left without any successful candidate
is not marked done, so ``resume=True`` retries it.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypedDict

from robustnas.plugins._io import write_text_atomic  # noqa: F401  (also compare.write_text_atomic)
from robustnas.plugins.errors import ConfigError, DataError, OutputError, RobustNASError
from robustnas.plugins._deprecation import Renamed, first_spelling
from robustnas.plugins.evaluator import EVALUATOR_OPTIONS, MODES, RECIPES, EvaluatorConfig
from robustnas.plugins.evaluator._utils import seed_everything
from robustnas.plugins.evaluator.records import Metrics, metrics_from_dict
from robustnas.search_spaces import ArchitectureRecord
from robustnas.strategies import is_one_shot, is_threat_aware, population_for  # noqa: F401  (also compare.population_for)

__all__ = ["EVALUATOR_FLAGS", "FINGERPRINT_ATTR", "HEARTBEAT_SECONDS", "MEASURED_KEYS", "OPTUNA_PREFIX",
           "PRESETS", "STALE_SECONDS", "CompareConfig", "CompareRow", "RunFolder", "SearchCost",
           "SearchEntry", "check", "compare", "evolutionary_defaults", "format_plan", "plan", "retrain",
           "run_search", "seed_everything", "seeded", "valid_strategy_names", "without_times"]

if TYPE_CHECKING:
    from robustnas.plugins._parallel import InProcess, RayExecutor

_logger = logging.getLogger(__name__)

#: Study system attribute holding the fingerprint of the run that created an Optuna study.
FINGERPRINT_ATTR = "robustnas:fingerprint"
#: Seconds between the heartbeats of a running Optuna trial of a comparison.
HEARTBEAT_SECONDS = 5.0
#: Without the run folder's lock, a RUNNING trial is taken as dead after this many silent seconds.
STALE_SECONDS = 60.0

#: Whether a strategy is one-shot (trains a supernet on the evaluator's data) or threat-aware is
#: asked of its class (robustnas.strategies.is_one_shot / is_threat_aware), entry points included.
OPTUNA_PREFIX = "optuna-"

#: The demo's search-time evaluator: FGSM-RS adversarial training (Wong et al. 2020), two passes
#: a step, so 4 epochs cost about what 1 epoch of PGD-7 does. Measured on digits, ARNAS space
#: width 8: FGSM-RS 4 epochs gives clean 0.90-0.96 and AutoAttack 0.09-0.17 in 19-30 s; PGD-7
#: 1 epoch left candidates at chance (clean 0.10), so the search ranked noise.
_SEARCH_EVALUATOR_DEMO = {"recipe": "fgsm-rs", "epochs": 4, "batch_size": 64, "aa_mode": "fast", "n_examples": 64}
_FINAL_EVALUATOR_DEMO = {"recipe": "pgd", "epochs": 5, "batch_size": 64, "aa_mode": "fast", "n_examples": 100}

#: Named configurations. ``demo`` runs within minutes on 2 CPU cores; ``paper`` wants a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "dataset": "digits",
        "space": "arnas",
        "space_kwargs": {"width": 8, "num_cells": 4},
        "strategies": ["arnas", "dsrna", "tamnas", "random", "optuna-nsga2"],
        "seeds": [0],
        "budget": 4,
        "search_epochs": 1,
        "search_batches": 6,
        "strategy_kwargs": {"tamnas": {"population_size": 4, "generations": 2, "val_batches": 2, "bn_batches": 4}},
        "top_k": 1,
        "search": _SEARCH_EVALUATOR_DEMO,
        "final": _FINAL_EVALUATOR_DEMO,
    },
    "small": {
        "dataset": "digits",
        "space": "arnas",
        "space_kwargs": {"width": 12, "num_cells": 5},
        "strategies": ["arnas", "dsrna", "tamnas", "random", "evolution", "optuna-nsga2", "optuna-tpe"],
        "seeds": [0, 1, 2],
        "budget": 12,
        "search_epochs": 10,
        "strategy_kwargs": {"tamnas": {"population_size": 8, "generations": 4}},
        "top_k": 3,
        "search": {"recipe": "pgd", "epochs": 4, "aa_mode": "fast", "n_examples": 128},
        "final": {"recipe": "pgd", "epochs": 20, "aa_mode": "standard", "n_examples": 450},
    },
    "paper": {
        "dataset": "cifar10",
        "space": "arnas",
        "space_kwargs": {"width": 24, "num_cells": 8},
        "final_space_kwargs": {"width": 64, "num_cells": 20},
        "strategies": ["arnas", "dsrna", "tamnas", "random", "optuna-nsga2"],
        "seeds": [0, 1, 2],
        "budget": 50,
        "search_epochs": 50,
        "top_k": 1,
        "search": {"recipe": "pgd", "epochs": 10, "aa_mode": "fast", "n_examples": 1000},
        "final": {"recipe": "pgd", "epochs": 200, "aa_mode": "standard", "n_examples": 10000},
    },
}


@dataclass
class CompareConfig:
    """What a comparison runs. Budgets: ``budget`` candidates per multi-trial strategy and seed,
    ``search_epochs`` supernet epochs per one-shot strategy and seed; ``top_k`` architectures per
    strategy and seed are retrained by the ``final`` evaluator configuration.

    ``jobs`` and ``cluster`` say where it runs, not what it computes (they are not part of the
    fingerprint): ``jobs`` tasks at once, on a private local Ray instance, or on the Ray cluster
    at ``cluster`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``); ``jobs=1`` without a cluster
    runs in this process and needs no engine."""

    preset: str = "demo"
    dataset: str = "digits"
    space: str = "arnas"
    space_kwargs: dict[str, Any] = field(default_factory=dict)
    final_space_kwargs: dict[str, Any] = field(default_factory=dict)
    strategies: list[str] = field(default_factory=list)
    strategy_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategy_spaces: dict[str, str] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    budget: int = 4
    search_epochs: int = 3
    search_batches: int | None = None
    top_k: int = 2
    search: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    out: str = ""
    jobs: int = 1
    cluster: str | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "CompareConfig":
        """Preset values, overridden by ``options`` (flags or YAML); evaluator flags go to both phases.

        A preset's ``space_kwargs`` / ``final_space_kwargs`` belong to the preset's space: when
        ``options`` name another space they are dropped, so each space gets its own defaults.
        ``search``, ``final`` and ``strategy_kwargs`` are merged key by key over the preset's.
        """
        if not isinstance(options, dict):
            raise ConfigError(f"compare options must be a mapping of option names to values, got {options!r}")
        options = EvaluatorConfig.upgrade({k: v for k, v in options.items() if v is not None})  # attack: old aa_mode
        preset = options.pop("preset", "demo")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
        values = copy.deepcopy(PRESETS[preset])
        values["preset"] = preset
        if "space" in options and options["space"] != values.get("space"):
            for key in ("space_kwargs", "final_space_kwargs"):  # the preset's are for its own space
                values.pop(key, None)
        evaluator_flags = {k: options.pop(k) for k in EVALUATOR_FLAGS if k in options}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise ConfigError(f"unknown compare option(s) {sorted(unknown)}; valid: "
                              f"{sorted(known | set(EVALUATOR_FLAGS))}")
        for key in ("search", "final", "strategy_kwargs"):
            if key in options:
                if not isinstance(options[key], dict):
                    raise ConfigError(f"{key} must be a mapping, got {options[key]!r}")
                if key != "strategy_kwargs":  # the preset's evaluator settings use the new names
                    options[key] = EvaluatorConfig.upgrade(options[key])
                options[key] = {**values.get(key, {}), **options[key]}
        values.update(options)
        for phase in ("search", "final"):
            values[phase] = {**values.get(phase, {}), **evaluator_flags}
        values.setdefault("out", "")
        if not values["out"]:
            values["out"] = str(Path("runs") / preset)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Clear errors (:class:`ConfigError`) for names, types, budgets and the nested evaluator
        and strategy settings, before any work starts or any file is created."""
        from robustnas.search_spaces import available_spaces

        spaces = available_spaces()
        if not isinstance(self.strategies, list) or not all(isinstance(n, str) for n in self.strategies):
            raise ConfigError(f"strategies must be a list of strategy names, got {self.strategies!r}")
        if not self.strategies:
            raise ConfigError("no strategies to compare; name at least one (see `robustnas list`)")
        valid = valid_strategy_names()
        for name in self.strategies:
            if name not in valid:
                raise ConfigError(f"unknown strategy {name!r}; valid strategies: {sorted(valid)}")
        if len(set(self.strategies)) != len(self.strategies):
            raise ConfigError(f"strategies name one strategy twice: {self.strategies}")
        if not isinstance(self.space, str) or self.space not in spaces:
            raise ConfigError(f"unknown space {self.space!r}; valid spaces: {spaces}")
        for key in ("space_kwargs", "final_space_kwargs", "strategy_kwargs", "strategy_spaces", "search", "final"):
            value = getattr(self, key)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ConfigError(f"{key} must be a mapping with names as keys, got {value!r}")
        for key in ("strategy_kwargs", "strategy_spaces"):
            for name, value in getattr(self, key).items():
                if name not in valid:
                    raise ConfigError(f"{key} names unknown strategy {name!r}; valid strategies: {sorted(valid)}")
                if key == "strategy_kwargs" and not isinstance(value, dict):
                    raise ConfigError(f"strategy_kwargs[{name!r}] must be a mapping of arguments, got {value!r}")
                if key == "strategy_spaces" and value not in spaces:
                    raise ConfigError(f"strategy_spaces[{name!r}]: unknown space {value!r}; valid spaces: {spaces}")
        for key in ("budget", "search_epochs", "top_k"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if self.search_batches is not None and (isinstance(self.search_batches, bool)
                                                or not isinstance(self.search_batches, int) or self.search_batches < 1):
            raise ConfigError(f"search_batches must be a positive integer or null, got {self.search_batches!r}")
        if not isinstance(self.seeds, list) or not self.seeds:
            raise ConfigError(f"seeds must be a list of at least one seed, got {self.seeds!r}")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ConfigError(f"seeds must be integers >= 0, got {seed!r} in {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds name one seed twice: {self.seeds}")
        if not isinstance(self.out, str) or not self.out:
            raise ConfigError(f"out must be a folder path, got {self.out!r}")
        from robustnas.plugins._parallel import validate_jobs

        validate_jobs(self.jobs, self.cluster)
        for phase in ("search", "final"):
            try:
                _evaluator_config(self, phase, self.seeds[0])
            except ConfigError as exc:
                raise ConfigError(f"{phase}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not the output folder, nor where the tasks run).

        Renamed settings are hashed under their first names (``attack`` for ``aa_mode``, TAM-NAS'
        ``eval_batches`` for ``val_batches``): one fingerprint whichever name spelled them, so a run
        started before a rename resumes after it."""
        data = {k: v for k, v in self.to_dict().items() if k not in _WHERE_FIELDS}
        for phase in ("search", "final"):
            data[phase] = first_spelling(data[phase], EvaluatorConfig.RENAMED)
        data["strategy_kwargs"] = {name: first_spelling(kwargs, _renamed_arguments(name))
                                   for name, kwargs in data["strategy_kwargs"].items()}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _renamed_arguments(strategy: str) -> tuple[Renamed, ...]:
    """The renamed arguments the strategy declares (``renamed_arguments``; none for Optuna samplers)."""
    if strategy.startswith(OPTUNA_PREFIX):
        return ()
    from robustnas.strategies import strategy_factory

    return tuple(getattr(strategy_factory(strategy), "renamed_arguments", ()))


#: Fields that say where a comparison runs, not what it computes: outside the fingerprint.
_WHERE_FIELDS = ("out", "jobs", "cluster")
#: Measured durations: they differ from run to run, so results are compared without them.
MEASURED_KEYS = ("wall_seconds", "cpu_seconds", "train_seconds", "eval_seconds", "latency_ms")

#: Evaluator settings that compare also takes at the top level (flags); they apply to both phases.
#: ``dataset`` is not among them: it is a field of CompareConfig itself (the preset sets it), the one
#: dataset both phases run on, so ``--dataset`` sets that field instead.
EVALUATOR_FLAGS = tuple(option.name for option in EVALUATOR_OPTIONS if option.name != "dataset")


def valid_strategy_names() -> set[str]:
    """Every registered strategy (built-in, registered, entry points) and ``optuna-<sampler>``
    for every Optuna sampler."""
    from robustnas.plugins.optuna import SAMPLERS
    from robustnas.strategies import available_strategies

    return set(available_strategies()) | {OPTUNA_PREFIX + s for s in SAMPLERS}


# ---------------------------------------------------------------------------- rows
class SearchCost(TypedDict):
    """What one unit's search cost: wall and CPU seconds, and candidates evaluated."""

    wall_seconds: float
    cpu_seconds: float
    candidates: int


class SearchEntry(TypedDict):
    """One architecture a search returned (:func:`run_search`): its record as a dict
    (:meth:`ArchitectureRecord.to_dict`), the metrics the search gave it (empty for an export
    without per-candidate metrics) and the cost of the whole search."""

    record: dict[str, Any]
    search_metrics: Metrics
    search_cost: SearchCost


@dataclass(frozen=True)
class CompareRow:
    """One row of ``results.json``: an architecture that ``strategy``'s search returned for
    ``seed``, with its search metrics and cost, and its ``metrics`` after the final retraining.

    ``to_dict()`` is the row as written to ``results.json`` (keys in this order); ``from_dict``
    checks a row read back and raises :class:`DataError` naming a missing, unknown or ill-typed key.
    """

    strategy: str
    seed: int
    record: ArchitectureRecord
    search_metrics: Metrics
    search_cost: SearchCost
    metrics: Metrics

    @classmethod
    def from_search(cls, strategy: str, seed: int, entry: SearchEntry, metrics: Metrics) -> "CompareRow":
        """The row of a :func:`run_search` entry retrained to ``metrics``."""
        return cls(strategy=strategy, seed=seed, record=ArchitectureRecord.from_dict(entry["record"]),
                   search_metrics=entry["search_metrics"], search_cost=entry["search_cost"], metrics=metrics)

    @classmethod
    def from_dict(cls, data: Any) -> "CompareRow":
        """The inverse of :meth:`to_dict`."""
        keys = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, Mapping):
            raise DataError(f"a results.json row must be a mapping with keys {keys}, got {type(data).__name__}")
        missing = [key for key in keys if key not in data]
        unknown = [key for key in data if key not in keys]
        if missing or unknown:
            bad = f"lacks key(s) {missing}" if missing else f"has unknown key(s) {unknown}"
            raise DataError(f"a results.json row {bad}; a row has {keys}")
        if not isinstance(data["strategy"], str):
            raise DataError(f"row['strategy'] must be a strategy name, got {data['strategy']!r}")
        seed = data["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DataError(f"row['seed'] must be an integer >= 0, got {seed!r}")
        cost = data["search_cost"]
        cost_keys = list(SearchCost.__annotations__)
        if not isinstance(cost, Mapping) or not all(isinstance(cost.get(k), (int, float)) for k in cost_keys):
            raise DataError(f"row['search_cost'] must be a mapping of {cost_keys} to numbers, got {cost!r}")
        return cls(strategy=data["strategy"], seed=seed, record=ArchitectureRecord.from_dict(data["record"]),
                   search_metrics=metrics_from_dict(data["search_metrics"], "row['search_metrics']"),
                   search_cost=dict(cost),  # type: ignore[arg-type]  # checked above
                   metrics=metrics_from_dict(data["metrics"], "row['metrics']"))

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON types, as ``results.json`` holds it."""
        return {"strategy": self.strategy, "seed": self.seed, "record": self.record.to_dict(),
                "search_metrics": dict(self.search_metrics), "search_cost": dict(self.search_cost),
                "metrics": dict(self.metrics)}


# ---------------------------------------------------------------------------- the run folder
def _read_json(path: Path, what: str) -> Any:
    """The JSON content of ``path``; a :class:`DataError` naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {str(path)!r} is not valid JSON (truncated or edited?): {exc}") from exc


def _journal_fingerprints(path: Path) -> dict[str, str | None]:
    """``{study name: fingerprint}`` of the studies in the Optuna journal ``path``."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        studies = storage.get_all_studies()
    except (ValueError, KeyError) as exc:  # JSONDecodeError, "Invalid log format.", a cut record
        raise DataError(f"Optuna journal {str(path)!r} is corrupt ({type(exc).__name__}: {exc}); "
                        "move it away to start the Optuna studies afresh") from exc
    return {s.study_name: s.system_attrs.get(FINGERPRINT_ATTR) for s in studies}


class RunFolder:
    """The run folder: ``results.json`` written atomically (temporary file, then rename), and a lock.

    Everything in the folder belongs to the run: ``results.json`` and every Optuna study of
    ``optuna.journal`` carry the run's fingerprint. A folder holding another run's files is
    refused; one holding this run's files needs ``resume=True``. While a comparison runs, it
    holds an exclusive lock on ``.lock`` (released when the process ends, however it ends).
    """

    def __init__(self, config: CompareConfig, resume: bool) -> None:
        self.path = Path(config.out)
        self.results_path = self.path / "results.json"
        self.journal_path = self.path / "optuna.journal"
        self._lock_fd: int | None = None
        fingerprint = config.fingerprint()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise OutputError(f"output folder {str(self.path)!r} is not writable: {exc}") from exc
        self._lock()
        try:
            self._adopt(config, fingerprint, resume)
        except BaseException:
            self.close()
            raise

    def _adopt(self, config: CompareConfig, fingerprint: str, resume: bool) -> None:
        if self.results_path.exists():
            data = _read_json(self.results_path, "results file")
            if not isinstance(data, dict) or not {"fingerprint", "rows", "done"} <= set(data):
                raise DataError(f"results file {str(self.results_path)!r} is not a robustnas results.json "
                                "(it lacks fingerprint, rows or done)")
            if not resume:
                raise ConfigError(f"{self.results_path} exists; pass --resume to continue that run "
                                  "or choose another --out")
            if data.get("fingerprint") != fingerprint:
                raise ConfigError(f"{self.results_path} comes from another configuration "
                                  f"(fingerprint {data.get('fingerprint')} != {fingerprint}); "
                                  "resume it with the same options or choose another --out")
            for number, row in enumerate(data["rows"], 1):
                try:
                    CompareRow.from_dict(row)
                except DataError as exc:
                    raise DataError(f"results file {str(self.results_path)!r}, row {number}: {exc}") from None
            data.setdefault("failures", [])
            self.data = data
        else:
            leftovers = [name for name in ("optuna.journal", "nni") if (self.path / name).exists()]
            if leftovers and not resume:
                raise ConfigError(f"{self.path} holds {', '.join(leftovers)} but no results.json: files of another "
                                  "or an interrupted run; pass --resume to continue it, or choose another --out")
            self.data = {"fingerprint": fingerprint, "config": config.to_dict(), "rows": [], "done": [],
                         "failures": []}
        if self.journal_path.exists():
            foreign = {name: fp for name, fp in _journal_fingerprints(self.journal_path).items() if fp != fingerprint}
            if foreign:
                raise ConfigError(f"{self.journal_path} holds Optuna studies of another configuration "
                                  f"({', '.join(f'{n}: fingerprint {fp}' for n, fp in sorted(foreign.items()))}; "
                                  f"this run's is {fingerprint}); choose another --out")
        self.save()

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"run folder {str(self.path)!r} is in use by another running compare; "
                              "wait for it or choose another --out") from None
        self._lock_fd = fd
        _LOCKED_FOLDERS.add(str(self.path.resolve()))

    def close(self) -> None:
        """Release the folder's lock."""
        if self._lock_fd is not None:
            _LOCKED_FOLDERS.discard(str(self.path.resolve()))
            os.close(self._lock_fd)
            self._lock_fd = None

    def done(self, strategy: str, seed: int) -> bool:
        return [strategy, seed] in self.data["done"]

    def add(self, strategy: str, seed: int, rows: list[dict[str, Any]]) -> None:
        """Mark a unit done with its rows and save."""
        self.data["rows"].extend(rows)
        self.data["done"].append([strategy, seed])
        self.save()

    def fail(self, failures: list[dict[str, Any]]) -> None:
        """Keep failed candidates (``strategy, seed, phase, sample, error``) and save."""
        self.data["failures"].extend(failures)
        self.save()

    def add_unit(self, strategy: str, seed: int, rows: list[dict[str, Any]], failures: list[dict[str, Any]],
                 order: Sequence[tuple[str, int]]) -> None:
        """Keep a finished unit's rows and failed candidates (``phase, sample, error``) and save, once.

        With rows the unit is done. Rows, failures and done units are kept in ``order`` (the
        comparison's units), whichever unit finished first.
        """
        rank = {(s, sd): i for i, (s, sd) in enumerate(order)}

        def by_unit(item: Any) -> int:
            key = (item["strategy"], item["seed"]) if isinstance(item, dict) else tuple(item)
            return rank.get(key, len(rank))

        self.data["failures"].extend({"strategy": strategy, "seed": seed, **f} for f in failures)
        self.data["failures"].sort(key=by_unit)
        if rows:
            self.data["rows"].extend(rows)
            self.data["rows"].sort(key=by_unit)
            self.data["done"].append([strategy, seed])
            self.data["done"].sort(key=by_unit)
        if rows or failures:
            self.save()

    def save(self) -> None:
        write_text_atomic(self.results_path, json.dumps(self.data, indent=2))


#: Run folders whose lock this process holds: their RUNNING Optuna trials are dead ones.
_LOCKED_FOLDERS: set[str] = set()
#: Where run_search puts the failed candidates of the unit being searched (set by compare).
_FAILURES: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("failures", default=None)


# ---------------------------------------------------------------------------- search
def _space_for(config: CompareConfig, strategy: str) -> tuple[str, dict[str, Any]]:
    """The space a strategy searches and its keyword arguments: ``space_kwargs`` belong to
    ``config.space`` only; a space named in ``strategy_spaces`` gets its own defaults."""
    name = config.strategy_spaces.get(strategy, config.space)
    kwargs = dict(config.space_kwargs) if name == config.space else {}
    return name, kwargs


def _evaluator_config(config: CompareConfig, phase: str, seed: int, progress: bool = False) -> Any:
    from robustnas.plugins.evaluator import EvaluatorConfig

    # Inside compare the run's own progress bar is the one live display; the evaluator's would
    # clash with it, so only a lone search (``robustnas search``) shows the evaluator's.
    values = {"dataset": config.dataset, "progress": progress, **getattr(config, phase), "seed": seed}
    return EvaluatorConfig.from_dict(values)


def run_search(config: CompareConfig, strategy: str, seed: int, progress: bool = False) -> list[SearchEntry]:
    """Run one strategy once; return up to ``top_k`` entries ``{"record", "search_metrics", "search_cost"}``.

    ``progress`` shows the evaluator's progress bar for each candidate (``robustnas search``
    does, unless ``-q``; :func:`compare` does not: it has its own display).

    Candidates that fail (their reason in ``"error"``) do not stop the search; inside
    :func:`compare` they are kept in ``results.json``. With no successful candidate the list is empty.
    """
    from robustnas.plugins.evaluator import RobustnessEvaluator
    from robustnas.search_spaces import export_record, get_space

    seed_everything(seed)
    space_name, space_kwargs = _space_for(config, strategy)
    evaluator = RobustnessEvaluator(_evaluator_config(config, "search", seed, progress=progress))
    bundle = evaluator.bundle
    space_kwargs = {"input_shape": tuple(bundle.input_shape), "num_classes": bundle.num_classes, **space_kwargs}
    space = get_space(space_name, **space_kwargs)
    kwargs = seeded(strategy, seed, evolutionary_defaults(strategy, config.budget,
                                                          config.strategy_kwargs.get(strategy, {})))

    wall0, cpu0 = time.perf_counter(), time.process_time()
    if strategy.startswith(OPTUNA_PREFIX):
        candidates = _search_optuna(config, strategy, seed, space, evaluator, kwargs)
    elif is_one_shot(strategy):
        candidates = _search_one_shot(config, strategy, space, evaluator, kwargs)
    else:
        candidates = _search_multi_trial(config, strategy, space, evaluator, kwargs)
    cost: SearchCost = {"wall_seconds": time.perf_counter() - wall0, "cpu_seconds": time.process_time() - cpu0,
                        "candidates": candidates["evaluated"]}
    failed = candidates.get("failures", [])
    sink = _FAILURES.get()
    if sink is not None:
        sink.extend({"phase": "search", **item} for item in failed)
    for item in failed:
        _logger.warning("%s seed %d: candidate %s failed: %s", strategy, seed, item.get("sample"), item["error"])
    chosen = _top_k(candidates["records"], config.top_k)
    return [SearchEntry(record=export_record(space, item["sample"]), search_metrics=item.get("metrics") or {},
                        search_cost=cost) for item in chosen]


#: Evolutionary strategies whose population is sized from the budget when not given.
_EVOLUTIONARY = {"optuna-nsga2": "population_size", "optuna-nsga3": "population_size",
                 "evolution": "population_size"}


def evolutionary_defaults(strategy: str, budget: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with a budget-sized population for evolutionary strategies that lack one."""
    kwargs = dict(kwargs)
    key = _EVOLUTIONARY.get(strategy)
    if key is None or key in kwargs:
        return kwargs
    kwargs[key] = population_for(budget)
    if strategy == "evolution":  # tournament size: NNI's default 25 would exceed the population
        kwargs.setdefault("sample_size", max(1, kwargs[key] // 2))
    return kwargs


def seeded(strategy: str, seed: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``seed`` added for strategies that take one and were given none.

    Without it NNI's ``Random`` and ``RegularizedEvolution`` draw from an unseeded generator
    (a seed's run cannot be repeated) and TAM-NAS's NSGA-II starts every seed from the same
    population (its default seed 0), so "three seeds" would be one. Optuna samplers get the
    seed in :func:`_search_optuna`; the differentiable strategies follow ``torch.manual_seed``.
    """
    from robustnas.strategies import takes_seed

    kwargs = dict(kwargs)
    if not strategy.startswith(OPTUNA_PREFIX) and "seed" not in kwargs and takes_seed(strategy):
        kwargs["seed"] = seed
    return kwargs


def _top_k(records: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The first non-dominated front (clean up, robust up, params down) first, most robust first.

    "Robust" is AutoAttack accuracy where the search measured it, else PGD accuracy (one-shot
    strategies score subnets on the supernet with PGD only).
    """
    from robustnas.strategies.pareto import non_dominated_sort

    unique: dict[str, dict[str, Any]] = {}
    for rec in records:
        unique.setdefault(json.dumps(rec["sample"], sort_keys=True), rec)
    records = list(unique.values())
    robust = next((key for key in ("robust_acc", "pgd_acc")
                   if records and all(key in (r.get("metrics") or {}) for r in records)), None)
    if robust is None or not all({"clean_acc", "params"} <= set(r["metrics"]) for r in records):
        return records[:k]  # exports without per-candidate metrics keep the strategy's order
    points = [[r["metrics"]["clean_acc"], r["metrics"][robust], r["metrics"]["params"]] for r in records]
    ordered = []
    for front in non_dominated_sort(points, ["maximize", "maximize", "minimize"]):
        ordered.extend(sorted((records[i] for i in front), key=lambda r: -r["metrics"][robust]))
    return ordered[:k]


def _check_study_owner(study: Any, fingerprint: str, journal: Path) -> None:
    """Mark a new study with the run's fingerprint; refuse a study that another configuration made."""
    have = study._storage.get_study_system_attrs(study._study_id).get(FINGERPRINT_ATTR)
    if have is None and not study.trials:
        study._storage.set_study_system_attr(study._study_id, FINGERPRINT_ATTR, fingerprint)
    elif have != fingerprint:
        raise ConfigError(f"Optuna study {study.study_name!r} in {journal} belongs to another run "
                          f"(fingerprint {have} != {fingerprint}); choose another --out")


def _search_optuna(config, strategy, seed, space, evaluator, kwargs) -> dict[str, Any]:
    """``budget`` trials of an Optuna study in the run folder's journal, each with a heartbeat.

    A RUNNING trial of a killed run is failed and re-queued (its parameters run again first);
    under :func:`compare`, which holds the folder's lock, at once, otherwise after
    ``STALE_SECONDS`` without heartbeat. Failed trials count towards the budget; a study whose
    finished trials all failed runs ``budget`` new ones (a retry).
    """
    from optuna.trial import TrialState

    from robustnas.plugins.optuna import RobustObjective, create_study, make_sampler, reap_stale_trials
    from robustnas.plugins.optuna._objective import ATTR_FAIL
    from robustnas.plugins.optuna._worker import RETRY_ATTR, _Heartbeat

    sampler = make_sampler(strategy[len(OPTUNA_PREFIX):], seed=seed, **kwargs)
    objective = RobustObjective(space, evaluator)
    out = Path(config.out).resolve()
    journal = out / "optuna.journal"
    out.mkdir(parents=True, exist_ok=True)
    try:
        study = create_study(objective.objectives, storage=f"journal:///{journal}", study_name=f"{strategy}-seed{seed}",
                             sampler=sampler)
    except RobustNASError:
        raise
    except ValueError as exc:
        raise DataError(f"cannot use the Optuna journal {str(journal)!r}: {exc}") from exc
    _check_study_owner(study, config.fingerprint(), journal)
    first = len(study.trials)  # failures of earlier calls were kept by those calls
    reap_stale_trials(study, grace=0.0 if str(out) in _LOCKED_FOLDERS else STALE_SECONDS)

    def counts() -> tuple[int, int]:
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs[RETRY_ATTR] for t in trials if RETRY_ATTR in t.user_attrs}
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        failed = sum(t.state == TrialState.FAIL and t.number not in retried for t in trials)
        return complete, complete + failed

    complete, finished = counts()
    # A resumed study runs only what is missing; one whose every trial failed is retried afresh.
    target = finished + config.budget if (finished >= config.budget and complete == 0) else config.budget
    while finished < target:
        trial = study.ask()
        with _Heartbeat(study, trial._trial_id, HEARTBEAT_SECONDS):
            values = objective(trial)
        if any(math.isnan(v) for v in values):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, values)
        complete, finished = counts()
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RETRY_ATTR] for t in trials if RETRY_ATTR in t.user_attrs}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    records = [{"sample": t.user_attrs["record"]["sample"], "metrics": t.user_attrs["metrics"]} for t in done]
    failures = [{"trial": t.number, "sample": t.user_attrs.get("sample"),
                 "error": t.user_attrs.get(ATTR_FAIL, "the trial failed")}
                for t in trials if t.state == TrialState.FAIL and t.number not in retried and t.number >= first]
    return {"records": records, "evaluated": finished, "failures": failures}


def _nni_dir(config: CompareConfig) -> Path:
    return Path(config.out) / "nni"


def _search_multi_trial(config, strategy, space, evaluator, kwargs) -> dict[str, Any]:
    from robustnas.plugins.nni import robust_evaluator, run_experiment
    from robustnas.strategies import get_strategy

    result = run_experiment(space, get_strategy(strategy, **kwargs), robust_evaluator(evaluator.config),
                            max_trial_number=config.budget, working_dir=_nni_dir(config))
    failures = [{"sample": r["sample"], "error": r.get("error") or f"trial {r.get('status')}"}
                for r in result.records if not r.get("metrics")]
    return {"records": [r for r in result.records if r.get("metrics")], "evaluated": len(result.records),
            "failures": failures}




def _search_one_shot(config, strategy, space, evaluator, kwargs) -> dict[str, Any]:
    from robustnas.plugins.nni import classification_evaluator, run_experiment
    from robustnas.strategies import get_strategy

    if is_threat_aware(strategy):
        kwargs = {"eps": evaluator.threat.eps, "norm": evaluator.threat.norm, **kwargs}
    strat = get_strategy(strategy, **kwargs)
    lightning = classification_evaluator(evaluator.bundle, max_epochs=config.search_epochs,
                                         limit_train_batches=config.search_batches)
    result = run_experiment(space, strat, lightning, working_dir=_nni_dir(config))
    if hasattr(strat, "pareto_front"):
        records = strat.pareto_front()
    else:
        records = [{"sample": s, "metrics": {}} for s in result.exported]
    # Subnets scored on the supernet (TAM-NAS's archive) count as candidates; a DARTS-style export is one.
    scored = strat.archive if hasattr(strat, "archive") else getattr(strat, "records", records)
    evaluated = max(len(scored), 1)
    return {"records": records, "evaluated": evaluated}


# ---------------------------------------------------------------------------- compare
def retrain(config: CompareConfig, record: dict[str, Any], seed: int) -> Metrics:
    """Retrain the architecture ``record`` from scratch with ``config``'s ``final`` settings (and
    its ``final_space_kwargs``) and return its metrics; the initial weights come from ``seed``
    alone (:func:`seed_everything` before the network is built). :func:`compare` retrains every
    architecture a search returns with it."""
    from robustnas.plugins.evaluator import RobustnessEvaluator
    from robustnas.search_spaces import build_model

    seed_everything(seed)
    record = copy.deepcopy(record)
    if config.final_space_kwargs and record["space"] == config.space:
        record["kwargs"].update(config.final_space_kwargs)
    evaluator = RobustnessEvaluator(_evaluator_config(config, "final", seed))
    return evaluator.evaluate(build_model(record))


# ---------------------------------------------------------------------------- validation and plan
def _strategy_kind(strategy: str) -> str:
    if strategy.startswith(OPTUNA_PREFIX):
        return "optuna"
    return "one-shot" if is_one_shot(strategy) else "multi-trial"


def check(config: CompareConfig) -> dict[str, Any]:
    """Validate everything a comparison needs before anything is created or computed.

    Beyond :meth:`CompareConfig.validate`: loads the data of both phases (a missing, corrupt or
    unusable data set fails here), builds each space once with its keyword arguments (the final
    ones too) and each strategy or sampler with its ``strategy_kwargs``. Raises
    :class:`ConfigError` / :class:`DataError`; returns ``{"bundles": {phase: bundle}, "threat"}``.
    """
    from robustnas.plugins.evaluator import RobustnessEvaluator
    from robustnas.plugins.optuna._samplers import make_sampler  # the factory itself: a trial build, not a search
    from robustnas.search_spaces import get_space
    from robustnas.strategies import get_strategy

    config.validate()
    seed = config.seeds[0]
    bundles, threats = {}, {}
    for phase in ("search", "final"):
        evaluator = RobustnessEvaluator(_evaluator_config(config, phase, seed))
        bundles[phase], threats[phase] = evaluator.bundle, evaluator.threat
    bundle = bundles["search"]
    base = {"input_shape": tuple(bundle.input_shape), "num_classes": bundle.num_classes}
    built: set[str] = set()

    def build(name: str, kwargs: dict[str, Any], what: str) -> None:
        key = json.dumps([name, kwargs], sort_keys=True, default=str)
        if key in built:
            return
        try:
            get_space(name, **base, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{what}: space {name!r} cannot be built with {kwargs}: {exc}") from None
        built.add(key)

    for strategy in config.strategies:
        name, kwargs = _space_for(config, strategy)
        build(name, kwargs, f"strategy {strategy!r}")
        kwargs = seeded(strategy, seed, evolutionary_defaults(strategy, config.budget,
                                                              config.strategy_kwargs.get(strategy, {})))
        try:
            if strategy.startswith(OPTUNA_PREFIX):
                make_sampler(strategy[len(OPTUNA_PREFIX):], seed=seed, **kwargs)
            else:
                if is_threat_aware(strategy):
                    kwargs = {"eps": threats["search"].eps, "norm": threats["search"].norm, **kwargs}
                get_strategy(strategy, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"strategy_kwargs of {strategy!r} ({config.strategy_kwargs.get(strategy, {})}) "
                              f"are not accepted: {exc}") from None
    if config.final_space_kwargs:
        build(config.space, {**config.space_kwargs, **config.final_space_kwargs}, "final_space_kwargs")
    return {"bundles": bundles, "threat": threats["final"]}


def _evaluation_passes(evaluator_config: Any, n_train: int, n_test: int) -> int:
    """Rough cost of one ``evaluate``: training passes, then clean, PGD and AutoAttack passes."""
    c = evaluator_config
    attacked = min(c.n_examples, n_test)
    train = c.epochs * n_train * RECIPES[c.recipe].passes(c.train_attack_steps)  # the recipe's passes per image
    return train + n_test + attacked * (c.pgd_eval_steps + 1 + MODES[c.aa_mode].passes)  # AutoAttack's upper bound


def plan(config: CompareConfig, checked: dict[str, Any] | None = None) -> dict[str, Any]:
    """The units a comparison would run and a rough cost estimate of each, without running anything.

    Cost is counted in image passes (one forward and backward pass of one image through one
    network): a candidate costs its training epochs x training images x the recipe's passes
    (PGD-k: k + 1), plus its attacks (AutoAttack counted at its upper bound); a one-shot search
    costs ``search_epochs`` x the images it sees x 2 (a weight and an architecture step; a supernet
    pass costs more than a candidate's, and adversarial one-shot strategies attack too, so this
    is a lower bound). Returns ``{"config", "fingerprint", "units", "total_passes"}``.
    """
    checked = checked or check(config)
    seed = config.seeds[0]
    search_cfg, final_cfg = (_evaluator_config(config, phase, seed) for phase in ("search", "final"))
    sb, fb = checked["bundles"]["search"], checked["bundles"]["final"]
    candidate = _evaluation_passes(search_cfg, len(sb.train), len(sb.test))
    retrain = _evaluation_passes(final_cfg, len(fb.train), len(fb.test))
    seen = len(sb.train) if config.search_batches is None else min(len(sb.train), config.search_batches * 64)
    units = []
    for seed in config.seeds:
        for strategy in config.strategies:
            kind = _strategy_kind(strategy)
            space, kwargs = _space_for(config, strategy)
            search = 2 * config.search_epochs * seen if kind == "one-shot" else config.budget * candidate
            units.append({"strategy": strategy, "seed": seed, "kind": kind, "space": space, "space_kwargs": kwargs,
                          "candidates": 1 if kind == "one-shot" else config.budget, "retrained": config.top_k,
                          "search_passes": search, "retrain_passes": config.top_k * retrain})
    total = sum(u["search_passes"] + u["retrain_passes"] for u in units)
    return {"config": config.to_dict(), "fingerprint": config.fingerprint(), "units": units, "total_passes": total}


def format_plan(planned: dict[str, Any]) -> str:
    """A plain-text table of :func:`plan`'s units, costs in thousands of image passes."""
    lines = ["| strategy | seed | kind | space | candidates | retrained | search k-passes | retrain k-passes |",
             "|---|---|---|---|---|---|---|---|"]
    for u in planned["units"]:
        lines.append(f"| {u['strategy']} | {u['seed']} | {u['kind']} | {u['space']} {json.dumps(u['space_kwargs'])} | "
                     f"{u['candidates']} | {u['retrained']} | {u['search_passes'] / 1e3:,.1f} | "
                     f"{u['retrain_passes'] / 1e3:,.1f} |")
    lines.append(f"\n{len(planned['units'])} unit(s), about {planned['total_passes'] / 1e6:.1f} million image passes "
                 "in all (rough: see docs/compare.md, Dry run)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- compare
def _say(enabled: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        if enabled:
            print(f"robustnas compare: {text}", file=sys.stderr, flush=True)
    return say


def compare(config: CompareConfig, resume: bool = False, progress: bool = True,
            on_unit_done: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Run every strategy for every seed, retrain what each returns, write the run folder.

    Returns ``{"out", "rows", "summary", "failures", "unfinished"}``. ``on_unit_done(strategy, seed)``
    is called after each (strategy, seed) unit is saved. Everything is validated (:func:`check`),
    and the engine started or the cluster reached (``config.jobs`` > 1 or ``config.cluster``),
    before the run folder is created. ``progress``: a progress bar in a terminal; elsewhere (a log
    file, a pipe) one line on stderr per finished step. A failing candidate fails alone (its reason
    goes to ``failures``); a unit without any successful candidate is left for ``resume=True``.
    """
    from robustnas.plugins._parallel import open_executor

    check(config)
    wants_gpu = any(getattr(config, phase).get("device", "auto") != "cpu" for phase in ("search", "final"))
    executor = open_executor(config.jobs, config.cluster, wants_gpu)
    try:
        folder = RunFolder(config, resume)
        try:
            return _run(config, folder, progress, on_unit_done, executor)
        finally:
            folder.close()
    finally:
        executor.close()


# ---------------------------------------------------------------------------- tasks
def _search_task(config: CompareConfig, strategy: str, seed: int) -> dict[str, Any]:
    """One unit's search, as a task: ``{"found", "failures", "seconds"}``, or ``{"error"}`` holding a
    :class:`RobustNASError` (bad input: the driver stops the run). Runs in any process: the
    comparison's process holds the run folder's lock meanwhile, so Optuna trials left RUNNING by a
    killed run are dead ones (see :func:`_search_optuna`)."""
    from robustnas.plugins.nni import failure_reason

    failures: list[dict[str, Any]] = []
    token = _FAILURES.set(failures)
    folder = str(Path(config.out).resolve())
    marked = folder not in _LOCKED_FOLDERS
    _LOCKED_FOLDERS.add(folder)
    t0 = time.perf_counter()
    try:
        found = run_search(config, strategy, seed)
    except RobustNASError as exc:
        return {"error": exc}
    except Exception as exc:  # noqa: BLE001 - the whole search of this unit failed (e.g. a NaN supernet)
        _logger.error("%s seed %d: the search failed", strategy, seed, exc_info=True)
        failures.append({"phase": "search", "sample": None, "error": failure_reason(exc)})
        found = []
    finally:
        _FAILURES.reset(token)
        if marked:
            _LOCKED_FOLDERS.discard(folder)
    return {"found": found, "failures": failures, "seconds": time.perf_counter() - t0}


def _retrain_task(config: CompareConfig, entry: SearchEntry, strategy: str, seed: int) -> dict[str, Any]:
    """One architecture's retraining, as a task: ``{"metrics", "seconds"}``, ``{"failure", "seconds"}``
    when it fails alone, or ``{"error"}`` holding a :class:`RobustNASError`."""
    from robustnas.plugins.nni import failure_reason

    t0 = time.perf_counter()
    try:
        return {"metrics": retrain(config, entry["record"], seed), "seconds": time.perf_counter() - t0}
    except RobustNASError as exc:
        return {"error": exc}
    except Exception as exc:  # noqa: BLE001 - this architecture fails alone
        _logger.error("%s seed %d: retraining %s failed", strategy, seed, entry["record"]["sample"], exc_info=True)
        return {"failure": failure_reason(exc), "seconds": time.perf_counter() - t0}


@dataclass
class _Unit:
    """What the driver knows of one (strategy, seed) unit while its tasks run."""

    number: int
    strategy: str
    seed: int
    found: list[SearchEntry] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    retrained: list[dict[str, Any] | None] = field(default_factory=list)
    waiting: int = 0

    def label(self, total: int) -> str:
        return f"[{self.number}/{total}] {self.strategy} seed {self.seed}"


def _lost(outcome: BaseException) -> str:
    """The failure reason of a task whose worker died or was cancelled (one line)."""
    return f"the task was lost (its worker died or was stopped): {type(outcome).__name__}: {outcome}".splitlines()[0]


def _run(config: CompareConfig, folder: RunFolder, progress: bool,
         on_unit_done: Callable[[str, int], None] | None, executor: InProcess | RayExecutor) -> dict[str, Any]:
    """Drive the tasks: every unit's search, then a retraining task per architecture it returned.

    At most ``config.jobs`` tasks run at once; a finished search puts its retrainings at the head
    of the queue, so units finish (and are saved) as early as they can. A unit is saved as soon
    as its last task ends, its rows in the place of the unit in ``(seed, strategy)`` order, so
    ``results.json`` does not depend on which task finished first.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    lines = bool(progress) and not sys.stderr.isatty()
    say = _say(lines)
    remote = executor.remote
    task_config = dataclasses.replace(config, out=str(Path(config.out).resolve()))

    def best(extra: Sequence[dict[str, Any]] = ()) -> str:
        values = [r["metrics"]["robust_acc"] for r in [*folder.data["rows"], *extra]]
        return f"{max(values):.3f}" if values else "none yet"

    order = [(s, seed) for seed in config.seeds for s in config.strategies]
    units = {(s, seed): _Unit(number, s, seed) for number, (s, seed) in enumerate(order, 1)}
    total = len(order)
    if remote:
        say(f"{config.jobs} job(s) on {executor.description}")
    queue: deque[tuple[str, tuple[str, int], int]] = deque()
    running: dict[tuple[str, tuple[str, int], int], str] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), disable=not progress or lines) as bar:
        task = bar.add_task("compare", total=total)
        for key in order:
            unit = units[key]
            if folder.done(*key):
                _logger.info("skip %s seed %d: done in an earlier run", unit.strategy, unit.seed)
                say(f"{unit.label(total)}: done in an earlier run, skipped")
                bar.advance(task)
            else:
                queue.append(("search", key, 0))
        while queue or executor.running:
            while queue and executor.running < config.jobs:
                job = queue.popleft()
                kind, key, i = job
                unit = units[key]
                if kind == "search":
                    executor.submit(job, _search_task, task_config, unit.strategy, unit.seed)
                    running[job] = f"{unit.strategy} (seed {unit.seed}): search"
                else:
                    executor.submit(job, _retrain_task, task_config, unit.found[i], unit.strategy, unit.seed)
                    running[job] = f"{unit.strategy} (seed {unit.seed}): retrain {i + 1}/{len(unit.found)}"
                bar.update(task, description="; ".join(running.values()))
            job, status, outcome = executor.next_done()
            running.pop(job)
            kind, key, i = job
            unit = units[key]
            if status == "ok" and "error" in outcome:
                raise outcome["error"]
            if kind == "search":
                if status == "ok":
                    unit.found, unit.failures = outcome["found"], outcome["failures"]
                    seconds = f"{outcome['seconds']:.1f} s"
                else:
                    unit.failures = [{"phase": "search", "sample": None, "error": _lost(outcome)}]
                    seconds = "lost"
                unit.retrained = [None] * len(unit.found)
                unit.waiting = len(unit.found)
                say(f"{unit.label(total)}: search {seconds}, {len(unit.found)} architecture(s) to retrain, "
                    f"{len(unit.failures)} failed candidate(s); best robust acc so far {best()}")
                queue.extendleft(reversed([("retrain", key, j) for j in range(len(unit.found))]))
            else:
                unit.waiting -= 1
                entry = unit.found[i]
                done_rows = [r for r in unit.retrained if r and "metrics" in r]
                if status == "ok" and "metrics" in outcome:
                    row = CompareRow.from_search(unit.strategy, unit.seed, entry, outcome["metrics"]).to_dict()
                    unit.retrained[i] = row
                    say(f"{unit.label(total)}: retrain {i + 1}/{len(unit.found)} {outcome['seconds']:.1f} s, "
                        f"robust acc {outcome['metrics']['robust_acc']:.3f}; best robust acc so far "
                        f"{best([*done_rows, row])}")
                else:
                    reason = outcome["failure"] if status == "ok" else _lost(outcome)
                    unit.retrained[i] = {"failure": {"phase": "retrain", "sample": entry["record"]["sample"],
                                                     "error": reason}}
                    took = f" after {outcome['seconds']:.1f} s" if status == "ok" else ""
                    say(f"{unit.label(total)}: retrain {i + 1}/{len(unit.found)} failed{took} "
                        f"({reason}); best robust acc so far {best(done_rows)}")
            if unit.waiting == 0:
                _save_unit(folder, unit, order, say, total)
                bar.advance(task)
                if on_unit_done:
                    on_unit_done(unit.strategy, unit.seed)
            bar.update(task, description="; ".join(running.values()) or "compare")
    return _write_report(config, folder)


def _save_unit(folder: RunFolder, unit: _Unit, order: Sequence[tuple[str, int]], say: Callable[[str], None],
               total: int) -> None:
    """Save a finished unit: its rows in architecture order, then its search and retraining failures."""
    rows = [r for r in unit.retrained if r and "metrics" in r]
    failures = unit.failures + [r["failure"] for r in unit.retrained if r and "failure" in r]
    folder.add_unit(unit.strategy, unit.seed, rows, failures, order)
    if not rows:
        _logger.warning("%s seed %d: no successful candidate; --resume retries this unit", unit.strategy, unit.seed)
        say(f"{unit.label(total)}: no successful candidate ({len(failures)} failure(s)); --resume retries it")


def without_times(value: Any) -> Any:
    """A copy of ``value`` (rows of ``results.json``, or any JSON) without the measured durations
    (:data:`MEASURED_KEYS`): what two runs of the same comparison must have in common."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in MEASURED_KEYS}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def _write_report(config: CompareConfig, folder: RunFolder) -> dict[str, Any]:
    from robustnas.plugins.report import format_table, pareto_plot, summarise

    rows = folder.data["rows"]
    failures = folder.data.get("failures", [])
    unfinished = [[s, seed] for seed in config.seeds for s in config.strategies if not folder.done(s, seed)]
    summary = summarise(rows, config.strategies)
    table = format_table(summary)
    first = rows[0]["metrics"] if rows else {}
    text = (
        f"# robustnas compare: preset {config.preset}\n\n"
        f"Space `{config.space}` {json.dumps(config.space_kwargs)}, dataset `{config.dataset}`, "
        f"seeds {config.seeds}, budget {config.budget} candidates / {config.search_epochs} supernet epochs, "
        f"top {config.top_k} retrained with {json.dumps(config.final)}; threat model "
        f"{first.get('norm')} eps {first.get('eps')}, AutoAttack `{first.get('attack')}` on "
        f"{first.get('n_examples')} test points.\n\n{table}\n\n"
        "Means over seeds (± standard deviation when there are several). Hypervolume of each seed's "
        "retrained architectures over (clean acc up, AutoAttack acc up, params down), reference "
        "(0, 0, 1.1 x the largest model of the run). Every number comes from results.json.\n"
    )
    if unfinished:
        text += ("\n## Units without a successful candidate\n\n"
                 + "".join(f"- {s} seed {seed}: no successful candidate; `--resume` retries it\n"
                           for s, seed in unfinished))
    if failures:
        text += "\n## Failed candidates\n\n| strategy | seed | phase | sample | reason |\n|---|---|---|---|---|\n"
        text += "".join(f"| {f['strategy']} | {f['seed']} | {f['phase']} | "
                        f"{json.dumps(f.get('sample')) if f.get('sample') is not None else '-'} | "
                        f"{str(f['error']).replace('|', '/')} |\n" for f in failures)
    write_text_atomic(folder.path / "report.md", text)
    if rows:
        pareto_plot(rows, folder.path / "pareto.png", title=f"{config.space} on {config.dataset}")
    return {"out": str(folder.path), "rows": rows, "summary": summary, "failures": failures,
            "unfinished": unfinished}
