"""JSON architecture records: ``{"space", "kwargs", "sample", "format"}`` and back to a network.

A record names the registered space, its constructor keyword arguments and an
NNI sample (``{label: choice}``), so :func:`build_model` rebuilds the exact
frozen network anywhere. Records are plain JSON, never pickles. In code a record is
an :class:`ArchitectureRecord` (``to_dict``/``from_dict``) or its plain dict; the
functions here take either, and the JSON they write is the dict's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from numpy.random import RandomState
from torch import nn

from robustnas.plugins._io import to_json, write_text_atomic
from robustnas.plugins.errors import DataError

from ._registry import get_space, space_name_of

__all__ = [
    "RECORD_FORMAT", "ArchitectureRecord", "build_model", "export_record", "load_record", "random_sample",
    "sample_key", "save_record", "space_kwargs_of", "validate_sample",
]

_logger = logging.getLogger(__name__)

RECORD_FORMAT = 1
_RECORD_KEYS = ("space", "kwargs", "sample")


def sample_key(sample: Mapping[str, Any]) -> str:
    """The canonical key of an architecture: the first 16 hex digits of the SHA-1 of its sample as
    compact JSON with sorted labels (choice lists as JSON lists), so equal samples share it in any
    process and label order. NNI metrics and run folders carry it as ``arch_key``."""
    text = json.dumps(to_json(dict(sample)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def space_kwargs_of(space: nn.Module) -> dict[str, Any]:
    """Constructor keyword arguments of a space as JSON: ``space.space_kwargs`` or NNI's traced ``args``."""
    kwargs = getattr(space, "space_kwargs", None)
    if kwargs is None:
        kwargs = getattr(space, "args", None)
    if kwargs is None:
        raise ValueError(f"{type(space).__name__} records neither 'space_kwargs' nor NNI's traced 'args'")
    try:
        return to_json(kwargs)
    except TypeError as exc:
        raise ValueError(f"constructor arguments of {type(space).__name__} are not JSON-serialisable: {exc}") from exc


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
    try:
        clean = to_json(dict(sample))
    except TypeError as exc:
        raise ValueError(f"a sample's choices must be JSON values (strings, numbers, lists): {exc}") from exc
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
    return to_json({label: mutable.random(random_state=state) for label, mutable in space.simplify().items()})


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
        raise DataError(f"a record must be a dict with keys {list(_RECORD_KEYS)}, got {type(record).__name__}")
    missing = [key for key in _RECORD_KEYS if key not in record]
    if missing:
        raise DataError(f"record lacks key(s) {missing}; a record has {list(_RECORD_KEYS)} and 'format'")
    fmt = record.get("format", RECORD_FORMAT)
    if fmt != RECORD_FORMAT:
        raise DataError(f"record format {fmt!r} is not supported; supported: [{RECORD_FORMAT}]")
    if not isinstance(record["kwargs"], Mapping):
        raise DataError(f"record['kwargs'] must be a dict, got {type(record['kwargs']).__name__}")


@dataclass(frozen=True)
class ArchitectureRecord:
    """One architecture: a registered space's name, its constructor keyword arguments and an
    NNI sample ``{label: choice}``, in plain JSON types.

    ``to_dict()`` is :func:`export_record`'s dict, key for key, so the JSON on disk is the
    same whichever form wrote it. Build one with :meth:`from_space` (validated against the
    space) or :meth:`from_dict` (e.g. from :func:`load_record`); :meth:`build` rebuilds the
    frozen network.
    """

    space: str
    kwargs: dict[str, Any]
    sample: dict[str, Any]
    format: int = RECORD_FORMAT

    @classmethod
    def from_space(cls, space: nn.Module, sample: Mapping[str, Any]) -> "ArchitectureRecord":
        """The record of ``sample`` in ``space`` (checked with :func:`validate_sample`)."""
        return cls.from_dict(export_record(space, sample))

    @classmethod
    def from_dict(cls, data: Any) -> "ArchitectureRecord":
        """The inverse of :meth:`to_dict`; a record without ``format`` is of format 1.

        Raises :class:`~robustnas.plugins.errors.DataError` for a missing, unknown or
        ill-typed key (naming it and the record's keys) or an unsupported format.
        """
        _check_record(data)
        unknown = [key for key in data if key not in (*_RECORD_KEYS, "format")]
        if unknown:
            raise DataError(f"record has unknown key(s) {unknown}; a record has {list(_RECORD_KEYS)} and 'format'")
        if not isinstance(data["space"], str):
            raise DataError(f"record['space'] must be the name of a registered space, got {data['space']!r}")
        if not isinstance(data["sample"], Mapping):
            raise DataError(f"record['sample'] must be a dict {{label: choice}}, got {type(data['sample']).__name__}")
        return cls(space=data["space"], kwargs=to_json(data["kwargs"]), sample=to_json(data["sample"]),
                   format=data.get("format", RECORD_FORMAT))

    def to_dict(self) -> dict[str, Any]:
        """``{"space", "kwargs", "sample", "format"}`` as JSON types (a copy)."""
        return {"space": self.space, "kwargs": to_json(self.kwargs), "sample": to_json(self.sample),
                "format": self.format}

    def build(self) -> nn.Module:
        """The frozen network of this record (fresh weights)."""
        space = get_space(self.space, **self.kwargs)
        model = space.freeze(validate_sample(space, self.sample))
        _logger.debug("built %s model from record", self.space)
        return model


def _as_record(record: ArchitectureRecord | Mapping[str, Any]) -> ArchitectureRecord:
    """``record`` as an :class:`ArchitectureRecord`; a dict may carry keys beyond the record's."""
    if isinstance(record, ArchitectureRecord):
        return record
    if isinstance(record, Mapping):
        record = {key: record[key] for key in (*_RECORD_KEYS, "format") if key in record}
    return ArchitectureRecord.from_dict(record)


def build_model(record: ArchitectureRecord | Mapping[str, Any]) -> nn.Module:
    """Rebuild the frozen network of a record (fresh weights), e.g. from :func:`load_record`."""
    return _as_record(record).build()


def save_record(record: ArchitectureRecord | Mapping[str, Any], path: Union[str, os.PathLike]) -> Path:
    """Write a record (either form) as JSON atomically (a temporary file renamed into place)."""
    if isinstance(record, ArchitectureRecord):
        record = record.to_dict()
    _check_record(record)
    path = Path(path)
    text = json.dumps(to_json(record), indent=2, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text + "\n")
    return path


def load_record(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Read a record written by :func:`save_record` (checked for the record keys and format), as
    the dict on disk; ``ArchitectureRecord.from_dict(load_record(path))`` gives the typed form."""
    with open(path) as handle:
        record = json.load(handle)
    _check_record(record)
    return record
