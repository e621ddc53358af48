"""The champion per metric across the fleet, and P10-P90 bands calibrated on the pooled backtest residuals.

One or two backtest windows of one series cannot tell its candidates apart: the per-series hindsight winner is
mostly noise (measured: a per-series champion lost to its own best model on every source). Pooled over the
fleet's series of a metric, the same windows rank the candidates reliably, so the champion of a metric is the
candidate (a model or the ``median`` of the models) with the lowest mean backtest score over the metric's
backtested series. A series keeps its own winner only when it beat the fleet's choice by a wide margin
(``override``: its score under that share of the choice's).

Bands, conformal style: each series' backtest residuals (actual minus the chosen candidate's P50), divided by
the series' noise scale (:func:`~capacity_forecaster.forecasting.backtest.noise_scale`), are pooled per metric
and horizon step (with neighbouring steps, a window of an eighth of the step either side); their 10th and 90th
percentiles, times a series' own scale, are its P10 and P90 around its P50. Steps past the backtest window
widen with the square root of the step. Short series (not backtested) get the metric's champion and its band.

Runaway guard: a candidate whose P50 leaves the series' observed range further than the series ever moved in
as many steps (:func:`runaway`) is not used for that series; it gets the median of the models instead (or,
when that runs away too, the first candidate that does not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from capacity_forecaster.forecasting.backtest import COMBINATION, STATUS_OK, SeriesResult, noise_scale
from capacity_forecaster.forecasting.baselines import LOWER_Q, UPPER_Q, FloatArray, QuantileForecast, make_forecast

ELIGIBLE_SHARE = 0.9
"""A candidate must have backtested on at least this share of a metric's series to be the metric's champion."""
MIN_RESIDUALS = 30
"""Pooled residuals a step needs to be calibrated; fewer: the whole window's residuals are pooled."""
MAX_ROWS = 4000
"""Residual rows (series x origins) pooled per metric: evenly spaced beyond this, for a bounded cost."""


@dataclass(frozen=True)
class SeriesBacktest:
    """What the fleet step needs of one series: each backtested candidate's mean score and scaled residuals
    (``(actual - P50) / scale`` per origin and step, NaN where unknown), the candidates with a final forecast,
    the series' own champion and its noise scale."""

    server_id: str
    metric: str
    scale: float
    own_champion: str | None
    scores: Mapping[str, float] = field(default_factory=dict)
    residuals: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)
    forecastable: frozenset[str] = frozenset()
    runaway: frozenset[str] = frozenset()


def largest_moves(history: FloatArray, horizon: int, season: int) -> tuple[FloatArray, FloatArray]:
    """Per step ``h`` = 1..horizon, the largest rise and the largest fall of the series over ``h`` steps (of
    its seasonal means, so one noisy value is not a move); steps longer than the history take the longest
    measured move at the same rate (``h / h_last`` times it)."""
    y = np.asarray(history, dtype=np.float64)
    level = np.convolve(y, np.ones(season) / season, mode="valid") if y.size >= season else y
    rise = np.zeros(horizon)
    fall = np.zeros(horizon)
    for h in range(1, horizon + 1):
        if h >= level.size:
            last = max(h - 1, 1)
            rate = np.arange(h, horizon + 1) / last
            rise[h - 1 :], fall[h - 1 :] = rise[last - 1] * rate, fall[last - 1] * rate
            break
        moves = level[h:] - level[:-h]
        rise[h - 1], fall[h - 1] = max(float(moves.max()), 0.0), max(float(-moves.min()), 0.0)
    return rise, fall


