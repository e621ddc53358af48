"""ETL rules, as pure functions: parse raw files, validate samples, aggregate to daily P95, fill gaps.

Every input row ends up either in the valid set or in the rejected set with one reason, so
``rows in = rows valid + rows rejected`` holds by construction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd

from capacity_forecaster import raw_formats
from capacity_forecaster.schema import METRIC_RANGE, METRICS

REQUIRED_COLUMNS: Final[tuple[str, ...]] = raw_formats.REQUIRED_COLUMNS
SAMPLE_KEY: Final[list[str]] = ["server_id", "metric", "timestamp"]
SERVER_ID_PATTERN: Final[str] = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"

# Reasons, in the order rules are applied: a row gets the first reason that applies.
REASONS: Final[dict[str, str]] = {
    "missing_server_id": "server_id is empty",
    "invalid_server_id": "server_id has characters other than letters, digits and . _ : -",
    "unknown_metric": f"metric is not one of {', '.join(METRICS)}",
    "unparseable_timestamp": "timestamp is not an ISO 8601 date-time nor epoch seconds or milliseconds",
    "future_timestamp": "timestamp is in the future",
    "non_numeric_value": "value is not a number",
    "value_out_of_range": f"value is outside {METRIC_RANGE[0]:g} to {METRIC_RANGE[1]:g} percent",
    "duplicate": "exact duplicate of an earlier sample",
    "conflicting_duplicate": "same server, metric and timestamp as another sample with a different value",
}


def read_raw_object(
    name: str,
    data: bytes,
    aliases: Mapping[str, str] | None = None,
    *,
    max_bytes: int | None = None,
    options: raw_formats.ReadOptions | None = None,
) -> pd.DataFrame:
    """Parse one raw object (long or wide CSV/Parquet, gzip, CloudWatch JSON) into the raw columns.

    See :mod:`capacity_forecaster.raw_formats`. Raises :class:`InputError` with a one-line reason when the file
    as a whole cannot be used: unreadable or undecodable bytes, or more than ``max_bytes`` once decompressed.
    """
    if options:  # only ingest passes options: it stores what they give in the long format (formats.options)
        return raw_formats.read_monitoring_export(name, data, aliases, max_bytes=max_bytes, options=options)
    return raw_formats.read_monitoring_export(name, data, aliases, max_bytes=max_bytes)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def validate_samples(
    raw: pd.DataFrame,
    *,
    now: pd.Timestamp,
    context: pd.DataFrame | None = None,
    aliases: Mapping[str, str] | None = None,
    duplicates: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw rows into valid samples and rejected rows.

    ``raw`` has the four raw columns plus ``source`` and ``row_number``. ``context`` holds valid samples already
    in the lake for the same days: a new row that repeats one of them is a duplicate, or a conflicting duplicate
    when its value differs. ``now`` is the latest acceptable timestamp (UTC). Metric names are mapped to the
    canonical ones through ``aliases`` (:func:`raw_formats.metric_aliases` when None). ``duplicates=False``
    applies the row rules only (the streaming ETL applies the duplicate rules in DuckDB, over every file).

    Returns ``(valid, rejected)``: valid has timestamp (UTC), server_id, metric, value (float), source,
    row_number; rejected has source, row_number, the four raw columns as text, and reason.
    """
    reason = pd.Series(pd.NA, index=raw.index, dtype="object")

    def flag(mask: pd.Series, code: str) -> None:
        reason[mask & reason.isna()] = code

    server = raw["server_id"].astype("string").str.strip()
    flag(server.isna() | (server == ""), "missing_server_id")
    flag(~server.fillna("").str.match(SERVER_ID_PATTERN), "invalid_server_id")
    table = raw_formats.metric_aliases() if aliases is None else aliases
    metric = raw_formats.canonical_metric(raw["metric"], table)
    flag(~metric.isin(METRICS).fillna(False).astype(bool), "unknown_metric")
    timestamp = _parse_timestamps(raw["timestamp"])
    flag(timestamp.isna(), "unparseable_timestamp")
    flag(timestamp > now, "future_timestamp")
    value = _numbers(raw["value"])
    flag(value.isna() | ~np.isfinite(value), "non_numeric_value")
    flag((value < METRIC_RANGE[0]) | (value > METRIC_RANGE[1]), "value_out_of_range")

    candidates = pd.DataFrame(
        {
            "timestamp": timestamp,
            "server_id": server.astype(str),
            "metric": metric.astype(str),
            "value": value,
            "source": raw["source"].astype(str),
            "row_number": raw["row_number"].astype("int64"),
        },
        index=raw.index,
    )
    ok = reason.isna()
    for code, mask in (_duplicate_reasons(candidates[ok], context) if duplicates else {}).items():
        reason[mask[mask].index] = code
    ok = reason.isna()
    valid = candidates[ok].reset_index(drop=True)
    rejected = _rejected_rows(raw[~ok], reason[~ok])
    return valid, rejected


