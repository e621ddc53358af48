"""Rolling-origin backtest and champion choice for one series.

Origins sit at the end of the history: the latest leaves a window of ``backtest_horizon`` steps to score (by
default the whole forecast horizon, so a model is judged as far ahead as it will forecast; shortened to what
a short history holds after ``min_train_days``), and each earlier one is ``step`` steps before the previous.
Every model is fitted on the history up to each origin and scored on the window after it; the metrics are
averaged over the origins. Besides the models, the per-step median of their forecasts (``median``) is a
candidate scored the same way. The series' own champion is the candidate with the lowest chosen score (within
1%, a tie: the best-calibrated band wins); the engine may replace it by the fleet's choice
(:mod:`~capacity_forecaster.forecasting.fleet_choice`), which also recalibrates the bands from the backtest
residuals kept here. A model that raises (or returns an unusable forecast) is recorded as ``failed`` and the
next best is used; nothing here raises for a bad series or a bad model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass, replace

import numpy as np

from capacity_forecaster.errors import single_line
from capacity_forecaster.forecasting.baselines import (
    FloatArray,
    History,
    Model,
    QuantileForecast,
    get_model,
    make_forecast,
)
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

    ``backtest_horizon`` defaults to ``horizon`` and ``step`` to ``backtest_horizon`` (back-to-back windows).
    A series needs ``min_history_days`` observations, and an origin at least ``min_train_days`` of history
    before it, to be scored (a shorter history gets a shorter window: :meth:`window_for`).
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
        return self.backtest_horizon if self.backtest_horizon is not None else self.horizon

    def window_for(self, n: int) -> int:
        """Steps scored after each origin of a series of ``n`` steps: ``eval_horizon``, or what the history
        holds after ``min_train_days`` when that is shorter; 0 when it holds less than a season."""
        bh = min(self.eval_horizon, n - self.min_train_days)
        return bh if bh >= min(self.season, self.eval_horizon) else 0

    @property
    def origin_step(self) -> int:
        return self.step if self.step is not None else self.eval_horizon


@dataclass(frozen=True)
class ModelResult:
    """One model (or the median of the models) on one series: its averaged backtest metrics, status, final
    forecast and its backtest forecast at each origin (``origin_forecasts``, latest origin first)."""

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
    origin_forecasts: tuple[QuantileForecast, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class SeriesResult:
    """Every candidate's result on one series, and the champion's name (None when no model could forecast).

    ``actuals`` holds, per origin (latest first), the values the backtest scored; ``scales`` the series' noise
    scale at each origin (:func:`noise_scale` of the history before it) and ``scale`` at the end; the engine
    turns ``actual - P50`` of ``origin_forecasts`` over ``scale`` into the pooled residuals that calibrate the bands."""

    results: tuple[ModelResult, ...]
    champion: str | None
    actuals: tuple[FloatArray, ...] = field(default=(), repr=False)
    scales: tuple[float, ...] = ()
    scale: float = math.nan


COMBINATION = "median"
"""The candidate made of the per-step median of the models' P10, P50 and P90 (the M4 competition's lesson:
a plain combination is hard to beat, and it damps one model's runaway)."""
MIN_SCALE = 0.1
"""Floor of :func:`noise_scale`, in percentage points: a flat series still gets a (narrow) band."""


def origins_for(n: int, config: BacktestConfig) -> list[int]:
    """Training lengths of the backtest origins for a series of ``n`` steps, latest first."""
    bh, step = config.window_for(n), config.origin_step
    found: list[int] = []
    if bh <= 0:
        return found
    for k in range(config.n_origins):
        t = n - bh - k * step
        if t < config.min_train_days:
            break
        found.append(t)
    return found


def noise_scale(history: FloatArray, season: int) -> float:
    """How much the series moves from one season to the next: the mean absolute seasonal difference over its
    last eight seasons (the lag-1 difference when shorter than two seasons), at least ``MIN_SCALE``."""
    y = np.asarray(history, dtype=np.float64)[-8 * season - season :]
    lag = season if y.size > 2 * season else 1
    if y.size <= lag:
        return MIN_SCALE
    return max(float(np.mean(np.abs(y[lag:] - y[:-lag]))), MIN_SCALE)


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, shortened, for the ``reason`` column and failure files."""
    text = single_line(str(exc)) or "no message"
    line = f"{type(exc).__name__}: {text}"
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


def call_model(model: Model, y: FloatArray, horizon: int, last_day: np.datetime64 | None = None) -> QuantileForecast:
    """The model's forecast of one history (``fit_predict`` on it alone, with the stamp of ``y[-1]`` when it is
    known); an answer saying why there is none raises it as a ``ValueError``."""
    answers = model.fit_predict([History(y, last_day)], horizon)
    if len(answers) != 1:
        raise ValueError(f"returned {len(answers)} answers for one history")
    if isinstance(answers[0], str):
        raise ValueError(answers[0])
    return answers[0]


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


def backtest_forecasts(
    model: Model,
    y: FloatArray,
    origins: Sequence[int],
    config: BacktestConfig,
    last_day: np.datetime64 | None = None,
) -> list[QuantileForecast]:
    """The model fitted on ``y[:t]`` for every origin ``t``, forecasting the window after it.

    ``last_day``: the day of ``y[-1]``, from which each origin's last day follows."""
    bh = config.window_for(y.size)
    out = []
    for t in origins:
        origin_day = None if last_day is None else steps_before(last_day, y.size - t)
        out.append(checked_forecast(model, y[:t], bh, origin_day))
    return out


