"""Rolling-origin backtest and champion choice for one series.

Origins sit at the end of the history: the latest leaves exactly ``backtest_horizon`` days to score, and each
earlier one is ``step`` days before the previous. Every model is fitted on the history up to each origin and
scored on the following ``backtest_horizon`` days; the metrics are averaged over the origins, and the
champion is the model with the lowest chosen score (within 1%, a tie: the best-calibrated band wins). A
model that raises (or returns an unusable forecast) is recorded as ``failed`` and the next best is used;
nothing here raises for a bad series or a bad model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, is_dataclass, replace

import numpy as np

from capacity_forecaster.errors import single_line
from capacity_forecaster.forecasting.baselines import FloatArray, Model, QuantileForecast, get_model
from capacity_forecaster.forecasting.calendar_features import CalendarModel
from capacity_forecaster.forecasting.grain import steps_before
from capacity_forecaster.forecasting.metrics import POINT_SCORES, SCORES, coverage, mase

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_INSUFFICIENT = "insufficient_history"
FALLBACK_MODEL = "seasonal_naive"
METRIC_NAMES: tuple[str, ...] = ("mae", "rmse", "smape", "mase", "coverage")
MAX_REASON = 300
NOMINAL_COVERAGE = 0.8
"""Share of actuals a P10-P90 band should cover."""


@dataclass(frozen=True)
class BacktestConfig:
    """How series are backtested and forecast.

    ``backtest_horizon`` defaults to ``min(horizon, 28)`` days and ``step`` to ``backtest_horizon``
    (back-to-back windows). A series needs ``min_history_days`` observations, and an origin at least
    ``min_train_days`` of history before it, to be scored.
    """

    horizon: int = 90
    n_origins: int = 2
    backtest_horizon: int | None = None
    step: int | None = None
    score: str = "mae"
    min_history_days: int = 56
    min_train_days: int = 14
    season: int = 7
    step_name: str = "days"
    """What one step of the series is, for the reasons: ``days`` or ``hours`` (steps count in that unit)."""

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        for name in ("horizon", "n_origins", "min_history_days", "min_train_days", "season"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("backtest_horizon", "step"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")

    @property
    def eval_horizon(self) -> int:
        return self.backtest_horizon if self.backtest_horizon is not None else min(self.horizon, 28)

    @property
    def origin_step(self) -> int:
        return self.step if self.step is not None else self.eval_horizon


@dataclass(frozen=True)
class ModelResult:
    """One model on one series: its averaged backtest metrics, status and final forecast."""

    model: str
    status: str
    reason: str = ""
    mae: float = math.nan
    rmse: float = math.nan
    smape: float = math.nan
    mase: float = math.nan
    coverage: float = math.nan
    n_origins: int = 0
    is_champion: bool = False
    forecast: QuantileForecast | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SeriesResult:
    """Every model's result on one series, and the champion's name (None when no model could forecast)."""

    results: tuple[ModelResult, ...]
    champion: str | None


def origins_for(n: int, config: BacktestConfig) -> list[int]:
    """Training lengths of the backtest origins for a series of ``n`` days, latest first."""
    bh, step = config.eval_horizon, config.origin_step
    found = []
    for k in range(config.n_origins):
        t = n - bh - k * step
        if t < config.min_train_days:
            break
        found.append(t)
    return found


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, shortened, for the ``reason`` column and failure files."""
    text = single_line(str(exc)) or "no message"
    line = f"{type(exc).__name__}: {text}"
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


def call_model(model: Model, y: FloatArray, horizon: int, last_day: np.datetime64 | None = None) -> QuantileForecast:
    """The model's forecast; a :class:`CalendarModel` gets the day of ``y[-1]`` when it is known."""
    if last_day is not None and isinstance(model, CalendarModel):
        return model.forecast_from(y, horizon, last_day)
    return model.forecast(y, horizon)


def checked_forecast(
    model: Model, y: FloatArray, horizon: int, last_day: np.datetime64 | None = None
) -> QuantileForecast:
    """Call the model and insist on a usable answer: the right length, finite, ordered quantiles."""
    fc = call_model(model, y, horizon, last_day)
    if fc.horizon != horizon:
        raise ValueError(f"returned {fc.horizon} steps, expected {horizon}")
    stacked = np.stack([fc.p10, fc.p50, fc.p90])
    if not np.all(np.isfinite(stacked)):
        raise ValueError("returned missing or infinite values")
    if np.any(fc.p10 > fc.p50) or np.any(fc.p50 > fc.p90):
        raise ValueError("returned quantiles out of order (P10 <= P50 <= P90 violated)")
    return fc


def score_origins(
    model: Model,
    y: FloatArray,
    origins: Sequence[int],
    config: BacktestConfig,
    last_day: np.datetime64 | None = None,
) -> dict[str, float]:
    """Fit on ``y[:t]`` for every origin ``t``, score the next ``eval_horizon`` days, average over origins.

    ``last_day``: the day of ``y[-1]``, from which each origin's last day follows."""
    bh = config.eval_horizon
    per_origin: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    for t in origins:
        history, actual = y[:t], y[t : t + bh]
        origin_day = None if last_day is None else steps_before(last_day, y.size - t)
        fc = checked_forecast(model, history, bh, origin_day)
        for name, fn in POINT_SCORES.items():
            per_origin[name].append(fn(actual, fc.p50))
        per_origin["mase"].append(mase(actual, fc.p50, history, config.season))
        per_origin["coverage"].append(coverage(actual, fc.p10, fc.p90))
    return {name: _mean_finite(values) for name, values in per_origin.items()}


