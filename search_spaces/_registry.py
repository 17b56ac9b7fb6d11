"""Search spaces by name: built-ins, lazy references and entry points.

Other packages add spaces through the entry-point group ``robustnas.search_spaces``
(``name = "package.module:SpaceClass"``) or at run time with :func:`register_space`.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any, Callable, Union

from nni.nas.nn.pytorch import ModelSpace

from ._arnas import ARNASSpace
from ._dsrna import DSRNASpace
from robustnas.plugins.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "SPACES", "available_spaces", "get_space", "get_space_class", "register_space"]

_logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "robustnas.search_spaces"

SpaceFactory = Callable[..., ModelSpace]

#: Registered spaces: name -> class/factory, or a lazy ``"module:attribute"`` reference.
SPACES: dict[str, Union[SpaceFactory, str]] = {
    "arnas": ARNASSpace,
    "dsrna": DSRNASpace,
    "tiny": "robustnas.search_spaces.tiny:TinyRobustSpace",
    "robust201": "robustnas.search_spaces.robust201:Robust201Space",
}

_entry_points_loaded = False


def _load_entry_points() -> None:
    """Add the spaces of the ``robustnas.search_spaces`` entry-point group (once, lazily)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in SPACES:
            _logger.debug("entry point %s=%s ignored: name already registered", ep.name, ep.value)
            continue
        SPACES[ep.name] = ep.value
        _logger.debug("registered space %r from entry point %s", ep.name, ep.value)


def available_spaces() -> list[str]:
    """Sorted names of every registered space (built-ins, run-time and entry points)."""
    _load_entry_points()
    return sorted(SPACES)


def register_space(name: str, cls_or_factory: Union[SpaceFactory, str], *, overwrite: bool = False) -> None:
    """Register a space class, a factory returning a ``ModelSpace``, or a ``"module:attr"`` reference."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"space name must be a non-empty string, got {name!r}")
    if isinstance(cls_or_factory, str):
        if ":" not in cls_or_factory:
            raise ValueError(f"a lazy space reference must read 'module:attribute', got {cls_or_factory!r}")
    elif not callable(cls_or_factory):
        raise TypeError(f"space {name!r} must be a class, a factory or a 'module:attr' string, got {cls_or_factory!r}")
    _load_entry_points()
    if name in SPACES and not overwrite and SPACES[name] is not cls_or_factory:
        raise ConfigError(f"space {name!r} is already registered ({SPACES[name]!r}); pass overwrite=True to replace it")
    SPACES[name] = cls_or_factory


def get_space_class(name: str) -> SpaceFactory:
    """The class (or factory) registered as ``name``, importing lazy references."""
    _load_entry_points()
    if name not in SPACES:
        raise ConfigError(f"unknown search space {name!r}; valid names: {sorted(SPACES)}")
    target = SPACES[name]
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"search space {name!r} is registered as {SPACES[name]!r} but cannot be loaded: {exc}") from exc
    return target


def get_space(name: str, **kwargs: Any) -> ModelSpace:
    """Build the registered space ``name`` with keyword arguments, e.g.
    ``get_space("arnas", input_shape=(1, 8, 8), num_classes=10, width=8, num_cells=4)``."""
    return get_space_class(name)(**kwargs)


def space_name_of(space: Any) -> str:
    """Registered name of a space instance: its ``space_name`` or a registry lookup of its class."""
    name = getattr(type(space), "space_name", "")
    if name:
        return name
    for key, target in SPACES.items():
        if target is type(space):
            return key
    raise ValueError(f"{type(space).__name__} has no 'space_name' and is not registered; use register_space()")