def runaway(p50: FloatArray, history: FloatArray, season: int, moves: tuple[FloatArray, FloatArray]) -> bool:
    """True when the forecast leaves the observed range (above its highest or below its lowest seasonal mean)
    by more than the series ever rose or fell in as many steps, measured from its last season's mean, both by
    more than the series' noise scale."""
    y = np.asarray(history, dtype=np.float64)
    if y.size < 2 * season:
        return False
    level = np.convolve(y, np.ones(season) / season, mode="valid")
    start = float(level[-1])
    n = min(p50.size, moves[0].size)
    # Seasonal means of the forecast, each over the season ending on its step (the history fills the first).
    joined = np.concatenate([y[-(season - 1) :] if season > 1 else y[:0], np.asarray(p50[:n], dtype=np.float64)])
    f = np.convolve(joined, np.ones(season) / season, mode="valid")
    rise, fall = moves[0][:n], moves[1][:n]
    margin = noise_scale(y, season)  # the series' own noise: a forecast on its trend line is not a move
    above = (f > level.max() + margin) & (f - start > rise + margin)
    below = (f < level.min() - margin) & (start - f > fall + margin)
    return bool(np.any(above | below))


def summarize(
    server_id: str,
    metric: str,
    result: SeriesResult,
    score: str,
    history: FloatArray | None = None,
    season: int = 7,
) -> SeriesBacktest:
    """The backtest of one series in the compact form the fleet step pools (float32 residuals); with the
    ``history``, which candidates' forecasts run away (:func:`runaway`)."""
    scores: dict[str, float] = {}
    residuals: dict[str, np.ndarray] = {}
    if result.actuals:
        width = max(a.size for a in result.actuals)
        for r in result.results:
            value = float(getattr(r, score))
            if r.status != STATUS_OK or r.forecast is None or not math.isfinite(value):
                continue
            rows = np.full((len(result.actuals), width), np.nan, dtype=np.float32)
            origins = zip(result.actuals, r.origin_forecasts, result.scales, strict=True)
            for k, (actual, fc, scale) in enumerate(origins):
                rows[k, : actual.size] = (actual - fc.p50[: actual.size]) / scale
            scores[r.model] = value
            residuals[r.model] = rows
    return SeriesBacktest(
        server_id=server_id,
        metric=metric,
        scale=result.scale if math.isfinite(result.scale) else 1.0,
        own_champion=result.champion,
        scores=scores,
        residuals=residuals,
        forecastable=frozenset(r.model for r in result.results if r.forecast is not None),
        runaway=frozenset(runaways(result, history, season)) if history is not None else frozenset(),
    )


def runaways(result: SeriesResult, history: FloatArray, season: int) -> list[str]:
    """The candidates of one series whose final forecast runs away."""
    forecasts = [r for r in result.results if r.forecast is not None]
    if not forecasts:
        return []
    moves = largest_moves(history, max(r.forecast.horizon for r in forecasts if r.forecast is not None), season)
    return [r.model for r in forecasts if r.forecast is not None and runaway(r.forecast.p50, history, season, moves)]


@dataclass(frozen=True)
class MetricChoice:
    """One metric's champion, every eligible candidate's mean score (on the series all of them backtested) and
    the band offsets per horizon step in noise-scale units (None: too few residuals, the models' own bands)."""

    champion: str | None
    scores: Mapping[str, float]
    series_scored: int
    lower: FloatArray | None = None
    upper: FloatArray | None = None


@dataclass(frozen=True)
class FleetChoice:
    """The champion of each series and, per metric, how it was chosen."""

    series: Mapping[tuple[str, str], str]
    metrics: Mapping[str, MetricChoice]


def choose(summaries: Sequence[SeriesBacktest], horizon: int, override: float = 0.0) -> FleetChoice:
    """Choose each metric's champion on the pooled backtest scores, then each series' champion (the metric's
    unless the series cannot forecast with it, or, with ``override`` > 0, its own winner scored under
    ``override`` x the champion's score), and calibrate the bands on the chosen candidates' residuals."""
    by_metric: dict[str, list[SeriesBacktest]] = {}
    for s in summaries:
        by_metric.setdefault(s.metric, []).append(s)
    chosen: dict[tuple[str, str], str] = {}
    metrics: dict[str, MetricChoice] = {}
    for metric in sorted(by_metric):
        group = by_metric[metric]
        champion, scores, n_scored = metric_champion(group)
        pooled: list[np.ndarray] = []
        for s in group:
            pick = series_champion(s, champion, override)
            if pick is None:
                continue
            chosen[(s.server_id, s.metric)] = pick
            if pick in s.residuals:
                pooled.append(s.residuals[pick])
        lower, upper = band_offsets(pooled, horizon)
        metrics[metric] = MetricChoice(champion, scores, n_scored, lower, upper)
    return FleetChoice(series=chosen, metrics=metrics)