def score_forecasts(
    y: FloatArray, origins: Sequence[int], forecasts: Sequence[QuantileForecast], config: BacktestConfig
) -> dict[str, float]:
    """The metrics of each origin's forecast against the actuals after it, averaged over the origins."""
    per_origin: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    for t, fc in zip(origins, forecasts, strict=True):
        history, actual = y[:t], y[t : t + fc.horizon]
        for name, fn in POINT_SCORES.items():
            per_origin[name].append(fn(actual, fc.p50))
        per_origin["mase"].append(mase(actual, fc.p50, history, config.season))
        per_origin["coverage"].append(coverage(actual, fc.p10, fc.p90))
    return {name: _mean_finite(values) for name, values in per_origin.items()}


def score_origins(
    model: Model,
    y: FloatArray,
    origins: Sequence[int],
    config: BacktestConfig,
    last_day: np.datetime64 | None = None,
) -> dict[str, float]:
    """Fit on ``y[:t]`` for every origin ``t``, score the window after it, average over origins."""
    return score_forecasts(y, origins, backtest_forecasts(model, y, origins, config, last_day), config)


def _mean_finite(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def scored_result(
    name: str,
    scores: Mapping[str, float],
    origins: Sequence[int],
    forecast: QuantileForecast,
    origin_forecasts: Sequence[QuantileForecast],
    reason: str = "",
) -> ModelResult:
    """The ``ok`` result of a candidate backtested from ``origins`` with ``scores`` (one per METRIC_NAMES)."""
    return ModelResult(
        model=name,
        status=STATUS_OK,
        reason=reason,
        mae=scores["mae"],
        rmse=scores["rmse"],
        smape=scores["smape"],
        mase=scores["mase"],
        coverage=scores["coverage"],
        n_origins=len(origins),
        forecast=forecast,
        origin_forecasts=tuple(origin_forecasts),
    )


def evaluate_model(
    model: Model,
    y: FloatArray,
    origins: Sequence[int],
    config: BacktestConfig,
    last_day: np.datetime64 | None = None,
) -> ModelResult:
    """Backtest one model and make its final forecast; any exception becomes a ``failed`` result."""
    try:
        backtests = backtest_forecasts(model, y, origins, config, last_day)
        s = score_forecasts(y, origins, backtests, config)
        fc = checked_forecast(model, y, config.horizon, last_day)
    except Exception as exc:  # a broken model must not stop the fleet
        return ModelResult(model=model.name, status=STATUS_FAILED, reason=one_line(exc), n_origins=len(origins))
    return scored_result(model.name, s, origins, fc, backtests)


def median_forecast(forecasts: Sequence[QuantileForecast]) -> QuantileForecast:
    """Per step, the median of the forecasts' P10, P50 and P90 (ordered, since each input is)."""
    return QuantileForecast(
        p10=np.median(np.stack([f.p10 for f in forecasts]), axis=0),
        p50=np.median(np.stack([f.p50 for f in forecasts]), axis=0),
        p90=np.median(np.stack([f.p90 for f in forecasts]), axis=0),
    )


def combination_result(
    results: Sequence[ModelResult], y: FloatArray, origins: Sequence[int], config: BacktestConfig
) -> ModelResult | None:
    """The ``median`` candidate of the models that forecast every origin and the future; None under two."""
    members = [r for r in results if r.status == STATUS_OK and r.forecast is not None]
    if len(members) < 2:
        return None
    backtests = [median_forecast([r.origin_forecasts[k] for r in members]) for k in range(len(origins))]
    final = median_forecast([r.forecast for r in members if r.forecast is not None])
    s = score_forecasts(y, origins, backtests, config) if origins else dict.fromkeys(METRIC_NAMES, math.nan)
    return scored_result(COMBINATION, s, origins, final, backtests, f"median of {', '.join(r.model for r in members)}")


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
    y: FloatArray,
    models: Sequence[Model],
    config: BacktestConfig,
    last_day: np.datetime64 | None = None,
    *,
    backtest: bool = True,
) -> SeriesResult:
    """Backtest every model on one series, pick the champion, and keep every model's final forecast.

    ``last_day`` (the stamp of ``y[-1]``) goes to every model with each history (models that use the calendar
    derive it from the stamp). ``backtest=False``: only
    the final fits (status ``ok``, no scores; the engine gives the series its metric's champion)."""
    y = np.asarray(y, dtype=np.float64)
    n = int(y.size)
    origins = origins_for(n, config)
    if n < config.min_history_days or not origins:
        return _fitted_without_backtest(y, models, config, last_day, _short_reason(n, config))
    if not backtest:
        return _fitted_without_backtest(y, models, config, last_day)

    results = [evaluate_model(m, y, origins, config, last_day) for m in models]
    if choose_champion(results, config.score) is None and FALLBACK_MODEL not in {m.name for m in models}:
        fallback = evaluate_model(fallback_model(config), y, origins, config, last_day)
        results.append(replace(fallback, reason=fallback.reason or "fallback: every requested model failed"))
    combined = combination_result(results, y, origins, config)
    if combined is not None:
        results.append(combined)
    best = choose_champion(results, config.score)
    if best is not None:
        results[best] = replace(results[best], is_champion=True)
    bh = config.window_for(n)
    return SeriesResult(
        results=tuple(results),
        champion=results[best].model if best is not None else None,
        actuals=tuple(y[t : t + bh] for t in origins),
        scales=tuple(noise_scale(y[:t], config.season) for t in origins),
        scale=noise_scale(y, config.season),
    )


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


