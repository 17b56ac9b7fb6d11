"""``robustnas compare --preset bench``: every strategy head to head on a table, in a run folder.

:class:`BenchConfig` says what runs (validated before anything is written);
:func:`run_bench` runs :func:`~._compare.compare_on_table` with a journal in the run folder
(a killed run resumes with ``resume=True``), writes ``results.json``, ``report.md`` and the
anytime curves (``anytime.png``), then retrains each strategy's pick (the best cell its
first seed found) with the shared evaluator (``final``) and adds those numbers to the
report. Files: ``config.json``, ``units.jsonl`` (the journal), ``live.jsonl`` (cells a
partial table lacked, measured with its protocol), ``run.log`` (every progress line),
``results.json``, ``retrain.json``, ``report.md``, ``anytime.png``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustnas.plugins._deprecation import first_spelling
from robustnas.plugins._io import write_text_atomic
from robustnas.plugins.errors import ConfigError, OutputError
from robustnas.plugins.evaluator import EvaluatorConfig

from ._oneshot import _VARIANTS
from ._compare import (
    ALL_TABLE_STRATEGIES, TABLE_MISSING, _check, compare_on_table, plot_anytime, report_markdown,
)
from ._stats import HV_OBJECTIVES

__all__ = ["BENCH_PRESET", "BenchConfig", "run_bench"]

_logger = logging.getLogger(__name__)

#: The shared evaluator's settings for retraining each strategy's pick: PGD-7 adversarial
#: training for 10 epochs and AutoAttack (fast, escalating when flagged) on 200 test points.
_FINAL = {"recipe": "pgd", "epochs": 10, "batch_size": 64, "aa_mode": "fast", "n_examples": 200}

#: ``--preset bench``: every strategy that runs on the table, 20 seeds, 100 queries per
#: multi-trial unit, 5 supernet epochs per one-shot unit (about 85 training steps on digits).
#: TAM-NAS scores fewer subnets than its default (8 x 5 instead of 20 x 10) so that a unit
#: costs about what ARNAS's does; ARNAS trains on PGD-3 instead of PGD-7 (docs/fidelity.md).
BENCH_PRESET: dict[str, Any] = {
    "table": "robust201-digits",
    "strategies": ["random", "evolution", "optuna-nsga2", "optuna-tpe", "arnas", "dsrna", "dsrna-bound",
                   "tamnas", "darts"],
    "seeds": list(range(20)),
    "budget": 100,
    "objective": "pgd_acc",
    "epochs": 5,
    "batches": None,
    "strategy_kwargs": {"tamnas": {"population_size": 8, "generations": 5, "val_batches": 2, "bn_batches": 4},
                        "arnas": {"pgd_steps": 3}},
    "missing": "auto",
    "retrain": True,
    "final": _FINAL,
}


@dataclass
class BenchConfig:
    """What ``compare --preset bench`` runs (fields as :data:`BENCH_PRESET`; ``table_path``
    reads a table from a file or build folder instead of the shipped one). ``jobs`` and
    ``cluster`` say where the units run (as ``compare --jobs``), not what they compute: a run
    folder resumes with other values."""

    table: str = "robust201-digits"
    table_path: str | None = None
    strategies: list[str] = field(default_factory=lambda: list(BENCH_PRESET["strategies"]))
    seeds: list[int] = field(default_factory=lambda: list(BENCH_PRESET["seeds"]))
    budget: int = 100
    objective: str = "pgd_acc"
    epochs: int = 5
    batches: int | None = None
    strategy_kwargs: dict[str, dict[str, Any]] = field(
        default_factory=lambda: copy.deepcopy(BENCH_PRESET["strategy_kwargs"]))
    missing: str = "auto"
    retrain: bool = True
    final: dict[str, Any] = field(default_factory=lambda: dict(_FINAL))
    out: str = "runs/bench"
    jobs: int = 1
    cluster: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "BenchConfig":
        """From flags and a YAML file's keys (``preset`` is ignored; ``search_epochs`` is an
        alias of ``epochs``; ``strategy_kwargs`` and ``final`` merge key by key over the
        preset's). Unknown keys raise :class:`ConfigError` naming the valid ones."""
        options = {k: v for k, v in dict(options).items() if v is not None and k != "preset"}
        if "search_epochs" in options:
            options["epochs"] = options.pop("search_epochs")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ConfigError(f"unknown option(s) for --preset bench: {unknown}; valid: {sorted(names)}")
        config = cls()
        kwargs = copy.deepcopy(config.strategy_kwargs)
        for name, extra in dict(options.pop("strategy_kwargs", {}) or {}).items():
            kwargs.setdefault(name, {}).update(dict(extra))
        final = {**config.final, **EvaluatorConfig.upgrade(dict(options.pop("final", {}) or {}))}
        config = dataclasses.replace(config, **options, strategy_kwargs=kwargs, final=final)
        config.validate()
        return config

    def validate(self) -> None:
        from robustnas.plugins._parallel import validate_jobs

        from ._table import available_benchmarks

        validate_jobs(self.jobs, self.cluster)
        if self.table_path is None and self.table not in available_benchmarks():
            raise ConfigError(f"unknown table {self.table!r}; shipped tables: {', '.join(available_benchmarks())} "
                              "(or give table_path)")
        if self.missing not in TABLE_MISSING:
            raise ConfigError(f"missing must be one of {', '.join(TABLE_MISSING)}, got {self.missing!r}")
        if not isinstance(self.retrain, bool):
            raise ConfigError(f"retrain must be true or false, got {self.retrain!r}")
        # the strategies' kwargs are kept only for the strategies compared
        self.strategy_kwargs = {k: v for k, v in self.strategy_kwargs.items() if k in self.strategies}
        try:
            EvaluatorConfig(**{**self.final, "progress": False})
        except TypeError as err:
            raise ConfigError(f"final: {err}") from err
        for name in self.strategies:
            if not isinstance(name, str) or not (name in ALL_TABLE_STRATEGIES or name.startswith("optuna-")):
                raise ConfigError(f"strategy {name!r} does not run on a table; valid: "
                                  f"{', '.join(ALL_TABLE_STRATEGIES)} (or optuna-<sampler>)")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


