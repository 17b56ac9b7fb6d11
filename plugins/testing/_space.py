"""The space contract: what every registered search space must do, checked on a small build.

Each ``check_*`` function checks one clause and raises ``AssertionError`` naming the space and
what to fix; :func:`check_space` runs them all in a few seconds on CPU.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from robustnas.plugins.errors import ConfigError
from robustnas.plugins.evaluator._utils import logits_of
from robustnas.search_spaces import build_model, export_record, random_sample, validate_sample
from robustnas.search_spaces._registry import get_space, get_space_class, space_name_of

__all__ = [
    "SpaceCheck", "check_record_round_trip", "check_sample_trains", "check_space",
    "check_space_builds", "check_space_has_choices", "check_space_resolves", "check_space_seeded",
    "check_wrong_samples_refused",
]

_logger = logging.getLogger(__name__)

#: A value no choice of a real space takes (the invalid choice the contract offers ``validate_sample``).
_NOT_A_CHOICE = "__robustnas_contract_not_a_choice__"


@dataclass
class SpaceCheck:
    """What :func:`check_space` found: the space's labels, the sample it tried and that network's
    parameter count; ``unused`` names the parameters that sample leaves out of the forward pass
    (they change no output, so they get no gradient: e.g. a DARTS cell whose edges all skip
    its first input)."""

    name: str
    labels: list[str]
    sample: dict[str, Any]
    params: int
    unused: list[str] = field(default_factory=list)


def check_space_resolves(name: str) -> Any:
    """``get_space_class(name)`` finds and imports the space (built-in, registered or entry point)."""
    try:
        return get_space_class(name)
    except ConfigError as exc:
        raise AssertionError(f"space {name!r} is not registered: {exc}") from None
    except ImportError as exc:
        raise AssertionError(f"space {name!r} is registered but does not import: {exc}") from None


def check_space_builds(name: str, *, input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 10,
                       seed: int = 0, **space_kwargs: Any) -> ModelSpace:
    """The space builds at ``input_shape`` / ``num_classes`` (after ``torch.manual_seed(seed)``) into
    an NNI ``ModelSpace`` whose ``space_name`` is ``name``, so records name it."""
    check_space_resolves(name)
    torch.manual_seed(seed)
    try:
        space = get_space(name, input_shape=tuple(input_shape), num_classes=num_classes, **space_kwargs)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"space {name!r} does not build with input_shape={tuple(input_shape)}, "
                             f"num_classes={num_classes} and {space_kwargs}: {exc}") from None
    if not isinstance(space, ModelSpace):
        raise AssertionError(f"space {name!r} builds a {type(space).__name__}, not an NNI ModelSpace "
                             "(nni.nas.nn.pytorch.ModelSpace)")
    try:
        recorded = space_name_of(space)
    except ValueError:
        recorded = None
    if recorded != name:
        raise AssertionError(f"space {name!r} builds a {type(space).__name__} whose space_name is {recorded!r}: "
                             f"set the class attribute space_name = {name!r}, so its records rebuild it")
    return space


def check_space_has_choices(space: ModelSpace) -> dict[str, Any]:
    """``space.simplify()`` holds at least one choice; returns it."""
    mutables = space.simplify()
    if not mutables:
        raise AssertionError(f"space {space_name_of(space)!r} has no choices: space.simplify() is empty")
    return dict(mutables)


def _unused_parameters(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> list[str]:
    """Those of ``names`` whose change leaves the eval-mode output of ``model`` on ``x`` unchanged."""
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(0)
    unused = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            before = logits_of(model(x))
            for name in names:
                param = params[name]
                saved = param.detach().clone()
                param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) + 1.0)
                after = logits_of(model(x))
                param.copy_(saved)
                if torch.allclose(before, after, rtol=0.0, atol=1e-7):
                    unused.append(name)
    finally:
        model.train(was_training)
    return unused


def check_sample_trains(space: ModelSpace, sample: Mapping[str, Any], *, input_shape: Sequence[int],
                        num_classes: int, batch: int = 4) -> tuple[nn.Module, list[str]]:
    """``space.freeze(sample)`` gives a network whose forward on ``batch`` random inputs (train mode)
    returns ``(batch, num_classes)`` finite logits, and whose backward reaches every parameter that
    requires grad and changes the output. Returns the network and the parameters the sample leaves
    unused (no gradient, and no change of the output when they change)."""
    name = space_name_of(space)
    model = space.freeze(dict(sample))
    shape = tuple(input_shape)
    x = torch.rand((batch, *shape), generator=torch.Generator().manual_seed(0))
    y = torch.arange(batch) % num_classes
    model.train()
    model.zero_grad(set_to_none=True)
    logits = logits_of(model(x))
    if tuple(logits.shape) != (batch, num_classes):
        raise AssertionError(f"space {name!r}: the network of {dict(sample)} returns logits of shape "
                             f"{tuple(logits.shape)} for {batch} inputs of shape {shape}; expected {(batch, num_classes)}")
    if not torch.isfinite(logits).all():
        raise AssertionError(f"space {name!r}: the network of {dict(sample)} returns non-finite logits")
    nn.functional.cross_entropy(logits, y).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not any(p.grad is not None and bool(p.grad.abs().sum() > 0) for _, p in trainable):
        raise AssertionError(f"space {name!r}: no parameter of the network of {dict(sample)} gets a non-zero "
                             "gradient, so it cannot be trained")
    no_grad = [n for n, p in trainable if p.grad is None]
    unused = _unused_parameters(model, x, no_grad)
    detached = [n for n in no_grad if n not in unused]
    if detached:
        raise AssertionError(f"space {name!r}: parameter(s) {detached[:8]} change the output of the network of "
                             f"{dict(sample)} but get no gradient (a .detach(), .data or torch.no_grad in forward?)")
    model.zero_grad(set_to_none=True)
    return model, unused


def check_record_round_trip(space: ModelSpace, sample: Mapping[str, Any], model: nn.Module, *,
                            input_shape: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """``export_record(space, sample)`` survives JSON, and ``build_model`` of it (after
    ``torch.manual_seed(seed)``) rebuilds a network with the same parameters and buffers as
    ``model`` that, given ``model``'s weights, computes the same output. Returns the record."""
    name = space_name_of(space)
    try:
        record = json.loads(json.dumps(export_record(space, sample)))
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"space {name!r}: the record of {dict(sample)} is not JSON: {exc}") from None
    torch.manual_seed(seed)
    rebuilt = build_model(record)
    ours, theirs = model.state_dict(), rebuilt.state_dict()
    shapes = {k: tuple(v.shape) for k, v in ours.items()}
    rebuilt_shapes = {k: tuple(v.shape) for k, v in theirs.items()}
    if shapes != rebuilt_shapes:
        differ = sorted(set(shapes).symmetric_difference(rebuilt_shapes)
                        | {k for k in set(shapes) & set(rebuilt_shapes) if shapes[k] != rebuilt_shapes[k]})
        raise AssertionError(f"space {name!r}: build_model(record) rebuilds another network (state differs at "
                             f"{differ[:8]}); does the space record every constructor argument "
                             f"(recorded: {sorted(record['kwargs'])})?")
    rebuilt.load_state_dict(copy.deepcopy(ours))
    x = torch.rand((2, *input_shape), generator=torch.Generator().manual_seed(1))
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        expected, got = logits_of(model(x)), logits_of(rebuilt(x))
    if not torch.allclose(expected, got, rtol=1e-5, atol=1e-6):
        raise AssertionError(f"space {name!r}: the network build_model(record) rebuilds computes another output "
                             f"with the same weights (max difference {float((expected - got).abs().max()):.3g})")
    return record


