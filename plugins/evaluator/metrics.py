"""The evaluator's metrics, each declared once with its direction; size and speed of a model.

``METRICS`` holds one :class:`MetricSpec` per key of the metrics dict (its direction, if it is
an objective, and what it means); ``METRIC_KEYS`` (the keys every dict of
``RobustnessEvaluator.evaluate`` carries) and ``METRIC_DIRECTIONS`` (which way each objective
is better; ``robustnas.strategies.pareto`` re-exports it) are read from it.
:func:`register_metric` adds a metric that a custom evaluator writes, so that searches can
optimise it. The rest of the module measures parameters, FLOPs and CPU latency.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from robustnas.plugins.errors import ConfigError

from ._registry import Registry
from ._utils import eval_mode, logits_of, model_device

__all__ = ["DIRECTIONS", "MetricSpec", "METRICS", "METRIC_KEYS", "register_metric", "METRIC_DIRECTIONS",
           "count_params", "count_flops", "measure_latency"]

#: The two ways an objective can be better.
DIRECTIONS: tuple[str, ...] = ("maximize", "minimize")


@dataclass(frozen=True)
class MetricSpec:
    """One key of the metrics dict: ``direction`` (``"maximize"``, ``"minimize"``, or None for a
    key that is not an objective, such as ``eps``), what it means, and whether every dict of
    ``RobustnessEvaluator.evaluate`` carries it (``always``; those are ``METRIC_KEYS``)."""

    name: str
    direction: str | None
    description: str
    always: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a metric needs a non-empty string name, got {self.name!r}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ConfigError(f"metric {self.name!r}: unknown direction {self.direction!r}; valid directions: "
                              f"{', '.join(DIRECTIONS)} (or None for a key that is not an objective)")


#: Every metric by name: the keys of the evaluator's dict in their order, plus ``fgsm_acc`` (the
#: benchmark table's) and ``certified_acc`` (with ``certify``).
METRICS: Registry[MetricSpec] = Registry("metric", "metrics", MetricSpec, (
    MetricSpec("clean_acc", "maximize", "accuracy on the full test split", always=True),
    MetricSpec("robust_acc", "maximize", "AutoAttack's accuracy (the mode in attack) on the first n_examples test "
               "points; never another attack's", always=True),
    MetricSpec("pgd_acc", "maximize", "PGD-pgd_eval_steps accuracy on the same points", always=True),
    MetricSpec("fgsm_acc", "maximize", "FGSM accuracy (benchmark tables)"),
    MetricSpec("certified_acc", "maximize", "certified accuracy on the same points (certify=True only)"),
    MetricSpec("params", "minimize", "parameter count", always=True),
    MetricSpec("flops", "minimize", "FLOPs of one image (a multiply-add counts 2)", always=True),
    MetricSpec("latency_ms", "minimize", "median CPU forward time of one image (batch 1)", always=True),
    MetricSpec("train_seconds", None, "wall time of training", always=True),
    MetricSpec("eval_seconds", None, "wall time of the accuracy measurements", always=True),
    MetricSpec("norm", None, "threat model norm (linf or l2)", always=True),
    MetricSpec("eps", None, "threat model radius", always=True),
    MetricSpec("attack", None, "AutoAttack mode that produced robust_acc: EvaluatorConfig.aa_mode, or the mode "
               "it escalated to", always=True),
    MetricSpec("n_examples", None, "number of attacked test points", always=True),
    MetricSpec("dataset", None, "dataset name", always=True),
    MetricSpec("recipe", None, "training recipe (none with train=False)", always=True),
    MetricSpec("epochs", None, "training epochs", always=True),
    MetricSpec("flags", None, "why a number may not be trusted ('code: detail' strings; [] when clean)", always=True),
))

#: Keys every metrics dict of ``RobustnessEvaluator.evaluate`` carries (``certified_acc`` too when
#: ``certify`` is set), in the dict's order.
METRIC_KEYS: tuple[str, ...] = tuple(name for name, metric in METRICS.items() if metric.always)


def register_metric(metric: MetricSpec) -> MetricSpec:
    """Declare a metric that a custom evaluator adds to the metrics dict, with its direction, so that
    ``directions_for``, Pareto archives, Optuna objectives and NNI's ``default`` accept it.

    A name already registered raises :class:`ConfigError`, as does ``always=True``: ``METRIC_KEYS``
    lists the keys the built-in evaluator writes, which a registration does not change.
    """
    if isinstance(metric, MetricSpec) and metric.always:
        raise ConfigError(f"metric {metric.name!r}: always=True is for the built-in evaluator's own keys "
                          f"({', '.join(METRIC_KEYS)}); register it with always=False")
    return METRICS.register(metric)


class _Directions(Mapping[str, str]):
    """``{name: direction}`` of every registered metric that is an objective (a live view of
    ``METRICS``, so a registered metric appears in it at once)."""

    def __getitem__(self, name: str) -> str:
        metric = METRICS.get(name)
        if metric is None or metric.direction is None:
            raise KeyError(name)
        return metric.direction

    def __iter__(self) -> Iterator[str]:
        return (name for name, metric in METRICS.items() if metric.direction is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))


#: Which way each metric is better, for the metrics that are objectives.
METRIC_DIRECTIONS: Mapping[str, str] = _Directions()


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        seen[id(p)] = p.numel()
    return int(sum(seen.values()))


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be positive sizes such as (C, H, W), got {input_shape!r}")
    return shape


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on one image of ``input_shape`` (C, H, W), in eval mode.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add
    as 2 FLOPs (so FLOPs = 2 x MACs) for matmul and convolution; element-wise ops
    (ReLU, BatchNorm in eval, pooling, additions) are not counted.
    """
    shape = _check_shape(input_shape)
    x = torch.zeros(1, *shape, device=model_device(model))
    counter = FlopCounterMode(display=False)
    with eval_mode(model, frozen=False), torch.no_grad(), counter:
        logits_of(model(x))
    return int(counter.get_total_flops())


def measure_latency(
    model: nn.Module, input_shape: Sequence[int], repeats: int = 20, warmup: int = 3
) -> float:
    """Median CPU wall time in milliseconds of one forward pass on one image (batch 1).

    Runs on a CPU copy of the model in eval mode without gradients; the model itself is
    neither moved nor changed.
    """
    shape = _check_shape(input_shape)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats!r}, {warmup!r}")
    on_cpu = all(t.device.type == "cpu" for t in list(model.parameters()) + list(model.buffers()))
    cpu_model = model if on_cpu else copy.deepcopy(model).cpu()
    x = torch.rand(1, *shape)
    times: list[float] = []
    with eval_mode(cpu_model, frozen=False), torch.inference_mode():
        for _ in range(warmup):
            cpu_model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            cpu_model(x)
            times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))
