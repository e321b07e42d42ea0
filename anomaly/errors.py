"""Exceptions the library raises.

They subclass ``ValueError``/``RuntimeError`` so callers that already catch the
built-ins keep working, while the CLI can tell a user error (print one line,
exit non-zero) from a bug (show the traceback).
"""

from __future__ import annotations


class AnomalyError(Exception):
    """Base class for every error the library raises on purpose."""


class DataError(AnomalyError, ValueError):
    """Input data is unusable: the message names the problem and the value."""


class ConfigError(AnomalyError, ValueError):
    """A configuration field is invalid: the message names the field and value."""


class NotFittedError(AnomalyError, RuntimeError):
    """A detector was asked to score before it was fitted."""


class ModelFileError(AnomalyError, ValueError):
    """A saved model folder is missing a file, damaged, or of an unknown format."""


#: Longest quoted value an error message carries: a 200 MB field must not be echoed whole.
EXCERPT_CHARS = 60


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, saying how long it was when cut."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"
