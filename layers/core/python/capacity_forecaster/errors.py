"""User-facing error types.

Anything derived from :class:`CapacityForecasterError` is a problem the user can act on: the CLI and the
handlers print its message as one line, with no traceback.
"""

from __future__ import annotations


class CapacityForecasterError(Exception):
    """Base class for errors that are reported to the user as one line."""


class ConfigError(CapacityForecasterError):
    """A setting is missing, malformed or out of range."""


class SchemaError(CapacityForecasterError):
    """A DataFrame does not match the table schema it is written as."""


class InputError(CapacityForecasterError):
    """An input file, event or argument cannot be used as given."""
