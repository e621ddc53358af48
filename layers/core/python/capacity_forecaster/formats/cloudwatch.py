"""CloudWatch exports: ``GetMetricData`` and ``get-metric-statistics`` JSON, and the console's "Download as CSV".

- ``GetMetricData`` (``aws cloudwatch get-metric-data``, one response or a list of pages): each
  ``MetricDataResults`` entry's ``Label`` is read by :func:`labels.parse_label` (``"<server_id> <metric>"``,
  ``"i-0abc CPUUtilization"``) or by ``--label-format``; its ``Id`` is kept as the ``cloudwatch_id`` attribute.
  The default label is the metric name alone: such points have no server id, and ``ingest`` says so.
- ``get-metric-statistics`` (``{"Label": "CPUUtilization", "Datapoints": [{"Timestamp", "Average", "Unit"}]}``,
  one response or a list): the metric is the ``Label``, the value the first statistic of ``Average``,
  ``Maximum``, ``Minimum``, ``Sum``, then ``ExtendedStatistics`` (``p95``...); the output never names the instance,
  so the server is an EC2 instance id in the file name (``i-0abc123_cpu.json``) or ``ingest --server``.
- The console's "Download as CSV" (Metrics, Graphed metrics, Actions): a header row of the series labels, then
  rows whose first cell names a property of the series (``Id``, ``Namespace``, ``MetricName``, ``InstanceId`` or
  another dimension, ``Statistic``, ``Period``, ``Unit``), then one row per timestamp. The server is the
  ``InstanceId`` row (else the first dimension row), the metric the ``MetricName`` row (else the label). Without
  property rows the header labels are read as labels (``i-0abc CPUUtilization``), as for any dashboard CSV.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import pandas as pd

from capacity_forecaster.errors import InputError
from capacity_forecaster.formats import labels
from capacity_forecaster.formats.frame import ReadContext, attributes, raw_frame, text

STATISTICS: Final[tuple[str, ...]] = ("Average", "Maximum", "Minimum", "Sum")
PROPERTY_ROWS: Final[frozenset[str]] = frozenset(
    {"id", "label", "namespace", "metricname", "metric", "statistic", "stat", "period", "unit", "region", "account"}
)
DIMENSION_PRIORITY: Final[tuple[str, ...]] = ("instanceid", "host", "hostname", "dbinstanceidentifier")


def is_get_metric_data(doc: Any) -> bool:
    responses = doc if isinstance(doc, list) else [doc]
    return bool(responses) and all(
        isinstance(r, dict) and isinstance(r.get("MetricDataResults"), list) for r in responses
    )


def read_get_metric_data(name: str, doc: Any, ctx: ReadContext) -> pd.DataFrame:
    responses = doc if isinstance(doc, list) else [doc]
    rows: list[tuple[Any, ...]] = []
    for response in responses:
        for result in response["MetricDataResults"]:
            if not isinstance(result, dict):
                raise InputError(f"{name}: a MetricDataResults entry is not an object")
            stamps, values = result.get("Timestamps") or [], result.get("Values") or []
            if not isinstance(stamps, list) or not isinstance(values, list) or len(stamps) != len(values):
                raise InputError(f"{name}: result {result.get('Id')!r} has Timestamps and Values of different lengths")
            label = str(result.get("Label") or "")
            server, metric, _ = labels.parse_label(label, ctx.aliases, pattern=ctx.label_pattern)
            attrs = json.dumps({"cloudwatch_id": str(result.get("Id", ""))}, sort_keys=True)
            rows.extend((text(t), server, metric, text(v), attrs) for t, v in zip(stamps, values, strict=True))
    if not rows:
        raise InputError(f"{name}: the CloudWatch response has no data points")
    frame = raw_frame(rows, "cloudwatch-get-metric-data")
    frame.attrs["labels"] = sorted({str(r.get("Label") or "") for resp in responses for r in resp["MetricDataResults"]})
    return frame


def is_get_metric_statistics(doc: Any) -> bool:
    responses = doc if isinstance(doc, list) else [doc]
    return bool(responses) and all(isinstance(r, dict) and isinstance(r.get("Datapoints"), list) for r in responses)


def read_get_metric_statistics(name: str, doc: Any, ctx: ReadContext) -> pd.DataFrame:
    responses = doc if isinstance(doc, list) else [doc]
    found = labels.EC2_INSTANCE_ID.search(name.rsplit("/", 1)[-1])
    server = found.group(0) if found else ""
    rows: list[tuple[Any, ...]] = []
    for response in responses:
        metric = labels.metric_from_name(str(response.get("Label") or ""), ctx.aliases)
        for point in response["Datapoints"]:
            if not isinstance(point, dict):
                raise InputError(f"{name}: a Datapoints entry is not an object")
            statistic, value = _statistic(point)
            attrs = attributes({"statistic": statistic, "unit": point.get("Unit", "")})
            rows.append((text(point.get("Timestamp")), server, metric, text(value), attrs))
    if not rows:
        raise InputError(f"{name}: the CloudWatch get-metric-statistics output has no Datapoints")
    return raw_frame(sorted(rows, key=lambda r: (r[2], r[0])), "cloudwatch-get-metric-statistics")


def _statistic(point: dict[str, Any]) -> tuple[str, Any]:
    for statistic in STATISTICS:
        if statistic in point:
            return statistic, point[statistic]
    extended = point.get("ExtendedStatistics")
    if isinstance(extended, dict) and extended:
        key = sorted(extended)[0]
        return key, extended[key]
    return "", None


def is_console_csv(frame: pd.DataFrame) -> bool:
    """Property rows under the header: the first cells of the first rows name series properties."""
    if frame.shape[1] < 2 or frame.empty:
        return False
    head = str(frame.iloc[0, 0]).strip().lower()  # the first cell only: a data file's column may be millions long
    return head in PROPERTY_ROWS or head in DIMENSION_PRIORITY


def read_console_csv(name: str, frame: pd.DataFrame, ctx: ReadContext) -> pd.DataFrame:
    first = frame.iloc[:, 0].astype(str).str.strip()
    n_props = 0
    for cell in first:
        if not cell or _is_time(cell):
            break
        n_props += 1
    props = frame.iloc[:n_props]
    data = frame.iloc[n_props:]
    if data.empty:
        raise InputError(f"{name}: the CloudWatch console CSV has property rows but no data rows")
    keys = [str(k).strip() for k in props.iloc[:, 0]]
    rows: list[tuple[Any, ...]] = []
    for position, column in enumerate(frame.columns[1:], start=1):
        series = {k: str(v).strip() for k, v in zip(keys, props.iloc[:, position], strict=True)}
        server, metric = _console_series(str(column), series, ctx)
        extra = {k: v for k, v in series.items() if k.lower() not in ("metricname", "instanceid")}
        attrs = attributes(extra)
        values = data.iloc[:, position]
        stamps = data.iloc[:, 0]
        rows.extend((t, server, metric, v, attrs) for t, v in zip(stamps, values, strict=True) if str(v).strip())
    return raw_frame(rows, "cloudwatch-console-csv")


def _console_series(label: str, series: dict[str, str], ctx: ReadContext) -> tuple[str, str]:
    lowered = {k.lower(): v for k, v in series.items()}
    server = next((lowered[k] for k in DIMENSION_PRIORITY if lowered.get(k)), "")
    if not server:
        dims = [v for k, v in lowered.items() if k not in PROPERTY_ROWS and v]
        server = dims[0] if dims else ""
    label_server, label_metric, _ = labels.parse_label(
        lowered.get("label") or label, ctx.aliases, pattern=ctx.label_pattern
    )
    metric = lowered.get("metricname") or lowered.get("metric") or label_metric
    return server or label_server, labels.metric_from_name(metric, ctx.aliases) if metric else ""


def _is_time(cell: str) -> bool:
    return bool(re.match(r"^\d{4}-\d{2}-\d{2}|^\d{9,13}(\.\d+)?$|^\d{1,2}[./]\d{1,2}[./]\d{2,4}", cell))