#: Fields that say where a comparison runs, not what it computes (not compared on resume).
_WHERE_FIELDS = ("jobs", "cluster")


def _folder(config: BenchConfig, resume: bool) -> Path:
    out = Path(config.out)
    stored = out / "config.json"
    if stored.exists():
        previous = json.loads(stored.read_text())
        if not resume:
            raise OutputError(f"run folder {out} holds an earlier comparison; pass --resume to continue it, "
                              "or choose another --out")
        previous, current = _first_spelling(previous), _first_spelling(config.to_dict())
        for where in _WHERE_FIELDS:  # where the units run is not what they compute
            previous.pop(where, None)
            current.pop(where, None)
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise ConfigError(f"run folder {out} holds a comparison with other settings ({', '.join(changed)}); "
                              "resume with the same settings or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise OutputError(f"run folder {out} exists and is not a bench comparison; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(stored, json.dumps(config.to_dict(), indent=2) + "\n")
    except OSError as err:
        raise OutputError(f"cannot write the run folder {out}: {err}") from err
    return out


def _first_spelling(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with renamed keys under their first names (``final``: ``attack`` for ``aa_mode``;
    TAM-NAS: ``eval_batches`` for ``val_batches``), so that a run folder started before a rename
    resumes after it, and one written with either name compares equal."""
    from robustnas.strategies import available_strategies, strategy_factory

    out = dict(settings)
    out["final"] = first_spelling(out.get("final") or {}, EvaluatorConfig.RENAMED)
    kwargs = {}
    for name, values in (out.get("strategy_kwargs") or {}).items():
        registered = _VARIANTS.get(name, (name, {}))[0]
        factory = strategy_factory(registered) if registered in available_strategies() else None
        kwargs[name] = first_spelling(values, getattr(factory, "renamed_arguments", ()))
    out["strategy_kwargs"] = kwargs
    return out


def _retrain_picks(config: BenchConfig, bench: Any, result: Mapping[str, Any],
                   say: Callable[[str], None]) -> dict[str, Any]:
    """The best cell of each strategy's first seed, retrained and attacked by the shared
    evaluator (``config.final``, seed = that seed); a cell picked by several strategies is
    trained once."""
    from robustnas.plugins.evaluator import RobustnessEvaluator
    from robustnas.plugins.evaluator._utils import seed_everything
    from robustnas.search_spaces import build_model, export_record

    seed = result["seeds"][0]
    picks: dict[str, dict[str, Any]] = {}
    for unit in result["units"]:
        if unit["seed"] == seed and unit["best"] is not None:
            picks[unit["strategy"]] = unit["best"]
    measured: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {"seed": seed, "final": dict(config.final), "strategies": {}}
    space = bench.space()
    for number, (strategy, best) in enumerate(picks.items(), 1):
        key = best["key"]
        if key not in measured:
            start = time.perf_counter()
            seed_everything(seed)  # as compare.retrain: the initial weights depend on the seed only
            model = build_model(export_record(space, best["sample"]))
            evaluator = RobustnessEvaluator(EvaluatorConfig(**{**config.final, "seed": seed, "progress": False}))
            metrics = evaluator.evaluate(model)
            measured[key] = json.loads(json.dumps(metrics, default=float))
            say(f"retrain [{number}/{len(picks)}] {strategy}'s pick: clean {metrics['clean_acc']:.3f}, "
                f"AutoAttack {metrics['robust_acc']:.3f} ({time.perf_counter() - start:.1f} s)")
        else:
            say(f"retrain [{number}/{len(picks)}] {strategy}'s pick: the same cell as an earlier pick")
        out["strategies"][strategy] = {"key": key, "table_value": best["value"], "metrics": measured[key]}
    return out


def _retrain_markdown(retrain: Mapping[str, Any], objective: str) -> str:
    final = retrain["final"]
    lines = ["## Each strategy's pick, retrained by the shared evaluator", "",
             f"The best cell that seed {retrain['seed']} of each strategy found, trained again from scratch "
             f"({final.get('recipe')}, {final.get('epochs')} epochs) and attacked with AutoAttack "
             f"({final.get('aa_mode', final.get('attack'))}) on {final.get('n_examples')} test points.", "",
             f"| strategy | table {objective} | clean | PGD | AutoAttack | params | flags |", "|---|---|---|---|---|---|---|"]
    for name, row in retrain["strategies"].items():
        m = row["metrics"]
        lines.append(f"| {name} | {row['table_value']:.3f} | {m['clean_acc']:.3f} | {m['pgd_acc']:.3f} | "
                     f"{m['robust_acc']:.3f} | {int(m['params'])} | {', '.join(m.get('flags') or []) or '-'} |")
    return "\n".join(lines) + "\n"


def _checked(config: BenchConfig) -> Any:
    """The table, once every setting of ``config`` is checked against it (nothing written)."""
    from ._table import load_benchmark

    config.validate()
    bench = load_benchmark(config.table, path=config.table_path)
    objectives = HV_OBJECTIVES if config.objective in HV_OBJECTIVES else (*HV_OBJECTIVES, config.objective)
    _check(bench, config.strategies, config.seeds, config.budget, config.objective, objectives, config.missing,
           config.epochs, config.batches)
    return bench


def run_bench(config: BenchConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the comparison of ``config`` in its run folder (see the module docstring).

    Returns ``{"out", "result", "retrain", "report"}``. ``progress``: one line per finished
    unit on stderr (always also in ``run.log``).
    """
    bench = _checked(config)
    out = _folder(config, resume)
    log = open(out / "run.log", "a", encoding="utf-8")

    def say(text: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}"
        log.write(line + "\n")
        log.flush()
        _logger.info("%s", text)
        if progress:
            print(f"robustnas compare: {text}", file=sys.stderr, flush=True)

    try:
        say(f"table {bench.name}: {len(bench)} of {bench.size} cells; {len(config.strategies)} strategies x "
            f"{len(config.seeds)} seeds")
        result = compare_on_table(
            bench, config.strategies, config.seeds, config.budget, config.objective, epochs=config.epochs,
            batches=config.batches, strategy_kwargs=config.strategy_kwargs, missing=config.missing,
            live=out / "live.jsonl", progress=say, journal=out / "units.jsonl", jobs=config.jobs,
            cluster=config.cluster)
        write_text_atomic(out / "results.json", json.dumps(result, indent=1, default=float) + "\n")
        plot_anytime(result, out / "anytime.png")
        report = report_markdown(result)
        retrain = None
        if config.retrain:
            retrain = _retrain_picks(config, bench, result, say)
            write_text_atomic(out / "retrain.json", json.dumps(retrain, indent=1) + "\n")
            report += "\n" + _retrain_markdown(retrain, config.objective)
        report = f"# robustnas compare: preset bench\n\n{report}\n![anytime curves](anytime.png)\n"
        write_text_atomic(out / "report.md", report)
        say(f"report: {out / 'report.md'}")
    finally:
        log.close()
    return {"out": str(out), "result": result, "retrain": retrain, "report": report}


def plan_bench(config: BenchConfig) -> dict[str, Any]:
    """What :func:`run_bench` would run, without running or writing anything."""
    bench = _checked(config)
    return {"config": config.to_dict(), "table": {"name": bench.name, "cells": len(bench), "size": bench.size},
            "units": len(config.strategies) * len(config.seeds)}

