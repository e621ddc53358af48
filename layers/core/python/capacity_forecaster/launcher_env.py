"""What the zip launchers read from their environment: required variables, bounded integers, the lake root, an
ml.* instance type and a JSON object of strings (standard library only: the launchers' layer).

``lambdas/launch_training`` and ``lambdas/launch_processing`` build their configuration with these; each keeps its
own event checks. Every failure is a :class:`ConfigError` naming the variable, on one line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from capacity_forecaster.errors import ConfigError, single_line
from capacity_forecaster.storage.errors import InvalidKeyError
from capacity_forecaster.storage.keys import parse_s3_uri

LAKE_VAR: Final = "CF_LAKE"
JOB_NAME: Final = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
"""SageMaker's pattern of a training or processing job name."""
_INSTANCE_TYPE: Final = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")


def require(env: Mapping[str, str], names: Mapping[str, str]) -> dict[str, str]:
    """Field -> value of each variable in ``names`` (field -> variable); ConfigError naming every one that is
    missing or empty."""
    missing = [var for var in names.values() if not env.get(var)]
    if missing:
        raise ConfigError(f"the launcher needs {', '.join(missing)} in its environment")
    return {field: env[var] for field, var in names.items()}


def bounded_int(env: Mapping[str, str], var: str, low: int, high: int | None) -> int | None:
    """The integer in ``var`` between ``low`` and ``high`` (no upper bound: None); None when it is not set."""
    if var not in env:
        return None
    text = env[var].strip()
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        span = f"between {low} and {high}" if high is not None else f"of at least {low}"
        raise ConfigError(f"{var}={env[var]!r} must be an integer {span}")
    return int(text)


def bounded_ints(env: Mapping[str, str], limits: Mapping[str, tuple[str, int, int | None]]) -> dict[str, int]:
    """Field -> integer for each ``field: (variable, low, high)`` whose variable is set."""
    found = {name: bounded_int(env, var, low, high) for name, (var, low, high) in limits.items()}
    return {name: value for name, value in found.items() if value is not None}


def lake_bucket(lake_uri: str) -> str:
    """The bucket of ``CF_LAKE``, which must be the bucket's root (``s3://bucket``)."""
    try:
        bucket, prefix = parse_s3_uri(lake_uri)
    except InvalidKeyError as exc:
        raise ConfigError(f"{LAKE_VAR}: {exc}") from None
    if prefix:
        raise ConfigError(f"{LAKE_VAR} must be the lake bucket's root (s3://{bucket}), not {lake_uri!r}")
    return bucket


def instance_type(var: str, value: str) -> str:
    """``value`` when it is an ml.* instance type."""
    if not _INSTANCE_TYPE.match(value):
        raise ConfigError(f"{var}={value!r} is not an ml.* instance type")
    return value


def string_object(var: str, text: str) -> dict[str, str]:
    """The JSON object of strings the stack wrote into ``var``."""
    try:
        values: Any = json.loads(text)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        raise ConfigError(f"{var} must be a JSON object of strings")
    return values


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (as lambdas/common/runtime.shown, which a zip cannot import)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(reason: str, limit: int = 300) -> str:
    """The reason with every run of whitespace (line breaks included) as one space, cut to ``limit`` characters."""
    reason = single_line(reason)
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
