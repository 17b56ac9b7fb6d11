"""Robustness benchmark tables: every cell of a space trained and attacked under one protocol.

``load_benchmark("robust201-digits")`` reads the shipped table (lookups, bests, Pareto
front, seed noise, validity, and ``evaluate`` to re-run the protocol on a cell);
``build_table`` builds or continues one (``robustnas bench build``), ``pack_table`` writes
the compressed file that ships. ``benchmark_evaluator`` (NNI) and ``BenchmarkObjective``
(Optuna) answer a search from the table. See docs/benchmark.md.
"""

from ._adapters import BenchmarkObjective, TableEvaluator, benchmark_evaluator, cached_benchmark
from ._build import Plan, build_table, read_rows
from ._plots import plot_table
from ._protocol import PHASES, Protocol, run_cell
from ._table import BENCHMARKS, Benchmark, TableRow, available_benchmarks, load_benchmark, pack_table
from ._stats import (
    HV_OBJECTIVES, TableTarget, bootstrap_band, bootstrap_ci, holm, mean_ranks, normalised_hypervolume,
    paired_wilcoxon, regret, regret_at_times, regret_curve, table_target,
)
from ._compare import (
    ALL_TABLE_STRATEGIES, TABLE_MISSING, TABLE_STRATEGIES, compare_on_table, plot_anytime, report_markdown,
    strip_timings,
)
from ._oneshot import ONE_SHOT_ON_TABLE, LiveCells, run_one_shot
from ._diagnostics import (
    PARAMETER_FREE_OPS, architecture_log_probs, parameter_free_share, ranking_agreement, supernet_scores,
    table_cells, table_parameter_free_share, zero_cost_proxies,
)
from ._preset import BENCH_PRESET, BenchConfig, run_bench

__all__ = [
    "BENCHMARKS", "PHASES", "Benchmark", "BenchmarkObjective", "Plan", "Protocol", "TableEvaluator", "TableRow",
    "available_benchmarks", "benchmark_evaluator", "build_table", "cached_benchmark",
    "load_benchmark", "pack_table", "plot_table", "read_rows", "run_cell",
    "ALL_TABLE_STRATEGIES", "BENCH_PRESET", "BenchConfig", "LiveCells", "ONE_SHOT_ON_TABLE", "TABLE_MISSING",
    "run_bench", "run_one_shot",
    "PARAMETER_FREE_OPS", "architecture_log_probs", "parameter_free_share", "ranking_agreement", "supernet_scores",
    "table_cells", "table_parameter_free_share", "zero_cost_proxies",
    "HV_OBJECTIVES", "TABLE_STRATEGIES", "TableTarget", "bootstrap_band", "bootstrap_ci", "compare_on_table",
    "holm", "mean_ranks", "normalised_hypervolume", "paired_wilcoxon", "plot_anytime",
    "regret", "regret_at_times", "regret_curve", "report_markdown", "strip_timings", "table_target",
]
