"""Forecast accuracy metrics: pure functions on equal-length arrays of actuals ``y`` and forecasts ``f``.

Every function returns a float; NaN where the metric is undefined (no values, or a zero MASE scale).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from capacity_forecaster.forecasting.baselines import FloatArray


def _pair(actual: FloatArray, forecast: FloatArray) -> tuple[FloatArray, FloatArray]:
    a = np.asarray(actual, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    if a.shape != f.shape or a.ndim != 1:
        raise ValueError(f"actuals and forecasts must be 1-D of equal length, got {a.shape} and {f.shape}")
    return a, f


def mae(actual: FloatArray, forecast: FloatArray) -> float:
    """Mean absolute error: ``mean(|y - f|)``, in the series' units (percentage points)."""
    a, f = _pair(actual, forecast)
    return float(np.mean(np.abs(a - f))) if a.size else float("nan")


def rmse(actual: FloatArray, forecast: FloatArray) -> float:
    """Root mean squared error: ``sqrt(mean((y - f)^2))``."""
    a, f = _pair(actual, forecast)
    return float(np.sqrt(np.mean((a - f) ** 2))) if a.size else float("nan")


def smape(actual: FloatArray, forecast: FloatArray) -> float:
    """Symmetric MAPE in percent, 0 to 200: ``100 * mean(2 |y - f| / (|y| + |f|))``.

    A term with ``y = f = 0`` is a perfect forecast and counts as 0 (instead of 0/0).
    """
    a, f = _pair(actual, forecast)
    if not a.size:
        return float("nan")
    denom = np.abs(a) + np.abs(f)
    terms = np.divide(2.0 * np.abs(a - f), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100.0 * np.mean(terms))


def seasonal_naive_scale(insample: FloatArray, season: int = 7) -> float:
    """In-sample MAE of the seasonal naive forecast: ``mean(|y[t] - y[t - m]|)`` for t = m..n-1.

    With ``n <= m`` (less than one season plus a day) the lag-1 naive scale is used instead; NaN with
    fewer than two values.
    """
    y = np.asarray(insample, dtype=np.float64)
    m = season if y.size > season else 1
    if y.size <= m:
        return float("nan")
    return float(np.mean(np.abs(y[m:] - y[:-m])))


def mase(actual: FloatArray, forecast: FloatArray, insample: FloatArray, season: int = 7) -> float:
    """Mean absolute scaled error: ``mae(y, f) / seasonal_naive_scale(insample, season)``.

    Below 1: better than the in-sample seasonal naive. NaN when the scale is zero or undefined (a flat
    history): no scale to compare against.
    """
    scale = seasonal_naive_scale(insample, season)
    if not np.isfinite(scale) or scale <= 0:
        return float("nan")
    return mae(actual, forecast) / scale


COVERAGE_TOLERANCE = 1e-9


def coverage(actual: FloatArray, lower: FloatArray, upper: FloatArray) -> float:
    """Share of actuals inside the band: ``mean(lower <= y <= upper)``; 0.8 is ideal for P10-P90.

    The edges count as inside, with a ``1e-9`` tolerance so a zero-width band that is exact up to
    floating-point noise (a perfect fit) is not scored as a miss.
    """
    a, lo = _pair(actual, lower)
    _, hi = _pair(actual, upper)
    if not a.size:
        return float("nan")
    return float(np.mean((a >= lo - COVERAGE_TOLERANCE) & (a <= hi + COVERAGE_TOLERANCE)))


POINT_SCORES: dict[str, Callable[[FloatArray, FloatArray], float]] = {
    "mae": mae,
    "rmse": rmse,
    "smape": smape,
}
SCORES: tuple[str, ...] = ("mae", "rmse", "smape", "mase")
"""Scores a champion can be chosen by (lower is better for all)."""
