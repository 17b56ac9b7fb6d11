"""Conformance suites that any plugin package runs on its own search space or strategy.

As ``optuna.testing`` does for samplers, the contract of a plugin is executable: a space or a
strategy registered by name (built in, with ``register_space`` / ``register_strategy``, or through
the entry-point groups ``robustnas.search_spaces`` / ``robustnas.strategies``) passes these checks
before ``compare`` and ``robustnas list`` can rely on it (docs/internals.md, "Writing a plugin").

* :func:`check_space` -- the space contract, seconds on CPU.
* :func:`check_strategy` -- the strategy contract: capabilities, then a tiny run in a ``NasExperiment``.
* ``robustnas.plugins.testing.pytest_contracts`` -- :class:`SpaceContract` and
  :class:`StrategyContract`, pytest test classes whose fixtures a plugin's tests override (needs pytest).

Each check raises ``AssertionError`` naming the broken clause and what to fix.
"""

from ._space import SpaceCheck, check_space
from ._strategy import CHEAP_EVALUATOR, StrategyCheck, StrategyRun, check_strategy, run_strategy

__all__ = ["CHEAP_EVALUATOR", "SpaceCheck", "StrategyCheck", "StrategyRun", "check_space", "check_strategy",
           "run_strategy"]
