"""What the benchmark needs of a space: its cells' keys and one sample per key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol as TypingProtocol

from robustnas.plugins.errors import ConfigError

__all__ = ["SpaceAdapter", "space_adapter"]


class SpaceAdapter(TypingProtocol):
    """The cells of a tabulated space: ``keys()`` (one per isomorphism class), the canonical
    ``key_of(sample)`` and the representative ``sample_of(key)``."""

    def keys(self) -> list[str]: ...

    def key_of(self, sample: Mapping[str, Any]) -> str: ...

    def sample_of(self, key: str) -> dict[str, Any]: ...


class _Robust201:
    def __init__(self) -> None:
        from robustnas.search_spaces import robust201

        self._mod = robust201
        self._samples = {robust201.canonical_key(s): s for s in robust201.unique_samples()}

    def keys(self) -> list[str]:
        return sorted(self._samples)

    def key_of(self, sample: Mapping[str, Any]) -> str:
        try:
            return self._mod.canonical_key(sample)
        except ValueError as err:
            raise ConfigError(str(err)) from err

    def sample_of(self, key: str) -> dict[str, Any]:
        try:
            return dict(self._samples[key])
        except KeyError:
            raise ConfigError(f"{key!r} is not a cell key of space 'robust201'") from None


_ADAPTERS = {"robust201": _Robust201}
_CACHE: dict[str, SpaceAdapter] = {}


def space_adapter(space: str) -> SpaceAdapter:
    """The benchmark adapter of a registered space name (``robust201``)."""
    if space not in _ADAPTERS:
        raise ConfigError(f"no benchmark adapter for space {space!r}; tabulated spaces: {sorted(_ADAPTERS)}")
    if space not in _CACHE:
        _CACHE[space] = _ADAPTERS[space]()
    return _CACHE[space]
