"""Optuna storages by URL and studies with directions filled in from metric names."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from ._objective import objective_directions
from robustnas.plugins.errors import ConfigError, DataError

_logger = logging.getLogger(__name__)

STORAGE_FORMS = (
    "None (in memory)",
    "sqlite:///path/to/file.db",
    "journal:///path/to/file.log (or a plain path ending in .log / .jsonl)",
    "postgresql://user:password@host/db, mysql+pymysql://... (any SQLAlchemy URL)",
    "redis://host:port (journal on Redis)",
)
_JOURNAL_SUFFIXES = (".log", ".jsonl")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_DRIVER_HINTS = {"postgresql": "psycopg[binary] (pip install 'robustnas[postgres]'; with SQLAlchemy < 2.1 write "
                               "postgresql+psycopg://..., or install psycopg2-binary)",
                 "mysql": "PyMySQL (mysql+pymysql://...)", "redis": "redis"}


def _cannot_open(url: str, exc: BaseException) -> ConfigError:
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    hint = f"; install {_DRIVER_HINTS[scheme]} for this backend" if (
        isinstance(exc, ImportError) and scheme in _DRIVER_HINTS) else ""
    return ConfigError(f"cannot open storage {url!r}: {type(exc).__name__}: {exc}{hint}")


def open_storage(url: str | os.PathLike[str] | BaseStorage | None) -> BaseStorage:
    """Open an Optuna storage from a URL or path.

    ``None`` -> in memory; ``journal:///abs/path.log`` or a plain path ending in ``.log`` /
    ``.jsonl`` -> ``JournalStorage(JournalFileBackend(path))`` (safe for several processes on
    one file system, NFS included); a plain path ending in ``.db`` / ``.sqlite`` -> SQLite;
    ``redis://`` -> journal on Redis; any other ``scheme://`` -> ``RDBStorage`` (SQLite,
    PostgreSQL, MySQL through SQLAlchemy). A storage object is returned as it is.
    A URL that cannot be opened raises ``ValueError`` naming it.
    """
    if url is None:
        return InMemoryStorage()
    if isinstance(url, BaseStorage):
        return url
    text = os.fspath(url)
    try:
        if text.startswith("journal://"):
            path = text[len("journal://"):]
            if not path:
                raise ConfigError("journal URL has no file path")
            return JournalStorage(JournalFileBackend(path))
        if text.startswith("redis://") or text.startswith("rediss://"):
            return JournalStorage(JournalRedisBackend(text))
        if "://" not in text:
            if text.endswith(_JOURNAL_SUFFIXES):
                return JournalStorage(JournalFileBackend(text))
            if text.endswith(_SQLITE_SUFFIXES):
                return RDBStorage(f"sqlite:///{os.path.abspath(text)}")
            raise ConfigError("not a URL and not a .log/.jsonl/.db path")
        return RDBStorage(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"Optuna journal {text!r} is corrupt (a line is not JSON: {exc}); "
                        "move the file away to start afresh") from exc
    except ValueError as exc:
        if "Invalid log format" in str(exc):
            raise DataError(f"Optuna journal {text!r} is corrupt ({exc}: a line is cut short); "
                            "move the file away to start afresh") from exc
        raise ConfigError(
            f"cannot open storage {text!r}: {exc}; valid forms: {'; '.join(STORAGE_FORMS)}"
        ) from exc
    except Exception as exc:  # driver missing, file system, connection refused, bad dialect ...
        raise _cannot_open(text, exc) from exc


def storage_url(storage: BaseStorage | str | None) -> str | None:
    """A URL another process can pass to :func:`open_storage`, or ``None`` for in-memory."""
    if storage is None or isinstance(storage, str):
        return storage
    if isinstance(storage, JournalStorage) and isinstance(storage._backend, JournalFileBackend):
        return "journal://" + os.path.abspath(storage._backend._file_path)
    if isinstance(storage, RDBStorage):
        return storage.url
    return None


def create_study(
    objectives: Sequence[str] = ("clean_acc", "robust_acc", "params"),
    storage: str | BaseStorage | None = None,
    study_name: str | None = None,
    sampler: str | optuna.samplers.BaseSampler = "nsga2",
    load_if_exists: bool = True,
    seed: int | None = None,
    **sampler_kwargs: Any,
) -> optuna.Study:
    """Create (or join) a multi-objective study over metric names of the shared evaluator.

    Directions come from the metric names (accuracies maximised, size and latency
    minimised), and the names are stored with ``study.set_metric_names`` so plots and
    optuna-dashboard label the axes. Joining an existing study whose directions or metric
    names differ raises ``ValueError`` naming both.
    """
    from ._samplers import make_sampler

    objectives = list(objectives)
    directions = objective_directions(objectives)
    backend = open_storage(storage)
    if isinstance(sampler, str):
        sampler = make_sampler(sampler, seed=seed, **sampler_kwargs)
    elif sampler_kwargs:
        raise TypeError(f"sampler keyword arguments {sorted(sampler_kwargs)} need a sampler name")

    if study_name is not None and load_if_exists:
        _check_compatible(backend, study_name, objectives, directions)

    study = optuna.create_study(
        storage=backend, sampler=sampler, study_name=study_name,
        directions=directions, load_if_exists=load_if_exists,
    )
    if study.metric_names is None:
        with warnings.catch_warnings():  # set_metric_names is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objectives)
    _logger.info("study %r: objectives %s, directions %s, sampler %s",
                 study.study_name, objectives, directions, type(sampler).__name__)
    return study


def _check_compatible(storage: BaseStorage, name: str, objectives: list[str], directions: list[str]) -> None:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return
    have = [d.name.lower() for d in storage.get_study_directions(study_id)]
    names = storage.get_study_system_attrs(study_id).get("study:metric_names")
    if have != directions or (names is not None and list(names) != objectives):
        raise ConfigError(
            f"study {name!r} already exists with objectives {names or '(unnamed)'} and directions "
            f"{have}; asked for objectives {objectives} with directions {directions}. "
            "Use another study name or the same objectives."
        )
