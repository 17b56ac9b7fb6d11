"""A read-only name -> object mapping with one way in: ``register``.

Training recipes (``RECIPES``), AutoAttack modes (``MODES``) and metrics (``METRICS``) are
each a :class:`Registry` of small objects, as Optuna composes NSGA-II from crossover objects
(``optuna/samplers/nsgaii/_crossovers/``): code that needs a recipe's loss or an attack's
cost asks the object, never a list of names. A registry reads like the tuple of names it
replaced (``name in RECIPES``, ``", ".join(RECIPES)``, ``list(RECIPES)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from robustnas.plugins.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """Objects of type ``base`` by their ``name`` attribute, in registration order.

    ``kind`` and ``plural`` word the errors: ``unknown recipe 'x'; valid recipes: ...``.
    """

    def __init__(self, kind: str, plural: str, base: type[T], items: Iterable[T] = ()) -> None:
        self.kind, self.plural, self.base = kind, plural, base
        self._items: dict[str, T] = {}
        for item in items:
            self.register(item)

    def register(self, item: T) -> T:
        """Add ``item`` under ``item.name``; a name already taken raises :class:`ConfigError`."""
        if not isinstance(item, self.base):
            raise ConfigError(f"a {self.kind} must be a {self.base.__name__} instance, got {item!r}")
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} needs a non-empty string name, got {name!r} on {item!r}")
        if name in self._items:
            raise ConfigError(f"{self.kind} {name!r} is already registered ({self._items[name]!r}); "
                              f"registered {self.plural}: {', '.join(self)}")
        self._items[name] = item
        return item

    def lookup(self, name: str) -> T:
        """The object registered as ``name``; :class:`ConfigError` naming the valid ones otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise ConfigError(f"unknown {self.kind} {name!r}; valid {self.plural}: {', '.join(self)}") from None

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:  # an unhashable value (a list from YAML) names nothing, as with a tuple
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.plural}: {', '.join(self)})"
