"""One error root for layerlake; subclasses also inherit the matching builtin.

Messages name the thing, the expected and the actual value, and what to do.
The CLI maps these to one-line messages and exit codes (1 = runtime error,
2 = bad input / usage).
"""

from __future__ import annotations


class LayerlakeError(Exception):
    """Root of every error layerlake raises on purpose."""

    exit_code = 1


class SpecError(LayerlakeError, ValueError):
    """A request, parameter or input is invalid (bad input: exit code 2)."""

    exit_code = 2


class NotFoundError(LayerlakeError, FileNotFoundError):
    """A named thing (file, dataset, model, layer, extraction) does not exist."""

    exit_code = 2


class FormatVersionError(LayerlakeError):
    """The lake was written by a newer, incompatible layerlake."""

    exit_code = 2


class IntegrityError(LayerlakeError):
    """Stored data failed a checksum or manifest check."""


class LakeIOError(LayerlakeError, OSError):
    """Storage failed while reading stored data (permission denied, EIO, network); the data may be intact."""


class OverflowToInfError(LayerlakeError, OverflowError):
    """A cast to the storage dtype would turn finite values into inf."""


class ReadOnlyError(LayerlakeError, PermissionError):
    """A write was attempted on a lake opened read-only."""

    exit_code = 2


class ModelLoadError(LayerlakeError):
    """A model or tokenizer could not be loaded or fingerprinted."""

    exit_code = 2


class QueryTimeoutError(LayerlakeError, TimeoutError):
    """A SQL query ran past its time limit and was stopped."""
