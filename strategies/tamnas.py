"""TAM-NAS: tiny adversarial multi-objective one-shot NAS (Xie, Wang, Yu, Zheng, Jin;
arXiv 2103.00363, Complex & Intelligent Systems 2023).

The strategy runs inside ``NasExperiment(space, evaluator, TAMNAS(...))`` with a
Lightning ``Classification`` evaluator, like NNI's ``RandomOneShot``:

1. the space becomes NNI's path-sampling supernet and is trained with uniform
   single-path sampling (SPOS) on PGD adversarial examples of the sampled path;
2. NSGA-II (Optuna's ``NSGAIISampler``, ask-and-tell) searches subnets with
   inherited weights; each subnet is frozen from the supernet, its BatchNorm
   statistics are recalibrated on a few training batches, and it is scored on
   the validation split (clean accuracy, PGD accuracy, parameters);
3. optionally the first front is fine-tuned adversarially from supernet weights;
4. the first front, its hypervolume and the layer-wise choice statistics are
   the result; ``export_top_models`` returns front members.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import optuna
import torch
from nni.mutable import Sample
from nni.nas.oneshot.pytorch.sampling import RandomSamplingLightningModule
from nni.nas.space import ExecutableModelSpace
import nni.nas.strategy  # noqa: F401  (first: NNI 3.0's import cycle, strategies/_nni.py)
from nni.nas.oneshot.pytorch.strategy import RandomOneShot
from torch import nn

from robustnas.plugins._deprecation import Renamed
from robustnas.plugins.evaluator import TrainConfig, count_params, pgd, train_step
from robustnas.plugins.evaluator.data import DatasetBundle
from robustnas.plugins.evaluator._utils import resolve_device
from robustnas.plugins.evaluator.training import make_optimizer
from robustnas.search_spaces import sample_key

from ._oneshot import RobustOneShotMixin, check_batches
from ._subnet import SCORABLE_METRICS, recalibrate_batchnorm, score_subnet, take_batches
from .pareto import METRIC_DIRECTIONS, ParetoArchive
from .sampling import suggest_architecture

__all__ = ["TAMNAS", "AdversarialSamplingModule", "recalibrate_batchnorm"]

_logger = logging.getLogger(__name__)

#: ``eval_batches`` is ``val_batches``; its 0, "every batch", is None under the new name.
_RENAMED_EVAL_BATCHES = Renamed("eval_batches", "val_batches", to_new=lambda n: None if n == 0 else n,
                                to_old=lambda n: 0 if n is None else n)


class AdversarialSamplingModule(RandomSamplingLightningModule):
    """NNI's uniform single-path supernet training, on PGD examples of the sampled path.

    Each step samples one path (``resample``), attacks that path with the shared
    evaluator's :func:`~robustnas.plugins.evaluator.pgd` (eval mode, no weight
    gradients) and hands ``(x_adv, y)`` to the evaluator's ``training_step``
    (Madry et al., ICLR 2018). ``attack_steps=0`` trains on clean inputs.
    """

    def __init__(self, training_module: Any, filter: Callable[[Sample], bool] | None = None, *,  # noqa: A002
                 eps: float, norm: str, attack_steps: int, attack_alpha: float | None, seed: int = 0) -> None:
        super().__init__(training_module, filter)
        self.eps = eps
        self.norm = norm
        self.attack_steps = attack_steps
        self.attack_alpha = attack_alpha
        self._rng = np.random.RandomState(seed)
        self._space: dict[str, Any] | None = None

    def resample(self) -> Sample:
        """A uniform random path drawn from a seeded generator (NNI's own draws are unseeded)."""
        if self._space is None:
            self._space = dict(self.model.simplify())
        space = self._space

        def draw() -> Sample:
            sample = {label: mutable.random(random_state=self._rng) for label, mutable in space.items()}
            for module in self.supernet_modules():
                module.resample(memo=sample)
            return sample

        return self._repeat_until_valid(draw)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.resample()
        self.log("sampling_attempt", self._sampling_attempt)
        x, y = batch[0], batch[1]
        if self.attack_steps > 0:
            x = pgd(self.training_module, x, y, eps=self.eps, norm=self.norm,
                    steps=self.attack_steps, alpha=self.attack_alpha)
        return self.training_module.training_step((x, y), batch_idx)


class TAMNAS(RobustOneShotMixin, RandomOneShot):
    """TAM-NAS as an NNI one-shot strategy (Xie et al., arXiv 2103.00363).

    Trains the supernet adversarially with single-path uniform sampling, then
    searches subnets with inherited weights by NSGA-II over
    ``objectives`` (default: clean accuracy up, PGD accuracy up, parameters
    down) on the evaluator's validation loader. The paper's attack, NSGA-II
    settings and fine-tuning recipe are unknown; the defaults here are the
    project's (docs/fidelity.md, "TAM-NAS").

    Parameters
    ----------
    eps, norm, dataset
        Threat model of training and scoring; ``None`` takes ``dataset``'s
        default threat, else L-inf 8/255.
    attack_steps, attack_alpha
        PGD of supernet training (0: clean training). Alpha defaults to ``2.5 * eps / steps``.
    population_size, generations
        NSGA-II budget: ``population_size * generations`` subnets are proposed
        (repeated proposals are scored once).
    eval_pgd_steps, val_batches, bn_batches
        Scoring: PGD steps, how many validation batches are scored (None: every batch), and
        how many training batches recalibrate BatchNorm (0: none).
    eval_batches
        Deprecated name of ``val_batches``, where 0 meant every batch (``val_batches=None``).
    finetune_epochs, finetune_lr
        Optional adversarial fine-tuning of every front member from supernet weights.
    objectives
        Metric names among ``clean_acc``, ``pgd_acc``, ``params``, ``flops``.
    seed
        Seeds the path sampling of supernet training, NSGA-II and the PGD random starts of scoring.

    Example (a short search on digits: 4 supernet steps, NSGA-II over 4 x 2 subnets; NNI's files
    go to ``./nni``):

    >>> from robustnas.strategies import TAMNAS
    >>> strategy = TAMNAS(dataset="digits", attack_steps=1, population_size=4, generations=2, eval_pgd_steps=2,
    ...                   val_batches=1, bn_batches=2)
    >>> from robustnas.plugins.evaluator import load_dataset
    >>> from robustnas.plugins.nni import classification_evaluator, run_experiment
    >>> from robustnas.search_spaces import TinyRobustSpace
    >>> bundle = load_dataset("digits")
    >>> space = TinyRobustSpace(input_shape=bundle.input_shape, num_classes=bundle.num_classes,
    ...                         stages=[(1, 8, 1), (1, 16, 2)], blocks=["basic_k3", "skip"])
    >>> _ = run_experiment(space, strategy, classification_evaluator(bundle, limit_train_batches=4), working_dir="nni")
    >>> front = strategy.pareto_front()          # [{"sample": ..., "metrics": ...}, ...]
    >>> sorted(front[0]["metrics"])
    ['attack', 'clean_acc', 'eps', 'eval_seconds', 'n_examples', 'norm', 'params', 'pgd_acc', 'weights']
    >>> print(strategy.layer_statistics()["markdown"].splitlines()[0])
    First front: ... architectures
    """

    #: Arguments that were renamed; the old names still work, with a DeprecationWarning.
    renamed_arguments: tuple[Renamed, ...] = (_RENAMED_EVAL_BATCHES,)

    def __init__(
        self,
        *,
        eps: float | None = None,
        norm: str | None = None,
        dataset: str | DatasetBundle | None = None,
        attack_steps: int = 7,
        attack_alpha: float | None = None,
        population_size: int = 20,
        generations: int = 10,
        eval_pgd_steps: int = 10,
        val_batches: int | None = 4,
        bn_batches: int = 8,
        finetune_epochs: int = 0,
        finetune_lr: float = 0.01,
        objectives: Sequence[str] = ("clean_acc", "pgd_acc", "params"),
        seed: int = 0,
        device: str = "auto",
        eval_batches: int | None = None,
        **kwargs: Any,
    ) -> None:
        if eval_batches is not None:
            val_batches = _RENAMED_EVAL_BATCHES.value(eval_batches, "TAMNAS")
        super().__init__(**kwargs)
        self._set_threat(eps, norm, dataset)
        for name, value, low in (("attack_steps", attack_steps, 0), ("population_size", population_size, 2),
                                 ("generations", generations, 1), ("eval_pgd_steps", eval_pgd_steps, 1),
                                 ("bn_batches", bn_batches, 0), ("finetune_epochs", finetune_epochs, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        unknown = [o for o in objectives if o not in SCORABLE_METRICS]
        if unknown or len(objectives) < 2:
            raise ValueError(f"objectives must be at least two of {list(SCORABLE_METRICS)}, got {list(objectives)}")
        self.attack_steps = attack_steps
        self.attack_alpha = attack_alpha
        self.population_size = population_size
        self.generations = generations
        self.eval_pgd_steps = eval_pgd_steps
        self.val_batches = check_batches("val_batches" if eval_batches is None else "eval_batches", val_batches)
        self.bn_batches = bn_batches
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = finetune_lr
        self.objectives = tuple(objectives)
        self.seed = seed
        self.device = resolve_device(device)
        self._archive = ParetoArchive(self.objectives)
        self._finetuned: dict[str, nn.Module] = {}
        self._loader_fns: tuple[Callable[[], Any], Callable[[], Any]] | None = None
        self._val_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._calib_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._upper: dict[str, float] | None = None

    # ------------------------------------------------------------------ supernet training
    def configure_oneshot_module(self, training_module: Any) -> AdversarialSamplingModule:
        return AdversarialSamplingModule(training_module, self.filter, eps=self.eps, norm=self.norm,
                                         attack_steps=self.attack_steps, attack_alpha=self.attack_alpha,
                                         seed=self.seed)

    def train_dataloader(self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]) -> Any:
        self._loader_fns = (train_dataloader_fn, val_dataloader_fn)
        return super().train_dataloader(train_dataloader_fn, val_dataloader_fn)

    def _run(self) -> None:
        _logger.info("TAM-NAS: training the supernet (PGD-%d, %s eps=%.4g, single-path uniform sampling)",
                     self.attack_steps, self.norm, self.eps)
        super()._run()
        self.search()
        if self.finetune_epochs > 0:
            self.finetune_front()

    # ------------------------------------------------------------------ data
    def _loaders(self) -> tuple[Callable[[], Any], Callable[[], Any]]:
        if self._loader_fns is None:
            raise RuntimeError("TAMNAS has no data loaders yet: run it inside a NasExperiment first")
        return self._loader_fns

    def _val_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._val_cache is None:
            batches = [(b[0], b[1]) for b in itertools.islice(self._loaders()[1](), self.val_batches)]
            if not batches:
                raise RuntimeError("the evaluator's validation loader is empty")
            self._val_cache = (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
        return self._val_cache

    def _calibration_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._calib_cache is None:
            self._calib_cache = take_batches(self._loaders()[0](), self.bn_batches) if self.bn_batches else []
        return self._calib_cache

    # ------------------------------------------------------------------ subnets
    def subnet(self, sample: Sample, finetuned: bool = True) -> nn.Module:
        """The network of ``sample``: fine-tuned if it was, else supernet weights with recalibrated BN."""
        key = sample_key(sample)
        if finetuned and key in self._finetuned:
            return self._finetuned[key]
        model = self.supernet.freeze(dict(sample)).to(self.device)
        recalibrate_batchnorm(model, self._calibration_batches())
        return model.eval()

    def evaluate_subnet(self, sample: Sample) -> dict[str, Any]:
        """Metrics of ``sample`` with inherited (BN-recalibrated) weights on the validation batches."""
        x, y = self._val_tensors()
        metrics = score_subnet(self.subnet(sample, finetuned=False), x, y, eps=self.eps, norm=self.norm,
                               pgd_steps=self.eval_pgd_steps, metrics=self.objectives, seed=self.seed)
        metrics["weights"] = "inherited"
        return metrics

    # ------------------------------------------------------------------ NSGA-II
    def search(self) -> list[dict[str, Any]]:
        """NSGA-II over subnets with inherited weights; returns the first front.

        Optuna's ``NSGAIISampler`` (Deb et al., 2002) proposes each subnet in
        ask-and-tell mode; the choices of the space map to Optuna distributions as in the
        Optuna bridge (:func:`robustnas.strategies.sampling.suggest_architecture`), so cell
        spaces with input choices work as well as the tiny-block space.
        """
        study = optuna.create_study(
            directions=[_DIRECTION[o] for o in self.objectives],
            sampler=optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=self.seed),
        )
        cache = {sample_key(r["sample"]): r for r in self._archive.records}
        upper = self._upper_bounds()
        for generation in range(self.generations):
            for _ in range(self.population_size):
                trial = study.ask()
                sample = suggest_architecture(trial, self.supernet)
                key = sample_key(sample)
                if key not in cache:
                    record = {"sample": sample, "metrics": self.evaluate_subnet(sample), "generation": generation}
                    cache[key] = self._archive.add(record)
                metrics = cache[key]["metrics"]
                study.tell(trial, [float(metrics[o]) for o in self.objectives])
            front = self._archive.front()
            _logger.info(
                "TAM-NAS generation %d/%d: %d subnets scored, front %d, best pgd_acc %.3f, hypervolume %.4g",
                generation + 1, self.generations, len(self._archive), len(front),
                max(float(r["metrics"].get("pgd_acc", float("nan"))) for r in front),
                self._archive.hypervolume(upper=upper),
            )
        return self._archive.front()

    def _upper_bounds(self) -> dict[str, float]:
        """Largest size in the space (the hypervolume's reference), when the space can say (cached)."""
        if self._upper is None:
            self._upper = {}
            largest = getattr(self.supernet, "largest_sample", None)
            if largest is not None and "params" in self.objectives:
                self._upper["params"] = float(count_params(self.supernet.freeze(largest())))
        return self._upper

    # ------------------------------------------------------------------ fine-tuning
    def finetune_front(self, epochs: int | None = None) -> list[dict[str, Any]]:
        """Fine-tune every front member adversarially from its supernet weights.

        SGD (``finetune_lr``, momentum 0.9, wd 5e-4) on PGD-``attack_steps``
        examples of the evaluator's training loader; the new metrics are stored
        under ``"finetuned_metrics"`` of each front record.
        """
        epochs = self.finetune_epochs if epochs is None else epochs
        config = TrainConfig(recipe="pgd" if self.attack_steps > 0 else "standard", epochs=max(1, epochs),
                             lr=self.finetune_lr, eps=self.eps, norm=self.norm,
                             attack_steps=max(1, self.attack_steps), attack_alpha=self.attack_alpha,
                             progress=False, track_val=False)
        x_val, y_val = self._val_tensors()
        front = self._archive.front()
        for index, record in enumerate(front):
            model = self.subnet(record["sample"], finetuned=False)
            optimizer = make_optimizer(model, config)
            for _ in range(epochs):
                for x, y in self._loaders()[0]():
                    train_step(model, x.to(self.device), y.to(self.device), optimizer, config)
            model.eval()
            self._finetuned[sample_key(record["sample"])] = model
            metrics = score_subnet(model, x_val, y_val, eps=self.eps, norm=self.norm,
                                   pgd_steps=self.eval_pgd_steps, metrics=self.objectives, seed=self.seed)
            metrics["weights"] = f"finetuned-{epochs}"
            self._archive.add({**record, "finetuned_metrics": metrics})
            _logger.info("TAM-NAS fine-tuned front member %d/%d: clean %.3f -> %.3f, pgd %.3f -> %.3f",
                         index + 1, len(front), record["metrics"]["clean_acc"], metrics["clean_acc"],
                         record["metrics"]["pgd_acc"], metrics["pgd_acc"])
        return self._archive.front()

    # ------------------------------------------------------------------ results
    @property
    def archive(self) -> ParetoArchive:
        """Every scored subnet (records ``{"sample", "metrics", "generation"}``)."""
        return self._archive

    def hypervolume(self) -> float:
        """Hypervolume of the archive; reference (0, 0, largest subnet's parameters) by default."""
        return self._archive.hypervolume(upper=self._upper_bounds())

    def layer_statistics(self) -> dict[str, Any]:
        """How often each choice appears on the first front, per layer (the paper's design guideline).

        Labels ``<scope>/<name>`` (``layer3/block``) give one row per scope and
        one column per name. Returns ``{"front_size", "rows", "markdown"}``;
        each row is ``{"layer": scope, <name>: {choice: count}}``.
        """
        front = self._archive.front()
        rows: dict[str, dict[str, Counter]] = {}
        for record in front:
            for label, value in record["sample"].items():
                scope, _, name = label.rpartition("/")
                rows.setdefault(scope or label, {}).setdefault(name, Counter())[str(value)] += 1
        names = sorted({name for row in rows.values() for name in row})
        table = [{"layer": scope, **{n: dict(row.get(n, Counter()).most_common()) for n in names}}
                 for scope, row in sorted(rows.items(), key=lambda kv: _natural(kv[0]))]
        lines = [f"First front: {len(front)} architectures", "",
                 "| layer | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for row in table:
            cells = [", ".join(f"{c} x{k}" for c, k in row[n].items()) or "-" for n in names]
            lines.append(f"| {row['layer']} | " + " | ".join(cells) + " |")
        return {"front_size": len(front), "rows": table, "markdown": "\n".join(lines)}

    def list_models(self, sort: bool = True, limit: int | None = None) -> Iterator[ExecutableModelSpace]:
        """Front members, most robust first (then cleaner, then smaller); ``limit`` of them."""
        front = sorted(self._archive.front(), key=lambda r: tuple(
            (-1 if _DIRECTION[o] == "maximize" else 1) * float(r["metrics"][o]) for o in _SORT_ORDER
            if o in r["metrics"]))
        for i, record in enumerate(front):
            if limit is not None and i >= limit:
                break
            yield self.model_space.freeze(record["sample"])


_DIRECTION = METRIC_DIRECTIONS
_SORT_ORDER = ("pgd_acc", "clean_acc", "params")


def _natural(label: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label))

