"""The ``robustnas`` command line: ``compare``, ``search``, ``evaluate``, ``optuna-worker``, ``list``.

Options come from flags or from a YAML file (``--config``); flags win over the file.
Every subcommand exits with status 0 on success, 1 on a run that failed and 2 on bad input.
Bad input is a :class:`robustnas.plugins.errors.RobustNASError`, printed as one line; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from robustnas.plugins.errors import ConfigError, DataError, MissingFileError, RobustNASError
from robustnas.plugins._deprecation import show_deprecations
from robustnas.plugins.evaluator import EVALUATOR_OPTIONS, EvaluatorConfig, add_evaluator_options, given_options

__all__ = ["UsageError", "build_parser", "main"]


class UsageError(ConfigError):
    """Bad input from the command line: reported without a traceback, exit status 2."""


def _load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"config file {path!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"config file {path!r} must hold a mapping of option names to values")
    return data


def _merge(file_options: dict[str, Any], args: argparse.Namespace, names: Sequence[str],
           file_names: Sequence[str] = ()) -> dict[str, Any]:
    """Options from the YAML file, overridden by every flag the user actually gave.

    The file may hold ``names`` (the flags) and ``file_names`` (settings without a flag); a
    deprecated evaluator name (``attack``) is read as its new one, with a warning."""
    file_options = EvaluatorConfig.upgrade(file_options)
    valid = set(names) | set(file_names)
    unknown = set(file_options) - valid
    if unknown:
        raise UsageError(f"unknown option(s) {sorted(unknown)} in config file {getattr(args, 'config', '')!r}; "
                         f"valid: {sorted(valid)}")
    merged = dict(file_options)
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            merged[name] = value
    return merged


#: The evaluator's flags (``robustnas.plugins.evaluator.EVALUATOR_OPTIONS``, defined once beside
#: ``EvaluatorConfig``), by field name.
_EVALUATOR_FLAGS = tuple(option.name for option in EVALUATOR_OPTIONS)


def _evaluator_config(options: dict[str, Any], seed: int | None = None) -> Any:
    from robustnas.plugins.evaluator import EvaluatorConfig

    values = given_options(options)
    if seed is not None:
        values["seed"] = seed
    return EvaluatorConfig.from_dict(values)


# ---------------------------------------------------------------------------- list
def _cmd_list(args: argparse.Namespace) -> int:
    from robustnas.plugins.evaluator import DATASETS, RECIPES
    from robustnas.plugins.optuna import SAMPLERS
    from robustnas.plugins.compare import PRESETS
    from robustnas.search_spaces import available_spaces
    from robustnas.strategies import available_strategies

    rows = {
        "spaces": sorted(available_spaces()),
        "strategies": sorted(available_strategies()) + [f"optuna-{s}" for s in sorted(SAMPLERS)],
        "samplers": sorted(SAMPLERS),
        "datasets": list(DATASETS),
        "recipes": list(RECIPES),
        "presets": sorted(PRESETS),
    }
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for key, names in rows.items():
            print(f"{key:<11} {', '.join(names)}")
    return 0


# ---------------------------------------------------------------------------- compare
_COMPARE_FLAGS = ("preset", "space", "strategies", "seeds", "budget", "search_epochs", "top_k", "out", "jobs",
                  "cluster") + _EVALUATOR_FLAGS


def _compare_config(args: argparse.Namespace, flags: Sequence[str]) -> Any:
    import dataclasses

    from robustnas.plugins.compare import CompareConfig

    fields = [f.name for f in dataclasses.fields(CompareConfig)]
    return CompareConfig.from_options(_merge(_load_yaml(args.config), args, flags, fields))


#: Flags of ``compare --preset bench`` (the table comparison); others are rejected by name.
_BENCH_FLAGS = ("strategies", "seeds", "budget", "search_epochs", "out", "jobs", "cluster")


def _cmd_compare_bench(args: argparse.Namespace, file_options: dict[str, Any]) -> int:
    import yaml

    from robustnas.plugins.bench._preset import BenchConfig, plan_bench, run_bench

    given = [f for f in _COMPARE_FLAGS if f not in _BENCH_FLAGS and f != "preset" and getattr(args, f, None) is not None]
    if given:
        raise ConfigError(f"--preset bench looks every candidate up in the benchmark table; these flags do not "
                          f"apply: {', '.join('--' + g.replace('_', '-') for g in given)} (valid: "
                          f"{', '.join('--' + f.replace('_', '-') for f in _BENCH_FLAGS)}, --config, --resume, "
                          "--dry-run, -q)")
    options = dict(file_options)
    options.update({f: getattr(args, f) for f in _BENCH_FLAGS if getattr(args, f, None) is not None})
    config = BenchConfig.from_options(options)
    if args.dry_run:
        planned = plan_bench(config)
        print("# resolved configuration (--preset bench)")
        print(yaml.safe_dump(planned["config"], sort_keys=False, default_flow_style=None).rstrip())
        table = planned["table"]
        print(f"\n# planned: {planned['units']} units on table {table['name']} ({table['cells']} of "
              f"{table['size']} cells); nothing was run or written")
        return 0
    result = run_bench(config, resume=args.resume, progress=not args.quiet)
    print(result["report"])
    print(f"run folder: {result['out']}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from robustnas.plugins.compare import check, compare, format_plan, plan
    from robustnas.plugins.report import format_table

    file_options = _load_yaml(args.config)
    if (args.preset or file_options.get("preset")) == "bench":
        return _cmd_compare_bench(args, file_options)
    config = _compare_config(args, _COMPARE_FLAGS)
    if args.dry_run:
        import yaml

        planned = plan(config, check(config))
        print("# resolved configuration (fingerprint " + planned["fingerprint"] + ")")
        print(yaml.safe_dump(planned["config"], sort_keys=False, default_flow_style=None).rstrip())
        print("\n# planned units (nothing was run or written)")
        print(format_plan(planned))
        return 0
    result = compare(config, resume=args.resume, progress=not args.quiet)
    print(format_table(result["summary"]))
    print(f"\nrun folder: {result['out']}")
    if result["unfinished"]:
        names = ", ".join(f"{s} seed {seed}" for s, seed in result["unfinished"])
        print(f"robustnas compare: no successful candidate in {names} (reasons in report.md); "
              "rerun with --resume to retry", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------- search
_SEARCH_FLAGS = ("space", "strategy", "seed", "budget", "search_epochs", "top_k", "out") + _EVALUATOR_FLAGS


def _cmd_search(args: argparse.Namespace) -> int:
    import dataclasses

    from robustnas.plugins.compare import CompareConfig, check, run_search, write_text_atomic

    fields = [f.name for f in dataclasses.fields(CompareConfig)]
    options = _merge(_load_yaml(args.config), args, _SEARCH_FLAGS, [f for f in fields if f not in ("strategies", "seeds")])
    strategy = options.pop("strategy", None)
    if not strategy:
        raise UsageError("search needs --strategy (see `robustnas list`)")
    options["strategies"] = [strategy]
    if "seed" in options:
        options["seeds"] = [options.pop("seed")]
    config = CompareConfig.from_options(options)
    check(config)
    records = run_search(config, strategy, config.seeds[0], progress=not args.quiet)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{strategy}-seed{config.seeds[0]}.json"
    write_text_atomic(path, json.dumps(records, indent=2))
    for i, rec in enumerate(records):
        print(f"[{i}] {json.dumps(rec['record']['sample'])}")
    print(f"\n{len(records)} architecture record(s) written to {path}")
    if not records:
        print("robustnas search: no successful candidate (see the log for the reasons)", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------- evaluate
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from robustnas.plugins.evaluator import RobustnessEvaluator
    from robustnas.search_spaces import build_model

    options = _merge(_load_yaml(args.config), args, _EVALUATOR_FLAGS + ("seed",))
    path = Path(args.record)
    if not path.is_file():
        raise MissingFileError(f"record file {args.record!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"record file {args.record!r} is not valid JSON (truncated or edited?): {exc}") from exc
    records = data if isinstance(data, list) else [data]
    if not 0 <= args.index < len(records):
        raise UsageError(f"--index {args.index} out of range: the file holds {len(records)} record(s)")
    record = records[args.index]
    if isinstance(record, dict):
        record = record.get("record", record)  # accept search output entries and bare records
    evaluator = RobustnessEvaluator(_evaluator_config(options, options.get("seed")))
    try:
        model = build_model(record)
    except (ValueError, TypeError, KeyError) as exc:  # a record that does not describe an architecture
        raise DataError(f"record file {args.record!r}, record {args.index}: {exc}") from exc
    try:
        metrics = evaluator.evaluate(model)
    except FloatingPointError as exc:  # training diverged: the run failed, the input was valid
        print(f"robustnas evaluate: training failed: {exc}", file=sys.stderr)
        return 1
    out = {"record": record, "metrics": metrics}
    text = json.dumps(out, indent=2)
    if args.output:
        from robustnas.plugins.compare import write_text_atomic

        write_text_atomic(Path(args.output), text)
    print(text)
    return 0


# ---------------------------------------------------------------------------- bench
def _cmd_bench_build(args: argparse.Namespace) -> int:
    from robustnas.plugins.bench import PHASES, build_table

    counts = build_table(args.out, name=args.name, workers=args.workers, threads=args.threads_per_worker,
                         device=args.device, limit=args.limit, phases=args.phases or PHASES, quiet=args.quiet)
    print(json.dumps(counts))
    return 0


def _cmd_bench_pack(args: argparse.Namespace) -> int:
    from robustnas.plugins.bench import pack_table

    path = pack_table(args.out, args.dest)
    print(f"packed {args.out} into {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _cmd_bench_plot(args: argparse.Namespace) -> int:
    from robustnas.plugins.bench import load_benchmark, plot_table

    for path in plot_table(load_benchmark(args.name, path=args.path), args.out):
        print(path)
    return 0


def _cmd_bench_info(args: argparse.Namespace) -> int:
    from robustnas.plugins.bench import load_benchmark

    bench = load_benchmark(args.name, path=args.path)
    print(json.dumps(bench.summary(), indent=2))
    return 0


# ---------------------------------------------------------------------------- parser
def _add_table_command(bench: Any, command: str, text: str, func: Any) -> argparse.ArgumentParser:
    """A ``bench`` subcommand that reads one table: the shipped one by name, or ``--path``."""
    b = bench.add_parser(command, help=text)
    b.add_argument("name", nargs="?", default="robust201-digits")
    b.add_argument("--path", help="a packed table file or build folder instead of the shipped table")
    b.set_defaults(func=func)
    return b


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustnas",
        description="Robust neural architecture search: ARNAS, DSRNA and TAM-NAS in NNI and Optuna, "
        "judged by one shared AutoAttack evaluator.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own); 1 avoids "
                        "oversubscription when other processes share the cores")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list spaces, strategies, samplers, datasets, recipes and presets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("compare", help="run several strategies head to head and write a report")
    p.add_argument("--config", help="YAML file of options (flags override it)")
    p.add_argument("--preset", help="demo, small, paper, or bench (every strategy on the benchmark table; default: demo)")
    p.add_argument("--space", help="search space name")
    p.add_argument("--strategies", nargs="+", help="strategy names, e.g. arnas dsrna tamnas random optuna-nsga2")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds; one search and retraining per seed")
    p.add_argument("--budget", type=int, help="candidates evaluated by each multi-trial strategy")
    p.add_argument("--search-epochs", dest="search_epochs", type=int, help="supernet epochs of one-shot strategies")
    p.add_argument("--top-k", dest="top_k", type=int, help="architectures retrained per strategy and seed")
    p.add_argument("--out", help="run folder (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--jobs", type=int, help="tasks (unit searches, retrainings) running at once; above 1 they "
                   "run on a local Ray instance (pip install 'robustnas[ray]'), with the results of one job "
                   "(default 1: this process, no engine)")
    p.add_argument("--cluster", help="run the tasks on an existing Ray cluster: auto, HOST:PORT or "
                   "ray://HOST:PORT (the run folder must be on a file system every node sees)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="validate everything, print the resolved configuration and the planned units "
                        "with a cost estimate; run and write nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_evaluator_options(p)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("search", help="run one strategy on one space and write architecture records")
    p.add_argument("--config", help="YAML file of options (flags override it)")
    p.add_argument("--preset", help="preset whose budgets to use (default: demo)")
    p.add_argument("--space", help="search space name")
    p.add_argument("--strategy", help="strategy name (see `robustnas list`)")
    p.add_argument("--seed", type=int)
    p.add_argument("--budget", type=int, help="candidates evaluated (multi-trial strategies)")
    p.add_argument("--search-epochs", dest="search_epochs", type=int, help="supernet epochs (one-shot strategies)")
    p.add_argument("--top-k", dest="top_k", type=int, help="architectures to export")
    p.add_argument("--out", help="folder for the records (default: runs/search)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_evaluator_options(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("evaluate", help="retrain and evaluate one architecture record with the shared evaluator")
    p.add_argument("record", help="JSON file: one record, or a list of them (output of `search`)")
    p.add_argument("--index", type=int, default=0, help="which record of a list (default 0)")
    p.add_argument("--config", help="YAML file of evaluator options (flags override it)")
    p.add_argument("--seed", type=int)
    p.add_argument("--output", help="write the metrics JSON here too")
    add_evaluator_options(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("bench", help="robustness benchmark tables: build, pack, info")
    bench = p.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND", required=True)
    b = bench.add_parser("build", help="build or continue a table (resumable; safe to kill at any moment)")
    b.add_argument("--name", default="robust201-digits", help="table name (default: robust201-digits)")
    b.add_argument("--out", default="benchmarks/tables/robust201-digits", help="build folder (rows.jsonl, meta.json, build.log)")
    b.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    b.add_argument("--threads-per-worker", dest="threads_per_worker", type=int, default=1, help="torch threads per worker")
    b.add_argument("--device", default="cpu", help="cpu or cuda (recorded in every row)")
    b.add_argument("--limit", type=int, help="stop after this many tasks")
    b.add_argument("--phases", nargs="+", help="only these phases: main, seed, autoattack, validity")
    b.add_argument("-q", "--quiet", action="store_true", help="progress to build.log only")
    b.set_defaults(func=_cmd_bench_build)
    b = bench.add_parser("pack", help="write the compressed table that load_benchmark reads")
    b.add_argument("--out", default="benchmarks/tables/robust201-digits", help="build folder")
    b.add_argument("--dest", help="packed file (default: the package's data folder)")
    b.set_defaults(func=_cmd_bench_pack)
    b = _add_table_command(bench, "plot", "histogram of robust accuracy and clean-vs-robust scatter (PNG)",
                           _cmd_bench_plot)
    b.add_argument("--out", default="docs/img", help="folder for the PNG files (default docs/img)")
    _add_table_command(bench, "info", "size, coverage, noise and best cells of a table", _cmd_bench_info)

    from robustnas.plugins.optuna import add_worker_arguments, worker_command

    p = sub.add_parser("optuna-worker", help="join an Optuna study from this process (any number of workers)")
    add_worker_arguments(p)
    p.set_defaults(func=worker_command)
    return parser


def _quiet_third_party(verbose: int) -> None:
    """NNI and Lightning narrate every experiment on stdout; keep their errors only unless -v is given."""
    if verbose:
        return
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"nni\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|does not have many workers|GPU available).*")
    # nni, Lightning and Optuna set their loggers to INFO on import: import them before lowering the level.
    import nni  # noqa: F401
    import optuna
    import pytorch_lightning  # noqa: F401

    for name in ("nni", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robustnas`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before the parser imports NNI (through the worker's arguments), so its import warnings are filtered too.
    _quiet_third_party(sum(a == "--verbose" or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in argv))
    with warnings.catch_warnings():  # the display of deprecated names is this command's only
        show_deprecations()
        return _run(argv)


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        if args.threads < 1:
            print(f"robustnas: error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except RobustNASError as exc:
        # Bad input (UsageError included): the message names the bad value and the valid ones.
        print(f"robustnas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robustnas {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
