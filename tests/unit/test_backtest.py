"""Rolling-origin backtest, champion choice, fallbacks, and the fleet engine built on them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.forecasting.backtest import (
    TIE_TOLERANCE,
    BacktestConfig,
    ModelResult,
    SeriesResult,
    choose_champion,
    evaluate_series,
    origins_for,
)
from capacity_forecaster.forecasting.baselines import (
    LinearTrend,
    QuantileForecast,
    SeasonalNaive,
    SeriesModel,
    register_model,
    registered_models,
)
from capacity_forecaster.forecasting.engine import SeriesInput, chunked, forecast_fleet
from capacity_forecaster.schema import FORECASTS, MODEL_METRICS

CONFIG = BacktestConfig(horizon=30)


@dataclass(frozen=True)
class Broken(SeriesModel):
    """Raises on every call."""

    name: str = "broken"

    def params(self) -> dict[str, object]:
        return {}

    def forecast(self, y: np.ndarray, horizon: int, last: np.datetime64 | None = None) -> QuantileForecast:
        raise RuntimeError("boom\nsecond line")


@dataclass(frozen=True)
class ReturnsNaN(SeriesModel):
    name: str = "returns_nan"

    def params(self) -> dict[str, object]:
        return {}

    def forecast(self, y: np.ndarray, horizon: int, last: np.datetime64 | None = None) -> QuantileForecast:
        nan = np.full(horizon, np.nan)
        return QuantileForecast(nan, nan, nan)


@dataclass(frozen=True)
class FailsOnLongHistory(SeriesModel):
    """Backtests fine (short histories) and fails on the final fit."""

    limit: int
    name: str = "fails_late"

    def params(self) -> dict[str, object]:
        return {}

    def forecast(self, y: np.ndarray, horizon: int, last: np.datetime64 | None = None) -> QuantileForecast:
        if y.size >= self.limit:
            raise MemoryError("too much history")
        return SeasonalNaive().forecast(y, horizon)


def weekly(n: int, seed: int = 0, noise: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 40 + 15 * np.sin(2 * np.pi * t / 7) + rng.normal(0, noise, n)


def trend(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 10 + 0.3 * np.arange(n) + rng.normal(0, 0.5, n)


def by_model(result: SeriesResult) -> dict[str, ModelResult]:
    return {r.model: r for r in result.results}


# ------------------------------------------------------------------------------------------- backtest


def test_config_defaults_and_validation() -> None:
    assert BacktestConfig(horizon=90).eval_horizon == 90  # judged as far ahead as it forecasts
    assert BacktestConfig(horizon=90, backtest_horizon=28).eval_horizon == 28
    assert BacktestConfig(horizon=90, backtest_horizon=10).origin_step == 10
    assert BacktestConfig(horizon=90, step=7).origin_step == 7
    with pytest.raises(ValueError, match="score"):
        BacktestConfig(score="mape")
    with pytest.raises(ValueError, match="n_origins"):
        BacktestConfig(n_origins=0)


def test_origins_sit_at_the_end_of_history() -> None:
    config = BacktestConfig(horizon=90, backtest_horizon=28, n_origins=3)
    assert origins_for(120, config) == [92, 64, 36]
    assert origins_for(50, config) == [22]  # 22 - 28 < min_train_days
    assert origins_for(120, BacktestConfig(horizon=90, backtest_horizon=28, n_origins=2, step=7)) == [92, 85]
    assert origins_for(200, BacktestConfig(horizon=90, n_origins=2)) == [110, 20]


def test_a_short_history_gets_a_shorter_window_never_under_a_season() -> None:
    config = BacktestConfig(horizon=90, n_origins=2)
    assert config.window_for(300) == 90
    assert config.window_for(60) == 46  # what is left after 14 training days
    assert origins_for(60, config) == [14]
    assert config.window_for(20) == 0  # 6 days left: under a season, no backtest
    assert origins_for(20, config) == []


def test_champion_is_seasonal_naive_on_a_weekly_pattern() -> None:
    result = evaluate_series(weekly(150), [SeasonalNaive(), LinearTrend()], CONFIG)
    assert result.champion == "seasonal_naive"
    rows = by_model(result)
    for r in result.results:
        assert r.status == "ok" and r.n_origins == 2 and r.forecast is not None
        assert r.forecast.horizon == 30
        assert all(math.isfinite(getattr(r, m)) for m in ("mae", "rmse", "smape", "mase", "coverage"))
    assert [r.model for r in result.results if r.is_champion] == ["seasonal_naive"]
    assert rows["seasonal_naive"].mae < rows["linear_trend"].mae
    assert rows["median"].reason == "median of seasonal_naive, linear_trend"
    assert len(result.actuals) == len(result.scales) == 2 and result.actuals[0].size == 30


def test_champion_is_linear_trend_on_a_trend() -> None:
    result = evaluate_series(trend(150), [SeasonalNaive(), LinearTrend()], CONFIG)
    assert result.champion == "linear_trend"


@pytest.mark.parametrize("score", ["mae", "rmse", "smape", "mase"])
def test_champion_is_the_best_by_the_chosen_score(score: str) -> None:
    config = BacktestConfig(horizon=30, score=score)
    y = weekly(150, noise=4.0) + 0.05 * np.arange(150)
    result = evaluate_series(y, [SeasonalNaive(), LinearTrend()], config)
    best = min(getattr(r, score) for r in result.results)
    champion = next(r for r in result.results if r.model == result.champion)
    assert getattr(champion, score) <= best * (1 + TIE_TOLERANCE)


def test_a_tie_goes_to_the_better_calibrated_band() -> None:
    """Scores within 1% are a tie: the band nearest 80% coverage wins; outside the tie the score decides."""
    fc = SeasonalNaive().forecast(np.arange(30.0), 3)

    def result(model: str, mae: float, coverage: float) -> ModelResult:
        return ModelResult(model=model, status="ok", mae=mae, rmse=mae, coverage=coverage, forecast=fc)

    tied = [result("a", 0.910, 0.744), result("b", 0.915, 0.750), result("c", 3.0, 0.80)]
    assert choose_champion(tied, "mae") == 1
    apart = [result("a", 0.910, 0.744), result("b", 0.930, 0.800)]
    assert choose_champion(apart, "mae") == 0
    failed = [ModelResult(model="x", status="failed"), result("b", 1.0, 0.5)]
    assert choose_champion(failed, "mae") == 1


def test_insufficient_history_fits_every_model_on_what_there_is() -> None:
    y = weekly(30)
    result = evaluate_series(y, [LinearTrend(), SeasonalNaive()], CONFIG)
    assert result.champion == "median"
    rows = by_model(result)
    naive, line = rows["seasonal_naive"], rows["linear_trend"]
    assert naive.status == line.status == rows["median"].status == "insufficient_history"
    assert naive.forecast is not None and line.forecast is not None and rows["median"].is_champion
    assert "30 days of history, fewer than min_history_days=56; fitted on the 30 days there are" in naive.reason
    assert naive.n_origins == 0 and math.isnan(naive.mae)
    # The band comes from the series' own noise, never the whole 0..100 range.
    for r in result.results:
        assert r.forecast is not None
        width = r.forecast.p90 - r.forecast.p10
        assert np.all(width > 0) and np.all(width < 40)
        assert np.all(np.diff(width) >= -1e-9)


def test_insufficient_history_falls_back_to_seasonal_naive_when_no_model_fits() -> None:
    result = evaluate_series(weekly(20), [Broken()], CONFIG)
    assert [(r.model, r.status) for r in result.results] == [
        ("broken", "failed"),
        ("seasonal_naive", "insufficient_history"),
    ]
    assert result.champion == "seasonal_naive"


def test_history_too_short_for_the_backtest_window_gets_a_shorter_one() -> None:
    config = BacktestConfig(horizon=90, backtest_horizon=60, min_history_days=56)
    result = evaluate_series(weekly(70), [SeasonalNaive()], config)
    assert result.results[0].status == "ok" and result.results[0].n_origins == 1
    assert result.actuals[0].size == 56


def test_a_model_that_raises_is_failed_and_the_next_best_wins() -> None:
    result = evaluate_series(weekly(150), [Broken(), LinearTrend()], CONFIG)
    rows = by_model(result)
    assert rows["broken"].status == "failed"
    assert rows["broken"].reason == "RuntimeError: boom second line"
    assert rows["broken"].forecast is None
    assert result.champion == "linear_trend"


def test_a_model_returning_nan_is_failed() -> None:
    result = evaluate_series(weekly(150), [ReturnsNaN(), SeasonalNaive()], CONFIG)
    rows = by_model(result)
    assert rows["returns_nan"].status == "failed"
    assert "missing or infinite" in rows["returns_nan"].reason
    assert result.champion == "seasonal_naive"


def test_a_model_failing_only_on_the_final_fit_is_failed() -> None:
    result = evaluate_series(weekly(150), [FailsOnLongHistory(limit=150), LinearTrend()], CONFIG)
    assert by_model(result)["fails_late"].status == "failed"
    assert result.champion == "linear_trend"


def test_every_requested_model_failing_falls_back_to_seasonal_naive() -> None:
    result = evaluate_series(weekly(150), [Broken(), ReturnsNaN()], CONFIG)
    assert result.champion == "seasonal_naive"
    fallback = by_model(result)["seasonal_naive"]
    assert fallback.status == "ok" and "fallback" in fallback.reason


def test_a_series_no_model_can_handle_never_raises() -> None:
    y = weekly(150)
    y[40] = np.nan
    result = evaluate_series(y, [SeasonalNaive(), LinearTrend()], CONFIG)
    assert result.champion is None
    assert {r.status for r in result.results} == {"failed"}


# --------------------------------------------------------------------------------------------- engine


def daily_frame(servers: int = 4, days: int = 120, start: date = date(2025, 9, 1)) -> pd.DataFrame:
    frames = []
    for s in range(servers):
        for k, metric in enumerate(("cpu", "mem", "disk")):
            y = weekly(days, seed=s * 10 + k) if metric == "cpu" else trend(days, seed=s * 10 + k) * 0.2 + 20
            frames.append(
                pd.DataFrame(
                    {
                        "server_id": f"srv-{s:02d}",
                        "metric": metric,
                        "dt": pd.date_range(start, periods=days, freq="D"),
                        "p95": np.clip(y, 0, 100),
                        "n_samples": 288,
                        "imputed": False,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def fleet(daily: pd.DataFrame, **kwargs: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    args: dict[str, object] = {
        "run_date": date(2026, 1, 1),
        "horizon_days": 30,
        "models": ["seasonal_naive", "linear_trend"],
        "n_origins": 2,
        "score": "mae",
        "min_history_days": 56,
    }
    args.update(kwargs)
    return forecast_fleet(daily, **args)  # type: ignore[arg-type]


def test_fleet_outputs_have_the_table_columns_and_order() -> None:
    daily = daily_frame()
    forecasts, metrics = fleet(daily)
    assert list(forecasts.columns) == [*FORECASTS.column_names, "run_date"]
    assert list(metrics.columns) == [*MODEL_METRICS.column_names, "run_date"]
    assert len(metrics) == 12 * 3 and len(forecasts) == 12 * 3 * 30  # two models and their median
    assert set(metrics["model"]) == {"seasonal_naive", "linear_trend", "median"}
    keys = ["server_id", "metric", "model", "ds"]
    assert forecasts[keys].equals(forecasts[keys].sort_values(keys, ignore_index=True))
    assert (forecasts["run_date"] == pd.Timestamp("2026-01-01")).all()
    last = daily["dt"].max()
    first = forecasts.groupby(["server_id", "metric", "model"])["ds"].min()
    assert (first == last + pd.Timedelta(days=1)).all()
    assert sorted(forecasts["horizon_step"].unique()) == list(range(1, 31))
    assert (forecasts["ds"] - last).dt.days.equals(forecasts["horizon_step"].astype("int64"))
    champions = metrics[metrics["is_champion"]].groupby(["server_id", "metric"]).size()
    assert (champions == 1).all() and len(champions) == 12
    champ_rows = forecasts[forecasts["is_champion"]].groupby(["server_id", "metric"])["model"].nunique()
    assert (champ_rows == 1).all()
    # One champion per metric across the fleet: four servers, one choice each.
    assert (metrics[metrics["is_champion"]].groupby("metric")["model"].nunique() == 1).all()
    models = metrics["model"] != "median"
    assert (metrics["status"] == "ok").all() and (metrics.loc[models, "reason"] == "").all()


def test_fleet_is_the_same_for_any_n_jobs_and_reports_progress() -> None:
    daily = daily_frame(servers=6)
    seen: list[int] = []
    one = fleet(daily, n_jobs=1, progress=seen.append)
    two = fleet(daily, n_jobs=2)
    assert sum(seen) == 18
    pd.testing.assert_frame_equal(one[0], two[0])
    pd.testing.assert_frame_equal(one[1], two[1])


def test_fleet_origin_is_each_series_last_day_and_future_days_are_ignored() -> None:
    daily = daily_frame(servers=1)
    daily = daily[~((daily["metric"] == "mem") & (daily["dt"] > "2025-12-20"))]
    forecasts, _ = fleet(daily, run_date=date(2025, 12, 25))
    first = forecasts[forecasts["horizon_step"] == 1].groupby("metric")["ds"].first()
    assert first["mem"] == pd.Timestamp("2025-12-21")
    assert first["cpu"] == pd.Timestamp("2025-12-26")


def test_fleet_fills_gaps_and_handles_short_series() -> None:
    daily = daily_frame(servers=2)
    daily = daily.drop(index=daily.index[10:13])  # a 3-day hole in srv-00 cpu
    short = daily_frame(servers=1, days=20, start=date(2025, 12, 1)).assign(server_id="srv-new")
    forecasts, metrics = fleet(pd.concat([daily, short]))
    new = metrics[metrics["server_id"] == "srv-new"]
    assert set(new["status"]) == {"insufficient_history"}
    # Too short to backtest: forecast with each metric's champion over the backtested servers.
    champions = metrics[metrics["is_champion"]].set_index(["server_id", "metric"])["model"]
    for metric in ("cpu", "mem", "disk"):
        assert champions[("srv-new", metric)] == champions[("srv-00", metric)]
    assert set(forecasts.loc[forecasts["server_id"] == "srv-new", "model"]) == {
        "seasonal_naive",
        "linear_trend",
        "median",
    }
    assert (metrics.loc[metrics["server_id"] == "srv-00", "status"] == "ok").all()


def test_a_failing_registered_model_never_fails_the_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    from capacity_forecaster.forecasting import baselines

    # registered for this test only: the registry is what the settings accept as training.models
    monkeypatch.setattr(baselines, "_REGISTRY", dict(baselines._REGISTRY))
    register_model("test_broken", lambda: Broken(name="test_broken"))
    assert "test_broken" in registered_models()
    forecasts, metrics = fleet(daily_frame(servers=2), models=["test_broken", "linear_trend"])
    broken = metrics[metrics["model"] == "test_broken"]
    assert set(broken["status"]) == {"failed"} and not broken["is_champion"].any()
    assert "test_broken" not in set(forecasts["model"])
    assert metrics.groupby(["server_id", "metric"])["is_champion"].sum().eq(1).all()


def test_a_registration_is_the_one_place_of_a_models_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from capacity_forecaster.forecasting import baselines
    from capacity_forecaster.forecasting.engine import resolve_models
    from capacity_forecaster.forecasting.grain import HOURLY, merged_settings
    from capacity_forecaster.forecasting.job import parse_hyperparameters

    monkeypatch.setattr(baselines, "_REGISTRY", dict(baselines._REGISTRY))
    register_model(
        "test_naive",
        lambda: SeasonalNaive(name="test_naive"),
        settings={"min_errors": "seed"},
        grains={"hourly": {"season": 24}},
    )
    params = parse_hyperparameters(
        {"run_date": "2026-01-10", "run_id": "r1", "lake_uri": "lake", "training.seed": "3", "training.grain": "hourly"}
    )
    assert params.model_settings()["test_naive"] == {"min_errors": 3}
    (model,) = resolve_models(["test_naive"], merged_settings(HOURLY, params.model_settings()))
    assert (model.params()["min_errors"], model.params()["season"], model.params()["error_window"]) == (3, 24, 365)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_naive", SeasonalNaive)
    with pytest.raises(ValueError, match=r"'test_typo' has no field\(s\) windw to set"):
        register_model("test_typo", LinearTrend, grains={"hourly": {"windw": 336}})


def test_fleet_rejects_bad_arguments_clearly() -> None:
    daily = daily_frame(servers=1)
    with pytest.raises(ConfigError, match="unknown model"):
        fleet(daily, models=["prophet-ish"])
    with pytest.raises(ConfigError, match="score"):
        fleet(daily, score="mape")
    with pytest.raises(InputError, match="lack column"):
        fleet(daily.drop(columns="p95"))
    with pytest.raises(InputError, match="duplicate"):
        fleet(pd.concat([daily, daily.head(1)]))


def test_series_are_batched_for_the_workers() -> None:
    series = [SeriesInput("s", "cpu", np.datetime64("2026-01-01"), np.ones(3))] * 1000
    assert [len(c) for c in chunked(series[:15], 2)] == [15]  # too small to be worth a second process
    assert {len(c) for c in chunked(series, 2)[:-1]} == {63}  # about 8 batches per worker
    assert max(len(c) for c in chunked(series, 1)) == 100
    assert sum(len(c) for c in chunked(series, 16)) == 1000


def test_fleet_on_no_data_gives_empty_tables() -> None:
    forecasts, metrics = fleet(daily_frame(servers=1).head(0))
    assert forecasts.empty and metrics.empty
    assert list(forecasts.columns) == [*FORECASTS.column_names, "run_date"]
    assert list(metrics.columns) == [*MODEL_METRICS.column_names, "run_date"]


def test_fleet_dates_are_midnight_datetimes() -> None:
    daily = daily_frame(servers=1)
    daily["dt"] = daily["dt"].dt.date  # date objects are accepted too
    forecasts, _ = fleet(daily)
    assert forecasts["ds"].dtype == "datetime64[ns]"
    assert (forecasts["ds"] == forecasts["ds"].dt.normalize()).all()
    assert forecasts["ds"].min() == pd.Timestamp(date(2025, 9, 1) + timedelta(days=120))
