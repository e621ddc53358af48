"""Reading the JSON files a SageMaker container contract puts under /opt/ml (training and processing jobs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from capacity_forecaster.errors import ConfigError


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a :class:`ConfigError` naming ``what`` when it is missing, not JSON or not an
    object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} at {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} at {path} must be a JSON object")
    return data
