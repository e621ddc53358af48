"""What the fleet-wide steps (risk, consolidation, report) read from the lake, and no more.

A run's forecasts hold every model's rows and ``metrics_daily`` every day since the history began; the risk
register needs only the champion's rows and each series' last few observed days, the consolidation plan the
last ``rightsizing.profile_days`` observed days of cpu and mem. The readers here prune on three levels:

- partitions: only the run's ``forecasts`` partition, only the ``metrics_daily`` days of a bounded look-back
  window (:func:`lookback_days`) ending at the newest day;
- columns: only the Parquet columns asked for are decoded;
- rows: a filter (the champion flag, observed values, the metrics wanted) is applied one row group at a time,
  so the rows of the other models are never held at once.

A local lake's objects are read in place (memory-mapped); an S3 lake's object is fetched once and decoded the
same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from capacity_forecaster.schema import METRICS_DAILY, TableSchema
from capacity_forecaster.storage.lake import Lake, from_arrow, partition_key, with_optional_columns
from capacity_forecaster.storage.object_store import LocalObjectStore

FORECAST_COLUMNS: Final[tuple[str, ...]] = ("server_id", "metric", "model", "ds", "p10", "p50", "p90", "is_champion")
"""The forecast columns the risk rules and the report's charts read (not ``horizon_step``)."""
STATUS_COLUMNS: Final[tuple[str, ...]] = ("server_id", "metric", "status", "n_history")
"""The model-metrics columns the risk rules read of each series' champion (``status``: insufficient_history marks a
series too short to backtest; ``n_history``: the steps of history it had)."""
DAILY_COLUMNS: Final[tuple[str, ...]] = ("server_id", "metric", "dt", "p95", "imputed")
"""The curated daily columns the risk and rightsizing rules read."""
LOOKBACK_MARGIN_DAYS: Final = 30
"""Calendar days a look-back window adds, at the least, to the observed days it must hold (see lookback_days)."""


def lookback_days(observed_days: int) -> int:
    """Calendar days read to find a series' last ``observed_days`` observed days: twice as many, and at least
    :data:`LOOKBACK_MARGIN_DAYS` more (imputed and missing days in between do not count as observed). A series
    whose last observed days are spread wider than that is judged on those inside the window; one silent for
    the whole window has no recent actuals."""
    return observed_days + max(observed_days, LOOKBACK_MARGIN_DAYS)


def _source(lake: Lake, key: str) -> str | pa.BufferReader:
    if isinstance(lake.store, LocalObjectStore):
        return lake.store.uri_for(key)
    return pa.BufferReader(lake.store.get_bytes(key))


def read_pruned(
    lake: Lake,
    table: TableSchema,
    partition: dict[str, date | str],
    *,
    columns: Sequence[str],
    keep: pc.Expression | None = None,
    keep_reads: Sequence[str] = (),
) -> pa.Table:
    """The ``columns`` of one partition of ``table``, only the rows ``keep`` selects (an expression over the
    columns ``keep_reads`` names), read a row group at a time (data columns only; no partition columns).
    Empty, with the columns, when the partition does not exist."""
    schema = pa.schema([table.arrow_schema().field(c) for c in columns])
    key = partition_key(table, partition)
    if not lake.store.exists(key):
        return schema.empty_table()
    parquet = pq.ParquetFile(_source(lake, key), memory_map=isinstance(lake.store, LocalObjectStore))
    wanted = list(dict.fromkeys([*columns, *keep_reads]))
    stored = set(parquet.schema_arrow.names)
    pieces = []
    for group in range(parquet.num_row_groups):
        # An optional column the object predates reads as null (or its default).
        chunk = with_optional_columns(table, parquet.read_row_group(group, columns=[c for c in wanted if c in stored]))
        if keep is not None:
            chunk = chunk.filter(keep)
        pieces.append(chunk.select(list(columns)).cast(schema))
    return pa.concat_tables(pieces) if pieces else schema.empty_table()


def champion_forecasts(
    lake: Lake,
    table: TableSchema,
    run_date: date,
    *,
    columns: Sequence[str] = FORECAST_COLUMNS,
    series: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The champion model's rows of the run's forecasts (``table``: ``forecasts`` or ``forecasts_hourly``),
    only ``columns``; with ``series`` (server_id, metric), only those series'."""
    keep = pc.field("is_champion")
    if series is not None:
        keep = keep & pc.field("server_id").isin(pa.array(sorted(set(series["server_id"])), pa.string()))
    read = read_pruned(
        lake, table, {"run_date": run_date}, columns=columns, keep=keep, keep_reads=("is_champion", "server_id")
    )
    frame = from_arrow(read)
    if series is not None:
        frame = frame.merge(series[["server_id", "metric"]].drop_duplicates(), on=["server_id", "metric"])
    return frame


def champion_statuses(lake: Lake, table: TableSchema, run_date: date) -> pd.DataFrame:
    """The ``STATUS_COLUMNS`` of the champion rows of the run's model metrics (``table``: ``model_metrics`` or
    ``model_metrics_hourly``): one row per series with a champion; empty when the partition does not exist."""
    read = read_pruned(
        lake,
        table,
        {"run_date": run_date},
        columns=STATUS_COLUMNS,
        keep=pc.field("is_champion"),
        keep_reads=("is_champion",),
    )
    return from_arrow(read)


def newest_days(lake: Lake, days: int) -> list[date]:
    """The ``metrics_daily`` days of the ``days`` calendar days ending at its newest one (oldest first)."""
    present = sorted(date.fromisoformat(p["dt"]) for p in lake.list_partitions(METRICS_DAILY))
    if not present:
        return []
    first = present[-1] - timedelta(days=days - 1)
    return [d for d in present if d >= first]


def recent_daily(
    lake: Lake,
    days: Iterable[date],
    *,
    metrics: Sequence[str] | None = None,
    observed_only: bool = True,
    columns: Sequence[str] = DAILY_COLUMNS,
) -> pd.DataFrame:
    """``metrics_daily`` of the given days: only ``columns`` (``dt`` included when asked for), observed values
    only unless ``observed_only`` is False, only ``metrics`` when given."""
    keep: pc.Expression | None = ~pc.field("imputed") if observed_only else None
    if metrics is not None:
        chosen = pc.field("metric").isin(pa.array(list(metrics), pa.string()))
        keep = chosen if keep is None else keep & chosen
    data = [c for c in columns if c != "dt"]
    present = {p["dt"] for p in lake.list_partitions(METRICS_DAILY)}
    pieces = []
    for day in (d for d in days if d.isoformat() in present):
        piece = read_pruned(lake, METRICS_DAILY, {"dt": day}, columns=data, keep=keep, keep_reads=("imputed", "metric"))
        if "dt" in columns:
            piece = piece.append_column(pa.field("dt", pa.date32()), pa.array([day] * piece.num_rows, pa.date32()))
        pieces.append(piece)
    if not pieces:
        fields = [METRICS_DAILY.arrow_schema(with_partitions=True).field(c) for c in columns]
        return from_arrow(pa.schema(fields).empty_table())
    return from_arrow(pa.concat_tables(pieces).select(list(columns)))


def recent_observed(lake: Lake, observed_days: int, *, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Each series' observed daily P95 in the look-back window for its last ``observed_days`` observed days
    (:func:`lookback_days`, ending at the newest day of ``metrics_daily``)."""
    return recent_daily(lake, newest_days(lake, lookback_days(observed_days)), metrics=metrics)
