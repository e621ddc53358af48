"""Per-file read options (``ingest --date-format --label-format --server --metric --fraction``).

They change rows, so the ETL cannot know them later: ``ingest`` applies them and stores the result in the long
format (:func:`normalised_csv`), which the ETL reads with no options. A file ingested without options is copied as
it is and read by the ETL exactly as ``ingest`` read it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields

import pandas as pd

from capacity_forecaster.errors import InputError
from capacity_forecaster.formats import labels


@dataclass(frozen=True)
class ReadOptions:
    """``date_format``: a strptime pattern for the timestamps (``%d.%m.%Y %H:%M``; no ``%z``: UTC);
    ``label_format``: a series label pattern (:func:`labels.compile_label_format`); ``server``: the server id of
    rows without one; ``metric``: the metric (or a PromQL expression naming a node_exporter metric) of rows without
    one; ``fraction``: values are 0-1 fractions, multiplied by 100."""

    date_format: str | None = None
    label_format: str | None = None
    server: str | None = None
    metric: str | None = None
    fraction: bool = False

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        """``date_format=...; fraction=True``: what was applied, for the object's metadata."""
        return "; ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name))


def apply_options(frame: pd.DataFrame, options: ReadOptions, aliases: Mapping[str, str]) -> pd.DataFrame:
    """The raw frame with ``options`` applied (see :class:`ReadOptions`); rows they cannot fix are left as read."""
    out = frame.copy()
    if options.server:
        server = out["server_id"].astype("string").fillna("").str.strip()
        out["server_id"] = out["server_id"].where(server != "", options.server).astype(object)
    if options.metric:
        metric = out["metric"].astype("string").fillna("").str.strip()
        out["metric"] = out["metric"].where(metric != "", labels.metric_from_name(options.metric, aliases))
    if options.date_format:
        out["timestamp"] = _dates(out["timestamp"], options.date_format)
    if options.fraction:
        numbers = pd.to_numeric(out["value"], errors="coerce")
        scaled = (numbers * 100).round(10)
        out["value"] = out["value"].astype(object).where(numbers.isna(), scaled.map(lambda v: f"{v:g}"))
    out.attrs = dict(frame.attrs)
    return out


def _dates(stamps: pd.Series, fmt: str) -> pd.Series:
    if "%" not in fmt:
        raise InputError(f"--date-format {fmt!r} is not a strptime pattern (e.g. '%d.%m.%Y %H:%M')")
    text = stamps.astype("string").fillna("").str.strip()
    try:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    except ValueError as exc:
        raise InputError(f"--date-format {fmt!r}: {exc}") from None
    iso = parsed.map(lambda t: t.isoformat() if not pd.isna(t) else None)
    return stamps.astype(object).where(iso.isna(), iso)


def normalised_csv(frame: pd.DataFrame) -> bytes:
    """The raw frame as a long CSV (``timestamp, server_id, metric, value`` then one column per attribute)."""
    out = frame[["timestamp", "server_id", "metric", "value"]].copy()
    attrs = [json.loads(a) if isinstance(a, str) and a else {} for a in frame["attributes"]]
    keys = sorted({k for a in attrs for k in a} - set(out.columns))
    for key in keys:
        out[key] = [a.get(key, "") for a in attrs]
    buffer = io.StringIO()
    out.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8")