def _mean_finite(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def evaluate_model(
    model: Model,
    y: FloatArray,
    origins: Sequence[int],
    config: BacktestConfig,
    last_day: np.datetime64 | None = None,
) -> ModelResult:
    """Backtest one model and make its final forecast; any exception becomes a ``failed`` result."""
    try:
        s = score_origins(model, y, origins, config, last_day)
        fc = checked_forecast(model, y, config.horizon, last_day)
    except Exception as exc:  # a broken model must not stop the fleet
        return ModelResult(model=model.name, status=STATUS_FAILED, reason=one_line(exc), n_origins=len(origins))
    return ModelResult(
        model=model.name,
        status=STATUS_OK,
        mae=s["mae"],
        rmse=s["rmse"],
        smape=s["smape"],
        mase=s["mase"],
        coverage=s["coverage"],
        n_origins=len(origins),
        forecast=fc,
    )


TIE_TOLERANCE = 0.01
"""Scores within this share of the best are a tie (see :func:`choose_champion`)."""


def choose_champion(results: Sequence[ModelResult], score: str) -> int | None:
    """Index of the best ``ok`` result by ``score``; None when none is ok.

    Scores within ``TIE_TOLERANCE`` (1%) of the best are a tie, which two backtest windows' worth of noise
    cannot settle: among them the model whose P10-P90 band covered the actuals nearest its nominal 80% wins
    (a band that says how sure the model is, when the point errors say nothing), then the lower MAE, then
    list order."""

    def value(i: int) -> float:
        v = getattr(results[i], score)
        return float(v) if math.isfinite(v) else math.inf

    def key(i: int) -> tuple[float, float, int]:
        r = results[i]
        miss = abs(r.coverage - NOMINAL_COVERAGE) if math.isfinite(r.coverage) else math.inf
        return (miss, r.mae if math.isfinite(r.mae) else math.inf, i)

    ok = [i for i, r in enumerate(results) if r.status == STATUS_OK and r.forecast is not None]
    if not ok:
        return None
    best = min(value(i) for i in ok)
    tied = [i for i in ok if value(i) <= best + TIE_TOLERANCE * abs(best)] if math.isfinite(best) else ok
    return min(tied, key=key)


def evaluate_series(
    y: FloatArray, models: Sequence[Model], config: BacktestConfig, last_day: np.datetime64 | None = None
) -> SeriesResult:
    """Backtest every model on one series, pick the champion, and keep every model's final forecast.

    ``last_day`` (the day of ``y[-1]``) is passed on to models that use the calendar."""
    y = np.asarray(y, dtype=np.float64)
    n = int(y.size)
    origins = origins_for(n, config)
    if n < config.min_history_days or not origins:
        return _insufficient(y, models, config, _short_reason(n, config))

    results = [evaluate_model(m, y, origins, config, last_day) for m in models]
    if choose_champion(results, config.score) is None and FALLBACK_MODEL not in {m.name for m in models}:
        fallback = evaluate_model(fallback_model(config), y, origins, config, last_day)
        results.append(replace(fallback, reason=fallback.reason or "fallback: every requested model failed"))
    best = choose_champion(results, config.score)
    if best is not None:
        results[best] = replace(results[best], is_champion=True)
    return SeriesResult(results=tuple(results), champion=results[best].model if best is not None else None)


def fallback_model(config: BacktestConfig) -> Model:
    """The last-resort model: the seasonal naive with the config's season."""
    model = get_model(FALLBACK_MODEL)
    return replace(model, season=config.season) if is_dataclass(model) and hasattr(model, "season") else model


def _short_reason(n: int, config: BacktestConfig) -> str:
    unit = config.step_name
    if n < config.min_history_days:
        return f"{n} {unit} of history, fewer than min_history_{unit}={config.min_history_days}"
    return (
        f"{n} {unit} of history cannot hold a {config.eval_horizon}-{unit[:-1]} backtest "
        f"after {config.min_train_days} training {unit}"
    )


def _insufficient(y: FloatArray, models: Sequence[Model], config: BacktestConfig, why: str) -> SeriesResult:
    """Too short to backtest: forecast with the seasonal naive only, score nothing."""
    fallback = next((m for m in models if m.name == FALLBACK_MODEL), None) or fallback_model(config)
    try:
        fc = checked_forecast(fallback, y, config.horizon)
        chosen = ModelResult(
            model=fallback.name,
            status=STATUS_INSUFFICIENT,
            reason=f"{why}; forecast by {fallback.name}, not backtested",
            is_champion=True,
            forecast=fc,
        )
    except Exception as exc:
        chosen = ModelResult(model=fallback.name, status=STATUS_FAILED, reason=f"{why}; {one_line(exc)}")
    others = [
        ModelResult(model=m.name, status=STATUS_INSUFFICIENT, reason=f"{why}; not evaluated")
        for m in models
        if m.name != fallback.name
    ]
    order = {m.name: i for i, m in enumerate(models)}
    results = sorted([chosen, *others], key=lambda r: order.get(r.model, len(order)))
    return SeriesResult(results=tuple(results), champion=chosen.model if chosen.is_champion else None)
