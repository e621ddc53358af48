"""Forecast a fleet: every series backtested and forecast by every model, spread over cores with joblib.

Pure with respect to I/O: a DataFrame of daily values in, two DataFrames out (the ``forecasts`` and
``model_metrics`` tables, each with a ``run_date`` column). The result does not depend on ``n_jobs`` or on how
series are batched: each series is computed on its own, and the outputs are sorted.

The same engine forecasts hourly values (``grain="hourly"``, see :mod:`capacity_forecaster.forecasting.grain`):
steps are then hours, and ``ds`` is the start of each forecast hour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, effective_n_jobs

from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.forecasting.backtest import (
    BacktestConfig,
    SeriesResult,
    evaluate_series,
    one_line,
    origins_for,
)
from capacity_forecaster.forecasting.baselines import (
    Answer,
    FloatArray,
    History,
    Model,
    get_model,
    registered_models,
)
from capacity_forecaster.forecasting.fleet_choice import FleetChoice, SeriesBacktest, choose, summarize
from capacity_forecaster.forecasting.fleet_models import Precomputed
from capacity_forecaster.forecasting.grain import get_grain, merged_settings, steps_before, unit_of
from capacity_forecaster.schema import FORECASTS, METRIC_RANGE, MODEL_METRICS

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
    backtest: bool = True
    """False: outside the metric's backtest sample (see :func:`mark_backtest_sample`), only fitted."""


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
    model_settings: Mapping[str, Mapping[str, Any]] | None = None,
    grain: str = "daily",
    champion_override: float = 0.0,
    backtest_sample: int = 0,
    runaway_guard: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Backtest, choose a champion and forecast ``horizon_days`` ahead for every (server_id, metric) series.

    The champion is chosen per metric across the series given (:mod:`fleet_choice`: the lowest mean backtest
    score, a series keeping its own winner only when under ``champion_override`` x the choice's score) and its
    band is calibrated on the pooled backtest residuals; every other candidate keeps its own band.
    ``backtest_sample`` > 0 backtests only that many series of each metric (a stable hash sample, see
    :func:`mark_backtest_sample`): the choice and the calibration need a sample, not the fleet, and the other series
    are only fitted (``n_origins`` 0, no backtest scores), which makes a large fleet's cost the final fits.
    ``runaway_guard``: a series whose champion's forecast runs away (:func:`fleet_choice.runaway`) gets the
    median of the models instead.

    ``daily`` has columns server_id, metric, dt, p95 (others are ignored). Days after ``run_date`` are not yet
    observable and are dropped; each series' forecast origin is its last remaining day. ``progress`` is called
    with the number of series just finished. Returns (forecasts, model_metrics) with exactly the tables'
    columns plus ``run_date``, sorted by (server_id, metric, model[, ds]).

    ``model_settings`` overrides model fields by model name (``{"prophet": {"country": "GB"}}``). Fleet-scope
    models (``scope = "fleet"``) are fitted here, once per metric and origin, before the series are spread over
    the workers; their forecasts travel with the series.

    ``grain="hourly"``: ``daily`` holds hourly values (``dt`` the start of each UTC hour, as ``metrics_hourly``),
    and ``horizon_days``, ``min_history_days``, ``backtest_horizon`` and ``backtest_step`` count hours; the
    baselines repeat a 24-hour season and the models use the grain's settings (see ``grain.HOURLY``).
    """
    unit = get_grain(grain)
    instances = resolve_models(models, merged_settings(unit, model_settings))
    if backtest_horizon is None:
        backtest_horizon = min(horizon_days, unit.backtest_horizon or horizon_days)
    if backtest_step is None:
        backtest_step = unit.backtest_step
    try:
        config = BacktestConfig(
            horizon=horizon_days,
            n_origins=n_origins,
            backtest_horizon=backtest_horizon,
            step=backtest_step,
            score=score,
            min_history_days=min_history_days,
            min_train_days=unit.min_train,
            season=unit.season,
            step_name=unit.step_name,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    series = mark_backtest_sample(prepare_series(daily, run_date=run_date, grain=grain), backtest_sample)
    fleet_forecasts = precompute_fleet_models(series, instances, config)
    workers = effective_n_jobs(n_jobs)
    chunks = chunked(series, workers)
    # One argument list for both paths (built lazily, a chunk at a time), so in-process and worker runs agree.
    tasks = ((chunk, instances, config, _for_chunk(fleet_forecasts, chunk), runaway_guard) for chunk in chunks)

    results: list[ChunkOutput] = []
    if workers == 1 or len(chunks) <= 1:
        outputs = (run_chunk(*task) for task in tasks)
    else:
        outputs = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(run_chunk)(*task) for task in tasks)
    for chunk, output in zip(chunks, outputs, strict=True):
        results.append(output)
        if progress is not None:
            progress(len(chunk))
    choice = choose([b for r in results for b in r[2]], horizon_days, champion_override)
    forecasts, metrics = assemble([(r[0], r[1]) for r in results], run_date)
    return apply_choice(forecasts, metrics, choice, {(b.server_id, b.metric): b.scale for r in results for b in r[2]})


def sample_rank(server_id: str, metric: str) -> int:
    """A series' place in its metric's backtest sample: a SHA-256 of its key (stable across hosts and
    processes, and independent of the hosts' sharding hash)."""
    digest = hashlib.sha256(f"backtest|{server_id}|{metric}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def mark_backtest_sample(series: Sequence[SeriesInput], size: int) -> list[SeriesInput]:
    """The series with ``backtest`` set for the ``size`` lowest :func:`sample_rank` of each metric (every
    series when ``size`` is 0 or a metric has no more)."""
    if size <= 0:
        return list(series)
    ranks: dict[str, list[tuple[int, int]]] = {}
    for i, s in enumerate(series):
        ranks.setdefault(s.metric, []).append((sample_rank(s.server_id, s.metric), i))
    keep = {i for group in ranks.values() for _, i in sorted(group)[:size]}
    return [s if i in keep else dataclasses.replace(s, backtest=False) for i, s in enumerate(series)]


def apply_choice(
    forecasts: pd.DataFrame,
    metrics: pd.DataFrame,
    choice: FleetChoice,
    scales: Mapping[tuple[str, str], float],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mark each series' chosen candidate as the champion in both tables and give its forecast rows the
    metric's calibrated band (P50 plus the offsets times the series' scale, clipped to the metric range)."""
    if not choice.series:
        return forecasts, metrics
    picks = pd.DataFrame(
        [(s, m, c, scales.get((s, m), 1.0)) for (s, m), c in choice.series.items()],
        columns=["server_id", "metric", "_champion", "_scale"],
    )
    for frame in (forecasts, metrics):
        joined = frame[["server_id", "metric"]].merge(picks, on=["server_id", "metric"], how="left")
        chosen = joined["_champion"].to_numpy(dtype=object)
        has_pick = pd.notna(chosen)
        is_champion = frame["is_champion"].to_numpy(dtype=bool)
        frame["is_champion"] = np.where(has_pick, frame["model"].to_numpy(dtype=object) == chosen, is_champion)
        if frame is not forecasts:
            continue
        lo_b, hi_b = METRIC_RANGE
        p50 = frame["p50"].to_numpy(dtype=np.float64)
        p10 = frame["p10"].to_numpy(dtype=np.float64).copy()
        p90 = frame["p90"].to_numpy(dtype=np.float64).copy()
        steps = frame["horizon_step"].to_numpy(dtype=np.int64) - 1
        scale = joined["_scale"].to_numpy(dtype=np.float64)
        metric_col = frame["metric"].to_numpy(dtype=object)
        for metric, mc in choice.metrics.items():
            if mc.lower is None or mc.upper is None:
                continue
            rows = frame["is_champion"].to_numpy(dtype=bool) & (metric_col == metric) & has_pick
            step = np.minimum(steps[rows], mc.lower.size - 1)
            p10[rows] = np.minimum(np.clip(p50[rows] + mc.lower[step] * scale[rows], lo_b, hi_b), p50[rows])
            p90[rows] = np.maximum(np.clip(p50[rows] + mc.upper[step] * scale[rows], lo_b, hi_b), p50[rows])
        frame["p10"] = p10
        frame["p90"] = p90
    return forecasts, metrics


ChunkOutput = tuple[pd.DataFrame, pd.DataFrame, list[SeriesBacktest]]


def resolve_models(names: Sequence[str], settings: Mapping[str, Mapping[str, Any]] | None = None) -> list[Model]:
    """Model instances for the given registry names, in order, without duplicates; ``settings`` overrides the
    fields of the named models (a setting a model does not have is ignored, a bad value is a ConfigError)."""
    unique = list(dict.fromkeys(names))
    if not unique:
        raise ConfigError("no models given")
    unknown = [n for n in unique if n not in registered_models()]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(registered_models())}")
    out = []
    for name in unique:
        model = get_model(name)
        overrides = dict((settings or {}).get(name, {}))
        if overrides and dataclasses.is_dataclass(model):
            known = {f.name for f in dataclasses.fields(model)}
            try:
                model = dataclasses.replace(model, **{k: v for k, v in overrides.items() if k in known})
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"model {name}: {exc}") from None
        out.append(model)
    return out


FleetForecasts = dict[tuple[str, str], dict[str, Precomputed]]


def precompute_fleet_models(
    series: Sequence[SeriesInput], models: Sequence[Model], config: BacktestConfig
) -> FleetForecasts:
    """Fit every fleet-scope model per metric at every backtest origin and at the end, and forecast each series.

    Origin ``k`` cuts each series where its own backtest does (``origins_for``), so the fit at an origin sees no
    day after it. A fit that raises becomes the reason of every forecast it owed (the model then fails on those
    series and the champion comes from the others).
    """
    fleet_models = [m for m in models if m.scope == "fleet"]
    out: FleetForecasts = {(s.server_id, s.metric): {} for s in series}
    if not fleet_models:
        return out
    # Every series long enough to train on gets the final fit (short ones are forecast, not backtested).
    eligible = [s for s in series if s.y.size >= config.min_train_days]
    by_metric: dict[str, list[SeriesInput]] = {}
    for s in eligible:
        by_metric.setdefault(s.metric, []).append(s)
    for model in fleet_models:
        tables: dict[tuple[str, str], dict[int, Answer]] = {(s.server_id, s.metric): {} for s in series}
        for group in by_metric.values():
            cuts = [origins_for(s.y.size, config) if s.y.size >= config.min_history_days else [] for s in group]
            for k in range(config.n_origins + 1):
                final = k == config.n_origins
                members = [
                    (s, s.y.size if final else c[k]) for s, c in zip(group, cuts, strict=True) if final or k < len(c)
                ]
                if not members:
                    continue
                histories = [History(s.y[:t], steps_before(s.last_day, s.y.size - t)) for s, t in members]
                horizon = config.horizon if final else config.eval_horizon
                try:
                    answers = model.fit_predict(histories, horizon)
                except Exception as exc:  # a broken fleet fit must not stop the fleet
                    answers = [one_line(exc)] * len(members)
                for (s, t), answer in zip(members, answers, strict=True):
                    tables[(s.server_id, s.metric)][t] = answer
        for key, table in tables.items():
            out[key][model.name] = Precomputed(model.name, table)
    return out


def _for_chunk(forecasts: FleetForecasts, chunk: Sequence[SeriesInput]) -> FleetForecasts:
    return {(s.server_id, s.metric): forecasts.get((s.server_id, s.metric), {}) for s in chunk}


def prepare_series(daily: pd.DataFrame, *, run_date: date | None = None, grain: str = "daily") -> list[SeriesInput]:
    """Split the daily table into series sorted by (server_id, metric), each on a contiguous daily index.

    Missing days inside a series are filled by linear interpolation between their neighbours (the ETL
    normally imputes them already); rows with an empty p95 are ignored. With ``grain="hourly"`` the rows are
    hours (timestamps in UTC, naive or aware), the index is hourly and every hour of ``run_date`` is kept.
    """
    unit = get_grain(grain)
    missing = [c for c in INPUT_COLUMNS if c not in daily.columns]
    if missing:
        raise InputError(f"{unit.name} metrics lack column(s) {', '.join(missing)}")
    frame = daily.loc[:, list(INPUT_COLUMNS)].copy()
    if unit.unit == "D":
        frame["dt"] = pd.to_datetime(frame["dt"]).dt.normalize()
    else:
        frame["dt"] = pd.to_datetime(frame["dt"], utc=True).dt.tz_convert(None).dt.floor(unit.unit)
    frame = frame[frame["p95"].notna()]
    if run_date is not None:
        frame = frame[frame["dt"] < pd.Timestamp(run_date) + pd.Timedelta(days=1)]
    duplicated = frame.duplicated(["server_id", "metric", "dt"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise InputError(
            f"{unit.name} metrics have {int(duplicated.sum())} duplicate {unit.step_name[:-1]}(s), e.g. "
            f"{first['server_id']} {first['metric']} {first['dt']:%Y-%m-%d}"
            + ("" if unit.unit == "D" else f" {first['dt']:%H:%M}")
        )
    frame = frame.sort_values(["server_id", "metric", "dt"], kind="stable")
    days = frame["dt"].to_numpy().astype(f"datetime64[{unit.unit}]").astype(np.int64)
    values = frame["p95"].to_numpy(dtype=np.float64)
    out = []
    groups: dict[Any, Any] = frame.groupby(["server_id", "metric"], sort=True).indices
    for key in sorted(groups):
        server_id, metric = key
        idx = np.asarray(groups[key])
        d, v = days[idx], values[idx]
        span = int(d[-1] - d[0]) + 1
        y = v if span == d.size else np.interp(np.arange(d[0], d[-1] + 1), d, v)
        out.append(SeriesInput(str(server_id), str(metric), np.datetime64(int(d[-1]), unit.unit), y, span - d.size))
    return out


def chunked(series: Sequence[SeriesInput], workers: int) -> list[list[SeriesInput]]:
    """Batches small enough to balance the workers (about 8 per worker), large enough (16 to 100 series) to
    amortise the per-task overhead; a fleet of one batch runs in-process."""
    if not series:
        return []
    size = min(_MAX_CHUNK, max(_MIN_CHUNK, math.ceil(len(series) / (max(workers, 1) * _CHUNKS_PER_WORKER))))
    return [list(series[i : i + size]) for i in range(0, len(series), size)]


def run_chunk(
    chunk: Sequence[SeriesInput],
    models: Sequence[Model],
    config: BacktestConfig,
    fleet_forecasts: FleetForecasts | None = None,
    runaway_guard: bool = False,
) -> ChunkOutput:
    """Evaluate a batch of series (in a worker): their forecast rows, model-metric rows and the compact
    backtests the fleet step chooses and calibrates on (with ``runaway_guard``, which candidates run away).

    A fleet-scope model is replaced, series by series, by its precomputed forecasts (``fleet_forecasts``)."""
    forecast_parts: list[dict[str, np.ndarray]] = []
    metric_rows: list[dict[str, object]] = []
    backtests: list[SeriesBacktest] = []
    steps = np.arange(1, config.horizon + 1)
    for s in chunk:
        own = (fleet_forecasts or {}).get((s.server_id, s.metric), {})
        series_models = [own.get(m.name, m) if m.scope == "fleet" else m for m in models]
        result = evaluate_series(s.y, series_models, config, s.last_day, backtest=s.backtest)
        forecast_parts.extend(_forecast_arrays(s, result, steps))
        metric_rows.extend(_metric_rows(s, result))
        history = s.y if runaway_guard else None
        backtests.append(summarize(s.server_id, s.metric, result, config.score, history, config.season))
    forecasts = (
        pd.DataFrame({k: np.concatenate([p[k] for p in forecast_parts]) for k in forecast_parts[0]})
        if forecast_parts
        else _empty(FORECASTS.column_names)
    )
    return forecasts, pd.DataFrame(metric_rows, columns=MODEL_METRICS.column_names), backtests


def _forecast_arrays(s: SeriesInput, result: SeriesResult, steps: np.ndarray) -> list[dict[str, np.ndarray]]:
    parts = []
    n = steps.size
    ds = (s.last_day + steps.astype(f"timedelta64[{unit_of(s.last_day)}]")).astype(DATE_DTYPE)
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
            "n_history": int(s.y.size),
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
            "n_history": np.int32,
        }
    )
    forecasts["run_date"] = pd.Series(stamp, index=forecasts.index, dtype=DATE_DTYPE)
    metrics["run_date"] = pd.Series(stamp, index=metrics.index, dtype=DATE_DTYPE)
    forecasts = forecasts.sort_values(["server_id", "metric", "model", "ds"], kind="stable", ignore_index=True)
    metrics = metrics.sort_values(["server_id", "metric", "model"], kind="stable", ignore_index=True)
    return forecasts[FORECAST_COLUMNS], metrics[MODEL_METRIC_COLUMNS]
