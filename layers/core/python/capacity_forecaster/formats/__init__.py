"""The export shapes beyond the plain long and wide tables, each in its own module, registered here in one place.

:mod:`capacity_forecaster.raw_formats` decodes the bytes (gzip, UTF-8 or UTF-16 text, delimiter, xlsx) and asks
:func:`read_json` or :func:`read_table` for a shape; a table no shape claims is read as the long or wide format.
``ingest`` and the ETL both read through here, so a file is read one way only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

from capacity_forecaster.errors import InputError
from capacity_forecaster.formats import cloudwatch, dashboards, prometheus
from capacity_forecaster.formats.frame import ReadContext


@dataclass(frozen=True)
class Shape:
    name: str
    description: str
    matches: Callable[[Any], bool]
    read: Callable[[str, Any, ReadContext], pd.DataFrame]


JSON_SHAPES: Final[tuple[Shape, ...]] = (
    Shape(
        "cloudwatch-get-metric-data",
        "CloudWatch GetMetricData JSON (MetricDataResults)",
        cloudwatch.is_get_metric_data,
        cloudwatch.read_get_metric_data,
    ),
    Shape(
        "cloudwatch-get-metric-statistics",
        "aws cloudwatch get-metric-statistics JSON (Label, Datapoints)",
        cloudwatch.is_get_metric_statistics,
        cloudwatch.read_get_metric_statistics,
    ),
    Shape(
        "prometheus-query-range",
        "Prometheus /api/v1/query_range or /query JSON (data.result)",
        prometheus.is_query_response,
        prometheus.read_query_response,
    ),
)
TABLE_SHAPES: Final[tuple[Shape, ...]] = (
    Shape(
        "cloudwatch-console-csv",
        "CloudWatch console 'Download as CSV' (property rows Id, MetricName, InstanceId... under the labels)",
        cloudwatch.is_console_csv,
        cloudwatch.read_console_csv,
    ),
    Shape(
        "grafana-series-rows",
        "Grafana CSV with Series, Time, Value columns",
        dashboards.is_series_rows,
        dashboards.read_series_rows,
    ),
    Shape(
        "series-columns",
        "Grafana or Datadog CSV: a Time column and one column per series label",
        dashboards.is_series_columns,
        dashboards.read_series_columns,
    ),
)
PLAIN_SHAPES: Final[tuple[str, ...]] = (
    "long table (timestamp, server_id, metric, value)",
    "wide table (timestamp, server_id and one column per metric)",
)


def known_shapes() -> str:
    """The shapes ``ingest`` reads, for error messages."""
    return "; ".join([*PLAIN_SHAPES, *(s.description for s in TABLE_SHAPES + JSON_SHAPES)])


def read_json(name: str, doc: Any, ctx: ReadContext) -> pd.DataFrame:
    for shape in JSON_SHAPES:
        if shape.matches(doc):
            return shape.read(name, doc, ctx)
    raise InputError(f"{name}: JSON of an unknown shape; known JSON: {'; '.join(s.description for s in JSON_SHAPES)}")


def read_table(name: str, frame: pd.DataFrame, ctx: ReadContext) -> pd.DataFrame | None:
    """The raw frame of the first table shape that claims ``frame``; None for the long and wide formats."""
    for shape in TABLE_SHAPES:
        if shape.matches(frame):
            return shape.read(name, frame, ctx)
    return None
