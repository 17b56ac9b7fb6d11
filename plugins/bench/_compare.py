"""Multi-trial strategies head to head on a table: many seeds, an equal budget of queries,
regret with confidence intervals and paired tests against random search.

:func:`compare_on_table` runs every (strategy, seed) unit on the table (NNI's ``Random`` and
``RegularizedEvolution`` through :func:`~robustnas.plugins.nni.run_experiment` and a
:class:`TableEvaluator`; Optuna samplers through a :class:`BenchmarkObjective`), each with
``budget`` queries, and returns a plain JSON-able dict: every unit's queries in order, and
per strategy the statistics of :mod:`._stats`. :func:`report_markdown` says in words which
differences against random search are significant; :func:`plot_anytime` draws the anytime
curves. See docs/benchmark.md.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robustnas.plugins.errors import ConfigError
from robustnas.strategies import population_for

from ._adapters import _CACHE, _LOCK, BenchmarkObjective, TableEvaluator
from ._oneshot import ONE_SHOT_ON_TABLE, LiveCells, run_one_shot
from ._stats import (
    HV_OBJECTIVES, TableTarget, bootstrap_band, bootstrap_ci, mean_ranks, normalised_hypervolume,
    paired_wilcoxon, regret, regret_at_times, regret_curve, table_target,
)

if TYPE_CHECKING:
    from ._table import Benchmark

__all__ = ["ALL_TABLE_STRATEGIES", "TABLE_MISSING", "TABLE_STRATEGIES", "compare_on_table", "plot_anytime", "report_markdown",
           "strip_timings"]

_logger = logging.getLogger(__name__)

OPTUNA_PREFIX = "optuna-"
_NNI_STRATEGIES = ("random", "evolution")
#: Multi-trial strategies that run on a table by default: NNI's Random and RegularizedEvolution,
#: Optuna's NSGA-II and TPE. Any ``optuna-<sampler>`` of ``robustnas.plugins.optuna.SAMPLERS`` runs too.
TABLE_STRATEGIES: tuple[str, ...] = ("random", "evolution", "optuna-nsga2", "optuna-tpe")
#: Every strategy that runs on a table: the multi-trial ones and the one-shot ones.
ALL_TABLE_STRATEGIES: tuple[str, ...] = TABLE_STRATEGIES + ONE_SHOT_ON_TABLE
#: What a query of a cell a partial table lacks does (see :func:`compare_on_table`).
TABLE_MISSING: tuple[str, ...] = ("auto", "fail")
_POPULATION_SAMPLERS = ("nsga2", "nsga3")
#: Points of the regret-against-seconds curves.
_TIME_POINTS = 60
ALPHA = 0.05


# ---------------------------------------------------------------------- one unit
#: One query as a run returns it: when it finished (seconds since the unit started), the sample,
#: and the table's metrics (None where the table does not hold the cell).
_Query = tuple[float, dict[str, Any], dict[str, Any] | None]
_LOGS: dict[str, list[_Query]] = {}
_STARTS: dict[str, float] = {}
_ERRORS: dict[str, str] = {}
_LOGS_LOCK = threading.Lock()


class _LoggedTableEvaluator(TableEvaluator):
    """A :class:`TableEvaluator` that logs every query (when it finished, the sample, the
    metrics or None) under ``log_id``: the log survives NNI copying or re-creating the evaluator."""

    def __init__(self, log_id: str, name: str = "robust201-digits", path: str | None = None,
                 default: str = "pgd_acc", free_misses: int = 0) -> None:
        super().__init__(name, path=path, default=default)
        self.log_id = log_id
        self.free_misses = free_misses

    def evaluate(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        try:
            report = super().evaluate(sample)
        except KeyError:  # a cell a partial table does not hold yet: a failed query
            self._log(sample, None)
            self._refund()
            raise
        except Exception as exc:  # anything else is a bug, not a failed query: surfaced after the run
            with _LOGS_LOCK:
                _ERRORS.setdefault(self.log_id, f"{type(exc).__name__}: {exc}")
            raise
        self._log(sample, report)
        return report

    def _refund(self) -> None:
        """With ``missing="skip"``: a miss does not count towards NNI's trial budget (up to
        ``free_misses`` of them), so the search spends ``budget`` queries on cells the table
        holds. NNI's sequential engine counts submitted models in ``_model_count`` and has no
        public way to give one back; NNI 3.0 is the last release, and a test pins this."""
        if self.free_misses <= 0:
            return
        from nni.nas.execution.sequential import SequentialExecutionEngine
        from nni.runtime.trial_command_channel import get_default_trial_command_channel

        engine = getattr(get_default_trial_command_channel(), "engine", None)
        if isinstance(engine, SequentialExecutionEngine) and engine.max_model_count is not None:
            engine._model_count -= 1
            self.free_misses -= 1

    def _log(self, sample: Mapping[str, Any], metrics: dict[str, Any] | None) -> None:
        with _LOGS_LOCK:
            _LOGS[self.log_id].append((time.perf_counter() - _STARTS[self.log_id], dict(sample), metrics))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNI's and Optuna's per-trial logging off (a failed lookup on a partial table is expected);
    the previous levels are restored."""
    import optuna

    # NNI's per-trial lines, and Lightning's "GPU available" / tip lines of every one-shot unit
    loggers = [logging.getLogger(name) for name in ("nni", "pytorch_lightning", "lightning.pytorch", "lightning")]
    levels, optuna_level = [lg.level for lg in loggers], optuna.logging.get_verbosity()
    for lg in loggers:
        lg.setLevel(logging.CRITICAL if lg.name == "nni" else logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        optuna.logging.set_verbosity(optuna_level)


def _run_nni(bench: Benchmark, strategy: str, seed: int, budget: int, objective: str,
             workdir: str, free_misses: int = 0) -> list[_Query]:
    import nni.nas.strategy as nas_strategy

    from robustnas.plugins.nni import run_experiment

    if strategy == "random":
        search = nas_strategy.Random(seed=seed, dedup=True)
    else:
        population = population_for(budget)
        search = nas_strategy.RegularizedEvolution(population_size=population, sample_size=max(1, population // 2),
                                                   seed=seed)
    log_id = uuid.uuid4().hex
    evaluator = _LoggedTableEvaluator(log_id, name=bench.name, path=bench.source, default=objective,
                                      free_misses=free_misses)
    space = bench.space()
    with _LOGS_LOCK:
        _LOGS[log_id] = []
        _STARTS[log_id] = time.perf_counter()
    try:
        run_experiment(space, search, evaluator, max_trial_number=budget, working_dir=workdir)
        with _LOGS_LOCK:
            error = _ERRORS.get(log_id)
            queries = list(_LOGS[log_id])
    finally:
        with _LOGS_LOCK:
            _LOGS.pop(log_id, None)
            _STARTS.pop(log_id, None)
            _ERRORS.pop(log_id, None)
    if error is not None:  # NNI's continue_on_failure swallowed it; a bug must not pass for a failed lookup
        raise RuntimeError(f"{strategy} seed {seed}: a table query raised {error}")
    return queries


def _run_optuna(bench: Benchmark, strategy: str, seed: int, budget: int,
                objectives: Sequence[str], free_misses: int = 0) -> list[_Query]:
    from robustnas.plugins.optuna import create_study, make_sampler
    from robustnas.plugins.optuna._objective import ATTR_METRICS, ATTR_SAMPLE

    name = strategy[len(OPTUNA_PREFIX):]
    kwargs = {"population_size": population_for(budget)} if _sampler_key(name) in _POPULATION_SAMPLERS else {}
    objective = BenchmarkObjective(bench, objectives=objectives)
    study = create_study(objective.objectives, sampler=make_sampler(name, seed=seed, **kwargs))
    finished: dict[int, float] = {}
    start = time.perf_counter()

    def timed(trial: Any) -> tuple[float, ...]:
        values = objective(trial)
        finished[trial.number] = time.perf_counter() - start
        return values

    def enough(study: Any, trial: Any) -> None:  # budget queries of held cells, or the misses spent
        trials = study.get_trials(deepcopy=False)
        held = sum(t.user_attrs.get(ATTR_METRICS) is not None for t in trials)
        if held >= budget or len(trials) - held >= free_misses:
            study.stop()

    if free_misses > 0:
        study.optimize(timed, n_trials=budget + free_misses, callbacks=[enough])
    else:
        study.optimize(timed, n_trials=budget)
    queries = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        metrics = trial.user_attrs.get(ATTR_METRICS)
        queries.append((finished[trial.number], dict(trial.user_attrs[ATTR_SAMPLE]),
                        None if metrics is None else dict(metrics)))
    return queries


def _sampler_key(name: str) -> str:
    """The sampler name as `make_sampler` resolves it (its aliases)."""
    key = str(name).lower().replace("-", "").replace("_", "")
    return {"nsgaii": "nsga2", "nsgaiii": "nsga3", "motpe": "tpe", "sobol": "qmc"}.get(key, key)


def _unit(bench: Benchmark, strategy: str, seed: int, queries: list[_Query],
          wall: float, target: TableTarget) -> dict[str, Any]:
    """One (strategy, seed) unit as a plain dict: its queries in order and its numbers."""
    metrics = [m for _, _, m in queries]
    curve = regret_curve(metrics, target)
    keep = (target.objective, *[m for m in target.hv_objectives if m != target.objective])
    rows = []
    for seconds, sample, found in queries:
        row: dict[str, Any] = {"key": found["key"] if found else bench.key(sample), "held": found is not None,
                               "seconds": float(seconds)}
        row.update({m: (None if found is None or found.get(m) is None else float(found[m])) for m in keep})
        rows.append(row)
    sign = 1.0 if target.direction == "maximize" else -1.0
    valued = [(i, float(m[target.objective])) for i, m in enumerate(metrics)
              if m is not None and m.get(target.objective) is not None]
    best = None
    if valued:  # the first query of the best value found
        best_index = max(valued, key=lambda iv: (sign * iv[1], -iv[0]))[0]
        best = {"key": rows[best_index]["key"], "sample": queries[best_index][1],
                "value": float(metrics[best_index][target.objective]), "query": best_index}
    return {
        "strategy": strategy, "seed": int(seed), "queries": rows, "n_queries": len(rows),
        "failed": sum(not r["held"] for r in rows), "found": len({r["key"] for r in rows if r["held"]}),
        "regret": regret(metrics, target),
        "regret_curve": curve.tolist(), "hypervolume": normalised_hypervolume(metrics, target),
        "best": best, "wall_seconds": float(wall),
    }


# ---------------------------------------------------------------------- the comparison
def _kind(name: str) -> str:
    if name.startswith(OPTUNA_PREFIX):
        return "optuna"
    if name in _NNI_STRATEGIES:
        return "nni"
    if name in ONE_SHOT_ON_TABLE:
        return "one-shot"
    raise ConfigError(f"strategy {name!r} does not run on a table; valid: {', '.join(ALL_TABLE_STRATEGIES)} "
                      "(or optuna-<sampler>)")


def _check(bench: Benchmark, strategies: Sequence[str], seeds: Sequence[int], budget: int, objective: str,
           optuna_objectives: Sequence[str], missing: str, epochs: int,
           batches: int | None) -> tuple[list[str], list[int]]:
    from robustnas.plugins.optuna import make_sampler
    from robustnas.strategies.pareto import METRIC_DIRECTIONS

    if isinstance(strategies, str) or not len(strategies):
        raise ConfigError(f"strategies must be a non-empty list of names, got {strategies!r}; "
                          f"valid: {', '.join(ALL_TABLE_STRATEGIES)} (or optuna-<sampler>)")
    strategies = [str(s) for s in strategies]
    if len(set(strategies)) != len(strategies):
        raise ConfigError(f"strategies must be distinct, got {strategies}")
    for name in strategies:
        if _kind(name) == "optuna":
            make_sampler(name[len(OPTUNA_PREFIX):], seed=0)  # raises ConfigError naming the valid samplers
    if isinstance(seeds, (str, int)) or not len(seeds):
        raise ConfigError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seeds):
        raise ConfigError(f"seeds must be integers, got {list(seeds)}")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct (a repeated seed repeats a run), got {seeds}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ConfigError(f"budget must be a positive number of queries, got {budget!r}")
    for label, value in (("epochs", epochs), ("batches", batches)):
        if value is None and label == "batches":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{label} must be a positive integer, got {value!r}")
    if missing not in TABLE_MISSING:
        raise ConfigError(f"missing must be one of {', '.join(TABLE_MISSING)}, got {missing!r}")
    if objective not in METRIC_DIRECTIONS:
        raise ConfigError(f"unknown objective {objective!r}; valid: {sorted(METRIC_DIRECTIONS)}")
    values = bench.values(objective)
    if not len(values) or np.isnan(values).any():
        raise ConfigError(f"objective {objective!r} is not measured on every cell of table {bench.name!r}; "
                          "use clean_acc, fgsm_acc, pgd_acc, params or flops")
    unknown = [m for m in optuna_objectives if m not in METRIC_DIRECTIONS]
    if unknown or not len(optuna_objectives):
        raise ConfigError(f"optuna_objectives {list(optuna_objectives)} must be metric names; "
                          f"valid: {sorted(METRIC_DIRECTIONS)}")
    return strategies, seeds


#: At most this many misses per query of the budget, or :data:`MAX_MISSES` if more (a unit on
#: a very partial table may end with fewer queries: Optuna's samplers slow down with thousands
#: of failed trials, about 3 ms each at 5,000).
MAX_MISSES_PER_QUERY = 30
MAX_MISSES = 5000


def _free_misses(bench: Benchmark, budget: int, missing: str) -> int:
    """Misses a multi-trial unit may spend beyond its budget (``missing="auto"`` on a partial
    table): enough for ``budget`` hits at the table's coverage, three times over, capped at
    :data:`MAX_MISSES_PER_QUERY` per query of the budget or :data:`MAX_MISSES`, whichever is more."""
    if missing != "auto" or bench.complete:
        return 0
    coverage = max(len(bench), 1) / bench.size
    return min(int(math.ceil(3 * budget * (1 - coverage) / coverage)) + budget,
               max(MAX_MISSES_PER_QUERY * budget, MAX_MISSES))


def compare_on_table(bench: Benchmark, strategies: Sequence[str] = TABLE_STRATEGIES, seeds: Sequence[int] = range(20),
                     budget: int = 100, objective: str = "pgd_acc", *, baseline: str = "random",
                     hv_objectives: Sequence[str] = HV_OBJECTIVES, optuna_objectives: Sequence[str] | None = None,
                     confidence: float = 0.95, epochs: int = 5, batches: int | None = None,
                     strategy_kwargs: Mapping[str, Mapping[str, Any]] | None = None, missing: str = "auto",
                     live: LiveCells | str | os.PathLike | None = None,
                     progress: Callable[[str], None] | None = None,
                     journal: str | os.PathLike | None = None, jobs: int = 1,
                     cluster: str | None = None) -> dict[str, Any]:
    """Run strategies on a table, ``budget`` queries per (strategy, seed), and compare them
    to ``baseline`` (random search).

    Multi-trial strategies spend their budget as table queries. NNI's ``random`` and
    ``evolution`` (``RegularizedEvolution``, population
    :func:`robustnas.strategies.population_for`, tournament half of it) search through
    :func:`~robustnas.plugins.nni.run_experiment` with a :class:`TableEvaluator` whose
    ``default`` is ``objective``; ``optuna-<sampler>`` runs a study on a
    :class:`BenchmarkObjective` over ``optuna_objectives`` (default: ``hv_objectives``, plus
    ``objective`` if missing; NSGA-II/III get the same population).

    One-shot strategies (:data:`ONE_SHOT_ON_TABLE`: ``arnas``, ``dsrna`` (Jacobian),
    ``dsrna-bound``, ``tamnas``, ``darts``) train their supernet on the table's data for
    ``epochs`` epochs (``batches`` batches each, if given; ``strategy_kwargs[name]`` go to the
    strategy), and what they export is looked up (:func:`run_one_shot`): their queries are
    their exports, their seconds the supernet training.

    Each unit is seeded with its seed, so a second run with the same seeds gives the same
    queries and statistics (not the same seconds). On a partial table, ``missing="auto"``
    (the default) lets a multi-trial unit spend ``budget`` queries on cells the table holds
    (a miss costs a lookup and is counted under ``skipped``, not in the budget), and
    measures a one-shot export that the table lacks with the table's protocol (``live``: a
    :class:`LiveCells` or the path of its file, so a cell is measured once); regret and
    hypervolume are then measured against the cells held plus those measured.
    ``missing="fail"``: a miss is a failed query that counts towards the budget.

    ``journal``: a JSON Lines file where each finished unit is appended (fsync'd); units
    already in it are not run again, so a killed comparison resumes where it stopped. The
    caller keeps one journal per configuration (``robustnas compare --preset bench`` does).

    ``jobs`` > 1 (or a Ray ``cluster`` address) runs that many units at once on Ray, as
    ``robustnas compare --jobs`` does (:mod:`robustnas.plugins._parallel`): each unit seeds
    itself and loads the table in its worker, so the queries and statistics are those of
    ``jobs=1``; only the seconds differ. Cells that one-shot units measure live are appended
    to ``live``'s file by the workers (two workers may measure the same missing cell once
    each; the protocol gives both the same numbers) and merged here.

    Returns a JSON-able dict: ``table`` (the target: best and worst value, bounds, true front),
    ``units`` (per strategy and seed: every query in order with ``key``, ``held``, ``seconds``
    and values, ``regret``, ``hypervolume``, ``failed``, ``skipped``, ``found``, ``best``,
    ``wall_seconds``), ``strategies`` (per strategy: its kind, regret and hypervolume per
    seed with mean and ``confidence`` bootstrap interval, mean ranks, wall seconds, queries,
    failed queries, and the Holm-corrected Wilcoxon test against the baseline under
    ``vs_baseline``) and ``curves`` (mean best-so-far regret with a bootstrap band against
    queries and against seconds).
    """
    hv_objectives = tuple(hv_objectives)
    if optuna_objectives is None:
        optuna_objectives = hv_objectives if objective in hv_objectives else (*hv_objectives, objective)
    strategies, seeds = _check(bench, strategies, seeds, budget, objective, optuna_objectives, missing, epochs,
                               batches)
    strategy_kwargs = {str(k): dict(v) for k, v in (strategy_kwargs or {}).items()}
    unknown = sorted(set(strategy_kwargs) - set(strategies))
    if unknown:
        raise ConfigError(f"strategy_kwargs name strategies that are not compared: {unknown}")
    from robustnas.plugins._parallel import validate_jobs

    validate_jobs(jobs, cluster)
    if (jobs > 1 or cluster is not None) and bench.source is None:
        raise ConfigError(f"table {bench.name!r} has no file that worker processes could read; run it with jobs=1")
    if not isinstance(live, LiveCells):
        live = LiveCells(live)
    say = progress or (lambda text: None)
    free = _free_misses(bench, int(budget), missing)
    with _LOCK:  # the evaluators answer from this very table object
        _CACHE[(bench.name, str(bench.source))] = bench

    total = len(strategies) * len(seeds)
    done = _read_journal(journal)
    finished: dict[tuple[str, int], tuple[str, int, list[_Query], float, int]] = {}
    for strategy in strategies:
        for seed in seeds:
            if (strategy, seed) in done:
                finished[strategy, seed] = done[strategy, seed]
                say(f"[{len(finished)}/{total}] {strategy} seed {seed}: done in an earlier run")
    todo = [(strategy, seed) for strategy in strategies for seed in seeds if (strategy, seed) not in finished]
    if todo:
        _run_units(bench, todo, finished, total, journal, say, live, jobs=jobs, cluster=cluster, budget=int(budget),
                   objective=objective, optuna_objectives=tuple(optuna_objectives), free=free, epochs=int(epochs),
                   batches=batches, strategy_kwargs=strategy_kwargs, missing=missing)
    raw = [finished[strategy, seed] for strategy in strategies for seed in seeds]

    target = table_target(_universe(bench, live), objective, hv_objectives)
    units = []
    for strategy, seed, queries, wall, skipped in raw:
        unit = _unit(bench, strategy, seed, queries, wall, target)
        unit["skipped"] = skipped
        unit["kind"] = _kind(strategy)
        units.append(unit)
        _logger.info("%s seed %d: %d queries (%d failed, %d skipped), regret %.4g, %.2f s", strategy, seed,
                     unit["n_queries"], unit["failed"], skipped, unit["regret"], wall)

    result: dict[str, Any] = {
        "table": {**target.to_dict(), "name": bench.name, "source": str(bench.source), "cells": len(bench),
                  "complete": bench.complete, "size": bench.size, "live_cells": len(live),
                  "target_cells": target.cells},
        "objective": objective, "direction": target.direction, "budget": int(budget), "seeds": seeds,
        "baseline": baseline if baseline in strategies else None, "alpha": ALPHA, "confidence": confidence,
        "optuna_objectives": list(optuna_objectives), "missing": missing, "epochs": int(epochs),
        "batches": batches, "strategy_kwargs": strategy_kwargs, "units": units,
    }
    result.update(_statistics(units, strategies, seeds, int(budget), target, baseline, confidence))
    return result


#: LiveCells objects of the comparisons running in this process, by token: a unit that runs here
#: adds to its comparison's object; one in another process opens the file (or keeps its own).
_LIVE: dict[str, LiveCells] = {}


def _run_units(bench: Benchmark, todo: list[tuple[str, int]],
               finished: dict[tuple[str, int], tuple[str, int, list[_Query], float, int]], total: int,
               journal: str | os.PathLike | None, say: Callable[[str], None], live: LiveCells, *, jobs: int,
               cluster: str | None, **settings: Any) -> None:
    """Run the units of ``todo`` (``jobs`` at once on Ray when asked), appending each to the
    journal and to ``finished`` as it finishes."""
    from robustnas.plugins._parallel import open_executor

    token = uuid.uuid4().hex
    _LIVE[token] = live
    wants_gpu = any(_kind(strategy) == "one-shot" for strategy, _ in todo)
    executor = open_executor(int(jobs), cluster, wants_gpu)
    if executor.remote:
        say(f"{jobs} job(s) on {executor.description}")
    spec = {"table": bench.name, "source": str(bench.source),  # the key the table is cached under here
            "live_token": token, "live_path": None if live.path is None else str(live.path), **settings}
    queue = list(todo)
    try:
        while queue or executor.running:
            while queue and executor.running < max(1, int(jobs)):
                strategy, seed = queue.pop(0)
                executor.submit((strategy, seed), _table_unit, {**spec, "strategy": strategy, "seed": seed})
            (strategy, seed), status, value = executor.next_done()
            if status != "ok":
                raise RuntimeError(f"the unit {strategy} seed {seed} was lost ({value}); the finished units are "
                                   "in the journal, and a resumed comparison runs the rest")
            for key, metrics in value["live"].items():
                live.remember(key, metrics)
            unit = (strategy, seed, value["queries"], value["wall"], value["skipped"])
            finished[strategy, seed] = unit
            _append_journal(journal, unit)
            skipped = value["skipped"]
            say(f"[{len(finished)}/{total}] {strategy} seed {seed}: {len(value['queries'])} queries"
                + (f" ({skipped} misses skipped)" if skipped else "") + f", {value['wall']:.1f} s")
    finally:
        executor.close()
        _LIVE.pop(token, None)


def _table_unit(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One (strategy, seed) unit of :func:`compare_on_table`, in this process or a worker's:
    ``{"queries", "wall", "skipped", "live"}`` (``live``: the cells it measured live)."""
    from ._adapters import cached_benchmark

    bench = cached_benchmark(spec["table"], spec["source"])
    live = _LIVE.get(spec["live_token"]) or LiveCells(spec["live_path"])
    before = set(live.keys())
    strategy, seed, budget = spec["strategy"], int(spec["seed"]), int(spec["budget"])
    start = time.perf_counter()
    skipped = 0
    with _quiet(), tempfile.TemporaryDirectory(prefix="robustnas-table-") as workdir:
        kind = _kind(strategy)
        if kind == "one-shot":
            missing = spec["missing"]
            run = run_one_shot(bench, strategy, seed, epochs=int(spec["epochs"]), batches=spec["batches"],
                               strategy_kwargs=spec["strategy_kwargs"].get(strategy),
                               missing="fail" if missing == "fail" else "evaluate", live=live)
            queries = run.queries
        else:
            free = int(spec["free"])
            if kind == "optuna":
                queries = _run_optuna(bench, strategy, seed, budget, spec["optuna_objectives"], free)
            else:
                queries = _run_nni(bench, strategy, seed, budget, spec["objective"], workdir, free)
            if free:
                skipped = sum(m is None for _, _, m in queries)
                queries = [q for q in queries if q[2] is not None][:budget]
    wall = time.perf_counter() - start
    return {"queries": queries, "wall": wall, "skipped": skipped,
            "live": {key: live.get(key) for key in set(live.keys()) - before}}


def _read_journal(path: str | os.PathLike | None) -> dict[tuple[str, int], tuple[str, int, list[_Query], float, int]]:
    import json

    if path is None or not Path(path).exists():
        return {}
    done = {}
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: that unit runs again
            continue
        queries = [(float(sec), dict(sample), None if m is None else dict(m)) for sec, sample, m in row["queries"]]
        done[row["strategy"], int(row["seed"])] = (row["strategy"], int(row["seed"]), queries, float(row["wall"]),
                                                   int(row["skipped"]))
    return done


def _append_journal(path: str | os.PathLike | None, unit: tuple[str, int, list[_Query], float, int]) -> None:
    import json

    if path is None:
        return
    strategy, seed, queries, wall, skipped = unit
    line = json.dumps({"strategy": strategy, "seed": seed, "wall": wall, "skipped": skipped,
                       "queries": [[sec, sample, m] for sec, sample, m in queries]}, default=float)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _universe(bench: Benchmark, live: LiveCells) -> list[dict[str, Any]]:
    """The cells regret and hypervolume are measured against: the table's, plus the cells
    measured live for a partial table (absent from the table by construction)."""
    entries = bench.entries()
    held = {e["key"] for e in entries}
    return entries + [e for e in live.entries() if e.get("key") not in held]


def _statistics(units: list[dict[str, Any]], strategies: list[str], seeds: list[int], budget: int,
                target: TableTarget, baseline: str, confidence: float) -> dict[str, Any]:
    by = {(u["strategy"], u["seed"]): u for u in units}
    regrets = {s: [by[s, seed]["regret"] for seed in seeds] for s in strategies}
    volumes = {s: [by[s, seed]["hypervolume"] for seed in seeds] for s in strategies}
    rank_regret = mean_ranks(regrets)
    rank_volume = mean_ranks(volumes, higher_is_better=True)
    tests: dict[str, dict[str, dict[str, Any]]] = {"regret": {}, "hypervolume": {}}
    if baseline in strategies and len(strategies) > 1:
        tests = {"regret": paired_wilcoxon(regrets, baseline, ALPHA),
                 "hypervolume": paired_wilcoxon(volumes, baseline, ALPHA)}

    stats: dict[str, Any] = {}
    for s in strategies:
        walls = [by[s, seed]["wall_seconds"] for seed in seeds]
        stats[s] = {
            "kind": by[s, seeds[0]].get("kind"),
            "skipped": float(np.mean([by[s, seed].get("skipped", 0) for seed in seeds])),
            "regret": _summary(regrets[s], confidence), "hypervolume": _summary(volumes[s], confidence),
            "mean_rank": rank_regret[s], "mean_rank_hypervolume": rank_volume[s],
            "failed": float(np.mean([by[s, seed]["failed"] for seed in seeds])),
            "found": float(np.mean([by[s, seed]["found"] for seed in seeds])),
            "queries": float(np.mean([by[s, seed]["n_queries"] for seed in seeds])),
            "wall_seconds": {"mean": float(np.mean(walls)), "total": float(np.sum(walls)), "per_seed": walls},
            "vs_baseline": {"regret": tests["regret"].get(s), "hypervolume": tests["hypervolume"].get(s)},
        }

    none_found = abs(target.best - target.worst)
    by_queries = {}
    for s in strategies:
        curves = [_pad(by[s, seed]["regret_curve"], budget, none_found) for seed in seeds]
        by_queries[s] = bootstrap_band(curves, confidence)
    horizon = max((u["queries"][-1]["seconds"] for u in units if u["queries"]), default=0.0)
    grid = np.linspace(0.0, horizon, _TIME_POINTS)
    by_seconds: dict[str, Any] = {"grid": grid.tolist()}
    for s in strategies:
        curves = [regret_at_times([q["seconds"] for q in by[s, seed]["queries"]], by[s, seed]["regret_curve"],
                                  grid, none_found) for seed in seeds]
        by_seconds[s] = bootstrap_band(curves, confidence)
    return {"strategies": stats, "curves": {"queries": by_queries, "seconds": by_seconds}}


def _summary(values: list[float], confidence: float) -> dict[str, Any]:
    low, high = bootstrap_ci(values, confidence)
    return {"mean": float(np.mean(values)), "ci_low": low, "ci_high": high, "per_seed": list(values)}


def _pad(curve: Sequence[float], length: int, before: float) -> list[float]:
    """A best-so-far curve extended to ``length`` queries (a search that stopped early keeps its value)."""
    curve = list(curve)
    last = curve[-1] if curve else before
    return curve + [last] * (length - len(curve))


def strip_timings(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` without what depends on the machine's speed (every ``seconds``,
    ``wall_seconds`` and the regret-against-seconds curves): what two runs with the same
    seeds share exactly."""
    out = copy.deepcopy(dict(result))
    for unit in out.get("units", []):
        unit.pop("wall_seconds", None)
        for query in unit.get("queries", []):
            query.pop("seconds", None)
    for stats in out.get("strategies", {}).values():
        stats.pop("wall_seconds", None)
    out.get("curves", {}).pop("seconds", None)
    return out


# ---------------------------------------------------------------------- the report
def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 0.001 else f"{value:.1e}"


def report_markdown(result: Mapping[str, Any], seconds: bool = True) -> str:
    """The comparison as Markdown: one row per strategy (mean regret with its bootstrap
    interval, normalised hypervolume, mean rank, failed queries, and wall seconds unless
    ``seconds`` is False), then, in words, which differences against random search are
    significant (Wilcoxon signed-rank, Holm-corrected p < 0.05) and which are not."""
    table = result["table"]
    objective, budget, seeds = result["objective"], result["budget"], result["seeds"]
    conf = int(round(100 * result["confidence"]))
    lines = [f"## Comparison on table `{table['name']}`", ""]
    live = table.get("live_cells", 0)
    coverage = ("the complete table" if table["complete"] else
                f"a partial table ({table['cells']} of {table.get('size', '?')} cells so far"
                + (f", plus {live} cells that one-shot searches exported and the table's protocol measured"
                   if live else "")
                + "): regret is measured against the best of these cells, the hypervolume against their front"
                + ("; multi-trial searches spend their budget on cells the table holds (misses skipped)"
                   if result.get("missing", "auto") == "auto" else ""))
    lines.append(f"{len(seeds)} seeds, {budget} queries per strategy and seed, on {coverage}. Regret: the "
                 f"table's best {objective} ({_fmt(table['best'])}) minus the best found; a run that found no "
                 f"cell is charged with the table's worst ({_fmt(table['worst'])}). Hypervolume: over "
                 f"{', '.join(table['hv_objectives'])}, normalised so that the table's true front scores 1.")
    lines.append("")
    header = (f"| strategy | kind | mean regret [{conf}% CI] | hypervolume [{conf}% CI] | mean rank | queries "
              f"(failed) |")
    rule = "|---|---|---|---|---|---|"
    if seconds:
        header += " wall s per seed |"
        rule += "---|"
    lines += [header, rule]
    for name, stats in result["strategies"].items():
        r, h = stats["regret"], stats["hypervolume"]
        row = (f"| {name} | {stats.get('kind') or ''} | {_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | "
               f"{_fmt(h['mean'])} [{_fmt(h['ci_low'])}, {_fmt(h['ci_high'])}] | {stats['mean_rank']:.2f} | "
               f"{stats['queries']:.1f} ({stats['failed']:.1f}) |")
        if seconds:
            row += f" {stats['wall_seconds']['mean']:.2f} |"
        lines.append(row)
    lines.append("")
    baseline = result.get("baseline")
    others = [n for n in result["strategies"] if n != baseline]
    if baseline is None or not others:
        lines.append("No paired test: random search (`random`) is not among the strategies, or it is the only one.")
        return "\n".join(lines) + "\n"
    lines.append(f"Against random search (`{baseline}`), paired over the {len(seeds)} seeds: Wilcoxon signed-rank "
                 f"test, p-values Holm-corrected over the {len(others)} strategies compared; significant means "
                 f"Holm p < {result['alpha']}.")
    lines.append("")
    for name in others:
        for metric, better in (("regret", "lower"), ("hypervolume", "higher")):
            test = result["strategies"][name]["vs_baseline"][metric]
            lines.append(f"- {_sentence(name, baseline, metric, better, test, len(seeds))}")
    if len(seeds) < 6:
        lines.append("")
        lines.append(f"With {len(seeds)} seeds the smallest two-sided p-value the exact test can give is "
                     f"{2 / 2 ** len(seeds):.3g}: no difference can be significant; use at least 6 seeds (20 advised).")
    return "\n".join(lines) + "\n"


def _sentence(name: str, baseline: str, metric: str, better: str, test: Mapping[str, Any], n_seeds: int) -> str:
    if test["nonzero"] == 0:
        return (f"`{name}` against `{baseline}`, {metric}: identical on every seed; no difference to test "
                f"(not significant).")
    diff = test["mean_difference"]
    is_better = diff < 0 if better == "lower" else diff > 0
    word = ("better" if is_better else "worse") if diff != 0 else "no different on average"
    verdict = "significant" if test["significant"] else "not significant"
    return (f"`{name}` against `{baseline}`, {metric}: {word} by {abs(diff):.3f} on average "
            f"({test['nonzero']} of {n_seeds} seeds differ; Wilcoxon p = {_p(test['p'])}, Holm p = "
            f"{_p(test['p_holm'])}): **{verdict}**.")


# ---------------------------------------------------------------------- the plot
def plot_anytime(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the anytime curves as a PNG (matplotlib, Agg): mean best-so-far regret with its
    bootstrap band against the number of queries (left) and against wall seconds (right),
    one line per strategy. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 3.8))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, sharey=True)
    conf = int(round(100 * result["confidence"]))
    queries = np.arange(1, result["budget"] + 1)
    grid = np.asarray(result["curves"]["seconds"]["grid"])
    for name in result["strategies"]:
        band = result["curves"]["queries"][name]
        (line,) = left.plot(queries, band["mean"], drawstyle="steps-post", label=name)
        left.fill_between(queries, band["ci_low"], band["ci_high"], step="post", color=line.get_color(), alpha=0.2)
        band = result["curves"]["seconds"][name]
        right.plot(grid, band["mean"], drawstyle="steps-post", color=line.get_color(), label=name)
        right.fill_between(grid, band["ci_low"], band["ci_high"], step="post", color=line.get_color(), alpha=0.2)
    table = result["table"]
    left.set_xlabel("queries")
    left.set_ylabel(f"regret of {result['objective']} (best so far)")
    right.set_xlabel("wall seconds")
    left.set_title(f"{table['name']} ({table['cells']} cells): {len(result['seeds'])} seeds, {conf}% bootstrap CI",
                   fontsize=9)
    right.set_title("against time", fontsize=9)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
