"""The shared evaluator: train a candidate with a recipe, then measure it under attack."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustnas.plugins.errors import ConfigError, DataError

from ._utils import eval_mode, logits_of, resolve_device
from .attacks import accuracy, pgd_accuracy
from .autoattack import MODES, AutoAttackResult, autoattack_evaluation
from .checks import evaluator_flags, flag_code, zero_gradient_share
from .data import DATASETS, NORMS, DatasetBundle, ThreatModel, load_dataset
from .metrics import count_flops, count_params, measure_latency
from .training import RECIPES, TrainConfig, train_model

_logger = logging.getLogger(__name__)

#: Keys every metrics dict carries (``certified_acc`` too when ``certify`` is set). ``flags`` is a
#: list of short strings (``"code: detail"``) saying why a number may not be trusted; empty when
#: nothing is suspicious (docs/evaluator.md, "Flags").
METRIC_KEYS: tuple[str, ...] = (
    "clean_acc",
    "robust_acc",
    "pgd_acc",
    "params",
    "flops",
    "latency_ms",
    "train_seconds",
    "eval_seconds",
    "norm",
    "eps",
    "attack",
    "n_examples",
    "dataset",
    "recipe",
    "epochs",
    "flags",
)


#: Device names the evaluator accepts (``cuda:N`` too).
DEVICES = ("auto", "cpu", "cuda", "mps")


def check_device(device: Any) -> None:
    """Raise :class:`ConfigError` unless ``device`` names a device this machine has.

    ``auto`` is always valid; ``cuda`` / ``cuda:N`` need a CUDA device torch can see (and N below
    the device count); ``mps`` needs Apple's backend. Names torch does not know (``gpu``) are
    refused with the valid ones, instead of torch's own traceback.
    """
    text = str(device)
    if text == "auto":
        return
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)} (or cuda:N)") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)} (or cuda:N)")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r} was asked for but torch sees no CUDA device; "
                              "use --device cpu (or auto, which takes CUDA when present)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {device!r}: torch sees {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {device!r} was asked for but the MPS backend is not available; use cpu or auto")


@dataclass
class EvaluatorConfig:
    """Settings of :class:`RobustnessEvaluator` (JSON round-trip with ``to_dict``/``from_dict``).

    ``norm``/``eps`` of None take the dataset's default threat model. ``attack`` is the
    AutoAttack mode (``fast`` or ``standard``); ``robust_acc`` and ``pgd_acc`` are measured
    on the first ``n_examples`` test points (the test split order is fixed by ``seed``).
    With ``escalate`` (the default), a model that the ``fast`` mode flags is attacked again
    in ``standard`` mode, and its metrics say so (``attack: "standard"``).
    ``dataset_options`` go to :func:`load_dataset` (e.g. ``{"path": "my.npz"}``).
    With ``certify``, ``certified_acc`` comes from the bounds named by ``bound_method``:
    ``"interval"`` (interval bound propagation) or ``"crown"`` (linear bounds, tighter and
    costlier; docs/evaluator.md, "Certified bounds").
    """

    dataset: str = "digits"
    root: str | None = None
    download: bool = False
    dataset_options: dict[str, Any] = field(default_factory=dict)
    norm: str | None = None
    eps: float | None = None
    recipe: str = "pgd"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.1
    train_attack_steps: int = 7
    attack: str = "fast"
    n_examples: int = 200
    pgd_eval_steps: int = 20
    eval_batch_size: int = 256
    latency_repeats: int = 20
    device: str = "auto"
    seed: int = 0
    certify: bool = False
    bound_method: str = "interval"
    escalate: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if str(self.dataset).lower() not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(DATASETS)}")
        self.dataset = str(self.dataset).lower()
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {self.recipe!r}; valid recipes: {', '.join(RECIPES)}")
        if self.attack not in MODES:
            raise ConfigError(f"unknown attack {self.attack!r}; valid attacks (AutoAttack modes): {', '.join(MODES)}")
        if self.norm is not None and str(self.norm).lower() not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; valid norms: {', '.join(NORMS)}")
        if self.eps is not None:
            ThreatModel(self.norm or "linf", self.eps)  # raises for eps outside (0, 1], with the 8/255 hint
        for name in ("epochs", "batch_size", "train_attack_steps", "n_examples", "pgd_eval_steps",
                     "eval_batch_size", "latency_repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr must be a positive finite number, got {lr!r}")
        from .bounds import BOUND_METHODS  # a constant; the bounds themselves load lazily

        if self.bound_method not in BOUND_METHODS:
            raise ConfigError(f"unknown bound_method {self.bound_method!r}; valid bound methods: "
                              f"{', '.join(BOUND_METHODS)}")
        for name in ("download", "certify", "escalate", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.root is not None and not isinstance(self.root, (str, os.PathLike)):
            raise ConfigError(f"root must be a folder path, got {self.root!r}")
        if not isinstance(self.dataset_options, dict):
            raise ConfigError(f"dataset_options must be a mapping, got {type(self.dataset_options).__name__}")
        try:  # JSON form (tuples become lists), so that to_dict/from_dict round-trip exactly
            self.dataset_options = json.loads(json.dumps(self.dataset_options))
        except TypeError as err:
            raise ConfigError(f"dataset_options must be JSON-serialisable: {err}") from err
        check_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvaluatorConfig":
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ConfigError(f"evaluator settings must be a mapping of EvaluatorConfig keys, got {data!r}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"unknown EvaluatorConfig keys {unknown}; valid keys: {', '.join(valid)}")
        return cls(**data)


class RobustnessEvaluator:
    """Train a candidate and measure clean, PGD and AutoAttack accuracy, size and latency.

    Robust accuracy is AutoAttack's (Croce and Hein, ICML 2020) in the configured mode;
    ``fast`` mode deviates from the standard ensemble (see docs/fidelity.md, Evaluator).

    Example::

        evaluator = RobustnessEvaluator(EvaluatorConfig(dataset="digits", epochs=10))
        metrics = evaluator.evaluate(model)          # trains with PGD, then attacks
        record = evaluator.record("my-cnn", metrics)  # RobustBench-style JSON dict
    """

    def __init__(self, config: EvaluatorConfig | None = None) -> None:
        self.config = config or EvaluatorConfig()
        self._bundle: DatasetBundle | None = None

    @property
    def bundle(self) -> DatasetBundle:
        """The dataset, loaded once on first use."""
        if self._bundle is None:
            cfg = self.config
            bundle = load_dataset(cfg.dataset, root=cfg.root, download=cfg.download, seed=cfg.seed,
                                  **cfg.dataset_options)
            for split in ("train", "test"):
                if len(bundle.split(split)) == 0:
                    raise DataError(f"dataset {cfg.dataset!r}: the {split} split is empty")
            if bundle.num_classes < 2:
                raise DataError(f"dataset {cfg.dataset!r} has {bundle.num_classes} class(es); at least 2 are needed")
            self._bundle = bundle
        return self._bundle

    @property
    def threat(self) -> ThreatModel:
        """The threat model: the config's norm/eps, else the dataset's default."""
        default = self.bundle.threat
        return ThreatModel(self.config.norm or default.norm,
                           self.config.eps if self.config.eps is not None else default.eps)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` that :meth:`evaluate` trains with."""
        cfg, threat = self.config, self.threat
        return TrainConfig(
            recipe=cfg.recipe, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            eps=threat.eps, norm=threat.norm, attack_steps=cfg.train_attack_steps,
            seed=cfg.seed, progress=cfg.progress,
        )

    def check_model(self, model: nn.Module) -> None:
        """Run one dummy forward; raise ``ValueError`` naming both shapes if the model does not
        accept the dataset's input shape or does not return ``num_classes`` logits."""
        shape, classes = self.bundle.input_shape, self.bundle.num_classes
        x = torch.zeros(2, *shape, device=self.device)
        try:
            with torch.no_grad(), eval_mode(model, frozen=False):
                out = logits_of(model.to(self.device)(x))
        except Exception as err:  # the model's own error, re-raised with the shapes
            raise ConfigError(
                f"the model does not accept dataset {self.bundle.name!r} inputs of shape {tuple(shape)} "
                f"(batch shape {tuple(x.shape)}): {type(err).__name__}: {err}"
            ) from err
        if tuple(out.shape) != (2, classes):
            raise ConfigError(
                f"the model returned shape {tuple(out.shape)} for a batch of 2 inputs of shape "
                f"{tuple(shape)}; expected logits of shape (2, {classes}) for dataset {self.bundle.name!r}"
            )

    def evaluate(self, model: nn.Module, train: bool = True) -> dict[str, Any]:
        """Train ``model`` with the recipe (unless ``train=False``), then measure it.

        Returns a flat JSON-serialisable dict with the keys of ``METRIC_KEYS`` (accuracies
        in [0, 1]) and ``certified_acc`` when ``config.certify`` is set (None, with a
        ``certify-unsupported`` flag, when the bounds do not support an op of the model).
        ``flags`` lists why a number may not be trusted (``checks``, AutoAttack's checks).
        """
        cfg, bundle, threat, dev = self.config, self.bundle, self.threat, self.device
        self.check_model(model)
        history: dict[str, Any] = {}
        train_seconds = 0.0
        if train:
            history = train_model(model, bundle, self.train_config(), device=dev)
            train_seconds = float(history["train_seconds"])
        model.to(dev)
        t0 = time.perf_counter()
        x_test, y_test = bundle.tensors("test")
        x, y = x_test[: cfg.n_examples], y_test[: cfg.n_examples]
        forked = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(cfg.seed)
            clean = accuracy(model, x_test, y_test, batch_size=cfg.eval_batch_size, device=dev)
            pgd_acc = pgd_accuracy(model, x, y, eps=threat.eps, norm=threat.norm, steps=cfg.pgd_eval_steps,
                                   batch_size=cfg.eval_batch_size, device=dev)
            robust, attack, flags = self._autoattack(model, x, y, pgd_acc)
        metrics: dict[str, Any] = {
            "clean_acc": clean,
            "robust_acc": robust,
            "pgd_acc": pgd_acc,
        }
        if cfg.certify:
            certified, unsupported = self._certify(model, x, y)
            metrics["certified_acc"] = certified
            if unsupported:
                flags.append(unsupported)
        eval_seconds = time.perf_counter() - t0
        metrics.update(
            params=count_params(model),
            flops=count_flops(model, bundle.input_shape),
            latency_ms=measure_latency(model, bundle.input_shape, repeats=cfg.latency_repeats),
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            norm=threat.norm,
            eps=threat.eps,
            attack=attack,
            n_examples=len(x),
            dataset=bundle.name,
            recipe=cfg.recipe if train else "none",
            epochs=cfg.epochs if train else 0,
            flags=flags,
        )
        _logger.info(
            "evaluated: clean %.4f, PGD-%d %.4f, AutoAttack(%s) %.4f, %d params%s",
            clean, cfg.pgd_eval_steps, pgd_acc, attack, robust, metrics["params"],
            f"; flags: {'; '.join(flags)}" if flags else "",
        )
        return metrics

    def _run_autoattack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str) -> AutoAttackResult:
        cfg, threat = self.config, self.threat
        return autoattack_evaluation(model, x, y, norm=threat.norm, eps=threat.eps, mode=mode,
                                     batch_size=cfg.eval_batch_size, seed=cfg.seed, device=self.device,
                                     num_classes=self.bundle.num_classes)

    def _autoattack(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, pgd_acc: float
    ) -> tuple[float, str, list[str]]:
        """AutoAttack in the configured mode plus the checks; ``(robust_acc, mode run, flags)``.

        In ``fast`` mode with ``escalate``, any flag sends the model to ``standard`` mode; a point
        then counts as robust only if neither run's adversarial input fools the model, and the
        flags are those of the standard run, after ``escalated-to-standard`` naming the fast run's.
        """
        cfg, threat, dev = self.config, self.threat, self.device
        bs = cfg.eval_batch_size
        clean_points = accuracy(model, x, y, batch_size=bs, device=dev)
        zero_share = zero_gradient_share(model, x, y, batch_size=bs)

        def checked(result: AutoAttackResult, robust: float) -> list[str]:
            own = evaluator_flags(clean_acc=clean_points, robust_acc=robust, pgd_acc=pgd_acc, zero_share=zero_share,
                                  norm=threat.norm, eps=threat.eps, num_classes=self.bundle.num_classes)
            return list(result.flags) + own

        first = self._run_autoattack(model, x, y, cfg.attack)
        flags = checked(first, first.robust_acc)
        if cfg.attack != "fast" or not flags or not cfg.escalate:
            return first.robust_acc, cfg.attack, flags
        _logger.warning("fast AutoAttack flagged the model (%s); escalating to standard mode", "; ".join(flags))
        second = self._run_autoattack(model, x, y, "standard")
        robust = _joint_robust_accuracy(model, y, (first.x_adv, second.x_adv), bs, dev)
        codes = ", ".join(dict.fromkeys(flag_code(f) for f in flags))
        escalated = f"escalated-to-standard: fast mode gave {first.robust_acc:.3f} ({codes})"
        return robust, "standard", [escalated] + checked(second, robust)

    def _certify(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float | None, str | None]:
        """Certified accuracy from ``config.bound_method``'s bounds, or ``(None, flag)`` naming an
        unsupported operation."""
        from .bounds import UnsupportedOpError, certified_accuracy  # imported lazily (DSRNA bounds)

        threat = self.threat
        try:
            return float(certified_accuracy(model, x, y, eps=threat.eps, norm=threat.norm,
                                            method=self.config.bound_method)), None
        except UnsupportedOpError as err:
            _logger.warning("certify: %s; certified_acc is None", err)
            return None, f"certify-unsupported: {err.op}"

    def record(self, model_name: str, metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """A RobustBench-style JSON record of one evaluated model (accuracies as percents)."""
        missing = [k for k in ("clean_acc", "robust_acc", "norm", "eps") if k not in metrics]
        if missing:
            raise ConfigError(f"metrics lack {missing}; pass the dict returned by evaluate()")
        record = {
            "name": str(model_name),
            "dataset": metrics.get("dataset", self.config.dataset),
            "threat_model": {"linf": "Linf", "l2": "L2"}[metrics["norm"]],
            "eps": metrics["eps"],
            "clean_acc": round(100.0 * metrics["clean_acc"], 2),
            "autoattack_acc": round(100.0 * metrics["robust_acc"], 2),
            "autoattack_mode": metrics.get("attack", self.config.attack),
            "n_examples": metrics.get("n_examples"),
            "params": metrics.get("params"),
            "additional_data": False,
            "metrics": dict(metrics),
            "evaluator": self.config.to_dict(),
            "extra": dict(extra or {}),
        }
        json.dumps(record)  # fail here, not in the caller, if something is not JSON-able
        return record


def _joint_robust_accuracy(
    model: nn.Module, y: torch.Tensor, adversarials: tuple[torch.Tensor, ...], batch_size: int, device: torch.device
) -> float:
    """Share of points that no input in ``adversarials`` misclassifies (each the same shape as ``x``)."""
    robust = torch.ones(len(y), dtype=torch.bool)
    with torch.no_grad(), eval_mode(model):
        for x_adv in adversarials:
            for start in range(0, len(y), batch_size):
                xb = x_adv[start:start + batch_size].to(device)
                pred = logits_of(model(xb)).argmax(1).cpu()
                robust[start:start + batch_size] &= pred == y[start:start + batch_size].cpu()
    return int(robust.sum()) / len(y)
