"""robustnas plugins: everything that plugs the search spaces and strategies into NNI, Optuna
and the command line.

Public subpackages: :mod:`~robustnas.plugins.evaluator` (the shared evaluator),
:mod:`~robustnas.plugins.optuna` (the Optuna bridge), :mod:`~robustnas.plugins.bench`
(benchmark tables), :mod:`~robustnas.plugins.testing` (conformance suites). Public modules:
:mod:`~robustnas.plugins.nni`, :mod:`~robustnas.plugins.compare`,
:mod:`~robustnas.plugins.report`, :mod:`~robustnas.plugins.cli`,
:mod:`~robustnas.plugins.errors`. A module whose name starts with ``_`` is private
(docs/internals.md, "Module conventions"). This package itself exports no names.
"""
