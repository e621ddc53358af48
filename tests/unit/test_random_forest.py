"""The global RandomForest and how fleet-scope models plug into the backtest and the fleet engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.errors import ConfigError
from capacity_forecaster.forecasting import get_model
from capacity_forecaster.forecasting.backtest import BacktestConfig
from capacity_forecaster.forecasting.baselines import Answer, History, Model, QuantileForecast, Scope, SeasonalNaive
from capacity_forecaster.forecasting.engine import forecast_fleet, precompute_fleet_models, prepare_series
from capacity_forecaster.forecasting.fleet_models import Precomputed
from capacity_forecaster.forecasting.random_forest import FEATURES, RandomForestModel, _Panel

LAST_DAY = np.datetime64("2026-11-22", "D")
SMALL = RandomForestModel(max_rows=3000, n_estimators=30)


def fleet_histories(k: int = 8, n: int = 200, seed: int = 0) -> list[History]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    out = []
    for i in range(k):
        y = 20 + 2 * i + 0.02 * i * t + 8 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 1, n)
        out.append(History(y, LAST_DAY))
    return out


def test_registered_light_trees_and_a_fleet_scope_model() -> None:
    model = get_model("random_forest")
    assert isinstance(model, Model) and model.scope == "fleet"
    params = model.params()
    assert (params["n_estimators"], params["min_samples_leaf"], params["max_features"], params["max_samples"]) == (
        35,
        5,
        0.5,
        0.35,
    )
    with pytest.raises(ValueError, match="max_rows"):
        RandomForestModel(max_rows=10)


def test_shapes_order_bounds_and_accuracy_on_a_weekly_fleet() -> None:
    histories = fleet_histories()
    out = SMALL.fit_predict(histories, 28)
    assert len(out) == len(histories)
    t = np.arange(200, 228)
    for i, fc in enumerate(out):
        assert isinstance(fc, QuantileForecast) and fc.horizon == 28
        assert np.all(fc.p10 <= fc.p50) and np.all(fc.p50 <= fc.p90)
        assert np.all(fc.p10 >= 0) and np.all(fc.p90 <= 100)
        truth = 20 + 2 * i + 0.02 * i * t + 8 * np.sin(2 * np.pi * t / 7)
        naive_mae = np.mean(np.abs(truth - histories[i][0][-1]))
        assert np.mean(np.abs(fc.p50 - truth)) < 0.5 * naive_mae  # follows the weekly cycle and the trend


def test_deterministic_with_a_seed_and_seed_matters() -> None:
    histories = fleet_histories(k=4)
    a = SMALL.fit_predict(histories, 10)
    b = SMALL.fit_predict(histories, 10)
    c = RandomForestModel(max_rows=3000, n_estimators=30, seed=1).fit_predict(histories, 10)
    for x, y, z in zip(a, b, c, strict=True):
        assert isinstance(x, QuantileForecast) and isinstance(y, QuantileForecast) and isinstance(z, QuantileForecast)
        np.testing.assert_array_equal(x.p50, y.p50)
        np.testing.assert_array_equal(x.p90, y.p90)
    assert any(not np.array_equal(x.p50, z.p50) for x, z in zip(a, c, strict=True))  # type: ignore[union-attr]


def test_clipped_at_100_for_a_series_rising_into_saturation() -> None:
    n = 200
    rising = [History(np.minimum(40 + 0.5 * np.arange(n) + 3 * i, 100.0), LAST_DAY) for i in range(4)]
    for fc in SMALL.fit_predict(rising, 30):
        assert isinstance(fc, QuantileForecast)
        assert fc.p90.max() <= 100.0 and fc.p50.max() <= 100.0


def test_short_series_get_a_reason_and_others_still_forecast() -> None:
    histories = [*fleet_histories(k=3), History(np.full(10, 30.0), LAST_DAY)]
    out = SMALL.fit_predict(histories, 7)
    assert all(isinstance(fc, QuantileForecast) for fc in out[:3])
    assert isinstance(out[3], str) and "28 days" in out[3]
    assert SMALL.fit_predict([History(np.full(10, 3.0), LAST_DAY)], 7) == [
        "random_forest: no series has 29 days to learn from"
    ]


def test_training_rows_respect_the_cap_and_never_look_past_the_history() -> None:
    ys = [np.arange(100, dtype=float), np.arange(50, dtype=float)]
    panel = _Panel(ys, [LAST_DAY, LAST_DAY])
    series, origin, step = panel.sample_rows(np.random.default_rng(0), 14, 500)  # type: ignore[misc]
    assert series.size == 500
    assert np.all(origin >= 27) and np.all(step >= 1) and np.all(step <= 14)
    assert np.all(origin + step <= panel.lengths[series] - 1)
    x = panel.features(series, origin, step, "US")
    assert x.shape == (500, len(FEATURES))
    # On a ramp y[t] = t the level is the 28-day mean, so lag0 (y[o] - level) is always 13.5.
    np.testing.assert_allclose(x[:, FEATURES.index("lag0")], 13.5)
    np.testing.assert_allclose(x[:, FEATURES.index("step")], step)


@dataclass(frozen=True)
class CountingGlobal:
    """A fleet-scope model that records each fit's histories and forecasts the last season."""

    calls: list[tuple[int, list[int]]]
    name: str = "counting_global"
    scope: ClassVar[Scope] = "fleet"

    def params(self) -> dict[str, object]:
        return {}

    def fit_predict(self, histories: Sequence[History], horizon: int) -> list[Answer]:
        self.calls.append((horizon, [h.y.size for h in histories]))
        return SeasonalNaive().fit_predict(histories, horizon)


