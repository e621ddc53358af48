"""Forecast a fleet: every series backtested and forecast by every model, spread over cores with joblib.

Pure with respect to I/O: a DataFrame of daily values in, two DataFrames out (the ``forecasts`` and
``model_metrics`` tables, each with a ``run_date`` column). The result does not depend on ``n_jobs`` or on how
series are batched: each series is computed on its own, and the outputs are sorted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, effective_n_jobs

from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.forecasting.backtest import BacktestConfig, SeriesResult, evaluate_series
from capacity_forecaster.forecasting.baselines import FloatArray, Model, get_model, registered_models
from capacity_forecaster.schema import FORECASTS, MODEL_METRICS

INPUT_COLUMNS: tuple[str, ...] = ("server_id", "metric", "dt", "p95")
FORECAST_COLUMNS: list[str] = [*FORECASTS.column_names, "run_date"]
MODEL_METRIC_COLUMNS: list[str] = [*MODEL_METRICS.column_names, "run_date"]
DATE_DTYPE = "datetime64[ns]"
_MIN_CHUNK = 16
_MAX_CHUNK = 100
_CHUNKS_PER_WORKER = 8


@dataclass(frozen=True)
class SeriesInput:
    """One series ready for the models: contiguous daily values ending on ``last_day``."""

    server_id: str
    metric: str
    last_day: np.datetime64
    y: FloatArray
    filled_days: int = 0


def forecast_fleet(
    daily: pd.DataFrame,
    *,
    run_date: date,
    horizon_days: int,
    models: Sequence[str],
    n_origins: int,
    score: str,
    min_history_days: int,
    n_jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    backtest_horizon: int | None = None,
    backtest_step: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Backtest, choose a champion and forecast ``horizon_days`` ahead for every (server_id, metric) series.

    ``daily`` has columns server_id, metric, dt, p95 (others are ignored). Days after ``run_date`` are not yet
    observable and are dropped; each series' forecast origin is its last remaining day. ``progress`` is called
    with the number of series just finished. Returns (forecasts, model_metrics) with exactly the tables'
    columns plus ``run_date``, sorted by (server_id, metric, model[, ds]).
    """
    instances = resolve_models(models)
    try:
        config = BacktestConfig(
            horizon=horizon_days,
            n_origins=n_origins,
            backtest_horizon=backtest_horizon,
            step=backtest_step,
            score=score,
            min_history_days=min_history_days,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    series = prepare_series(daily, run_date=run_date)
    chunks = chunked(series, effective_n_jobs(n_jobs))

    results: list[tuple[pd.DataFrame, pd.DataFrame]] = []
    if effective_n_jobs(n_jobs) == 1 or len(chunks) <= 1:
        outputs = (run_chunk(chunk, instances, config) for chunk in chunks)
    else:
        outputs = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(run_chunk)(chunk, instances, config) for chunk in chunks
        )
    for chunk, output in zip(chunks, outputs, strict=True):
        results.append(output)
        if progress is not None:
            progress(len(chunk))
    return assemble(results, run_date)


def resolve_models(names: Sequence[str]) -> list[Model]:
    """Model instances for the given registry names, in order, without duplicates."""
    unique = list(dict.fromkeys(names))
    if not unique:
        raise ConfigError("no models given")
    unknown = [n for n in unique if n not in registered_models()]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(registered_models())}")
    return [get_model(n) for n in unique]