def noise_band(forecast: QuantileForecast, scale: float, season: int) -> QuantileForecast:
    """The forecast's P50 with a band from the series' own noise: a normal band of 1.25 x ``scale`` (a mean
    absolute difference as a standard deviation) per season ahead, widening with the square root of the steps
    (a random walk's spread); for histories too short for the model's own band, never 0 to 100."""
    steps = np.arange(1, forecast.horizon + 1)
    half = 1.2816 * 1.25 * scale * np.sqrt(np.maximum(steps / season, 1.0))
    return make_forecast(forecast.p50, -half, half)


def _fitted_without_backtest(
    y: FloatArray,
    models: Sequence[Model],
    config: BacktestConfig,
    last_day: np.datetime64 | None = None,
    why: str | None = None,
) -> SeriesResult:
    """Every model fitted on the history there is, nothing scored, and their median: outside the backtest
    sample (``why`` None: status ok, each model's own band) or too short to backtest (``why`` says why: status
    insufficient, each with a band from the series' own noise, :func:`noise_band`). The seasonal naive forecasts
    when no model can. The series' champion is the median (or the first that forecast); the engine replaces it
    by the fleet's choice."""
    scale = noise_scale(y, config.season)
    status = STATUS_OK if why is None else STATUS_INSUFFICIENT

    def note(text: str, untested: bool = True) -> str:
        if why is None:
            return text
        return f"{why}; {text}, not backtested" if untested else f"{why}; {text}"

    def band(fc: QuantileForecast) -> QuantileForecast:
        return fc if why is None else noise_band(fc, scale, config.season)

    results: list[ModelResult] = []
    for model in models:
        try:
            fc = band(checked_forecast(model, y, config.horizon, last_day))
        except Exception as exc:  # a broken model must not stop the fleet
            results.append(ModelResult(model=model.name, status=STATUS_FAILED, reason=note(one_line(exc), False)))
            continue
        fitted_note = "" if why is None else note(f"fitted on the {y.size} {config.step_name} there are")
        results.append(ModelResult(model=model.name, status=status, reason=fitted_note, forecast=fc))
    fitted = [r for r in results if r.forecast is not None]
    if not fitted:
        fallback = next((m for m in models if m.name == FALLBACK_MODEL), None) or fallback_model(config)
        try:
            fc = band(checked_forecast(fallback, y, config.horizon))
        except Exception as exc:
            results.append(ModelResult(model=fallback.name, status=STATUS_FAILED, reason=note(one_line(exc), False)))
        else:
            reason = "fallback: every requested model failed" if why is None else note(f"forecast by {fallback.name}")
            chosen = ModelResult(model=fallback.name, status=status, reason=reason, forecast=fc)
            results = [r for r in results if r.model != fallback.name] + [chosen]
            fitted = [chosen]
    if len(fitted) >= 2:
        combined = median_forecast([r.forecast for r in fitted if r.forecast is not None])
        members = ", ".join(r.model for r in fitted)
        results.append(
            ModelResult(model=COMBINATION, status=status, reason=note(f"median of {members}"), forecast=combined)
        )
    best = next((i for i, r in enumerate(results) if r.model == COMBINATION), None)
    if best is None:
        best = next((i for i, r in enumerate(results) if r.forecast is not None), None)
    if best is not None:
        results[best] = replace(results[best], is_champion=True)
    return SeriesResult(results=tuple(results), champion=results[best].model if best is not None else None, scale=scale)
