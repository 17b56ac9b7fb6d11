"""NNI model space -> Optuna distributions -> NNI sample.

Shared by the TAM-NAS strategy (NSGA-II in ask-and-tell mode) and the Optuna bridge
(``robustnas.plugins.optuna`` re-exports :func:`suggest_architecture`).

Every labelled mutable of ``space.simplify()`` becomes one Optuna parameter:

* :class:`nni.mutable.Categorical` (``LayerChoice``, ``InputChoice`` with one input,
  ``nni.choice``) -> ``CategoricalDistribution`` over its values (over the value
  positions when a value is not an Optuna-storable scalar).
* :class:`nni.mutable.CategoricalMultiple` with ``n_chosen = 1`` -> a categorical over the
  candidates; with ``n_chosen = k > 1`` (``InputChoice`` with
  ``n_chosen > 1``, e.g. the two inputs of a DARTS cell node) -> one categorical over
  the ``C(n, k)`` combinations, each choice a JSON string such as ``"[0, 2]"``: every
  suggestion is valid, and NSGA-II crossover and TPE treat a pair as one gene.
  ``n_chosen=None`` -> one boolean categorical per candidate (``label/i``).
* :class:`nni.mutable.Numerical` -> ``FloatDistribution`` (uniform or log-uniform,
  ``step`` from ``quantize``); any other distribution (normal, lognormal, a scipy
  distribution) is searched through its quantile ``label:quantile`` in (0, 1) and
  mapped back with the inverse CDF.
* Annotations (constraints) are not parameters; a sample that violates one prunes
  the trial (``optuna.TrialPruned``) with the violation as the reason.

The returned sample is in NNI's own simple format (``{label: value}``,
``{label: [chosen, ...]}``), so ``space.freeze(sample)`` and ``export_record`` take it.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import optuna
from nni.mutable import Categorical, CategoricalMultiple, Constraint, MutableAnnotation, Numerical

__all__ = ["suggest_architecture"]

_SCALARS = (type(None), bool, int, float, str)
_QUANTILE_EPS = 1e-6


def _storable(values: list[Any]) -> bool:
    """Whether Optuna can store these categorical values as they are (and tell them apart)."""
    if not all(isinstance(v, _SCALARS) for v in values):
        return False
    # bool is an int subclass: True == 1 would make two choices collide inside Optuna.
    kinds = {type(v) for v in values}
    return not (bool in kinds and (int in kinds or float in kinds))


def _combination_key(values: tuple[Any, ...]) -> str:
    return json.dumps(list(values)) if _storable(list(values)) else repr(list(values))


def _is_plain_uniform(mutable: Numerical) -> bool:
    if mutable.mu is not None or mutable.sigma is not None:
        return False
    if not (math.isfinite(mutable.low) and math.isfinite(mutable.high)):
        return False
    return mutable.distribution.dist.name in ("uniform", "loguniform", "reciprocal")


def _suggest_categorical(trial: optuna.Trial, label: str, values: list[Any]) -> Any:
    if _storable(values):
        return trial.suggest_categorical(label, values)
    return values[trial.suggest_categorical(label, list(range(len(values))))]


def _suggest_multiple(trial: optuna.Trial, mutable: CategoricalMultiple) -> list[Any]:
    values = list(mutable.values)
    if mutable.n_chosen == 1:  # one input per slot (ARNAS / DSRNA cells): a plain categorical
        return [_suggest_categorical(trial, mutable.label, values)]
    if mutable.n_chosen is not None:
        combos = list(itertools.combinations(values, mutable.n_chosen))
        keyed = {_combination_key(c): list(c) for c in combos}
        return keyed[trial.suggest_categorical(mutable.label, list(keyed))]
    chosen = []
    for i, value in enumerate(values):
        if trial.suggest_categorical(f"{mutable.label}/{i}", [True, False]):
            chosen.append(value)
    return chosen


def _suggest_numerical(trial: optuna.Trial, mutable: Numerical) -> float:
    if _is_plain_uniform(mutable):
        log = bool(mutable.log_distributed)
        step = None if log else mutable.quantize
        value = trial.suggest_float(mutable.label, mutable.low, mutable.high, log=log, step=step)
    else:
        u = trial.suggest_float(f"{mutable.label}:quantile", _QUANTILE_EPS, 1.0 - _QUANTILE_EPS)
        value = float(mutable.distribution.ppf(u))
    return float(mutable.qclip(value))


def suggest_architecture(trial: optuna.Trial, space: Any) -> dict[str, Any]:
    """Suggest one architecture of an NNI model space through an Optuna trial.

    Works on any NNI model space (a ``ModelSpace`` or an ``ExecutableModelSpace``): it walks
    ``space.simplify()`` and maps each mutable to an Optuna distribution (see the module
    docstring for the encoding). Returns an NNI sample ``{label: value}`` for which
    ``space.freeze(sample)`` builds the candidate.

    Input choices with ``n_chosen > 1`` are one categorical over combinations rather than
    per-slot categoricals; see docs/fidelity.md (Optuna bridge).
    """
    sample: dict[str, Any] = {}
    constraints: list[Constraint] = []
    for label, mutable in space.simplify().items():
        if isinstance(mutable, Constraint):
            constraints.append(mutable)
        elif isinstance(mutable, MutableAnnotation):
            continue
        elif isinstance(mutable, CategoricalMultiple):
            sample[label] = _suggest_multiple(trial, mutable)
        elif isinstance(mutable, Categorical):
            sample[label] = _suggest_categorical(trial, label, list(mutable.values))
        elif isinstance(mutable, Numerical):
            sample[label] = _suggest_numerical(trial, mutable)
        else:
            raise TypeError(
                f"cannot map mutable {label!r} of type {type(mutable).__name__} to an Optuna "
                "distribution; supported: Categorical, CategoricalMultiple, Numerical"
            )
    for constraint in constraints:
        error = constraint.check_contains(sample)
        if error is not None:
            raise optuna.TrialPruned(f"sample violates constraint {constraint.label!r}: {error}")
    return sample
