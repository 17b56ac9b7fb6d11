"""The shared robustness evaluator: data, attacks, training recipes, AutoAttack, metrics.

Knows nothing of NNI or Optuna. See docs/evaluator.md.
"""

from ._evaluator import METRIC_KEYS, EvaluatorConfig, RobustnessEvaluator
from ._utils import LogitsOnly
from .attacks import accuracy, fgsm, pgd, pgd_accuracy
from .autoattack import MODES, autoattack_accuracy
from .data import DATASETS, DEFAULT_THREATS, DatasetBundle, ThreatModel, load_dataset
from .metrics import count_flops, count_params, measure_latency
from .training import RECIPES, TrainConfig, train_model, train_step

__all__ = [
    "DATASETS",
    "DEFAULT_THREATS",
    "MODES",
    "RECIPES",
    "DatasetBundle",
    "EvaluatorConfig",
    "LogitsOnly",
    "METRIC_KEYS",
    "RobustnessEvaluator",
    "ThreatModel",
    "TrainConfig",
    "accuracy",
    "autoattack_accuracy",
    "count_flops",
    "count_params",
    "fgsm",
    "load_dataset",
    "measure_latency",
    "pgd",
    "pgd_accuracy",
    "train_model",
    "train_step",
]

_BOUNDS = ("interval_bounds", "linear_bounds", "margin_lower_bound", "certified_accuracy")


def __getattr__(name: str):  # lazy: the bound propagation module is imported on first use
    if name in _BOUNDS:
        from . import bounds

        return getattr(bounds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
