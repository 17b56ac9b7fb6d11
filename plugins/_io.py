"""Files and JSON the plugins write: one way to replace a file so that a crash never leaves half of
it, and one way to turn values into plain JSON types."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["json_default", "to_json", "write_text_atomic"]


def json_default(obj: Any) -> Any:
    """The ``default=`` hook of :func:`json.dumps` for the values our records hold beside plain JSON:
    dataclasses become dicts, NumPy / torch scalars numbers (arrays lists), paths strings.

    Anything else raises ``TypeError`` naming its type, as :func:`json.dumps` itself does.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "item"):
        try:
            return obj.item()
        except (ValueError, RuntimeError):  # an array of several values: its list below
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def to_json(value: Any) -> Any:
    """A copy of ``value`` in plain JSON types, as :func:`json.loads` would read it back: tuples
    become lists, mapping keys strings, and the values :func:`json_default` knows their JSON form."""
    return json.loads(json.dumps(value, default=json_default))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename.

    The file gets the ordinary permissions of a new file (0644 under a 022 umask), not
    ``mkstemp``'s 0600, and a crash leaves either the old file or the new one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
