"""Prometheus HTTP API JSON: the response of ``/api/v1/query_range`` (``resultType`` ``matrix``) or ``/api/v1/query``
(``vector``), as ``curl`` saves it: ``{"status": "success", "data": {"resultType": "matrix", "result": [{"metric":
{"instance": "web-01:9100", ...}, "values": [[1764547200, "41.5"], ...]}]}}``.

Each series' server is its ``instance`` label with the port stripped (else ``host``, ``hostname``, ``nodename``,
``node``, ``server``); its metric the ``metric`` label (add one with ``label_replace``), else ``__name__`` through
the alias table and the node_exporter names (:data:`labels.NODE_EXPORTER_HINTS`). An expression's result has no
``__name__``: give the metric, or the expression itself, with ``ingest --metric`` (``--metric cpu`` or
``--metric 'rate(node_cpu_seconds_total{mode="idle"}[5m])'``). The other labels (``job``...) are attributes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from capacity_forecaster.errors import InputError
from capacity_forecaster.formats import labels
from capacity_forecaster.formats.frame import ReadContext, attributes, raw_frame, text


def is_query_response(doc: Any) -> bool:
    data = doc.get("data") if isinstance(doc, dict) else None
    return isinstance(data, dict) and data.get("resultType") in ("matrix", "vector") and "result" in data


def read_query_response(name: str, doc: Any, ctx: ReadContext) -> pd.DataFrame:
    if doc.get("status") not in (None, "success"):
        raise InputError(f"{name}: the Prometheus response has status {doc.get('status')!r}: {doc.get('error', '')}")
    result = doc["data"]["result"]
    if not isinstance(result, list):
        raise InputError(f"{name}: the Prometheus response's data.result is not a list")
    rows: list[tuple[Any, ...]] = []
    for series in result:
        if not isinstance(series, dict) or not isinstance(series.get("metric", {}), dict):
            raise InputError(f"{name}: a Prometheus result entry is not an object with a metric object")
        tags = {str(k): str(v) for k, v in series.get("metric", {}).items()}
        server = next((labels.strip_port(tags[k]) for k in labels.SERVER_LABELS if tags.get(k)), "")
        hint = tags.get("metric") or tags.get("__name__") or ""
        metric = labels.metric_from_name(hint, ctx.aliases) if hint else ""
        attrs = attributes({k: v for k, v in tags.items() if k not in ("__name__", "metric")})
        points = series.get("values") if "values" in series else [series.get("value")]
        if not isinstance(points, list):
            raise InputError(f"{name}: a Prometheus series' values is not a list")
        for point in points:
            if not isinstance(point, list) or len(point) != 2:
                raise InputError(f"{name}: a Prometheus sample is not a [timestamp, value] pair")
            rows.append((text(point[0]), server, metric, text(point[1]), attrs))
    if not rows:
        raise InputError(f"{name}: the Prometheus response has no samples (data.result is empty)")
    return raw_frame(rows, "prometheus-query-range")
