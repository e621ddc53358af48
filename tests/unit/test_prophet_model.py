"""Prophet per series: shapes, bounds, quantile order, calendar effects, determinism, quiet logs (also in workers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from capacity_forecaster.forecasting import get_model
from capacity_forecaster.forecasting.backtest import BacktestConfig, evaluate_series
from capacity_forecaster.forecasting.baselines import Model, QuantileForecast, SeasonalNaive
from capacity_forecaster.forecasting.calendar_features import (
    day_range,
    holiday_flag,
    month_end_flag,
    quarter_end_flag,
)
from capacity_forecaster.forecasting.prophet_model import MIN_HISTORY_DAYS, ProphetModel, holiday_table

LAST_DAY = np.datetime64("2026-11-22", "D")


def weekly_series(n: int, level: float = 40.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return level + 10 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 1.0, n)


def test_calendar_flags() -> None:
    days = np.array(["2026-03-24", "2026-03-25", "2026-03-29", "2026-03-31", "2026-04-28", "2026-04-27"], "M8[D]")
    assert month_end_flag(days).tolist() == [0, 0, 1, 1, 1, 0]
    assert quarter_end_flag(days).tolist() == [0, 1, 1, 1, 0, 0]
    holidays = np.array(["2026-07-04", "2026-07-05", "2026-12-25"], "M8[D]")
    assert holiday_flag(holidays, "US").tolist() == [1, 0, 1]
    assert day_range(LAST_DAY, 3).tolist() == np.array(["2026-11-20", "2026-11-21", "2026-11-22"], "M8[D]").tolist()
    assert day_range(LAST_DAY, 0, ahead=2)[-1] == np.datetime64("2026-11-24")


def test_registered_and_a_per_series_model() -> None:
    model = get_model("prophet")
    assert isinstance(model, ProphetModel) and isinstance(model, Model) and model.scope == "series"
    assert model.params()["uncertainty_samples"] == 100
    with pytest.raises(ValueError, match="country"):
        ProphetModel(country="XX")


def test_shapes_order_bounds_and_weekly_pattern() -> None:
    y = weekly_series(120)
    fc = ProphetModel().forecast(y, 21, LAST_DAY)
    assert fc.horizon == 21
    assert np.all(fc.p10 <= fc.p50) and np.all(fc.p50 <= fc.p90)
    assert np.all(fc.p10 >= 0) and np.all(fc.p90 <= 100)
    assert np.all(fc.p90 - fc.p10 > 0.5)  # a real band
    expected = 40 + 10 * np.sin(2 * np.pi * np.arange(120, 141) / 7)
    assert np.mean(np.abs(fc.p50 - expected)) < 2.0


def test_clipped_to_the_metric_range() -> None:
    rising = np.linspace(50, 99, 100)
    fc = ProphetModel().forecast(rising, 60, LAST_DAY)
    assert fc.p90.max() == 100.0 and fc.p50.max() <= 100.0
    falling = np.linspace(50, 1, 100)
    fc = ProphetModel().forecast(falling, 60, LAST_DAY)
    assert fc.p10.min() == 0.0


def test_deterministic_with_a_seed_and_leaves_numpy_state_alone() -> None:
    y = weekly_series(90)
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    a = ProphetModel(seed=7).forecast(y, 14, LAST_DAY)
    assert np.random.random() == before
    b = ProphetModel(seed=7).forecast(y, 14, LAST_DAY)
    np.testing.assert_array_equal(a.p10, b.p10)
    np.testing.assert_array_equal(a.p90, b.p90)


def test_learns_quarter_end_peaks() -> None:
    days = day_range(LAST_DAY, 400)
    y = 30 + 25 * quarter_end_flag(days) + np.random.default_rng(1).normal(0, 0.5, days.size)
    fc = ProphetModel().forecast(y, 45, LAST_DAY)  # covers 2026-12-25..31
    future = day_range(LAST_DAY, 0, ahead=45)
    peak = quarter_end_flag(future) == 1
    assert fc.p50[peak].mean() - fc.p50[~peak].mean() > 15


def test_backtest_passes_each_origin_its_dates() -> None:
    seen: list[np.datetime64] = []

    class Spy(ProphetModel):
        def forecast(self, y: np.ndarray, horizon: int, last: np.datetime64 | None = None) -> QuantileForecast:
            assert last is not None
            seen.append(last)
            return SeasonalNaive().forecast(y, horizon)

    evaluate_series(weekly_series(100), [Spy()], BacktestConfig(horizon=30, n_origins=2), LAST_DAY)
    day = np.timedelta64(1, "D")
    assert seen == [LAST_DAY - 30 * day, LAST_DAY - 60 * day, LAST_DAY]


def test_a_daily_fit_sees_only_the_last_history_days() -> None:
    recent = weekly_series(900, level=30.0)
    y = np.where(np.arange(900) < 500, 90.0, recent)  # an old regime that no longer holds
    model = ProphetModel(history_days=400)
    capped = model.forecast(y, 30, LAST_DAY)
    np.testing.assert_array_equal(capped.p50, model.forecast(y[-400:], 30, LAST_DAY).p50)
    np.testing.assert_array_equal(capped.p90, model.forecast(y[-400:], 30, LAST_DAY).p90)
    assert abs(capped.p50.mean() - 30) < 3
    everything = ProphetModel(history_days=0).forecast(y, 30, LAST_DAY)
    assert not np.allclose(everything.p50, capped.p50)


def test_history_days_is_validated_and_ignored_by_hourly_fits() -> None:
    assert ProphetModel().history_days == 400
    ProphetModel(history_days=0)
    with pytest.raises(ValueError, match="history_days must be 0"):
        ProphetModel(history_days=MIN_HISTORY_DAYS - 1)
    y = weekly_series(24 * 21)
    last = np.datetime64("2026-11-22T23", "h")
    short = ProphetModel(grain="hourly", history_days=MIN_HISTORY_DAYS).forecast(y, 24, last)
    full = ProphetModel(grain="hourly", history_days=0).forecast(y, 24, last)
    np.testing.assert_array_equal(short.p50, full.p50)


def test_holiday_table_is_the_countrys_holidays_once_per_year_range() -> None:
    table = holiday_table("US", 2025, 2026)
    assert list(table.columns) == ["ds", "holiday"]
    assert {"2025-12-25", "2026-07-04", "2026-11-26"} <= set(table["ds"].dt.strftime("%Y-%m-%d"))
    assert table["ds"].dt.year.between(2025, 2026).all()
    assert holiday_table("US", 2025, 2026) is table
    assert "2026-05-25" in set(holiday_table("GB", 2026, 2026)["ds"].dt.strftime("%Y-%m-%d"))


def test_learns_bank_holiday_dips() -> None:
    days = day_range(LAST_DAY, 400)
    y = 50 - 30 * holiday_flag(days, "US") + np.random.default_rng(2).normal(0, 0.5, days.size)
    fc = ProphetModel().forecast(y, 40, LAST_DAY)  # covers Christmas and New Year's Day
    future = day_range(LAST_DAY, 0, ahead=40)
    dip = holiday_flag(future, "US") == 1
    assert dip.sum() >= 2
    assert fc.p50[~dip].mean() - fc.p50[dip].mean() > 15


def test_too_short_a_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 3 days"):
        ProphetModel().forecast(np.array([1.0, 2.0]), 5)


def test_logs_are_silent_in_the_main_process_and_in_joblib_workers() -> None:
    script = textwrap.dedent(
        """
        import logging
        import numpy as np
        from joblib import Parallel, delayed
        from capacity_forecaster.forecasting import get_model

        logging.basicConfig(level=logging.DEBUG)
        y = 40 + 10 * np.sin(np.arange(60))
        model = get_model("prophet")
        model.forecast(y, 7)
        model.forecast(y, 7)
        Parallel(n_jobs=2)(delayed(model.forecast)(y + k, 7) for k in range(2))
        print("done")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert run.stdout.strip() == "done"
    for noise in ("cmdstanpy", "Chain", "Importing plotly failed", "prophet"):
        assert noise not in run.stderr, run.stderr[-2000:]
