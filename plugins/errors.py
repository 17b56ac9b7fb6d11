"""The project's exception types for bad input.

A :class:`RobustNASError` says that what the user gave (a name, a value, a file) cannot
be used, and names it; the command line catches only these and prints one clean line.
Anything else escaping the library is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "MissingFileError", "OutputError", "RobustNASError"]


class RobustNASError(Exception):
    """Base of every error that reports bad input rather than a bug."""


class ConfigError(RobustNASError, ValueError):
    """A configuration value, a name or an argument is invalid (names it and the valid ones)."""


class DataError(RobustNASError, ValueError):
    """A data file or a stored table is missing, truncated or holds unusable values (names the file)."""


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder the user named does not exist (names it and how to get it)."""


class OutputError(ConfigError, PermissionError):
    """The output folder cannot be created or written to (names it)."""
