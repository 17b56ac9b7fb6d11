"""Renamed arguments and settings: the old name keeps working, with a ``DeprecationWarning``.

A rename is declared once, as a :class:`Renamed` beside the arguments of its owner (a strategy,
:class:`~robustnas.plugins.evaluator.EvaluatorConfig`). Where a value means something else under
the new name (TAM-NAS' ``eval_batches=0``, "every batch", is ``val_batches=None``), ``to_new``
translates it. :func:`upgrade` renames the keys of a settings mapping (a YAML file, a preset
merged with a user's options); :func:`first_spelling` spells settings with the old names again,
so that a fingerprint of settings does not depend on which name the user wrote (a run folder
started before a rename resumes after it). docs/internals.md, "Renamed arguments".
"""

from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

__all__ = ["Renamed", "first_spelling", "show_deprecations", "upgrade", "warn"]

#: How every message of this module ends (the command lines show the warnings that match it).
_PATTERN = r".* is deprecated, use .*\(the old \w+ still works for now\)$"


def _same(value: Any) -> Any:
    return value


@dataclasses.dataclass(frozen=True)
class Renamed:
    """``old`` is now called ``new``; ``to_new`` turns an old value into the new name's value and
    ``to_old`` back (both unchanged by default)."""

    old: str
    new: str
    to_new: Callable[[Any], Any] = _same
    to_old: Callable[[Any], Any] = _same

    def message(self, owner: str) -> str:
        return f"{owner}: {self.old!r} is deprecated, use {self.new!r} (the old name still works for now)"

    def value(self, old_value: Any, owner: str) -> Any:
        """Warn that ``old`` was given, and return its value translated to ``new``'s meaning."""
        warn(self.message(owner))
        return self.to_new(old_value)


def warn(message: str) -> None:
    """A ``DeprecationWarning`` attributed to the first caller outside robustnas: the user's line,
    which Python's default filters show when it is a script's (``__main__``)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("robustnas."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


def show_deprecations() -> None:
    """Show these warnings as one line on stderr (``robustnas: warning: ...``), whoever triggered
    them: for the command lines, whose users wrote a flag or a settings file, not the code that
    reads it. Other warnings keep Python's filters and format. Call it inside
    ``warnings.catch_warnings()`` to have both undone on leaving."""
    warnings.filterwarnings("default", message=_PATTERN, category=DeprecationWarning)
    shown = warnings.showwarning

    def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: TextIO | None = None, line: str | None = None) -> None:
        if issubclass(category, DeprecationWarning) and re.match(_PATTERN, str(message)):
            (file or sys.stderr).write(f"robustnas: warning: {message}\n")
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def upgrade(settings: Mapping[str, Any], renames: Iterable[Renamed], owner: str) -> dict[str, Any]:
    """``settings`` with each old key replaced by its new one (value translated, with the warning).

    Given both names, the old one wins: every setting the project ships (presets, defaults) is
    spelled with the new name, so an old name comes from the user's own, older file."""
    out = dict(settings)
    for rename in renames:
        if rename.old in out:
            out[rename.new] = rename.value(out.pop(rename.old), owner)
    return out


def first_spelling(settings: Mapping[str, Any], renames: Iterable[Renamed]) -> dict[str, Any]:
    """``settings`` spelled with the old names (values translated back), without a warning: the
    one spelling in which two equal settings compare and hash equal, whichever name they used."""
    out = dict(settings)
    for rename in renames:
        if rename.new in out:
            value = rename.to_old(out.pop(rename.new))
            out.setdefault(rename.old, value)  # given both, the old one wins, as in upgrade
    return out
