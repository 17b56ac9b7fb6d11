"""JSON architecture records: ``{"space", "kwargs", "sample", "format"}`` and back to a network.

A record names the registered space, its constructor keyword arguments and an
NNI sample (``{label: choice}``), so :func:`build_model` rebuilds the exact
frozen network anywhere. Records are plain JSON, never pickles.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from numpy.random import RandomState
from torch import nn

from ._registry import get_space, space_name_of

__all__ = [
    "RECORD_FORMAT", "build_model", "export_record", "load_record", "random_sample",
    "save_record", "space_kwargs_of", "validate_sample",
]

_logger = logging.getLogger(__name__)

RECORD_FORMAT = 1
_RECORD_KEYS = ("space", "kwargs", "sample")


def _to_json(value: Any) -> Any:
    """Plain JSON types: tuples to lists, numpy scalars to Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        return value.item()
    return value


def space_kwargs_of(space: nn.Module) -> dict[str, Any]:
    """Constructor keyword arguments of a space as JSON: ``space.space_kwargs`` or NNI's traced ``args``."""
    kwargs = getattr(space, "space_kwargs", None)
    if kwargs is None:
        kwargs = getattr(space, "args", None)
    if kwargs is None:
        raise ValueError(f"{type(space).__name__} records neither 'space_kwargs' nor NNI's traced 'args'")
    kwargs = _to_json(kwargs)
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise ValueError(f"constructor arguments of {type(space).__name__} are not JSON-serialisable: {exc}") from exc
    return kwargs


def _choices_of(mutable: Any) -> Any:
    values = getattr(mutable, "values", None)
    return list(values) if values is not None else repr(mutable)


def validate_sample(space: nn.Module, sample: Mapping[str, Any]) -> dict[str, Any]:
    """Check that ``sample`` fixes every label of ``space`` with one of its choices.

    Returns the sample in plain JSON types. Raises ``ValueError`` naming the missing,
    unknown or invalid label and the valid labels/choices.
    """
    if not isinstance(sample, Mapping):
        raise ValueError(f"a sample must be a dict {{label: choice}}, got {type(sample).__name__}")
    mutables = space.simplify()
    clean = _to_json(dict(sample))
    missing = [label for label in mutables if label not in clean]
    if missing:
        raise ValueError(
            f"sample misses {len(missing)} label(s) of space {space_name_of(space)!r}: {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}"
        )
    unknown = [label for label in clean if label not in mutables]
    if unknown:
        raise ValueError(
            f"sample has label(s) {unknown[:8]} that space {space_name_of(space)!r} does not have; "
            f"valid labels look like {list(mutables)[:4]}"
        )
    for label, mutable in mutables.items():
        if mutable.check_contains({label: clean[label]}) is not None:
            raise ValueError(
                f"sample[{label!r}] = {clean[label]!r} is not a valid choice; valid choices: {_choices_of(mutable)}"
            )
    return clean


def random_sample(space: nn.Module, seed: Optional[int] = None) -> dict[str, Any]:
    """A uniformly random sample of ``space`` (plain JSON types), without building the network."""
    state = RandomState(seed)
    return _to_json({label: mutable.random(random_state=state) for label, mutable in space.simplify().items()})


def export_record(space: nn.Module, sample: Mapping[str, Any]) -> dict[str, Any]:
    """JSON record ``{"space", "kwargs", "sample", "format": 1}`` of ``sample`` in ``space`` (validated)."""
    return {
        "space": space_name_of(space),
        "kwargs": space_kwargs_of(space),
        "sample": validate_sample(space, sample),
        "format": RECORD_FORMAT,
    }


def _check_record(record: Any) -> None:
    if not isinstance(record, Mapping):
        raise ValueError(f"a record must be a dict with keys {list(_RECORD_KEYS)}, got {type(record).__name__}")
    missing = [key for key in _RECORD_KEYS if key not in record]
    if missing:
        raise ValueError(f"record lacks key(s) {missing}; a record has {list(_RECORD_KEYS)} and 'format'")
    fmt = record.get("format", RECORD_FORMAT)
    if fmt != RECORD_FORMAT:
        raise ValueError(f"record format {fmt!r} is not supported; supported: [{RECORD_FORMAT}]")
    if not isinstance(record["kwargs"], Mapping):
        raise ValueError(f"record['kwargs'] must be a dict, got {type(record['kwargs']).__name__}")


def build_model(record: Mapping[str, Any]) -> nn.Module:
    """Rebuild the frozen network of a record (fresh weights), e.g. from :func:`load_record`."""
    _check_record(record)
    space = get_space(record["space"], **record["kwargs"])
    sample = validate_sample(space, record["sample"])
    model = space.freeze(sample)
    _logger.debug("built %s model from record", record["space"])
    return model


def save_record(record: Mapping[str, Any], path: Union[str, os.PathLike]) -> Path:
    """Write a record as JSON atomically (a temporary file renamed into place)."""
    _check_record(record)
    path = Path(path)
    text = json.dumps(_to_json(record), indent=2, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_record(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Read a record written by :func:`save_record` (checked for the record keys and format)."""
    with open(path) as handle:
        record = json.load(handle)
    _check_record(record)
    return record
