"""Robustness benchmark tables: every cell of a space trained and attacked under one protocol.

``load_benchmark("robust201-digits")`` reads the shipped table; ``build_table`` builds or
continues one (``robustnas bench build``). See docs/benchmark.md.
"""

from ._build import Plan, build_table, read_rows
from ._protocol import PHASES, Protocol, run_cell

__all__ = ["PHASES", "Plan", "Protocol", "build_table", "read_rows", "run_cell"]
