"""The shared evaluator: train a candidate with a recipe, then measure it under attack."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import torch
from torch import nn

from robustnas.plugins._deprecation import Renamed, upgrade, warn
from robustnas.plugins.errors import ConfigError, DataError

if TYPE_CHECKING:
    from .records import Metrics

from ._utils import eval_mode, logits_of, resolve_device
from .attacks import accuracy, pgd_accuracy
from .autoattack import MODES, AutoAttackResult, autoattack_evaluation
from .checks import evaluator_flags, flag_code, zero_gradient_share
from .data import DATASETS, NORMS, DatasetBundle, ThreatModel, load_dataset
from .metrics import count_flops, count_params, measure_latency
from .training import RECIPES, TrainConfig, train_model

_logger = logging.getLogger(__name__)

#: The stages :meth:`RobustnessEvaluator.evaluate` times into its ``timings`` argument: training,
#: clean accuracy (the test split and the attacked points), PGD evaluation, AutoAttack (with an
#: escalation to standard mode), the gradient-masking checks, certification, size (parameters and
#: FLOPs) and latency.
STAGES: tuple[str, ...] = ("train", "clean_acc", "pgd", "autoattack", "checks", "certify", "size", "latency")


class _StageClock:
    """``with clock(stage):`` adds the block's wall seconds to ``seconds[stage]``; with no dict it
    times nothing."""

    def __init__(self, seconds: dict[str, float] | None) -> None:
        self.seconds = seconds

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.seconds is None:
            yield
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


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

    ``norm``/``eps`` of None take the dataset's default threat model. ``aa_mode`` is the
    AutoAttack mode (``fast`` or ``standard``, or a registered one); ``robust_acc`` (AutoAttack's
    accuracy) and ``pgd_acc`` are measured on the first ``n_examples`` test points (the test split
    order is fixed by ``seed``). With ``escalate`` (the default), a model that the ``fast`` mode
    flags is attacked again in ``standard`` mode, and its metrics say so (``attack: "standard"``:
    the metrics' ``attack`` is the mode that produced ``robust_acc``). ``attack`` is the deprecated
    name of ``aa_mode`` (as a keyword, a key of :meth:`from_dict` and an attribute).
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
    aa_mode: str = "fast"
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
    #: Deprecated name of ``aa_mode`` (a keyword only: not a field, not in :meth:`to_dict`).
    attack: dataclasses.InitVar[str | None] = None

    #: Settings that were renamed; :meth:`from_dict` and the constructor still take the old names.
    RENAMED: ClassVar[tuple[Renamed, ...]] = (Renamed("attack", "aa_mode"),)

    def __post_init__(self, attack: str | None) -> None:
        if attack is not None:
            self.aa_mode = self.RENAMED[0].value(attack, "EvaluatorConfig")
        if str(self.dataset).lower() not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(DATASETS)}")
        self.dataset = str(self.dataset).lower()
        RECIPES.lookup(self.recipe)  # ConfigError naming the valid recipes
        if self.aa_mode not in MODES:
            raise ConfigError(f"unknown attack {self.aa_mode!r} (aa_mode); valid AutoAttack modes: {', '.join(MODES)}")
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
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError``. A deprecated key
        (``attack``) is read as its new name, with a ``DeprecationWarning``."""
        if not isinstance(data, dict):
            raise ConfigError(f"evaluator settings must be a mapping of EvaluatorConfig keys, got {data!r}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid) - {r.old for r in cls.RENAMED})
        if unknown:
            raise ConfigError(f"unknown EvaluatorConfig keys {unknown}; valid keys: {', '.join(valid)}")
        return cls(**cls.upgrade(data))

    @classmethod
    def upgrade(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` (settings as a mapping) with the deprecated keys renamed, with a warning each;
        merge a user's settings over others only once both are upgraded."""
        return upgrade(data, cls.RENAMED, "EvaluatorConfig")


def _deprecated_attack(config: EvaluatorConfig) -> str:
    warn(EvaluatorConfig.RENAMED[0].message("EvaluatorConfig"))
    return config.aa_mode


# Set after the dataclass is built: the class attribute ``attack`` is the InitVar's default until then.
EvaluatorConfig.attack = property(_deprecated_attack, doc="Deprecated name of ``aa_mode``.")  # type: ignore[assignment]


@dataclass(frozen=True)
class EvaluatorOption:
    """One :class:`EvaluatorConfig` field that the commands take as a flag (``n_examples``:
    ``--n-examples``). ``type`` converts the flag's text (None: a switch that sets True),
    ``choices`` go to argparse, and the help lists the names in ``valid`` (a registry, read when
    the parser is built, so registered recipes and modes show). A field's deprecated names
    (:attr:`EvaluatorConfig.RENAMED`: ``--attack`` for ``--aa-mode``) are flags too, which warn."""

    name: str
    type: Callable[[str], Any] | None
    help: str
    choices: tuple[str, ...] | None = None
    valid: Iterable[str] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def add_to(self, parser: argparse._ActionsContainer) -> None:
        """Add the flag to ``parser`` (or an argument group); its value is None when not given."""
        text = self.help if self.valid is None else f"{self.help}: {', '.join(self.valid)}"
        if self.type is None:
            parser.add_argument(self.flag, dest=self.name, action="store_true", default=None, help=text)
        else:
            parser.add_argument(self.flag, dest=self.name, type=self.type, choices=self.choices, help=text)
        for rename in EvaluatorConfig.RENAMED:
            if rename.new == self.name:
                parser.add_argument("--" + rename.old.replace("_", "-"), dest=self.name, type=self.type,
                                    choices=self.choices, action=_DeprecatedFlag, help=f"deprecated: use {self.flag}")


class _DeprecatedFlag(argparse.Action):
    """Stores the value like a plain flag, after a ``DeprecationWarning`` naming the new flag."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        warn(f"{option_string} is deprecated, use --{self.dest.replace('_', '-')} (the old flag still works for now)")
        setattr(namespace, self.dest, values)


#: The evaluator's command-line flags, defined once for ``robustnas compare``, ``search``,
#: ``evaluate`` and ``optuna-worker`` (every other field is set in a YAML file or with the worker's
#: ``--eval-arg``).
EVALUATOR_OPTIONS: tuple[EvaluatorOption, ...] = (
    EvaluatorOption("dataset", str, "dataset name (default: digits)"),
    EvaluatorOption("root", str, "local data root for torchvision datasets"),
    EvaluatorOption("download", None, "download the dataset into --root"),
    EvaluatorOption("eps", float, "attack radius (default: the dataset's)"),
    EvaluatorOption("norm", str, "threat model norm (default: the dataset's)", choices=NORMS),
    EvaluatorOption("recipe", str, "training recipe", valid=RECIPES),
    EvaluatorOption("epochs", int, "training epochs per candidate"),
    EvaluatorOption("aa_mode", str, "AutoAttack mode (robust_acc is AutoAttack's accuracy)", valid=MODES),
    EvaluatorOption("n_examples", int, "test points attacked"),
    EvaluatorOption("device", str, "auto, cpu or cuda"),
)


def add_evaluator_options(parser: argparse.ArgumentParser) -> None:
    """Add :data:`EVALUATOR_OPTIONS` to ``parser`` as one argument group."""
    group = parser.add_argument_group("evaluator (the shared AutoAttack evaluator)")
    for option in EVALUATOR_OPTIONS:
        option.add_to(group)


def given_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluator options set in ``options`` (parsed flags as ``vars(args)``, or a YAML mapping):
    ``{field: value}`` for every :data:`EVALUATOR_OPTIONS` name whose value is not None (a
    deprecated name, ``attack``, is read as its new one, with a ``DeprecationWarning``)."""
    options = EvaluatorConfig.upgrade({k: v for k, v in options.items() if v is not None})
    return {o.name: options[o.name] for o in EVALUATOR_OPTIONS if o.name in options}


class RobustnessEvaluator:
    """Train a candidate and measure clean, PGD and AutoAttack accuracy, size and latency.

    Robust accuracy is AutoAttack's (Croce and Hein, ICML 2020) in the configured mode;
    ``fast`` mode deviates from the standard ensemble (see docs/fidelity.md, Evaluator).

    Example (a small MLP on digits, two epochs of PGD training; seconds on a CPU):

    >>> import torch
    >>> from torch import nn
    >>> from robustnas.plugins.evaluator import EvaluatorConfig, RobustnessEvaluator
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> evaluator = RobustnessEvaluator(EvaluatorConfig(dataset="digits", epochs=2, n_examples=50, progress=False))
    >>> metrics = evaluator.evaluate(model)          # trains with PGD, then attacks
    >>> metrics["n_examples"], metrics["norm"], metrics["eps"]
    (50, 'linf', 0.2)
    >>> record = evaluator.record("my-mlp", metrics)  # RobustBench-style JSON dict
    >>> record["threat_model"], record["autoattack_acc"] == round(100 * metrics["robust_acc"], 2)
    ('Linf', True)
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

    def evaluate(self, model: nn.Module, train: bool = True, *,
                 timings: dict[str, float] | None = None) -> Metrics:
        """Train ``model`` with the recipe (unless ``train=False``), then measure it.

        Returns a flat JSON-serialisable dict with the keys of ``METRIC_KEYS`` (accuracies
        in [0, 1]) and ``certified_acc`` when ``config.certify`` is set (None, with a
        ``certify-unsupported`` flag, when the bounds do not support an op of the model).
        ``flags`` lists why a number may not be trusted (``checks``, AutoAttack's checks).
        ``timings``, when given, gets the wall seconds of each stage of :data:`STAGES` that ran
        added to it (the metrics keep only their sums ``train_seconds`` and ``eval_seconds``).
        """
        if timings is not None and not isinstance(timings, dict):
            raise ConfigError(f"timings must be a dict to add stage seconds to, got {type(timings).__name__}")
        clock = _StageClock(timings)
        cfg, bundle, threat, dev = self.config, self.bundle, self.threat, self.device
        self.check_model(model)
        history: dict[str, Any] = {}
        train_seconds = 0.0
        if train:
            with clock("train"):
                history = train_model(model, bundle, self.train_config(), device=dev)
            train_seconds = float(history["train_seconds"])
        model.to(dev)
        t0 = time.perf_counter()
        x_test, y_test = bundle.tensors("test")
        x, y = x_test[: cfg.n_examples], y_test[: cfg.n_examples]
        forked = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(cfg.seed)
            with clock("clean_acc"):
                clean = accuracy(model, x_test, y_test, batch_size=cfg.eval_batch_size, device=dev)
            with clock("pgd"):
                pgd_acc = pgd_accuracy(model, x, y, eps=threat.eps, norm=threat.norm, steps=cfg.pgd_eval_steps,
                                       batch_size=cfg.eval_batch_size, device=dev)
            robust, attack, flags = self._autoattack(model, x, y, pgd_acc, clock)
        metrics: dict[str, Any] = {
            "clean_acc": clean,
            "robust_acc": robust,
            "pgd_acc": pgd_acc,
        }
        if cfg.certify:
            with clock("certify"):
                certified, unsupported = self._certify(model, x, y)
            metrics["certified_acc"] = certified
            if unsupported:
                flags.append(unsupported)
        eval_seconds = time.perf_counter() - t0
        with clock("size"):
            params, flops = count_params(model), count_flops(model, bundle.input_shape)
        with clock("latency"):
            latency_ms = measure_latency(model, bundle.input_shape, repeats=cfg.latency_repeats)
        metrics.update(
            params=params,
            flops=flops,
            latency_ms=latency_ms,
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
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, pgd_acc: float, clock: _StageClock
    ) -> tuple[float, str, list[str]]:
        """AutoAttack in the configured mode plus the checks; ``(robust_acc, mode run, flags)``.

        In a mode that escalates (``AttackMode.escalate_to``: ``fast`` to ``standard``) with
        ``escalate``, any flag sends the model to that mode; a point then counts as robust only if
        neither run's adversarial input fools the model, and the flags are those of the second run,
        after ``escalated-to-standard`` naming the first run's.
        """
        cfg, threat, dev = self.config, self.threat, self.device
        bs = cfg.eval_batch_size
        with clock("clean_acc"):
            clean_points = accuracy(model, x, y, batch_size=bs, device=dev)
        with clock("checks"):
            zero_share = zero_gradient_share(model, x, y, batch_size=bs)

        def checked(result: AutoAttackResult, robust: float) -> list[str]:
            own = evaluator_flags(clean_acc=clean_points, robust_acc=robust, pgd_acc=pgd_acc, zero_share=zero_share,
                                  norm=threat.norm, eps=threat.eps, num_classes=self.bundle.num_classes)
            return list(result.flags) + own

        with clock("autoattack"):
            first = self._run_autoattack(model, x, y, cfg.aa_mode)
        flags = checked(first, first.robust_acc)
        target = MODES.lookup(cfg.aa_mode).escalate_to
        if target is None or not flags or not cfg.escalate:
            return first.robust_acc, cfg.aa_mode, flags
        _logger.warning("%s AutoAttack flagged the model (%s); escalating to %s mode", cfg.aa_mode, "; ".join(flags),
                        target)
        with clock("autoattack"):
            second = self._run_autoattack(model, x, y, target)
            robust = _joint_robust_accuracy(model, y, (first.x_adv, second.x_adv), bs, dev)
        codes = ", ".join(dict.fromkeys(flag_code(f) for f in flags))
        escalated = f"escalated-to-{target}: {cfg.aa_mode} mode gave {first.robust_acc:.3f} ({codes})"
        return robust, target, [escalated] + checked(second, robust)

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
            "autoattack_mode": metrics.get("attack", self.config.aa_mode),
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