def prepare_series(daily: pd.DataFrame, *, run_date: date | None = None) -> list[SeriesInput]:
    """Split the daily table into series sorted by (server_id, metric), each on a contiguous daily index.

    Missing days inside a series are filled by linear interpolation between their neighbours (the ETL
    normally imputes them already); rows with an empty p95 are ignored.
    """
    missing = [c for c in INPUT_COLUMNS if c not in daily.columns]
    if missing:
        raise InputError(f"daily metrics lack column(s) {', '.join(missing)}")
    frame = daily.loc[:, list(INPUT_COLUMNS)].copy()
    frame["dt"] = pd.to_datetime(frame["dt"]).dt.normalize()
    frame = frame[frame["p95"].notna()]
    if run_date is not None:
        frame = frame[frame["dt"] <= pd.Timestamp(run_date)]
    duplicated = frame.duplicated(["server_id", "metric", "dt"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise InputError(
            f"daily metrics have {int(duplicated.sum())} duplicate day(s), e.g. {first['server_id']} "
            f"{first['metric']} {first['dt']:%Y-%m-%d}"
        )
    frame = frame.sort_values(["server_id", "metric", "dt"], kind="stable")
    days = frame["dt"].to_numpy().astype("datetime64[D]").astype(np.int64)
    values = frame["p95"].to_numpy(dtype=np.float64)
    out = []
    groups: dict[Any, Any] = frame.groupby(["server_id", "metric"], sort=True).indices
    for key in sorted(groups):
        server_id, metric = key
        idx = np.asarray(groups[key])
        d, v = days[idx], values[idx]
        span = int(d[-1] - d[0]) + 1
        y = v if span == d.size else np.interp(np.arange(d[0], d[-1] + 1), d, v)
        out.append(SeriesInput(str(server_id), str(metric), np.datetime64(int(d[-1]), "D"), y, span - d.size))
    return out


def chunked(series: Sequence[SeriesInput], workers: int) -> list[list[SeriesInput]]:
    """Batches small enough to balance the workers (about 8 per worker), large enough (16 to 100 series) to
    amortise the per-task overhead; a fleet of one batch runs in-process."""
    if not series:
        return []
    size = min(_MAX_CHUNK, max(_MIN_CHUNK, math.ceil(len(series) / (max(workers, 1) * _CHUNKS_PER_WORKER))))
    return [list(series[i : i + size]) for i in range(0, len(series), size)]


def run_chunk(
    chunk: Sequence[SeriesInput], models: Sequence[Model], config: BacktestConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate a batch of series (in a worker): their forecast rows and model-metric rows."""
    forecast_parts: list[dict[str, np.ndarray]] = []
    metric_rows: list[dict[str, object]] = []
    steps = np.arange(1, config.horizon + 1)
    for s in chunk:
        result = evaluate_series(s.y, models, config)
        forecast_parts.extend(_forecast_arrays(s, result, steps))
        metric_rows.extend(_metric_rows(s, result))
    forecasts = (
        pd.DataFrame({k: np.concatenate([p[k] for p in forecast_parts]) for k in forecast_parts[0]})
        if forecast_parts
        else _empty(FORECASTS.column_names)
    )
    return forecasts, pd.DataFrame(metric_rows, columns=MODEL_METRICS.column_names)


def _forecast_arrays(s: SeriesInput, result: SeriesResult, steps: np.ndarray) -> list[dict[str, np.ndarray]]:
    parts = []
    n = steps.size
    ds = (s.last_day + steps.astype("timedelta64[D]")).astype(DATE_DTYPE)
    for r in result.results:
        if r.forecast is None:
            continue
        parts.append(
            {
                "server_id": np.full(n, s.server_id, dtype=object),
                "metric": np.full(n, s.metric, dtype=object),
                "model": np.full(n, r.model, dtype=object),
                "ds": ds,
                "horizon_step": steps.astype(np.int32),
                "p10": r.forecast.p10,
                "p50": r.forecast.p50,
                "p90": r.forecast.p90,
                "is_champion": np.full(n, r.is_champion),
            }
        )
    return parts


def _metric_rows(s: SeriesInput, result: SeriesResult) -> list[dict[str, object]]:
    return [
        {
            "server_id": s.server_id,
            "metric": s.metric,
            "model": r.model,
            "mae": r.mae,
            "rmse": r.rmse,
            "smape": r.smape,
            "mase": r.mase,
            "coverage": r.coverage,
            "n_origins": r.n_origins,
            "is_champion": r.is_champion,
            "status": r.status,
            "reason": r.reason,
        }
        for r in result.results
    ]


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def assemble(parts: Sequence[tuple[pd.DataFrame, pd.DataFrame]], run_date: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate chunk outputs, add ``run_date``, fix the dtypes and sort."""
    forecasts = pd.concat([p[0] for p in parts], ignore_index=True) if parts else _empty(FORECASTS.column_names)
    metrics = pd.concat([p[1] for p in parts], ignore_index=True) if parts else _empty(MODEL_METRICS.column_names)
    stamp = pd.Timestamp(run_date)
    forecasts = forecasts.astype(
        {
            "server_id": "str",
            "metric": "str",
            "model": "str",
            "ds": DATE_DTYPE,
            "horizon_step": np.int32,
            "p10": np.float64,
            "p50": np.float64,
            "p90": np.float64,
            "is_champion": bool,
        }
    )
    metrics = metrics.astype(
        {
            "server_id": "str",
            "metric": "str",
            "model": "str",
            **dict.fromkeys(("mae", "rmse", "smape", "mase", "coverage"), np.float64),
            "n_origins": np.int32,
            "is_champion": bool,
            "status": "str",
            "reason": "str",
        }
    )
    forecasts["run_date"] = pd.Series(stamp, index=forecasts.index, dtype=DATE_DTYPE)
    metrics["run_date"] = pd.Series(stamp, index=metrics.index, dtype=DATE_DTYPE)
    forecasts = forecasts.sort_values(["server_id", "metric", "model", "ds"], kind="stable", ignore_index=True)
    metrics = metrics.sort_values(["server_id", "metric", "model"], kind="stable", ignore_index=True)
    return forecasts[FORECAST_COLUMNS], metrics[MODEL_METRIC_COLUMNS]
