"""User-facing error types.

Anything derived from :class:`CapacityForecasterError` is a problem the user can act on: the CLI and the
handlers print its message as one line (:func:`single_line`: a quoted value's line breaks become spaces), with
no traceback. Credentials in URLs that the message quotes are redacted (:func:`capacity_forecaster.redact.redact`)
when the error is made and again when it is rendered.
"""

from __future__ import annotations

from typing import Any

from capacity_forecaster.redact import redact


def single_line(text: str) -> str:
    """``text`` on one line: every run of whitespace, line breaks included, becomes one space."""
    return " ".join(text.split())


class CapacityForecasterError(Exception):
    """Base class for errors that are reported to the user as one line."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        """The message, redacted, on one line (a value it quotes may hold line breaks)."""
        return single_line(redact(super().__str__()))


class ConfigError(CapacityForecasterError):
    """A setting is missing, malformed or out of range."""


class SchemaError(CapacityForecasterError):
    """A DataFrame does not match the table schema it is written as."""


class InputError(CapacityForecasterError):
    """An input file, event or argument cannot be used as given."""
