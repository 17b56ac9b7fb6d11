"""Optuna bridge: NNI spaces as Optuna search spaces, the shared evaluator as the objective.

* :func:`suggest_architecture` -- any NNI model space -> Optuna distributions -> an NNI sample.
* :class:`RobustObjective` -- ``study.optimize`` objective returning (clean_acc, robust_acc, params, ...).
* :func:`make_sampler` / :data:`SAMPLERS` -- NSGA-II, NSGA-III, MOTPE, GP, random, QMC by name.
* :func:`open_storage` / :func:`create_study` -- in-memory, SQLite, journal file, PostgreSQL/MySQL.
* :class:`OptunaStrategy` -- an NNI strategy driven by any Optuna sampler (multi-objective).
* :func:`add_worker_arguments` / :func:`worker_command` -- workers sharing one study (``optuna-worker``).
* :func:`save_plots` -- Pareto-front and hypervolume-history PNGs.

See docs/optuna.md.
"""

from ._objective import RobustObjective, objective_directions, pareto_records, trial_record
from ._plots import hypervolume_reference, save_plots
from ._samplers import SAMPLERS, make_sampler
from robustnas.strategies.sampling import suggest_architecture
from ._storage import create_study, open_storage
from ._strategy import OptunaStrategy
from ._worker import Worker, add_worker_arguments, reap_stale_trials, start_worker, worker_command

__all__ = [
    "SAMPLERS",
    "OptunaStrategy",
    "RobustObjective",
    "Worker",
    "add_worker_arguments",
    "create_study",
    "hypervolume_reference",
    "make_sampler",
    "objective_directions",
    "open_storage",
    "pareto_records",
    "reap_stale_trials",
    "save_plots",
    "start_worker",
    "suggest_architecture",
    "trial_record",
    "worker_command",
]
