"""Head-to-head comparison of search strategies on one space, one dataset and one budget.

``compare(config)`` runs every strategy for every seed, retrains the architectures each one returns
with the shared evaluator under one recipe and one threat model, and writes a run folder:

- ``results.json``: the configuration and one row per retrained architecture (strategy, seed,
  architecture record, metrics, search cost), rewritten atomically after every finished unit;
- ``report.md``: one row per strategy (mean and spread over seeds), computed from ``results.json``;
- ``pareto.png``: clean against AutoAttack accuracy, marker size by parameters;
- ``optuna.journal``: the Optuna storage of the Optuna samplers' studies.

An interrupted run continues with ``resume=True``: finished (strategy, seed) units are not redone,
and Optuna studies continue from their storage.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

_logger = logging.getLogger(__name__)

#: One-shot strategies train a supernet on the evaluator's data; the others evaluate candidates one by one.
ONE_SHOT = ("arnas", "dsrna", "tamnas", "darts", "gumbel-darts", "enas", "random-oneshot")
#: NNI multi-trial strategies driven by the shared evaluator.
MULTI_TRIAL = ("random", "evolution")
OPTUNA_PREFIX = "optuna-"

#: The demo's search-time evaluator: FGSM-RS adversarial training (Wong et al. 2020), two passes
#: a step, so 4 epochs cost about what 1 epoch of PGD-7 does. Measured on digits, ARNAS space
#: width 8: FGSM-RS 4 epochs gives clean 0.90-0.96 and AutoAttack 0.09-0.17 in 19-30 s; PGD-7
#: 1 epoch left candidates at chance (clean 0.10), so the search ranked noise.
_SEARCH_EVALUATOR_DEMO = {"recipe": "fgsm-rs", "epochs": 4, "batch_size": 64, "attack": "fast", "n_examples": 64}
_FINAL_EVALUATOR_DEMO = {"recipe": "pgd", "epochs": 5, "batch_size": 64, "attack": "fast", "n_examples": 100}

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
        "strategy_kwargs": {"tamnas": {"population_size": 4, "generations": 2, "eval_batches": 2, "bn_batches": 4}},
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
        "search": {"recipe": "pgd", "epochs": 4, "attack": "fast", "n_examples": 128},
        "final": {"recipe": "pgd", "epochs": 20, "attack": "standard", "n_examples": 450},
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
        "search": {"recipe": "pgd", "epochs": 10, "attack": "fast", "n_examples": 1000},
        "final": {"recipe": "pgd", "epochs": 200, "attack": "standard", "n_examples": 10000},
    },
}


@dataclass
class CompareConfig:
    """What a comparison runs. Budgets: ``budget`` candidates per multi-trial strategy and seed,
    ``search_epochs`` supernet epochs per one-shot strategy and seed; ``top_k`` architectures per
    strategy and seed are retrained by the ``final`` evaluator configuration."""

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

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "CompareConfig":
        """Preset values, overridden by ``options`` (flags or YAML); evaluator flags go to both phases."""
        options = {k: v for k, v in options.items() if v is not None}
        preset = options.pop("preset", "demo")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
        values = copy.deepcopy(PRESETS[preset])
        values["preset"] = preset
        evaluator_flags = {k: options.pop(k) for k in ("root", "download", "eps", "norm", "recipe", "epochs",
                                                       "attack", "n_examples", "device") if k in options}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown compare option(s) {sorted(unknown)}; valid: {sorted(known)}")
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
        """Clear errors for names and budgets before any work starts."""
        from robustnas.search_spaces import SPACES

        if not self.strategies:
            raise ValueError("no strategies to compare; name at least one (see `robustnas list`)")
        valid = valid_strategy_names()
        for name in self.strategies:
            if name not in valid:
                raise ValueError(f"unknown strategy {name!r}; valid strategies: {sorted(valid)}")
        for name in {self.space, *self.strategy_spaces.values()}:
            if name not in SPACES:
                raise ValueError(f"unknown space {name!r}; valid spaces: {sorted(SPACES)}")
        for key in ("budget", "search_epochs", "top_k"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not the output folder)."""
        data = {k: v for k, v in self.to_dict().items() if k != "out"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def valid_strategy_names() -> set[str]:
    """Our strategies, NNI's built-ins and ``optuna-<sampler>`` for every Optuna sampler."""
    from robustnas.plugins.optuna import SAMPLERS
    from robustnas.strategies import STRATEGIES

    return set(STRATEGIES) | {OPTUNA_PREFIX + s for s in SAMPLERS}


# ---------------------------------------------------------------------------- the run folder
class RunFolder:
    """``results.json`` of a run, written atomically (temporary file, then rename)."""

    def __init__(self, config: CompareConfig, resume: bool) -> None:
        self.path = Path(config.out)
        self.results_path = self.path / "results.json"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise PermissionError(f"output folder {str(self.path)!r} is not writable: {exc}") from exc
        if self.results_path.exists():
            data = json.loads(self.results_path.read_text())
            if not resume:
                raise ValueError(f"{self.results_path} exists; pass --resume to continue that run "
                                 "or choose another --out")
            if data.get("fingerprint") != config.fingerprint():
                raise ValueError(f"{self.results_path} comes from another configuration "
                                 f"(fingerprint {data.get('fingerprint')} != {config.fingerprint()}); "
                                 "resume it with the same options or choose another --out")
            self.data = data
        else:
            self.data = {"fingerprint": config.fingerprint(), "config": config.to_dict(), "rows": [], "done": []}

    def done(self, strategy: str, seed: int) -> bool:
        return [strategy, seed] in self.data["done"]

    def add(self, strategy: str, seed: int, rows: list[dict[str, Any]]) -> None:
        self.data["rows"].extend(rows)
        self.data["done"].append([strategy, seed])
        self.save()

    def save(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".results-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.data, fh, indent=2)
        os.replace(tmp, self.results_path)


# ---------------------------------------------------------------------------- search
def _space_for(config: CompareConfig, strategy: str) -> tuple[str, dict[str, Any]]:
    name = config.strategy_spaces.get(strategy, config.space)
    kwargs = dict(config.space_kwargs) if name == config.space else {}
    return name, kwargs


def _evaluator_config(config: CompareConfig, phase: str, seed: int) -> Any:
    from robustnas.plugins.evaluator import EvaluatorConfig

    # The run's own progress bar is the one live display; the evaluator's would clash with it.
    values = {"dataset": config.dataset, "progress": False, **getattr(config, phase), "seed": seed}
    return EvaluatorConfig.from_dict(values)


def run_search(config: CompareConfig, strategy: str, seed: int, progress: bool = True) -> list[dict[str, Any]]:
    """Run one strategy once; return up to ``top_k`` entries ``{"record", "search_metrics", "search_cost"}``."""
    import torch

    from robustnas.plugins.evaluator import RobustnessEvaluator
    from robustnas.search_spaces import export_record, get_space

    torch.manual_seed(seed)
    space_name, space_kwargs = _space_for(config, strategy)
    evaluator = RobustnessEvaluator(_evaluator_config(config, "search", seed))
    bundle = evaluator.bundle
    space_kwargs = {"input_shape": tuple(bundle.input_shape), "num_classes": bundle.num_classes, **space_kwargs}
    space = get_space(space_name, **space_kwargs)
    kwargs = seeded(strategy, seed, evolutionary_defaults(strategy, config.budget,
                                                          config.strategy_kwargs.get(strategy, {})))

    wall0, cpu0 = time.perf_counter(), time.process_time()
    if strategy.startswith(OPTUNA_PREFIX):
        candidates = _search_optuna(config, strategy, seed, space, evaluator, kwargs)
    elif strategy in ONE_SHOT:
        candidates = _search_one_shot(config, strategy, space, evaluator, kwargs)
    else:
        candidates = _search_multi_trial(config, strategy, space, evaluator, kwargs)
    cost = {"wall_seconds": time.perf_counter() - wall0, "cpu_seconds": time.process_time() - cpu0,
            "candidates": candidates["evaluated"]}
    chosen = _top_k(candidates["records"], config.top_k)
    return [
        {"record": export_record(space, item["sample"]), "search_metrics": item.get("metrics") or {},
         "search_cost": cost}
        for item in chosen
    ]


#: Evolutionary strategies whose population is sized from the budget when not given.
_EVOLUTIONARY = {"optuna-nsga2": "population_size", "optuna-nsga3": "population_size",
                 "evolution": "population_size"}


def population_for(budget: int) -> int:
    """Population of an evolutionary search of ``budget`` candidates: about three generations.

    NSGA-II's default population (Optuna: 50) and NNI's regularised evolution (100) exceed
    the budgets of the demo and small presets, which would make them random search with
    extra steps; a third of the budget (at least 2, at most 50) gives them generations to
    select in.
    """
    return max(2, min(50, math.ceil(budget / 3)))


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


def _search_optuna(config, strategy, seed, space, evaluator, kwargs) -> dict[str, Any]:
    import optuna

    from robustnas.plugins.optuna import RobustObjective, create_study, make_sampler

    sampler = make_sampler(strategy[len(OPTUNA_PREFIX):], seed=seed, **kwargs)
    objective = RobustObjective(space, evaluator)
    storage = f"journal:///{Path(config.out).resolve() / 'optuna.journal'}"
    study = create_study(objective.objectives, storage=storage, study_name=f"{strategy}-seed{seed}", sampler=sampler)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    remaining = config.budget - sum(t.state in finished for t in study.trials)
    if remaining > 0:  # a resumed study only runs what is missing
        study.optimize(objective, n_trials=remaining)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    records = [{"sample": t.user_attrs["record"]["sample"], "metrics": t.user_attrs["metrics"]} for t in complete]
    return {"records": records, "evaluated": sum(t.state in finished for t in study.trials)}


def _search_multi_trial(config, strategy, space, evaluator, kwargs) -> dict[str, Any]:
    from robustnas.plugins.nni import robust_evaluator, run_experiment
    from robustnas.strategies import get_strategy

    result = run_experiment(space, get_strategy(strategy, **kwargs), robust_evaluator(evaluator.config),
                            max_trial_number=config.budget)
    return {"records": [r for r in result.records if r.get("metrics")], "evaluated": len(result.records)}


#: Our one-shot strategies take the threat model of the run.
_THREAT_AWARE = ("arnas", "dsrna", "tamnas")


def _search_one_shot(config, strategy, space, evaluator, kwargs) -> dict[str, Any]:
    from robustnas.plugins.nni import classification_evaluator, run_experiment
    from robustnas.strategies import get_strategy

    if strategy in _THREAT_AWARE:
        kwargs = {"eps": evaluator.threat.eps, "norm": evaluator.threat.norm, **kwargs}
    strat = get_strategy(strategy, **kwargs)
    lightning = classification_evaluator(evaluator.bundle, max_epochs=config.search_epochs,
                                         limit_train_batches=config.search_batches)
    result = run_experiment(space, strat, lightning)
    if hasattr(strat, "pareto_front"):
        records = strat.pareto_front()
    else:
        records = [{"sample": s, "metrics": {}} for s in result.exported]
    # Subnets scored on the supernet (TAM-NAS's archive) count as candidates; a DARTS-style export is one.
    scored = strat.archive if hasattr(strat, "archive") else getattr(strat, "records", records)
    evaluated = max(len(scored), 1)
    return {"records": records, "evaluated": evaluated}


# ---------------------------------------------------------------------------- compare
def _retrain(config: CompareConfig, entry: dict[str, Any], seed: int) -> dict[str, Any]:
    from robustnas.plugins.evaluator import RobustnessEvaluator
    from robustnas.search_spaces import build_model

    record = copy.deepcopy(entry["record"])
    if config.final_space_kwargs and record["space"] == config.space:
        record["kwargs"].update(config.final_space_kwargs)
    evaluator = RobustnessEvaluator(_evaluator_config(config, "final", seed))
    return evaluator.evaluate(build_model(record))


def compare(config: CompareConfig, resume: bool = False, progress: bool = True,
            on_unit_done: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Run every strategy for every seed, retrain what each returns, write the run folder.

    Returns ``{"out": folder, "rows": [...], "summary": [...]}``. ``on_unit_done(strategy, seed)`` is
    called after each (strategy, seed) unit is saved.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from robustnas.plugins.report import format_table, pareto_plot, summarise

    config.validate()
    folder = RunFolder(config, resume)
    units = [(s, seed) for seed in config.seeds for s in config.strategies]
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), disable=not progress) as bar:
        task = bar.add_task("compare", total=len(units))
        for strategy, seed in units:
            if folder.done(strategy, seed):
                _logger.info("skip %s seed %d: done in an earlier run", strategy, seed)
                bar.advance(task)
                continue
            bar.update(task, description=f"{strategy} (seed {seed}): search")
            found = run_search(config, strategy, seed, progress=progress)
            rows = []
            for i, entry in enumerate(found):
                bar.update(task, description=f"{strategy} (seed {seed}): retrain {i + 1}/{len(found)}")
                metrics = _retrain(config, entry, seed)
                rows.append({"strategy": strategy, "seed": seed, **entry, "metrics": metrics})
            folder.add(strategy, seed, rows)
            bar.advance(task)
            if on_unit_done:
                on_unit_done(strategy, seed)
    rows = folder.data["rows"]
    summary = summarise(rows, config.strategies)
    table = format_table(summary)
    first = rows[0]["metrics"] if rows else {}
    (folder.path / "report.md").write_text(
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
    if rows:
        pareto_plot(rows, folder.path / "pareto.png", title=f"{config.space} on {config.dataset}")
    return {"out": str(folder.path), "rows": rows, "summary": summary}