def _numbers(values: pd.Series) -> pd.Series:
    """The values as floats, NaN where one is not a number. A boolean (a Parquet or JSON true/false) is not a
    percentage: it becomes NaN, not 1 or 0."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return pd.Series(np.nan, index=values.index, dtype="float64")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    if values.dtype == object:
        numbers[values.map(lambda v: isinstance(v, bool | np.bool_)).astype(bool)] = np.nan
    return numbers


EPOCH_MS_FROM: Final[float] = 1e11
"""Epoch numbers at or above this are milliseconds (1e11 s is the year 5138); below, seconds."""


def _parse_timestamps(col: pd.Series) -> pd.Series:
    """UTC timestamps from datetimes, ISO 8601 text (no offset means UTC) or epoch seconds/milliseconds."""
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return col.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return col.dt.tz_localize("UTC")
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        return _from_epoch(col.astype("float64"))
    text = col.astype("string").str.strip()
    numeric = pd.to_numeric(text.where(text.str.fullmatch(r"-?\d+(\.\d+)?").fillna(False)), errors="coerce")
    is_epoch = numeric.notna()
    if not is_epoch.any():
        return pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    out = pd.Series(pd.NaT, index=col.index, dtype="datetime64[ns, UTC]")
    out[is_epoch] = _from_epoch(numeric[is_epoch].astype("float64"))
    if not is_epoch.all():
        out[~is_epoch] = pd.to_datetime(text[~is_epoch], utc=True, errors="coerce", format="ISO8601")
    return out


def _from_epoch(seconds_or_ms: pd.Series) -> pd.Series:
    ms = seconds_or_ms.where(seconds_or_ms.abs() >= EPOCH_MS_FROM, seconds_or_ms * 1000.0)
    ok = ms.notna() & ms.abs().lt(2**62 / 1e6)
    out = pd.Series(pd.NaT, index=seconds_or_ms.index, dtype="datetime64[ns, UTC]")
    out[ok] = pd.to_datetime(ms[ok].round().astype("int64"), unit="ms", utc=True)
    return out


def _duplicate_reasons(ok: pd.DataFrame, context: pd.DataFrame | None) -> dict[str, pd.Series]:
    """Masks (over ``ok``'s index) of exact and conflicting duplicates."""
    conflicting = ok.groupby(SAMPLE_KEY, sort=False)["value"].transform("nunique") > 1
    exact = ok.duplicated(subset=[*SAMPLE_KEY, "value"], keep="first") & ~conflicting
    if context is not None and not context.empty:
        seen = ok[[*SAMPLE_KEY, "value"]].merge(
            context[[*SAMPLE_KEY, "value"]].drop_duplicates(SAMPLE_KEY).rename(columns={"value": "seen_value"}),
            on=SAMPLE_KEY,
            how="left",
        )
        seen.index = ok.index
        in_context = seen["seen_value"].notna()
        same = in_context & np.isclose(seen["value"], seen["seen_value"].fillna(-1.0))
        exact = exact | (same & ~conflicting)
        conflicting = conflicting | (in_context & ~same)
    return {"duplicate": exact, "conflicting_duplicate": conflicting}


def _rejected_rows(raw: pd.DataFrame, reason: pd.Series) -> pd.DataFrame:
    def as_text(col: pd.Series) -> pd.Series:
        return col.astype("string").fillna("").astype(str)

    return pd.DataFrame(
        {
            "source": raw["source"].astype(str),
            "row_number": raw["row_number"].astype("int64"),
            "timestamp": as_text(raw["timestamp"]),
            "server_id": as_text(raw["server_id"]),
            "metric": as_text(raw["metric"]),
            "value": as_text(raw["value"]),
            "reason": reason.astype(str),
        }
    ).reset_index(drop=True)


AGGREGATE_SQL: Final[str] = """
SELECT server_id, metric, date_trunc('{grain}', CAST("timestamp" AS TIMESTAMP)) AS dt,
       quantile_cont(value, 0.95) AS p95, CAST(count(*) AS INTEGER) AS n_samples
FROM samples {where} GROUP BY ALL ORDER BY server_id, metric, dt
"""
"""``grain``: ``day`` or ``hour``; ``where``: empty, or a filter on the samples (a batch of days)."""


def aggregate_daily(samples: pd.DataFrame) -> pd.DataFrame:
    """Daily P95 per server and metric from samples of any interval, with the number of samples behind it.

    The quantile is exact with linear interpolation between the two nearest ranks (numpy's and pandas' default,
    DuckDB's ``quantile_cont``). DuckDB computes it, on the DataFrame in place: several times faster than a
    pandas groupby on millions of samples (``benchmarks/bench_etl_aggregate.py``).
    """
    if samples.empty:
        return pd.DataFrame(
            {
                "server_id": pd.Series(dtype=str),
                "metric": pd.Series(dtype=str),
                "dt": pd.Series(dtype="datetime64[ns]"),
                "p95": pd.Series(dtype="float64"),
                "n_samples": pd.Series(dtype="int32"),
            }
        )
    return _aggregate(samples, "day")


def _aggregate(samples: pd.DataFrame, grain: str) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")  # timestamptz -> timestamp gives UTC wall time
        con.register("samples", samples)  # read in place; DuckDB scans only the columns the query names
        table = con.sql(AGGREGATE_SQL.format(grain=grain, where="")).to_arrow_table()
    finally:
        con.close()
    out = table.to_pandas()
    out["dt"] = out["dt"].astype("datetime64[ns]")
    out["n_samples"] = out["n_samples"].astype("int32")
    out["p95"] = out["p95"].astype("float64")
    return out[["server_id", "metric", "dt", "p95", "n_samples"]]


COVERAGE_COLUMNS: Final[tuple[str, ...]] = ("expected_samples", "low_coverage")
HOURLY_COLUMNS: Final[list[str]] = ["server_id", "metric", "dt", "p95", "n_samples", "expected_samples", "low_coverage"]
MEDIAN_INTERVAL_SQL: Final[str] = """
WITH gaps AS (
    SELECT server_id, metric,
           epoch(CAST("timestamp" AS TIMESTAMP))
             - lag(epoch(CAST("timestamp" AS TIMESTAMP))) OVER (PARTITION BY server_id, metric ORDER BY "timestamp")
             AS gap
    FROM samples
)
SELECT server_id, metric, median(gap) AS interval_s FROM gaps WHERE gap > 0 GROUP BY ALL
"""


def aggregate_hourly(samples: pd.DataFrame, *, min_coverage: float) -> pd.DataFrame:
    """Hourly P95 per server and metric, with the sample count and a coverage flag.

    ``expected_samples`` is 3600 s over the series' median sampling interval in ``samples`` (at least 1; null
    when the series has a single timestamp); ``low_coverage`` is True when ``n_samples`` falls below
    ``min_coverage`` x ``expected_samples``. Same exact linear-interpolation quantile as :func:`aggregate_daily`.
    """
    if samples.empty:
        empty = aggregate_daily(samples)
        return empty.assign(expected_samples=pd.Series(dtype="Int32"), low_coverage=pd.Series(dtype=bool))[
            HOURLY_COLUMNS
        ]
    hourly = _aggregate(samples, "hour")
    return add_coverage(hourly, samples, period_seconds=3600, min_coverage=min_coverage)[HOURLY_COLUMNS]


def add_coverage(
    aggregated: pd.DataFrame, samples: pd.DataFrame, *, period_seconds: int, min_coverage: float
) -> pd.DataFrame:
    """Add ``expected_samples`` (a period over the series' median sampling interval in ``samples``, at least 1;
    null for a series with a single timestamp) and ``low_coverage`` (n_samples < min_coverage x expected)."""
    if aggregated.empty:
        return aggregated.assign(expected_samples=pd.Series(dtype="Int32"), low_coverage=pd.Series(dtype=bool))
    return coverage_from_intervals(
        aggregated, _median_intervals(samples), period_seconds=period_seconds, min_coverage=min_coverage
    )


def coverage_from_intervals(
    aggregated: pd.DataFrame, intervals: pd.DataFrame, *, period_seconds: int, min_coverage: float
) -> pd.DataFrame:
    """:func:`add_coverage` from the series' median sampling intervals (server_id, metric, interval_s)."""
    if aggregated.empty:
        return aggregated.assign(expected_samples=pd.Series(dtype="Int32"), low_coverage=pd.Series(dtype=bool))
    out = aggregated.merge(intervals, on=["server_id", "metric"], how="left")
    expected = np.maximum(1, np.round(period_seconds / out["interval_s"].to_numpy(dtype="float64")))
    out["expected_samples"] = pd.array(np.where(np.isnan(expected), np.nan, expected), dtype="Float64").astype("Int32")
    low = out["n_samples"] < min_coverage * out["expected_samples"].astype("Float64")
    out["low_coverage"] = low.fillna(False).astype(bool)
    return out.drop(columns="interval_s")


def _median_intervals(samples: pd.DataFrame) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("samples", samples)
        return con.sql(MEDIAN_INTERVAL_SQL).to_arrow_table().to_pandas()
    finally:
        con.close()


def fill_gaps(daily: pd.DataFrame, *, max_gap_days: int, method: str = "seasonal", neighbors: int = 5) -> pd.DataFrame:
    """Impute missing days inside each series, flagging them ``imputed``.

    Seasonal interpolation: a missing day takes the mean of the same weekday one week before and after when
    observed (either one alone otherwise), and a linear interpolation between its neighbours when neither is.
    Runs of more than ``max_gap_days`` missing days, and days before the first or after the last observation,
    are left missing. Input columns: server_id, metric, dt, p95, n_samples.

    ``method="knn"`` fills the same days from similar servers instead: the mean of that day's value in the
    ``neighbors`` series of the same metric closest to this one over the days both observed (scikit-learn's
    ``KNNImputer``, NaN-aware Euclidean distance); a day no other series observed falls back to the seasonal rule.
    """
    carried = [c for c in COVERAGE_COLUMNS if c in daily.columns]
    cols = ["server_id", "metric", "dt", "p95", "n_samples", "imputed", *carried]
    if daily.empty:
        return daily.assign(imputed=pd.Series(dtype=bool))[cols]
    wide = daily.pivot_table(index=["server_id", "metric"], columns="dt", values="p95", aggfunc="first")
    wide = wide.reindex(columns=pd.date_range(wide.columns.min(), wide.columns.max(), freq="D"))
    values = wide.to_numpy(dtype="float64")
    filled = _impute_matrix(values, max_gap_days)
    if method == "knn":
        metrics = wide.index.get_level_values("metric").to_numpy()
        filled = _knn_matrix(values, filled, metrics, neighbors)
    elif method != "seasonal":
        raise ValueError(f"unknown imputation method {method!r}")
    imputed_mask = np.isnan(values) & ~np.isnan(filled)
    counts = daily.set_index(["server_id", "metric", "dt"])["n_samples"]

    long = pd.DataFrame(filled, index=wide.index, columns=wide.columns).stack(future_stack=True)
    flags = pd.DataFrame(imputed_mask, index=wide.index, columns=wide.columns).stack(future_stack=True)
    out = pd.DataFrame({"p95": long, "imputed": flags}).dropna(subset=["p95"])
    out.index = out.index.set_names(["server_id", "metric", "dt"])
    out["n_samples"] = counts.reindex(out.index).fillna(0).astype("int32").to_numpy()
    keyed = daily.set_index(["server_id", "metric", "dt"])
    for col in carried:  # imputed days: expected_samples null, low_coverage null (the imputed flag says it all)
        out[col] = keyed[col].reindex(out.index).to_numpy()
    out = out.reset_index()
    out["dt"] = out["dt"].astype("datetime64[ns]")
    out["imputed"] = out["imputed"].astype(bool)
    return out[cols].sort_values(["server_id", "metric", "dt"], ignore_index=True)


def _impute_matrix(values: np.ndarray, max_gap_days: int) -> np.ndarray:
    """Fill NaN runs of at most ``max_gap_days`` strictly inside each row (see :func:`fill_gaps`)."""
    out = values.copy()
    n_rows, n_days = values.shape
    if n_days == 0 or max_gap_days == 0:
        return out
    missing = np.isnan(values)
    before = np.full_like(values, np.nan)
    after = np.full_like(values, np.nan)
    if n_days > 7:
        before[:, 7:] = values[:, :-7]
        after[:, :-7] = values[:, 7:]
    pair = np.stack([before, after])
    known = (~np.isnan(pair)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        seasonal = np.where(known > 0, np.nansum(pair, axis=0) / np.maximum(known, 1), np.nan)
    days = np.arange(n_days)
    for row in range(n_rows):
        gaps = _fillable_gaps(missing[row], max_gap_days)
        if not gaps.any():
            continue
        observed = ~missing[row]
        linear = np.interp(days, days[observed], values[row, observed])
        candidate = np.where(np.isnan(seasonal[row]), linear, seasonal[row])
        out[row, gaps] = candidate[gaps]
    return out


def _knn_matrix(values: np.ndarray, seasonal: np.ndarray, metrics: np.ndarray, neighbors: int) -> np.ndarray:
    """Replace the seasonal fills by the mean of the nearest series of the same metric, where they have the day."""
    from sklearn.impute import KNNImputer

    out = seasonal.copy()
    to_fill = np.isnan(values) & ~np.isnan(seasonal)
    for metric in np.unique(metrics):
        rows = np.flatnonzero(metrics == metric)
        if len(rows) < 2 or not to_fill[rows].any():
            continue
        block = values[rows]
        observed_somewhere = ~np.isnan(block).all(axis=0)
        imputer = KNNImputer(n_neighbors=min(neighbors, len(rows) - 1), keep_empty_features=True)
        knn = imputer.fit_transform(block)
        use = to_fill[rows] & observed_somewhere[None, :]
        sub = out[rows]
        sub[use] = knn[use]
        out[rows] = sub
    return out


def _fillable_gaps(missing: np.ndarray, max_gap_days: int) -> np.ndarray:
    """Mask of missing days in interior runs no longer than ``max_gap_days``."""
    mask = np.zeros_like(missing)
    if missing.all() or not missing.any():
        return mask
    observed = np.flatnonzero(~missing)
    first, last = observed[0], observed[-1]
    i = first
    while i <= last:
        if missing[i]:
            j = i
            while missing[j]:
                j += 1
            if j - i <= max_gap_days:
                mask[i:j] = True
            i = j
        else:
            i += 1
    return mask


def server_attributes(samples: pd.DataFrame) -> pd.DataFrame:
    """Latest value of each extra column per server from samples with ``attributes`` (JSON text, "" for none).

    Input columns: server_id, timestamp, source, attributes. Output: server_id, attribute, value, last_seen,
    source, one row per server and attribute (the value of its latest sample; ties go to the later row).
    """
    cols = ["server_id", "attribute", "value", "last_seen", "source"]
    carrying = samples[samples["attributes"].astype(str) != ""]
    if carrying.empty:
        return pd.DataFrame({c: pd.Series(dtype="datetime64[us, UTC]" if c == "last_seen" else str) for c in cols})
    latest = carrying.sort_values("timestamp", kind="stable").drop_duplicates(["server_id", "attributes"], keep="last")
    rows = [
        (server, str(name), str(value), ts, source)
        for server, ts, source, text in latest[["server_id", "timestamp", "source", "attributes"]].itertuples(
            index=False
        )
        for name, value in json.loads(text).items()
    ]
    out = pd.DataFrame(rows, columns=cols)
    out = out.sort_values("last_seen", kind="stable").drop_duplicates(["server_id", "attribute"], keep="last")
    return out.sort_values(["server_id", "attribute"], ignore_index=True)


def reconcile(rows_in: int, rows_valid: int, rows_rejected: int) -> None:
    """Fail loudly if a row was lost: rows in must equal rows kept plus rows quarantined."""
    if rows_in != rows_valid + rows_rejected:
        raise AssertionError(f"ETL lost rows: {rows_in} in, {rows_valid} valid, {rows_rejected} quarantined")