def metric_champion(group: Sequence[SeriesBacktest]) -> tuple[str | None, dict[str, float], int]:
    """(champion, mean score per eligible candidate, series scored) of one metric's series."""
    backtested = [s for s in group if s.scores]
    if not backtested:
        names = set().union(*(s.forecastable for s in group)) if group else set()
        return (COMBINATION if COMBINATION in names else None), {}, 0
    counts: dict[str, int] = {}
    for s in backtested:
        for name in s.scores:
            counts[name] = counts.get(name, 0) + 1
    eligible = sorted(n for n, c in counts.items() if c >= ELIGIBLE_SHARE * len(backtested))
    common = [s for s in backtested if all(n in s.scores for n in eligible)]
    if not eligible or not common:
        return None, {}, 0
    scores = {n: float(np.mean([s.scores[n] for s in common])) for n in eligible}
    champion = min(eligible, key=lambda n: (scores[n], n != COMBINATION, n))
    return champion, scores, len(common)


def series_champion(s: SeriesBacktest, champion: str | None, override: float) -> str | None:
    """The candidate one series is forecast with (see :func:`choose`)."""
    if champion is None or champion not in s.forecastable:
        pick = s.own_champion
    else:
        pick = champion
        if override > 0 and s.scores and champion in s.scores:
            own = min(s.scores, key=lambda n: s.scores[n])
            if s.scores[own] < override * s.scores[champion]:
                pick = own
    if pick is None or pick not in s.runaway:
        return pick
    calm = [n for n in (COMBINATION, *sorted(s.forecastable)) if n in s.forecastable and n not in s.runaway]
    return calm[0] if calm else pick


def band_offsets(pooled: Sequence[np.ndarray], horizon: int) -> tuple[FloatArray | None, FloatArray | None]:
    """Per horizon step, the 10th and 90th percentile of the pooled scaled residuals (the lower <= 0, the upper
    >= 0); steps past the residuals' window widen with the square root of the step. (None, None) when there
    are too few residuals to calibrate."""
    if not pooled:
        return None, None
    width = max(p.shape[1] for p in pooled)
    rows = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=np.nan) for p in pooled])
    if rows.shape[0] > MAX_ROWS:
        rows = rows[np.linspace(0, rows.shape[0] - 1, MAX_ROWS).astype(np.intp)]
    if np.count_nonzero(np.isfinite(rows)) < MIN_RESIDUALS:
        return None, None
    lower = np.empty(width)
    upper = np.empty(width)
    everything = rows[np.isfinite(rows)]
    for h in range(width):
        w = max(1, h // 8)
        block = rows[:, max(0, h - w) : min(width, h + w + 1)]
        values = block[np.isfinite(block)]
        if values.size < MIN_RESIDUALS:
            values = everything
        lower[h], upper[h] = np.quantile(values, [LOWER_Q, UPPER_Q])
    lower, upper = np.minimum(lower, 0.0), np.maximum(upper, 0.0)
    if horizon > width:
        grow = np.sqrt(np.arange(width + 1, horizon + 1) / width)
        lower = np.concatenate([lower, lower[-1] * grow])
        upper = np.concatenate([upper, upper[-1] * grow])
    return lower[:horizon], upper[:horizon]


def calibrated(forecast: QuantileForecast, scale: float, choice: MetricChoice) -> QuantileForecast:
    """The forecast's P50 with the metric's calibrated band times the series' ``scale``; unchanged when the
    metric has no calibration."""
    if choice.lower is None or choice.upper is None:
        return forecast
    n = forecast.horizon
    return make_forecast(forecast.p50, choice.lower[:n] * scale, choice.upper[:n] * scale)
