"""What ``ingest`` says about a file the ETL could read but would get nothing from, and how to fix it.

Pure functions over the ETL's own results (:func:`etl.validate_samples`): the rows rejected with their reasons,
the valid rows, and the shape that read the file. Each refusal is one line: the top reasons with counts and an
example value, then the fix (an ``ingest`` option or a setting).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import pandas as pd

from capacity_forecaster.schema import METRICS

TOP_REASONS: Final[int] = 3
DATE_FORMATS: Final[tuple[str, ...]] = (
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d-%m-%Y %H:%M:%S",
    "%d-%m-%Y %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y.%m.%d %H:%M:%S",
    "%d %b %Y %H:%M:%S",
    "%d %b %Y %H:%M",
    "%b %d, %Y %H:%M:%S",
    "%Y%m%d%H%M%S",
)
"""Common non-ISO timestamp spellings ``ingest`` recognises to suggest ``--date-format``."""
ALIASES_SETTING: Final[str] = (
    "the ingest.metric_aliases setting (config file: ingest: {metric_aliases: {NAME: cpu}}; "
    'or CF_INGEST_METRIC_ALIASES=\'{"NAME": "cpu"}\')'
)


def guess_date_formats(examples: list[str]) -> list[str]:
    """The :data:`DATE_FORMATS` that parse every example (at most two: day-first and month-first stay ambiguous
    until a day above 12 shows up)."""
    found = []
    for fmt in DATE_FORMATS:
        try:
            for text in examples:
                datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        found.append(fmt)
        if len(found) == 2:
            break
    return found


def no_rows_message(rejected: pd.DataFrame, shape: str, labels: list[str] | None = None) -> str:
    """``no row would survive the ETL: <top reasons>; fix: <fixes>`` (one line)."""
    counts = rejected["reason"].value_counts()
    total = len(rejected)
    parts, fixes = [], []
    for reason, count in counts.head(TOP_REASONS).items():
        rows = rejected[rejected["reason"] == reason]
        column = _COLUMN.get(str(reason), "value")
        example = next((v for v in rows[column] if str(v).strip()), "")
        parts.append(f"{count:,} of {total:,} rows {reason}" + (f" (e.g. {example!r})" if example else ""))
        fix = _fix(str(reason), rows, shape, labels or [])
        if fix:
            fixes.append(fix)
    message = "no row would survive the ETL: " + ", ".join(parts)
    return message + (f"; fix: {'; '.join(fixes)}" if fixes else "")


_COLUMN: Final[dict[str, str]] = {
    "missing_server_id": "metric",
    "invalid_server_id": "server_id",
    "unknown_metric": "metric",
    "unparseable_timestamp": "timestamp",
    "future_timestamp": "timestamp",
}


def _fix(reason: str, rows: pd.DataFrame, shape: str, labels: list[str]) -> str:
    if reason == "unparseable_timestamp":
        examples = [str(v) for v in rows["timestamp"].drop_duplicates().head(200) if str(v).strip()]
        guesses = guess_date_formats(examples)
        if guesses:
            return "--date-format " + " or ".join(f"'{g}'" for g in guesses)
        return "--date-format with the timestamps' strptime pattern (e.g. '%d.%m.%Y %H:%M')"
    if reason == "missing_server_id":
        if shape == "cloudwatch-get-metric-data":
            shown = ", ".join(repr(label) for label in labels[:3])
            return (
                f"the labels ({shown}) hold no server id: --label-format to read labels that do (e.g. "
                "'{server} {metric}' or '{metric}-{server}'; set Label to \"${PROP('Dim.InstanceId')} "
                "${PROP('MetricName')}\" in the query), or --server ID when the file holds one server"
            )
        if shape == "cloudwatch-get-metric-statistics":
            return "the output does not name the instance: --server ID, or an instance id (i-0abc...) in the file name"
        return "--server ID when the file holds one server, or --label-format for series labels that hold it"
    if reason == "unknown_metric":
        names = [str(v) for v in rows["metric"].drop_duplicates().head(5)]
        if not any(n.strip() for n in names):
            return f"the series have no metric name: --metric {'|'.join(METRICS)} (or a PromQL expression)"
        return f"map {', '.join(repr(n) for n in names)} with {ALIASES_SETTING}, or --metric when the file holds one"
    if reason == "invalid_server_id":
        return "server ids may hold letters, digits and . _ : - only (--label-format to cut the rest)"
    if reason == "future_timestamp":
        return "the timestamps are after now: check their time zone, or seconds against milliseconds"
    if reason == "non_numeric_value":
        if rows["value"].astype(str).str.fullmatch(r"[-+]?\d+,\d+").any():
            return "the values have decimal commas: export with ';' between fields (read with decimal commas)"
        return "export the values as numbers"
    if reason == "value_out_of_range":
        return "the values must be percent (0 to 100): export utilisation, not bytes or counts"
    return ""


def fraction_metrics(valid: pd.DataFrame) -> dict[str, float]:
    """Metrics whose every valid value lies in 0-1 (and not all 0): ``{metric: max}``. They look like fractions."""
    if valid.empty:
        return {}
    stats = valid.groupby("metric")["value"].agg(["min", "max"])
    looks = stats[(stats["min"] >= 0) & (stats["max"] <= 1) & (stats["max"] > 0)]
    return {str(m): float(v) for m, v in looks["max"].items()}


def fraction_message(metrics: dict[str, float]) -> str:
    shown = ", ".join(f"{m} (max {v:g})" for m, v in sorted(metrics.items()))
    return (
        f"every value of {shown} lies between 0 and 1: they look like fractions, not percent; fix: --fraction to "
        "multiply them by 100, or --percent if they really are under 1%"
    )
