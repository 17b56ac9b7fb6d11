"""NNI 3.0's built-in strategies on every robustnas space: the adaptors that NNI lacks (private).

The registry (``robustnas.strategies.STRATEGIES``: ``tpe``, ``proxyless``, ``enas``, ``policy-rl``)
names these classes; :mod:`robustnas.plugins.nni` re-exports them.

The spaces stay plain NNI ``ModelSpace`` s; what NNI 3.0 cannot do with them is fixed here, on the
strategy side, each in one class that subclasses NNI's own:

* :class:`HPOStrategy` and :class:`TPE` -- NNI's tuner-backed strategies (``HPOTunerStrategy``,
  ``TPE``) give the tuner a search space built with ``mutable.as_legacy_dict()``, which NNI does
  not implement for ``CategoricalMultiple``: the input choices of the DARTS cells (ARNAS, DSRNA)
  fail with ``NotImplementedError``. Here each ``CategoricalMultiple`` becomes one legacy
  ``choice`` over the indices of its allowed combinations (``itertools.combinations(values,
  n_chosen)``, every subset when ``n_chosen`` is None); a tuner's index is turned back into the
  list before the space is frozen, and a sample into its index before it reaches the tuner.
  Any NNI tuner works (``TpeTuner``, ``EvolutionTuner``, ``RandomTuner``, ``GridSearchTuner``, ...).
* :class:`Proxyless` -- ProxylessNAS (Cai, Zhu and Han, ICLR 2019). NNI's version has no
  one-shot cell and no mixed operations ("FIXME: no support for mixed operation"): on DARTS cells
  its mixed input and mixed layer apply a reduction cell's stride-2 operations to already reduced
  nodes, and the tiny space's searchable widths are left dangling. Here a cell becomes
  :class:`ProxylessMixedCell` (one sampled input and one sampled operation per node input, the
  operation built for that input, binary-gate gradients for both), and width choices become NNI's
  weight-entangled mixed operations, relaxed as in DARTS (docs/fidelity.md).
* :class:`ENAS` -- ENAS (Pham et al., ICML 2018). Under pytorch-lightning 2 NNI's ENAS receives
  bare batches and takes a batch's labels for its train / val flag; here every batch arrives
  tagged with the loader it came from. Rewards default to the evaluator's ``val_acc``.
* :class:`PolicyBasedRL` and :class:`ENAS` need the optional extra ``rl`` (tianshou 0.5, gym
  0.26: NNI 3.0 imports ``gym``, and tianshou 1.x changed the policy API); without it they raise
  a :class:`~robustnas.plugins.errors.ConfigError` that says what to install.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

import nni
import torch
from nni.mutable import Categorical, CategoricalMultiple, Mutable
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.execution.event import FinalMetricEvent
from nni.nas.nn.pytorch import Cell
# nni.nas.strategy before NNI's one-shot strategy module: the other way round, an NNI 3.0 import cycle
# leaves nni.nas.strategy.DARTS, RandomOneShot, ... stubs that raise ImportError when they run.
from nni.nas.strategy.hpo import HPOTunerStrategy, TPE as _NNITPE
from nni.nas.strategy.rl import PolicyBasedRL as _NNIPolicyBasedRL
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingCell
from nni.nas.oneshot.pytorch.supermodule.proxyless import _ProxylessFunction
from nni.nas.oneshot.pytorch.supermodule.operation import NATIVE_MIXED_OPERATIONS
from nni.nas.oneshot.pytorch.strategy import ENAS as _NNIENAS, Proxyless as _NNIProxyless
from torch import nn

from robustnas.plugins.errors import ConfigError

__all__ = ["ENAS", "HPOStrategy", "LegacySpace", "PolicyBasedRL", "Proxyless", "ProxylessMixedCell", "TPE",
           "adapt_strategy", "require_rl"]

_logger = logging.getLogger(__name__)

#: Most combinations one ``CategoricalMultiple`` may expand to (a tuner's choice list).
MAX_COMBINATIONS = 100_000


# ---------------------------------------------------------------------------------------------- HPO
class LegacySpace:
    """NNI's legacy (HPO) search-space dict of a simplified space, and the way back.

    ``mutables`` is ``model_space.simplify()``. Every mutable that NNI can convert keeps its
    ``as_legacy_dict()``; a ``CategoricalMultiple`` becomes ``{"_type": "choice", "_value":
    [0, 1, ...]}`` over the indices of :meth:`combinations`.
    """

    def __init__(self, mutables: Mapping[str, Mutable]) -> None:
        self.legacy: dict[str, dict[str, Any]] = {}
        self._combinations: dict[str, list[list[Any]]] = {}
        for label, mutable in mutables.items():
            if isinstance(mutable, CategoricalMultiple):
                combos = self.combinations(mutable)
                self._combinations[label] = combos
                self.legacy[label] = {"_type": "choice", "_value": list(range(len(combos)))}
                continue
            try:
                self.legacy[label] = mutable.as_legacy_dict()
            except NotImplementedError as exc:
                raise ConfigError(f"label {label!r}: a {type(mutable).__name__} has no HPO search-space form "
                                  f"({exc}); tuner-backed strategies take Categorical, CategoricalMultiple and "
                                  "numerical choices") from exc

    @staticmethod
    def combinations(mutable: CategoricalMultiple) -> list[list[Any]]:
        """Every value list ``mutable`` allows, in ``itertools.combinations`` order of its values."""
        values = list(mutable.values)
        sizes = [mutable.n_chosen] if mutable.n_chosen is not None else range(len(values) + 1)
        count = sum(_n_choose_k(len(values), k) for k in sizes)
        if count > MAX_COMBINATIONS:
            raise ConfigError(f"label {mutable.label!r} chooses {mutable.n_chosen!r} of {len(values)} values: "
                              f"{count} combinations, more than a tuner's choice can list ({MAX_COMBINATIONS})")
        return [list(combo) for k in sizes for combo in itertools.combinations(values, k)]

    def to_sample(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """A tuner's parameters as a sample of the space (indices back to value lists)."""
        sample = dict(parameters)
        for label, combos in self._combinations.items():
            if label in sample:
                sample[label] = list(combos[int(sample[label])])
        return sample

    def to_parameters(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """A sample of the space as the tuner's parameters (value lists to indices)."""
        parameters = dict(sample)
        for label, combos in self._combinations.items():
            if label in parameters:
                chosen = sorted(parameters[label], key=repr)
                parameters[label] = next(i for i, combo in enumerate(combos) if sorted(combo, key=repr) == chosen)
        return parameters


def _n_choose_k(n: int, k: int) -> int:
    from math import comb

    return comb(n, k)


class HPOStrategy(HPOTunerStrategy):
    """NNI's ``HPOTunerStrategy`` (any NNI tuner as a NAS strategy) on spaces with input choices.

    Identical to NNI's except that the tuner sees the space through :class:`LegacySpace`, so the
    ``CategoricalMultiple`` input choices of DARTS cells work.

    >>> from nni.algorithms.hpo.evolution_tuner import EvolutionTuner
    >>> strategy = HPOStrategy(EvolutionTuner(optimize_mode="maximize", population_size=8))
    >>> strategy.legacy_space is None  # filled in when a space is attached
    True
    """

    def __init__(self, tuner: Any) -> None:
        super().__init__(tuner)
        self.legacy_space: LegacySpace | None = None

    def _run(self) -> None:
        import time

        self.legacy_space = LegacySpace(self.model_space.simplify())
        _logger.debug("tuner search space: %s", self.legacy_space.legacy)
        with self._thread_lock:
            self.tuner.update_search_space(self.legacy_space.legacy)

        while self.engine.budget_available():
            if self.engine.idle_worker_available():
                with self._thread_lock:
                    try:
                        param = self.tuner.generate_parameters(self._model_count)
                    except nni.NoMoreTrialError:
                        _logger.warning("the tuner generates no more trials; stopping")
                        break
                    _logger.debug("[%4d] tuner generated parameters: %s", self._model_count, param)
                    model = self.model_space.freeze(self.legacy_space.to_sample(param))
                    self._model_to_id[model] = self._model_count
                    self._model_count += 1
                self.engine.submit_models(model)
            if not isinstance(self.engine, SequentialExecutionEngine):  # it trained the model already
                time.sleep(1.0)  # NNI's polling interval for asynchronous engines (training service)

    def on_metric(self, event: FinalMetricEvent) -> None:
        with self._thread_lock:
            model_id = self._model_to_id[event.model]
            if event.model.sample is None:
                _logger.warning("model %d has no sample, cannot report it to the tuner", model_id)
                return
            parameters = event.model.sample
            if self.legacy_space is not None:
                parameters = self.legacy_space.to_parameters(parameters)
            self.tuner.receive_trial_result(model_id, parameters, event.metric)


class TPE(HPOStrategy):
    """Tree-structured Parzen Estimator (Bergstra et al., NeurIPS 2011) as a NAS strategy.

    NNI's ``TpeTuner`` behind :class:`HPOStrategy`. Deviation from NNI's ``TPE`` strategy: it
    *maximises* ``default`` by default, as every NNI NAS strategy does (NNI's ``TPE()`` passes
    ``TpeTuner``'s own default, ``"minimize"``, so it searches for the worst architectures).
    """

    def __init__(self, optimize_mode: str = "maximize", seed: int | None = None,
                 tpe_args: dict[str, Any] | None = None) -> None:
        from nni.algorithms.hpo.tpe_tuner import TpeTuner

        if optimize_mode not in ("maximize", "minimize"):
            raise ConfigError(f"optimize_mode must be 'maximize' or 'minimize', got {optimize_mode!r}")
        super().__init__(TpeTuner(optimize_mode=optimize_mode, seed=seed, tpe_args=tpe_args))


def adapt_strategy(strategy: Any) -> Any:
    """``strategy``, or for NNI's own ``HPOTunerStrategy`` / ``TPE`` an :class:`HPOStrategy` on the same tuner.

    :func:`robustnas.plugins.nni.run_experiment` calls it, so NNI's ``TPE()`` runs on every space.
    NNI's ``TPE()`` minimises ``default`` unless given ``optimize_mode="maximize"``: that is kept
    (the tuner is the user's), with a warning.
    """
    if type(strategy) not in (HPOTunerStrategy, _NNITPE):
        return strategy
    mode = getattr(getattr(strategy.tuner, "optimize_mode", None), "value", None)
    if mode == "minimize":
        _logger.warning("NNI's %s minimises the reported 'default' (TpeTuner's default optimize_mode); NAS "
                        "strategies maximise it. Pass optimize_mode='maximize' or use robustnas' TPE.",
                        type(strategy).__name__)
    return HPOStrategy(strategy.tuner)


# ------------------------------------------------------------------------------------- Proxyless
class ProxylessMixedCell(PathSamplingCell):
    """A DARTS cell (``nni.nas.nn.pytorch.Cell``, merge ``"all"``) as a ProxylessNAS supernet.

    Every node input samples one predecessor and one operation from the softmax of their
    architecture weights (shared by label, so cells of one type share them); only that path runs
    forward, built for that predecessor (stride 2 from a reduction cell's inputs). Backward gives
    both weights ProxylessNAS' binary-gate gradient (Cai et al., ICLR 2019, eq. 4): the operation's
    from the other operations on the same input, the input's from the same operation on the other
    inputs. Export takes the most probable predecessor and operation, as the paper keeps the path
    with the highest weight (NNI's Proxyless layers export a fresh sample instead).
    """

    _arch_parameter_names: list[str] = ["_arch_alpha"]

    def __init__(self, op_factory: Any, num_nodes: int, num_ops_per_node: int, num_predecessors: int,
                 preprocessor: Any, postprocessor: Any, concat_dim: int, memo: dict[str, Any],
                 mutate_kwargs: dict[str, Any], label: str) -> None:
        super().__init__(op_factory, num_nodes, num_ops_per_node, num_predecessors, preprocessor, postprocessor,
                         concat_dim, memo, mutate_kwargs, label)
        self._softmax = mutate_kwargs.get("softmax", nn.Softmax(-1))
        self._arch_alpha = nn.ParameterDict()
        self._labels: dict[str, list[Any]] = {}
        for name, mutable in self.simplify().items():
            values = list(cast(Categorical, mutable).values)
            alpha = memo.get(name)
            if alpha is None:
                alpha = memo[name] = nn.Parameter(torch.randn(len(values)) * 1e-3)
            elif len(alpha) != len(values):
                raise ValueError(f"architecture weights of {name!r} have {len(alpha)} entries, its choice {len(values)}")
            self._arch_alpha[self._key(name)] = alpha
            self._labels[name] = values

    @staticmethod
    def _key(label: str) -> str:
        return label.replace(".", "_")

    def _alpha(self, label: str) -> torch.Tensor:
        return self._arch_alpha[self._key(label)]

    def _pick(self, label: str, index: int) -> Any:
        value = self._labels[label][index]
        return [value] if label.rsplit("/", 1)[-1].startswith("input_") else value

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        """Sample every label not in ``memo`` from the softmax of its weights."""
        self._sampled = {}
        new: dict[str, Any] = {}
        for label in self._labels:
            if label in memo:
                self._sampled[label] = memo[label]
                continue
            probs = self._softmax(self._alpha(label).detach())
            self._sampled[label] = new[label] = self._pick(label, int(torch.multinomial(probs, 1).item()))
        return new

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        """The most probable choice of every label not in ``memo``."""
        return {label: self._pick(label, int(torch.argmax(self._alpha(label)).item()))
                for label in self._labels if label not in memo}

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {label: dict(zip([str(v) for v in values], self._softmax(self._alpha(label)).detach().cpu().tolist()))
                for label, values in self._labels.items() if label not in memo}

    def forward(self, *inputs: Any) -> Any:
        from nni.nas.nn.pytorch.cell import preprocess_cell_inputs

        processed = preprocess_cell_inputs(self.num_predecessors, *inputs)
        states: list[torch.Tensor] = self.preprocessor(processed)
        for i, edges in enumerate(cast(Iterable[Any], self.ops), start=self.num_predecessors):
            node = []
            for k in range(self.num_ops_per_node):
                op_label, input_label = f"{self.label}/op_{i}_{k}", f"{self.label}/input_{i}_{k}"
                source = int(self._sampled[input_label][0])
                op_name = str(self._sampled[op_label])
                x = states[source]
                out = edges[source][op_name](x)

                def op_path(index: int, inp: torch.Tensor, _edge: Any = edges[source]) -> torch.Tensor:
                    return _edge[self.op_names[index]](inp)

                def input_path(index: int, *candidates: torch.Tensor, _edges: Any = edges,
                               _op: str = op_name) -> torch.Tensor:
                    return _edges[index][_op](candidates[index])

                out = _ProxylessFunction.apply(op_path, self.op_names.index(op_name), 1, self._softmax,
                                               self._alpha(op_label), x, out)
                out = _ProxylessFunction.apply(input_path, source, i, self._softmax, self._alpha(input_label),
                                               *states[:i], out)
                node.append(out)
            states.append(sum(node))  # type: ignore[arg-type]
        return self.postprocessor(torch.cat(states[self.num_predecessors:], self.concat_dim), processed)

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        yield from self._arch_alpha.values()

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        if type(module) is Cell and module.op_candidates_factory is not None and module.merge_op == "all":
            return cls(module.op_candidates_factory, module.num_nodes, module.num_ops_per_node,
                       module.num_predecessors, module.preprocessor, module.postprocessor, module.concat_dim,
                       memo, mutate_kwargs, module.label)
        return None


def _suppress_mutated_cell(module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
    return True if isinstance(module, ProxylessMixedCell) else None


class Proxyless(_NNIProxyless):
    """ProxylessNAS (Cai, Zhu and Han, ICLR 2019) on every robustnas space.

    NNI's ``Proxyless`` plus :class:`ProxylessMixedCell` for DARTS cells (ARNAS, DSRNA) and NNI's
    weight-entangled mixed operations for width choices (tiny space). Deviation: width choices are
    relaxed as in DARTS (a softmax-weighted mixture of the entangled widths), not binarised;
    ProxylessNAS binarises candidate operations only. So, like DARTS, it is refused by the tiny
    space's width-fitted ``skip`` (build the space without that block). Same arguments as NNI's
    ``Proxyless``.
    """

    def default_mutation_hooks(self) -> list[Any]:
        hooks = super().default_mutation_hooks()  # [suppress, layer, input, repeat, no_default_hook]
        extra = [_suppress_mutated_cell, ProxylessMixedCell.mutate]
        extra += [operation.mutate for operation in NATIVE_MIXED_OPERATIONS]
        return hooks[:1] + extra + hooks[1:-1] + hooks[-1:]


# ------------------------------------------------------------------------------------ RL (tianshou)
RL_EXTRA = "pip install 'robustnas[rl]'  (tianshou>=0.5.1,<0.6 and gym==0.26.*)"


def require_rl(name: str) -> None:
    """Raise a :class:`ConfigError` unless NNI 3.0's RL code (tianshou 0.4/0.5 and gym) can be imported."""
    try:
        import gym  # noqa: F401 - NNI 3.0's RL environment is a gym.Env
        import tianshou
    except ImportError as exc:
        raise ConfigError(f"strategy {name!r} needs tianshou and gym, which are not installed ({exc}); "
                          f"install the optional extra: {RL_EXTRA}") from exc
    version = str(getattr(tianshou, "__version__", "0"))
    if not version.startswith(("0.4.", "0.5.")):
        raise ConfigError(f"strategy {name!r} needs tianshou 0.4 or 0.5 (NNI 3.0 uses their policy API); "
                          f"found tianshou {version}. Install: {RL_EXTRA}")


class PolicyBasedRL(_NNIPolicyBasedRL):
    """NNI's ``PolicyBasedRL`` (a PPO controller, as in Zoph and Le, ICLR 2017), checking its extra first."""

    def __init__(self, **kwargs: Any) -> None:
        require_rl("policy-rl")
        super().__init__(**kwargs)


class _Tagged:
    """A loader whose batches come as ``(batch, tag)``, the form NNI's ENAS step unpacks."""

    def __init__(self, loader: Any, tag: str) -> None:
        self.loader, self.tag = loader, tag

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, str]]:
        return ((batch, self.tag) for batch in self.loader)


class ENAS(_NNIENAS):
    """ENAS (Pham et al., ICML 2018) under pytorch-lightning 2, checking its extra first.

    NNI's ``ENAS`` with each training batch tagged ``"train"`` or ``"val"`` by its loader (NNI's
    step otherwise mistakes a batch's labels for that tag under Lightning 2) and, unless given,
    ``reward_metric_name="val_acc"`` (the validation accuracy that NNI's ``Classification``
    evaluator logs). Same arguments as NNI's ``ENAS``.
    """

    def __init__(self, **kwargs: Any) -> None:
        require_rl("enas")
        kwargs.setdefault("reward_metric_name", "val_acc")
        super().__init__(**kwargs)

    def train_dataloader(self, train_dataloader_fn: Any, val_dataloader_fn: Any) -> Any:
        return super().train_dataloader(lambda: _Tagged(train_dataloader_fn(), "train"),
                                        lambda: _Tagged(val_dataloader_fn(), "val"))
