"""Pareto-front and hypervolume-history figures of a study (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

_logger = logging.getLogger(__name__)


def hypervolume_reference(study: optuna.Study) -> list[float]:
    """Reference point for a study's hypervolume, in its objective units:
    ``robustnas.strategies.pareto.default_reference``. When every objective is a named
    shared-evaluator metric, accuracies start from 0 and sizes from the largest observed;
    otherwise every objective starts from its worst observed value.
    """
    from robustnas.strategies.pareto import METRIC_DIRECTIONS, default_reference

    values = np.array([t.values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))],
                      dtype=float).reshape(-1, len(study.directions))
    if not len(values):
        raise ValueError(f"study {study.study_name!r} has no completed trial to plot")
    names = study.metric_names
    if names is not None and all(n in METRIC_DIRECTIONS for n in names):
        return default_reference(names, values)
    directions = ["maximize" if d == StudyDirection.MAXIMIZE else "minimize" for d in study.directions]
    return default_reference(None, values, directions=directions)


def save_plots(study: optuna.Study, out_dir: str | Path,
               reference: Sequence[float] | None = None) -> dict[str, Path]:
    """Write ``pareto_front.png`` and ``hypervolume_history.png`` for a multi-objective study.

    The Pareto front shows up to the first three objectives (all trials, best highlighted);
    the hypervolume history uses ``reference`` or :func:`hypervolume_reference`. Returns the
    paths by name. The study itself stays readable by optuna-dashboard (it is the storage).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_hypervolume_history, plot_pareto_front

    n_obj = len(study.directions)
    if n_obj < 2:
        raise ValueError(f"study {study.study_name!r} has {n_obj} objective; Pareto plots need 2 or more")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(study.metric_names or [f"objective {j}" for j in range(n_obj)])
    if reference is None:
        reference = hypervolume_reference(study)
    paths = {"pareto_front": out / "pareto_front.png", "hypervolume_history": out / "hypervolume_history.png"}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        shown = list(range(min(n_obj, 3)))
        targets = None if n_obj <= 3 else (lambda t: [t.values[j] for j in shown])
        ax = plot_pareto_front(study, target_names=[names[j] for j in shown], targets=targets)
        ax.figure.savefig(paths["pareto_front"], bbox_inches="tight", dpi=110)
        plt.close(ax.figure)
        ax = plot_hypervolume_history(study, reference_point=list(reference))
        ax.set_title(f"Hypervolume history (reference {', '.join(f'{r:.4g}' for r in reference)})")
        ax.figure.savefig(paths["hypervolume_history"], bbox_inches="tight", dpi=110)
        plt.close(ax.figure)
    _logger.info("plots written to %s", out)
    return paths