def daily_frame(servers: int, days: int, end: date) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(3)
    for s in range(servers):
        for metric in ("cpu", "mem"):
            values = 30 + 10 * np.sin(2 * np.pi * np.arange(days) / 7) + rng.normal(0, 1, days) + s
            rows.append(
                pd.DataFrame(
                    {
                        "server_id": f"srv-{s:02d}",
                        "metric": metric,
                        "dt": pd.date_range(end - timedelta(days=days - 1), periods=days),
                        "p95": values,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def test_engine_fits_a_global_model_per_metric_and_origin_without_leakage() -> None:
    daily = daily_frame(3, 120, date(2026, 11, 22))
    series = prepare_series(daily)
    calls: list[tuple[int, list[int]]] = []
    model = CountingGlobal(calls)
    config = BacktestConfig(horizon=30, n_origins=2)
    out = precompute_fleet_models(series, [SeasonalNaive(), model], config)
    # 2 metrics x (2 origins + final); windows as long as the horizon: origins cut at 120 - 30 and 120 - 60 days.
    assert sorted(calls) == sorted([(30, [90] * 3), (30, [60] * 3), (30, [120] * 3)] * 2)
    table = out[("srv-00", "cpu")]["counting_global"]
    assert isinstance(table, Precomputed) and sorted(table.forecasts) == [60, 90, 120]
    (answer,) = table.fit_predict([History(np.zeros(90))], 28)
    assert isinstance(answer, QuantileForecast) and answer.horizon == 28
    assert table.fit_predict([History(np.zeros(50))], 7) == [
        "counting_global made no forecast from a history of 50 days"
    ]


def test_random_forest_competes_for_champion_in_the_fleet() -> None:
    daily = daily_frame(4, 150, date(2026, 11, 22))
    kwargs = dict(
        run_date=date(2026, 11, 22),
        horizon_days=30,
        models=["seasonal_naive", "linear_trend", "random_forest"],
        n_origins=2,
        score="mae",
        min_history_days=56,
        model_settings={"random_forest": {"max_rows": 2000, "n_estimators": 20}},
    )
    forecasts, metrics = forecast_fleet(daily, n_jobs=1, **kwargs)  # type: ignore[arg-type]
    rf = metrics[metrics["model"] == "random_forest"]
    assert len(rf) == 8 and (rf["status"] == "ok").all() and (rf["n_origins"] == 2).all()
    assert metrics.groupby(["server_id", "metric"])["is_champion"].sum().eq(1).all()
    assert len(forecasts[forecasts["model"] == "random_forest"]) == 8 * 30
    again, _ = forecast_fleet(daily, n_jobs=2, **kwargs)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(forecasts, again)


def test_a_failing_global_fit_fails_the_model_not_the_fleet() -> None:
    daily = daily_frame(2, 100, date(2026, 11, 22))
    _, metrics = forecast_fleet(
        daily,
        run_date=date(2026, 11, 22),
        horizon_days=14,
        models=["seasonal_naive", "random_forest"],
        n_origins=2,
        score="mae",
        min_history_days=56,
        model_settings={"random_forest": {"n_estimators": 0}},
    )
    rf = metrics[metrics["model"] == "random_forest"]
    assert (rf["status"] == "failed").all() and rf["reason"].str.contains("n_estimators").all()
    assert (metrics[metrics["model"] == "seasonal_naive"]["is_champion"]).all()


def test_bad_model_settings_are_config_errors() -> None:
    daily = daily_frame(1, 100, date(2026, 11, 22))
    with pytest.raises(ConfigError, match=r"random_forest: .*max_rows"):
        forecast_fleet(
            daily,
            run_date=date(2026, 11, 22),
            horizon_days=14,
            models=["random_forest"],
            n_origins=2,
            score="mae",
            min_history_days=56,
            model_settings={"random_forest": {"max_rows": 1}},
        )
