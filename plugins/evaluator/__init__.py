"""The shared robustness evaluator: data, attacks, training recipes, AutoAttack, metrics.

Knows nothing of NNI or Optuna. See docs/evaluator.md.
"""

from ._evaluator import (
    EVALUATOR_OPTIONS,
    STAGES,
    EvaluatorConfig,
    EvaluatorOption,
    RobustnessEvaluator,
    add_evaluator_options,
    given_options,
)
from ._utils import LogitsOnly
from .attacks import accuracy, fgsm, pgd, pgd_accuracy
from .autoattack import MODES, AttackMode, autoattack_accuracy, register_attack
from .data import DATASETS, DEFAULT_THREATS, DatasetBundle, ThreatModel, load_dataset
from .metrics import (
    METRIC_DIRECTIONS,
    METRIC_KEYS,
    METRICS,
    MetricSpec,
    count_flops,
    count_params,
    measure_latency,
    register_metric,
)
from .records import Metrics, metrics_from_dict
from .training import RECIPES, AdversarialRecipe, Recipe, TrainConfig, register_recipe, train_model, train_step

__all__ = [
    "DATASETS",
    "DEFAULT_THREATS",
    "EVALUATOR_OPTIONS",
    "METRICS",
    "METRIC_DIRECTIONS",
    "MODES",
    "RECIPES",
    "STAGES",
    "AdversarialRecipe",
    "AttackMode",
    "DatasetBundle",
    "EvaluatorConfig",
    "EvaluatorOption",
    "LogitsOnly",
    "METRIC_KEYS",
    "MetricSpec",
    "Metrics",
    "Recipe",
    "RobustnessEvaluator",
    "ThreatModel",
    "TrainConfig",
    "accuracy",
    "add_evaluator_options",
    "certified_accuracy",
    "interval_bounds",
    "linear_bounds",
    "margin_lower_bound",
    "autoattack_accuracy",
    "count_flops",
    "count_params",
    "fgsm",
    "given_options",
    "load_dataset",
    "measure_latency",
    "metrics_from_dict",
    "pgd",
    "pgd_accuracy",
    "register_attack",
    "register_metric",
    "register_recipe",
    "train_model",
    "train_step",
]

_BOUNDS = ("interval_bounds", "linear_bounds", "margin_lower_bound", "certified_accuracy")


def __getattr__(name: str):  # lazy: the bound propagation module is imported on first use
    if name in _BOUNDS:
        from . import bounds

        return getattr(bounds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
