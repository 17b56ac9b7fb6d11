"""One-shot diagnostics measured on a benchmark table: does the supernet rank cells as the table
does, do its exports drift to parameter-free edges, and do DSRNA's robustness terms predict
robustness at initialisation?

- :func:`supernet_scores`: a trained one-shot strategy's own score of each cell. Differentiable
  strategies (DARTS, Liu et al., ICLR 2019; GumbelDARTS; ARNAS; DSRNA): the log-probability of the
  cell under the softmax of the architecture weights, ``sum_e log softmax(alpha_e)[op_e]`` over the
  edges ``e`` (the argmax cell, NNI's export, scores highest). TAM-NAS: the subnet's accuracy with
  inherited, BatchNorm-recalibrated weights on its validation batches
  (:meth:`~robustnas.strategies.tamnas.TAMNAS.evaluate_subnet`, what its NSGA-II ranks by).
- :func:`ranking_agreement`: Kendall's tau-b between those scores and the table (the supernet
  rank correlation of Yu et al., "Evaluating the Search Phase of Neural Architecture Search",
  ICLR 2020), over cells the table holds.
- :func:`parameter_free_share` and :func:`table_parameter_free_share`: the share of edges whose
  operation has no weights (``none``, ``skip_connect``, ``avg_pool_3x3``), in exports and among
  the table's best cells (the collapse of DARTS to parameter-free edges, Zela et al.,
  "Understanding and Robustifying Differentiable Architecture Search", ICLR 2020).
- :func:`zero_cost_proxies`: DSRNA's Jacobian term and interval bound (Hosseini, Yang, Xie,
  CVPR 2021) of every cell's network at initialisation, as built by the table's protocol, and
  their Spearman correlation with the table (zero-cost proxies in the manner of Abdelfattah et
  al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021), against the parameter count as the
  baseline proxy.

Every result is a plain JSON-able dict. See docs/benchmark.md, "Diagnostics".
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from robustnas.plugins.errors import ConfigError
from robustnas.strategies._oneshot import PARAMETER_FREE_OPS

from ._protocol import build_cell
from ._table import _direction

if TYPE_CHECKING:
    from ._table import Benchmark

__all__ = [
    "PARAMETER_FREE_OPS", "architecture_log_probs", "parameter_free_share", "ranking_agreement",
    "supernet_scores", "table_cells", "table_parameter_free_share", "zero_cost_proxies",
]

_logger = logging.getLogger(__name__)

#: Operations reported one by one besides the parameter-free share.
_REPORTED_OPS = ("none", "skip_connect", "avg_pool_3x3")
#: Table metrics an inherited-weight subnet can be scored on (TAM-NAS's ``score_subnet``).
_SCORABLE = ("clean_acc", "pgd_acc", "params", "flops")


# ---------------------------------------------------------------------- supernet scores
def architecture_log_probs(strategy: Any) -> dict[str, dict[str, float]]:
    """``{label: {op: log softmax(alpha)[op]}}`` of a trained differentiable one-shot strategy.

    Read from the architecture logits ``_arch_alpha`` of NNI's mixed layers (one per label: the
    cells of a robust201 network share their 6 labels and so their logits). The plain softmax
    is used for every strategy, GumbelDARTS included (its Gumbel noise belongs to sampling, not
    to a ranking; NNI exports the argmax of the logits for it too).
    """
    modules = _supernet_modules(strategy)
    logits: dict[str, tuple[list[str], torch.Tensor]] = {}
    for module in modules:
        alpha = getattr(module, "_arch_alpha", None)
        if alpha is None:
            continue
        label = getattr(module, "label", type(module).__name__)
        names = getattr(module, "names", None)
        if not isinstance(alpha, torch.Tensor) or names is None:
            raise ConfigError(f"supernet_scores reads layer choices only; {label!r} is a "
                              f"{type(module).__name__} with architecture weights of another kind")
        alpha = alpha.detach().cpu().double()
        if label in logits:
            if not torch.equal(logits[label][1], alpha):  # shared labels share one parameter in NNI
                raise RuntimeError(f"two mixed layers labelled {label!r} hold different architecture weights")
            continue
        logits[label] = ([str(n) for n in names], alpha)
    if not logits:
        raise ConfigError(f"{type(strategy).__name__}'s supernet has no architecture weights: it is not a "
                          "differentiable strategy (DARTS, GumbelDARTS, ARNAS, DSRNA), and it has no "
                          "evaluate_subnet to score subnets with inherited weights (TAM-NAS)")
    return {label: dict(zip(names, torch.log_softmax(alpha, dim=-1).tolist()))
            for label, (names, alpha) in logits.items()}


def supernet_scores(strategy: Any, samples: Sequence[Mapping[str, Any]], metric: str = "pgd_acc") -> np.ndarray:
    """The trained supernet's own score of each sample (larger = preferred by the supernet).

    - A strategy with ``evaluate_subnet`` (TAM-NAS) scores a subnet by its ``metric``
      (``clean_acc``, ``pgd_acc``, ``params`` or ``flops``; PGD accuracy by default) with
      inherited, BatchNorm-recalibrated weights on its validation batches; for ``params`` and
      ``flops`` the score is the negated count, so that larger stays preferred.
    - A differentiable strategy (DARTS, GumbelDARTS, ARNAS, DSRNA) scores a sample by
      ``sum over its labels of log softmax(alpha_label)[chosen op]``
      (:func:`architecture_log_probs`): the log-probability of the cell when each edge is drawn
      from its softmax. The exported architecture (argmax per edge) has the highest score of
      the space; ``metric`` is ignored.

    Samples are scored as given (the table's cells as its representatives). Raises
    :class:`ConfigError` for a strategy that has not been run or has no score of its own
    (multi-trial strategies, ENAS, RandomOneShot) and for a sample that misses a label or
    names an unknown operation.
    """
    samples = list(samples)
    if hasattr(strategy, "evaluate_subnet"):
        if metric not in _SCORABLE:
            raise ConfigError(f"cannot score subnets on {metric!r}; valid metrics: {', '.join(_SCORABLE)}")
        _supernet_modules(strategy)  # has it been run?
        sign = -1.0 if metric in ("params", "flops") else 1.0
        scores = np.empty(len(samples), dtype=float)
        for i, sample in enumerate(samples):
            metrics = strategy.evaluate_subnet(dict(sample))
            if metric not in metrics:  # FLOPs are counted only where they are one of its objectives
                raise ConfigError(f"{type(strategy).__name__} does not measure {metric!r} of a subnet; it measures "
                                  f"{sorted(k for k in metrics if k in _SCORABLE)}")
            scores[i] = sign * float(metrics[metric])
        return scores
    log_probs = architecture_log_probs(strategy)
    scores = np.empty(len(samples), dtype=float)
    for i, sample in enumerate(samples):
        total = 0.0
        for label, table in log_probs.items():
            if label not in sample:
                raise ConfigError(f"sample {i} has no choice for label {label!r}; the supernet's labels are "
                                  f"{sorted(log_probs)}")
            op = str(sample[label])
            if op not in table:
                raise ConfigError(f"sample {i} chooses {op!r} for {label!r}; valid choices: {list(table)}")
            total += table[op]
        scores[i] = total
    return scores


def _supernet_modules(strategy: Any) -> list[Any]:
    supernet = getattr(type(strategy), "supernet", None)
    if supernet is None:
        raise ConfigError(f"{type(strategy).__name__} is not a one-shot strategy: it has no supernet to score "
                          "cells with (valid: DARTS, GumbelDARTS, ARNAS, DSRNA, TAM-NAS)")
    try:
        model = strategy.supernet
    except RuntimeError as err:  # NNI: "needs to be run before accessing the supernet"
        raise ConfigError(f"{type(strategy).__name__} has not been run: train it (run_experiment) before "
                          "scoring cells with its supernet") from err
    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule

    return [m for m in model.modules() if isinstance(m, BaseSuperNetModule)]


# ---------------------------------------------------------------------- ranking agreement
def table_cells(bench: Benchmark, n: int = 100, seed: int = 0, metric: str = "pgd_acc") -> list[dict[str, Any]]:
    """``n`` cells drawn without replacement from those the table holds with a ``metric`` value
    (all of them, in key order, when it holds ``n`` or fewer), as their representative samples."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"n must be an integer >= 2 (cells to rank), got {n!r}")
    _direction(metric)
    held = [e["sample"] for e in bench.entries() if e.get(metric) is not None]
    if len(held) <= n:
        return held
    picked = np.random.default_rng(seed).choice(len(held), size=n, replace=False)
    return [held[i] for i in sorted(picked)]


def ranking_agreement(
    bench: Benchmark,
    strategy_or_scores: Any,
    samples: Sequence[Mapping[str, Any]] | None = None,
    metric: str = "pgd_acc",
    n: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Kendall's tau-b (and Spearman's rho) between a supernet's scores and the table's ``metric``.

    ``strategy_or_scores``: a trained one-shot strategy (scored with :func:`supernet_scores`;
    TAM-NAS on ``metric`` where it can score it, else on PGD accuracy), or one score per sample.
    ``samples``: the cells to rank (each must be in the table); by default :func:`table_cells`
    (``n`` cells drawn with ``seed``, or every held cell when the table holds fewer). Scores given
    without samples must be one per held cell, in the table's key order (``bench.architectures()``).

    The table metric is oriented so that a positive tau always means agreement (a metric to
    minimise, as ``params``, is negated). Returns ``{"metric", "n", "cells_held", "kendall_tau",
    "p_value", "spearman", "spearman_p", "distinct_scores", "score_range", "top_cell"}``
    (``distinct_scores``: how many different scores the cells got; ties lower tau-b's reach);
    ``top_cell`` is the cell the supernet scores highest (the first in table key order among
    ties), with its table value and percentile among the ranked cells (1.0: the best of them).
    """
    from scipy.stats import kendalltau, spearmanr

    direction = _direction(metric)
    scores_given = isinstance(strategy_or_scores, (np.ndarray, Sequence))
    if samples is None:
        if scores_given:
            samples = bench.architectures()
        else:
            samples = table_cells(bench, n=n, seed=seed, metric=metric)
    samples = [dict(s) for s in samples]
    if len(samples) < 2:
        raise ConfigError(f"ranking needs at least 2 cells, got {len(samples)}")
    if scores_given:
        scores = np.asarray(strategy_or_scores, dtype=float).reshape(-1)
        if len(scores) != len(samples):
            raise ConfigError(f"{len(scores)} scores for {len(samples)} cells: give one score per cell "
                              "(without samples: one per held cell, in bench.architectures() order)")
    else:
        score_metric = metric if metric in _SCORABLE else "pgd_acc"
        scores = supernet_scores(strategy_or_scores, samples, metric=score_metric)
    values = np.array([_table_value(bench, s, metric) for s in samples], dtype=float)
    oriented = values if direction == "maximize" else -values
    keep = np.isfinite(scores) & np.isfinite(oriented)
    if keep.sum() < 2:
        raise ConfigError(f"fewer than 2 cells have both a finite score and a {metric!r} value")
    tau = kendalltau(scores[keep], oriented[keep])
    rho = spearmanr(scores[keep], oriented[keep])
    top = int(np.flatnonzero(keep)[np.argmax(scores[keep])])
    percentile = float(np.mean(oriented[keep] <= oriented[top]))
    return {
        "metric": metric, "n": int(keep.sum()), "cells_held": len(bench),
        "kendall_tau": _finite(tau.statistic), "p_value": _finite(tau.pvalue),
        "spearman": _finite(rho.statistic), "spearman_p": _finite(rho.pvalue),
        "distinct_scores": int(len(np.unique(scores[keep]))),
        "score_range": [float(scores[keep].min()), float(scores[keep].max())],
        "top_cell": {"key": bench.key(samples[top]), metric: float(values[top]), "percentile": percentile},
    }


def _table_value(bench: Benchmark, sample: Mapping[str, Any], metric: str) -> float:
    try:
        value = bench.query(sample).get(metric)
    except KeyError as err:
        raise ConfigError(f"a cell to rank is not in the table: {err.args[0]}") from None
    return math.nan if value is None else float(value)


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------- parameter-free edges
def parameter_free_share(
    samples: Iterable[Mapping[str, Any]], canonical: bool = False, ops: Iterable[str] = PARAMETER_FREE_OPS,
) -> dict[str, Any]:
    """The share of edges whose operation has no weights, over every edge of ``samples``.

    An edge is a label whose choice is an operation name (a string; input choices of DARTS
    cells are not edges). Parameter-free by default: ``none``, ``skip_connect``,
    ``avg_pool_3x3`` (and ``max_pool_3x3`` of DARTS-like spaces). ``canonical=True`` first maps
    each robust201 sample to its isomorphism class's representative (dead edges become
    ``none``, as in the table's cells). Returns ``{"samples", "edges", "parameter_free",
    "none", "skip_connect", "avg_pool_3x3", "ops"}`` (shares in [0, 1]; ``ops``: every
    operation's share).
    """
    free = frozenset(ops)
    counts: Counter[str] = Counter()
    n = 0
    for sample in samples:
        if canonical:
            from robustnas.search_spaces.robust201 import canonical_sample

            try:
                sample = canonical_sample(sample)
            except ValueError as err:
                raise ConfigError(f"canonical=True needs robust201 samples: {err}") from err
        counts.update(str(v) for v in sample.values() if isinstance(v, str))
        n += 1
    edges = sum(counts.values())
    if edges == 0:
        raise ConfigError("no edges to count: give at least one sample with operation choices")
    out: dict[str, Any] = {"samples": n, "edges": edges,
                           "parameter_free": sum(c for op, c in counts.items() if op in free) / edges}
    out.update({op: counts.get(op, 0) / edges for op in _REPORTED_OPS})
    out["ops"] = {op: c / edges for op, c in sorted(counts.items())}
    return out


def table_parameter_free_share(bench: Benchmark, metric: str = "pgd_acc", top: float | int = 0.05) -> dict[str, Any]:
    """:func:`parameter_free_share` of the table's best cells under ``metric``, and of all its cells.

    ``top``: a fraction in (0, 1) of the cells with a ``metric`` value (rounded up, at least 1)
    or a number of cells (an integer >= 1). Best first by the metric's direction, ties broken
    by fewer parameters, then key (as ``Benchmark.best``). The cells are the table's
    representatives (dead edges are ``none``). Returns ``{"metric", "top": {"cells", "threshold",
    ...shares}, "all": {...shares}}``; ``threshold`` is the metric value of the last cell taken.
    """
    direction = _direction(metric)
    entries = [e for e in bench.entries() if e.get(metric) is not None]
    if not entries:
        raise ConfigError(f"table {bench.name!r} has no value of {metric!r}")
    if isinstance(top, bool) or not isinstance(top, (int, float)):
        raise ConfigError(f"top must be a fraction in (0, 1) or a number of cells >= 1, got {top!r}")
    if isinstance(top, float) and 0 < top < 1:
        k = max(1, math.ceil(top * len(entries)))
    elif isinstance(top, int) and top >= 1:
        k = min(top, len(entries))
    else:
        raise ConfigError(f"top must be a fraction in (0, 1) or a number of cells >= 1, got {top!r}")
    sign = -1.0 if direction == "maximize" else 1.0
    ranked = sorted(entries, key=lambda e: (sign * float(e[metric]), e.get("params") or 0, e["key"]))
    best = ranked[:k]
    return {
        "metric": metric, "cells_held": len(bench),
        "top": {"cells": k, "threshold": float(best[-1][metric]), "keys": [e["key"] for e in best],
                **parameter_free_share(e["sample"] for e in best)},
        "all": {"cells": len(entries), **parameter_free_share(e["sample"] for e in entries)},
    }


# ---------------------------------------------------------------------- zero-cost proxies
def zero_cost_proxies(
    bench: Benchmark,
    metric: str = "pgd_acc",
    cells: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
    batch: int = 64,
    q: float | None = None,
    bound_reduction: str = "ce",
) -> dict[str, Any]:
    """DSRNA's two robustness terms of every cell's untrained network, and their Spearman
    correlation with the table's ``metric``.

    Each cell (every held cell with a ``metric`` value, or ``cells``, mapped to the table's
    representatives) is built as the protocol builds it (:func:`~._protocol.build_cell`: the
    initial weights of training seed ``seed``). On the first ``batch`` points of the protocol's
    validation split, in train mode (BatchNorm on batch statistics: at initialisation the running
    statistics are the identity, and DSRNA's search computes both terms on the training-mode
    supernet), it measures

    - ``jacobian_norm``: :func:`~robustnas.strategies.dsrna.jacobian_norm`, the batch mean of the
      ``q``-norm of the input gradient of the top logit, exactly as DSRNA's search (``q``
      defaults to the dual of the threat's norm: 1 for L-inf, 2 for L2). Smaller = expected more
      robust; DSRNA's term is ``R_jacobian = -jacobian_norm``.
    - ``bound``: :func:`~robustnas.strategies.dsrna.bound_metric`, interval bound propagation
      at the protocol's eps and norm (default interval method; ``bound_reduction`` as DSRNA's:
      ``"ce"``, minus the cross-entropy of the worst-case logits, or ``"margin"``). Larger =
      expected more robust.

    Spearman's rho (with its p-value) is reported for each proxy oriented so that larger means
    more robust (``-jacobian_norm``, ``bound``) against the table's ``metric`` oriented so that
    larger is better: a positive rho means the proxy predicts the table. ``params`` (larger =
    bigger network) is the baseline proxy that only counts weights. Deterministic: two calls give
    the same numbers. Returns ``{"metric", "n", "cells", "spearman", "settings", "seconds"}``;
    ``cells`` lists ``{"key", "jacobian_norm", "bound", "params", <metric>}``.
    """
    from scipy.stats import spearmanr

    from robustnas.plugins.evaluator import load_dataset
    from robustnas.strategies.dsrna import BOUND_REDUCTIONS, bound_metric, jacobian_norm

    direction = _direction(metric)
    if bench.protocol is None:
        raise ConfigError(f"table {bench.name!r} has no protocol to build its cells with")
    if bound_reduction not in BOUND_REDUCTIONS:
        raise ConfigError(f"unknown bound_reduction {bound_reduction!r}; valid: {', '.join(BOUND_REDUCTIONS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise ConfigError(f"batch must be an integer >= 2, got {batch!r}")
    protocol = bench.protocol
    bundle = load_dataset(protocol.dataset, seed=protocol.data_seed)
    threat = bundle.threat
    if q is None:
        q = 1 if threat.norm == "linf" else 2
    if q not in (1, 2):
        raise ConfigError(f"q must be 1 or 2, got {q!r}")
    if cells is None:
        entries = [e for e in bench.entries() if e.get(metric) is not None]
    else:
        entries = []
        for sample in cells:
            try:
                entries.append(bench.query(sample))
            except KeyError as err:
                raise ConfigError(f"a cell is not in the table: {err.args[0]}") from None
    if len(entries) < 3:
        raise ConfigError(f"zero-cost proxies need at least 3 cells with a {metric!r} value, got {len(entries)}")
    x, y = bundle.tensors("val", batch)
    start = time.perf_counter()
    rows = []
    for entry in entries:
        model = build_cell(protocol, entry["sample"], seed).train()
        jac = float(jacobian_norm(model, x, q=q, create_graph=False).detach())
        with torch.no_grad():
            bound = float(bound_metric(model, x, y, eps=threat.eps, norm=threat.norm, reduction=bound_reduction))
        value = entry.get(metric)
        rows.append({"key": entry["key"], "jacobian_norm": jac, "bound": bound, "params": entry.get("params"),
                     metric: None if value is None else float(value)})
    target = np.array([math.nan if r[metric] is None else r[metric] for r in rows], dtype=float)
    target = target if direction == "maximize" else -target
    proxies = {
        "jacobian": -np.array([r["jacobian_norm"] for r in rows]),
        "bound": np.array([r["bound"] for r in rows]),
        "params": np.array([math.nan if r["params"] is None else r["params"] for r in rows], dtype=float),
    }
    spearman = {}
    for name, values in proxies.items():
        keep = np.isfinite(values) & np.isfinite(target)
        rho = spearmanr(values[keep], target[keep]) if keep.sum() >= 3 else None
        spearman[name] = {"rho": None if rho is None else _finite(rho.statistic),
                          "p_value": None if rho is None else _finite(rho.pvalue), "n": int(keep.sum())}
    seconds = time.perf_counter() - start
    _logger.info("zero-cost proxies of %d cells in %.1f s: %s", len(rows), seconds, spearman)
    return {
        "metric": metric, "n": len(rows), "cells": rows, "spearman": spearman,
        "settings": {"seed": seed, "batch": int(len(y)), "split": "val", "mode": "train (batch statistics)",
                     "q": q, "eps": float(threat.eps), "norm": threat.norm, "bound_reduction": bound_reduction,
                     "bound_method": "interval", "orientation": "rho > 0: the proxy predicts the table"},
        "seconds": seconds,
    }
