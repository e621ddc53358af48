"""Dashboard CSV exports, one column per series: Grafana's "Inspect > Data > Download CSV" and Datadog's
"Download as CSV"; also the older Grafana "series as rows" CSV (``Series;Time;Value``).

- One column per series: a time column (``Time``, ``timestamp``, ``Date``...) and one column per series named by
  its label (Grafana's display name: the legend, ``web-01``, or a Prometheus selector, ``{instance="web-01:9100",
  job="node"}``; Datadog's query, ``avg:system.disk.in_use{host:web-01}``), read by :func:`labels.parse_label`
  (``--label-format`` overrides). A label that is only a host gives no metric: ``ingest --metric`` names it.
  Empty cells (a series without a point at that time) are skipped; a trailing ``%`` (Grafana's "formatted data")
  is dropped.
- Series as rows: ``Series``, ``Time``, ``Value`` columns, the series label read the same way.

Grafana writes the times in the browser's time zone without an offset unless the dashboard's time zone is UTC:
they are taken as UTC (export with the dashboard set to UTC, or epoch times).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from capacity_forecaster.formats import labels
from capacity_forecaster.formats.frame import ReadContext, attributes, raw_frame, time_column

KEY_NAMES = frozenset(
    {"server_id", "metric", "value", "server", "host", "hostname", "instance", "instance_id", "instanceid"}
)


def is_series_rows(frame: pd.DataFrame) -> bool:
    names = {str(c).strip().lower() for c in frame.columns}
    return {"series", "time", "value"} <= names


def read_series_rows(name: str, frame: pd.DataFrame, ctx: ReadContext) -> pd.DataFrame:
    columns = {str(c).strip().lower(): c for c in frame.columns}
    rows: list[tuple[Any, ...]] = []
    parsed: dict[str, tuple[str, str, str]] = {}
    for label, stamp, value in zip(
        frame[columns["series"]], frame[columns["time"]], frame[columns["value"]], strict=True
    ):
        if label not in parsed:
            server, metric, extra = labels.parse_label(
                str(label), ctx.aliases, pattern=ctx.label_pattern, single="server"
            )
            parsed[label] = (server, metric, attributes({"series": label, **extra}))
        server, metric, attrs = parsed[label]
        rows.append((stamp, server, metric, value, attrs))
    return raw_frame(rows, "grafana-series-rows")


def is_series_columns(frame: pd.DataFrame) -> bool:
    """A time column and other columns, none of them a key column of the long or wide format."""
    time = time_column(frame)
    others = [c for c in frame.columns if c != time]
    return time is not None and bool(others) and not ({str(c).strip().lower() for c in others} & KEY_NAMES)


def read_series_columns(name: str, frame: pd.DataFrame, ctx: ReadContext) -> pd.DataFrame:
    time = time_column(frame)
    rows: list[tuple[Any, ...]] = []
    shape = "grafana-csv"
    for column in frame.columns:
        if column == time:
            continue
        label = str(column)
        if labels.DATADOG_QUERY.match(label) and "{" in label and "=" not in label:
            shape = "datadog-csv"
        server, metric, extra = labels.parse_label(label, ctx.aliases, pattern=ctx.label_pattern, single="server")
        attrs = attributes({"series": label, **extra})
        for stamp, value in zip(frame[time], frame[column], strict=True):
            cell = str(value).strip()
            if cell:  # Grafana's "formatted data" writes the unit: 41.5%
                rows.append(
                    (stamp, server, metric, cell.removesuffix("%").rstrip() if cell.endswith("%") else value, attrs)
                )
    return raw_frame(rows, shape)
