"""Baseline models: shapes, bounds, ordering, determinism, known answers and honest bands."""

from __future__ import annotations

import numpy as np
import pytest

from capacity_forecaster.forecasting.baselines import (
    LinearTrend,
    Model,
    SeasonalNaive,
    band_from_errors,
    column_quantiles,
    get_model,
    register_model,
    registered_models,
)
from tests.unit.forecast_checks import assert_valid

MODELS = [SeasonalNaive(), LinearTrend()]


def noisy_series(n: int = 200, seed: int = 0, level: float = 50.0, slope: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return level + slope * t + 8 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 3, n)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
@pytest.mark.parametrize("n", [1, 2, 5, 13, 30, 90, 400])
@pytest.mark.parametrize("horizon", [1, 7, 30, 200])
def test_shapes_bounds_and_order(model: Model, n: int, horizon: int) -> None:
    assert_valid(model.forecast(noisy_series(n), horizon), horizon)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
@pytest.mark.parametrize(
    "y",
    [
        np.full(60, 0.0),
        np.full(60, 100.0),
        np.clip(np.linspace(60, 130, 120), 0, 100),  # saturating growth
        np.linspace(40, 0.5, 120),  # falling towards zero
        np.random.default_rng(3).uniform(0, 100, 150),  # pure noise over the whole range
    ],
    ids=["zeros", "hundreds", "saturating", "falling", "uniform-noise"],
)
def test_bounds_hold_at_the_edges_of_the_range(model: Model, y: np.ndarray) -> None:
    assert_valid(model.forecast(y, 120), 120)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_deterministic(model: Model) -> None:
    y = noisy_series(300, seed=7, slope=0.05)
    a, b = model.forecast(y, 90), model.forecast(y.copy(), 90)
    for name in ("p10", "p50", "p90"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_seasonal_naive_forecasts_a_pure_weekly_pattern_exactly() -> None:
    week = np.array([20.0, 35.0, 40.0, 42.0, 38.0, 25.0, 15.0])
    y = np.tile(week, 16)[:-3]  # 109 days, ending mid-week
    fc = SeasonalNaive().forecast(y, 30)
    expected = np.tile(week, 20)[y.size : y.size + 30]
    np.testing.assert_allclose(fc.p50, expected)
    # The model has never been wrong on this history: no band.
    np.testing.assert_allclose(fc.p10, expected)
    np.testing.assert_allclose(fc.p90, expected)


def test_linear_trend_forecasts_a_pure_line_exactly() -> None:
    y = 10.0 + 0.25 * np.arange(150)
    fc = LinearTrend().forecast(y, 60)
    expected = 10.0 + 0.25 * np.arange(150, 210)
    np.testing.assert_allclose(fc.p50, expected, atol=1e-6)
    np.testing.assert_allclose(fc.p10, expected, atol=1e-6)
    np.testing.assert_allclose(fc.p90, expected, atol=1e-6)


def test_linear_trend_uses_only_the_recent_window() -> None:
    # Flat for a year, then a steady climb for 84 days: the fit sees only the climb.
    y = np.concatenate([np.full(365, 30.0), 30.0 + 0.2 * np.arange(1, 85)])
    fc = LinearTrend(window=84).forecast(y, 10)
    np.testing.assert_allclose(fc.p50, y[-1] + 0.2 * np.arange(1, 11), atol=1e-6)


def test_linear_trend_is_clipped_at_100() -> None:
    y = 50.0 + 0.5 * np.arange(100)
    fc = LinearTrend().forecast(y, 200)
    assert fc.p50.max() == 100.0
    assert fc.p50[-1] == 100.0


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_bands_widen_with_the_horizon(model: Model) -> None:
    fc = model.forecast(noisy_series(400, seed=11), 180)
    width = fc.p90 - fc.p10
    assert width[0] > 0
    # Non-decreasing, except where clipping to 0..100 bites (not at this level).
    assert np.all(np.diff(width) >= -1e-9)
    assert width[-1] > width[0]


def test_seasonal_naive_band_is_calibrated_on_white_noise() -> None:
    """On iid noise the P10-P90 band of future days should hold about 80% of them."""
    rng = np.random.default_rng(42)
    inside = []
    for _ in range(200):
        y = 50.0 + rng.normal(0, 5, 200)
        future = 50.0 + rng.normal(0, 5, 14)
        fc = SeasonalNaive().forecast(y, 14)
        inside.append(np.mean((future >= fc.p10) & (future <= fc.p90)))
    assert 0.72 <= float(np.mean(inside)) <= 0.88


def test_linear_trend_band_is_calibrated_on_trend_plus_noise() -> None:
    rng = np.random.default_rng(43)
    inside = []
    for _ in range(200):
        t = np.arange(214)
        full = 30.0 + 0.05 * t + rng.normal(0, 4, t.size)
        fc = LinearTrend().forecast(full[:200], 14)
        inside.append(np.mean((full[200:] >= fc.p10) & (full[200:] <= fc.p90)))
    assert 0.72 <= float(np.mean(inside)) <= 0.9


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_too_short_to_judge_gives_the_whole_range(model: Model) -> None:
    fc = model.forecast(np.array([40.0, 42.0, 41.0]), 5)
    np.testing.assert_allclose(fc.p10, 0.0)
    np.testing.assert_allclose(fc.p90, 100.0)
    assert np.all((fc.p50 > 30) & (fc.p50 < 50))


def test_single_value_history() -> None:
    fc = SeasonalNaive().forecast(np.array([37.5]), 3)
    np.testing.assert_allclose(fc.p50, 37.5)
    fc = LinearTrend().forecast(np.array([37.5]), 3)
    np.testing.assert_allclose(fc.p50, 37.5)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_rejects_bad_input(model: Model) -> None:
    with pytest.raises(ValueError, match="missing or infinite"):
        model.forecast(np.array([1.0, np.nan, 3.0]), 3)
    with pytest.raises(ValueError, match="non-empty"):
        model.forecast(np.array([]), 3)
    with pytest.raises(ValueError, match="horizon"):
        model.forecast(np.array([1.0, 2.0]), 0)


def test_column_quantiles_match_numpy() -> None:
    rng = np.random.default_rng(5)
    errors = rng.normal(size=(50, 6))
    errors[30:, 2] = np.nan
    errors[:, 5] = np.nan
    for q in (0.1, 0.5, 0.9):
        values, counts = column_quantiles(errors, q)
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
            expected = np.nanquantile(errors, q, axis=0)
        np.testing.assert_allclose(values, expected)
        np.testing.assert_array_equal(counts, [50, 50, 30, 50, 50, 0])


def test_band_extrapolates_with_sqrt_h_and_never_narrows() -> None:
    low = np.array([-2.0, -1.0, -3.0, np.nan, np.nan])
    high = np.array([1.0, 2.0, 1.5, np.nan, np.nan])
    counts = np.array([30, 30, 25, 5, 0])
    below, above = band_from_errors(low, high, counts, min_errors=20)
    np.testing.assert_allclose(below, [-2.0, -2.0, -3.0, -3.0 * np.sqrt(4 / 3), -3.0 * np.sqrt(5 / 3)])
    np.testing.assert_allclose(above, [1.0, 2.0, 2.0, 2.0 * np.sqrt(4 / 3), 2.0 * np.sqrt(5 / 3)])


def test_band_offsets_never_cross_the_point_forecast() -> None:
    # Errors all positive (a biased model): P10 must still be at or below P50.
    below, above = band_from_errors(np.array([1.0]), np.array([3.0]), np.array([40]), min_errors=20)
    assert below[0] == 0.0 and above[0] == 3.0


def test_registry() -> None:
    assert {"seasonal_naive", "linear_trend"} <= set(registered_models())
    model = get_model("seasonal_naive")
    assert isinstance(model, Model)
    assert model.name == "seasonal_naive"
    assert model.params()["season"] == 7
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        get_model("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_model("seasonal_naive", SeasonalNaive)
