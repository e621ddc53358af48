"""The raw frame every reader returns: ``timestamp, server_id, metric, value, attributes`` (values as read)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

COLUMNS: Final[tuple[str, ...]] = ("timestamp", "server_id", "metric", "value", "attributes")
TIME_COLUMNS: Final[tuple[str, ...]] = ("timestamp", "time", "ts", "datetime", "date_time", "date", "time (utc)")
"""Header names of the time column in the exports with one column per series (case-insensitive)."""


@dataclass(frozen=True)
class ReadContext:
    """What a shape reader gets besides the content: the alias table and the ``--label-format`` pattern."""

    aliases: Mapping[str, str]
    label_pattern: re.Pattern[str] | None = None


def text(value: Any) -> str:
    return "" if value is None else str(value)


def attributes(values: Mapping[str, Any]) -> str:
    """JSON text of a series' extra labels (sorted keys, values as text); "" when there are none."""
    return json.dumps({k: text(v) for k, v in values.items()}, sort_keys=True) if values else ""


def raw_frame(rows: Iterable[tuple[Any, ...]], shape: str) -> pd.DataFrame:
    """The rows as a raw frame, tagged with the shape that read them (``frame.attrs["shape"]``)."""
    out = pd.DataFrame(list(rows), columns=list(COLUMNS))
    for column in ("timestamp", "server_id", "metric", "value"):
        out[column] = out[column].map(text).astype(object)
    out.attrs["shape"] = shape
    return out


def time_column(frame: pd.DataFrame) -> str | None:
    """The first column named like a time column, or None."""
    return next((c for c in frame.columns if str(c).strip().lower() in TIME_COLUMNS), None)