def check_wrong_samples_refused(space: ModelSpace, sample: Mapping[str, Any]) -> None:
    """``validate_sample`` accepts ``sample`` as it is and refuses, with a ``ValueError`` (a
    :class:`~robustnas.plugins.errors.ConfigError` is one), the sample without its first label,
    with an unknown label, and with an invalid choice."""
    name = space_name_of(space)
    if validate_sample(space, sample) != json.loads(json.dumps(dict(sample))):
        raise AssertionError(f"space {name!r}: validate_sample changes a valid sample")
    first = next(iter(sample))
    wrong = {
        f"without label {first!r}": {k: v for k, v in sample.items() if k != first},
        "with an unknown label": {**sample, "__robustnas_contract_unknown_label__": sample[first]},
        f"with {first!r} set to a value that is no choice": {**sample, first: _NOT_A_CHOICE},
    }
    for what, bad in wrong.items():
        try:
            validate_sample(space, bad)
        except ValueError:
            continue
        raise AssertionError(f"space {name!r}: validate_sample accepts the sample {what}")


def check_space_seeded(name: str, *, input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 10,
                       seed: int = 0, **space_kwargs: Any) -> None:
    """Two builds after the same ``torch.manual_seed(seed)`` have identical weights and buffers."""
    first = check_space_builds(name, input_shape=input_shape, num_classes=num_classes, seed=seed, **space_kwargs)
    second = check_space_builds(name, input_shape=input_shape, num_classes=num_classes, seed=seed, **space_kwargs)
    a, b = first.state_dict(), second.state_dict()
    differ = sorted(k for k in a if k not in b or not torch.equal(a[k], b[k]))
    if differ or set(b) - set(a):
        raise AssertionError(f"space {name!r}: two builds with seed {seed} differ at {differ[:8]}; "
                             "draw every random number from torch's generator")


def check_space(name: str, *, input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 10, seed: int = 0,
                **space_kwargs: Any) -> SpaceCheck:
    """Run the whole space contract on the space registered as ``name``, built with ``space_kwargs``
    at a small input (default ``1x8x8``, 10 classes); seconds on CPU.

    The name resolves; the space builds into an NNI ``ModelSpace`` with ``space_name == name``; it
    has choices; a random sample (``random_sample(space, seed)``) freezes to a network with finite
    ``(N, num_classes)`` logits whose backward reaches every parameter that affects the output;
    ``export_record`` / ``build_model`` rebuild the same network; ``validate_sample`` refuses wrong
    samples; two builds with one seed have the same weights. Raises ``AssertionError`` naming the
    broken clause; returns a :class:`SpaceCheck`.

    >>> check_space("robust201", width=4).labels[:2]
    ['cell/0_1', 'cell/0_2']
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    space = check_space_builds(name, input_shape=input_shape, num_classes=num_classes, seed=seed, **space_kwargs)
    mutables = check_space_has_choices(space)
    sample = random_sample(space, seed)
    model, unused = check_sample_trains(space, sample, input_shape=input_shape, num_classes=num_classes)
    check_record_round_trip(space, sample, model, input_shape=input_shape, seed=seed)
    check_wrong_samples_refused(space, sample)
    check_space_seeded(name, input_shape=input_shape, num_classes=num_classes, seed=seed, **space_kwargs)
    if unused:
        _logger.info("space %r: sample %s leaves %d parameter tensor(s) unused, e.g. %s", name, sample,
                     len(unused), unused[:3])
    return SpaceCheck(name=name, labels=list(mutables), sample=dict(sample),
                      params=sum(p.numel() for p in model.parameters()), unused=unused)
