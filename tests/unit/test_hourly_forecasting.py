"""Hourly grain: season 24, horizons and backtest windows in hours, hour-of-day features, hourly timestamps."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.errors import CapacityForecasterError, ConfigError, InputError
from capacity_forecaster.forecasting.baselines import History
from capacity_forecaster.forecasting.engine import forecast_fleet, prepare_series
from capacity_forecaster.forecasting.grain import DAILY, HOURLY, daily_peaks, get_grain, merged_settings
from capacity_forecaster.forecasting.job import (
    ContractPaths,
    parse_hyperparameters,
    publish_training_run,
    run_training_job,
    staging_keys,
)
from capacity_forecaster.forecasting.prophet_model import ProphetModel
from capacity_forecaster.forecasting.random_forest import HOURLY_FEATURES, RandomForestModel, _Panel
from capacity_forecaster.schema import FORECASTS, FORECASTS_HOURLY, METRICS_DAILY
from capacity_forecaster.settings import load_settings
from capacity_forecaster.storage.lake import Lake, open_lake

LAST_HOUR = pd.Timestamp("2026-11-21 23:00")


def hourly_profile(hours: np.ndarray) -> np.ndarray:
    """A busy-hours cycle (peak at 14:00) that is lower at weekends."""
    hour = hours % 24
    weekday = (hours // 24 + 3) % 7  # hours counted from 1970-01-01, a Thursday
    cycle = 30 + 25 * np.exp(-(((hour - 14) / 4.0) ** 2))
    return cycle - np.where(weekday >= 5, 10.0, 0.0)


def hourly_frame(
    n_hours: int, servers: tuple[str, ...] = ("a",), *, noise: float = 0.0, tz: bool = True
) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    stamps = pd.date_range(end=LAST_HOUR, periods=n_hours, freq="h", tz="UTC" if tz else None)
    hours = (stamps.tz_localize(None) if tz else stamps).to_numpy().astype("datetime64[h]").astype(np.int64)
    frames = []
    for k, server in enumerate(servers):
        values = hourly_profile(hours) + 2 * k + rng.normal(0, noise, n_hours)
        frames.append(pd.DataFrame({"server_id": server, "metric": "cpu", "dt": stamps, "p95": values}))
    return pd.concat(frames, ignore_index=True)


def test_grains_and_model_settings() -> None:
    assert (DAILY.season, DAILY.unit, HOURLY.season, HOURLY.unit) == (7, "D", 24, "h")
    assert get_grain("hourly") is HOURLY
    with pytest.raises(ConfigError, match="grain 'weekly' must be one of daily, hourly"):
        get_grain("weekly")
    merged = merged_settings(HOURLY, {"random_forest": {"seed": 4}, "prophet": {"country": "GB"}})
    assert merged["random_forest"] == {"grain": "hourly", "seed": 4}
    assert merged["prophet"] == {"grain": "hourly", "country": "GB"}
    assert merged["seasonal_naive"]["season"] == 24
    assert merged_settings(DAILY, None) == {}


def test_prepare_series_hourly_fills_gaps_and_keeps_the_run_date() -> None:
    frame = hourly_frame(72)
    frame = frame.drop(index=[10, 11])  # two missing hours
    later = hourly_frame(1).assign(dt=pd.Timestamp("2026-11-22 05:00", tz="UTC"))
    (series,) = prepare_series(pd.concat([frame, later]), run_date=date(2026, 11, 21), grain="hourly")
    assert series.last_day == np.datetime64("2026-11-21T23", "h")
    assert (series.y.size, series.filled_days) == (72, 2)
    np.testing.assert_allclose(series.y[10:12], np.interp([10, 11], [9, 12], frame["p95"].to_numpy()[[9, 10]]))
    with pytest.raises(InputError, match=r"hourly metrics have 1 duplicate hour\(s\), e.g. a cpu 2026-11-21 23:00"):
        prepare_series(pd.concat([frame, frame.tail(1)]), grain="hourly")


def test_seasonal_naive_repeats_the_last_24_hours_with_hourly_timestamps() -> None:
    frame = hourly_frame(21 * 24, noise=1.0)
    forecasts, metrics = forecast_fleet(
        frame,
        run_date=date(2026, 11, 21),
        horizon_days=168,
        models=["seasonal_naive", "linear_trend"],
        n_origins=2,
        score="mae",
        min_history_days=336,
        grain="hourly",
    )
    naive = forecasts[forecasts["model"] == "seasonal_naive"].reset_index(drop=True)
    assert len(naive) == 168
    assert naive["horizon_step"].tolist() == list(range(1, 169))
    expected_ds = pd.date_range(LAST_HOUR + pd.Timedelta(hours=1), periods=168, freq="h")
    assert (pd.DatetimeIndex(naive["ds"]) == expected_ds).all()
    last_day = frame["p95"].to_numpy()[-24:]
    np.testing.assert_allclose(naive["p50"], np.tile(last_day, 7))  # season 24, not 7
    assert (forecasts["p10"] <= forecasts["p50"]).all() and (forecasts["p50"] <= forecasts["p90"]).all()
    # Two week-long backtest windows 96 hours apart; MASE scaled by the 24-hour seasonal naive.
    assert metrics["n_origins"].tolist() == [2, 2, 2]  # the two models and their median
    assert metrics["status"].tolist() == ["ok", "ok", "ok"]
    assert metrics["is_champion"].sum() == 1
    champion = metrics.loc[metrics["is_champion"], "model"].item()
    # A stable 24-hour cycle: repeating yesterday (alone or in the median) beats a line; the lowest score wins.
    assert champion in {"seasonal_naive", "median"}
    assert metrics.loc[metrics["is_champion"], "mae"].item() == metrics["mae"].min()


def test_short_hourly_series_is_fitted_on_what_there_is_with_a_reason_in_hours() -> None:
    forecasts, metrics = forecast_fleet(
        hourly_frame(100),
        run_date=date(2026, 11, 21),
        horizon_days=48,
        models=["seasonal_naive", "linear_trend"],
        n_origins=2,
        score="mae",
        min_history_days=336,
        grain="hourly",
    )
    naive = metrics[metrics["model"] == "seasonal_naive"].iloc[0]
    assert naive["status"] == "insufficient_history"
    assert naive["reason"].startswith("100 hours of history, fewer than min_history_hours=336")
    assert "fitted on the 100 hours there are" in naive["reason"]
    p50 = forecasts.loc[forecasts["model"] == "seasonal_naive", "p50"].to_numpy()
    np.testing.assert_allclose(p50, np.tile(hourly_frame(100)["p95"].to_numpy()[-24:], 2))
    champion = forecasts[forecasts["is_champion"]]
    assert set(champion["model"]) == {"median"} and len(champion) == 48
    assert ((champion["p90"] - champion["p10"]) < 50).all()  # a band from its own noise, not 0..100


def test_random_forest_hourly_learns_the_hour_of_day_and_weekday() -> None:
    n = 28 * 24
    hours = np.arange(n) + np.datetime64("2026-10-25T00", "h").astype(np.int64)
    last = np.datetime64("2026-10-25T00", "h") + np.timedelta64(n - 1, "h")
    rng = np.random.default_rng(0)
    histories = [History(hourly_profile(hours) + k + rng.normal(0, 1, n), last) for k in range(6)]
    model = RandomForestModel(grain="hourly", max_rows=6000, seed=1)
    out = model.fit_predict(histories, 168)
    assert all(not isinstance(f, str) for f in out)
    future = hours[-1] + np.arange(1, 169)
    truth = hourly_profile(future)
    for k, fc in enumerate(out):
        assert not isinstance(fc, str)
        assert fc.horizon == 168
        assert (fc.p10 <= fc.p50).all() and (fc.p50 <= fc.p90).all()
        assert np.corrcoef(fc.p50, truth)[0, 1] > 0.95
        assert np.mean(np.abs(fc.p50 - (truth + k))) < 2.5
    again = model.fit_predict(histories, 168)
    np.testing.assert_array_equal(out[0].p50, again[0].p50)  # type: ignore[union-attr]
    panel = _Panel([histories[0].y], [last], 168)
    x = panel.hourly_features(np.array([0]), np.array([n - 1]), np.array([15]), "US")
    assert x.shape == (1, len(HOURLY_FEATURES))
    target_hour = (last + np.timedelta64(15, "h")).astype(np.int64) % 24
    assert x[0, HOURLY_FEATURES.index("hour")] == target_hour
    short = model.fit_predict([History(histories[0].y[:100], last)], 24)
    assert short == ["random_forest: no series has 169 hours to learn from"]
    with pytest.raises(ValueError, match="grain must be daily or hourly"):
        RandomForestModel(grain="weekly")


def test_prophet_hourly_has_a_daily_cycle() -> None:
    n = 14 * 24
    last = np.datetime64("2026-11-21T23", "h")
    hours = last.astype(np.int64) - np.arange(n - 1, -1, -1)
    y = hourly_profile(hours) + np.random.default_rng(2).normal(0, 1, n)
    fc = ProphetModel(grain="hourly", uncertainty_samples=50).forecast(y, 48, last)
    truth = hourly_profile(last.astype(np.int64) + np.arange(1, 49))
    assert fc.horizon == 48
    assert (fc.p10 <= fc.p50).all() and (fc.p50 <= fc.p90).all()
    assert ((fc.p10 >= 0) & (fc.p90 <= 100)).all()
    assert np.corrcoef(fc.p50, truth)[0, 1] > 0.9


def test_daily_peaks_turn_the_breach_hour_into_its_date() -> None:
    ds = pd.date_range("2026-11-22 00:00", periods=48, freq="h", tz="UTC")
    p50 = np.full(48, 50.0)
    p50[30] = 85.0  # 2026-11-23 06:00
    hourly = pd.DataFrame(
        {
            "server_id": "a",
            "metric": "cpu",
            "model": "seasonal_naive",
            "ds": ds,
            "horizon_step": np.arange(1, 49),
            "p10": p50 - 5,
            "p50": p50,
            "p90": p50 + 5,
            "is_champion": True,
            "run_date": pd.Timestamp("2026-11-21"),
        }
    )
    daily = daily_peaks(hourly)
    assert list(daily.columns) == [*FORECASTS.column_names, "run_date"]
    assert daily["ds"].tolist() == [pd.Timestamp("2026-11-22"), pd.Timestamp("2026-11-23")]
    assert daily["horizon_step"].tolist() == [1, 2]
    assert daily[["p10", "p50", "p90"]].values.tolist() == [[45, 50, 55], [80, 85, 90]]


def test_hourly_hyperparameters_and_settings_are_validated() -> None:
    base = {"run_date": "2026-11-21", "run_id": "r", "lake_uri": "lake"}
    hourly = {"training.grain": "hourly", "training.horizon_hours": "72"}
    params = parse_hyperparameters({**base, **hourly, "backtest_horizon": "48"})
    assert (params.grain, params.horizon, params.min_history, params.backtest_horizon) == ("hourly", 72, 168, 48)
    assert parse_hyperparameters(base).horizon == 90
    for extra, message in (
        ({"training.grain": "weekly"}, "training.grain='weekly' must be daily or hourly"),
        ({**hourly, "training.horizon_hours": "0"}, "training.horizon_hours=0 must be between 1 and 2208"),
        ({**hourly, "training.horizon_hours": "24", "backtest_horizon": "48"}, "between 1 and 24"),
        ({"training.min_history_hours": "10"}, "training.min_history_hours=10 must be between 48 and 87600"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_hyperparameters({**base, **extra})
    settings = load_settings(environ={}, overrides={"training.grain": "hourly", "training.horizon_hours": 336})
    assert (settings.training.grain, settings.training.horizon_hours) == ("hourly", 336)
    for key, value, message in (
        ("training.grain", "minutely", "training.grain='minutely' must be daily or hourly"),
        ("training.horizon_hours", 5000, "training.horizon_hours=5000 must be between 1 and 2208"),
        ("training.min_history_hours", 12, "training.min_history_hours=12 must be between 48 and 87600"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(environ={}, overrides={key: value})


def daily_lake(root: Path) -> Lake:
    lake = open_lake(str(root))
    days = pd.date_range(end="2026-11-21", periods=70, freq="D")
    frame = pd.DataFrame(
        {
            "server_id": np.repeat(["a", "b", "c", "d"], 70),
            "metric": "cpu",
            "dt": np.tile(days, 4),
            "p95": np.tile(40 + 5 * np.sin(np.arange(70)), 4),
            "n_samples": np.int32(288),
            "imputed": False,
        }
    )
    lake.write_table(METRICS_DAILY, frame)
    return lake


def test_hourly_job_reads_metrics_hourly_and_hosts_must_agree_on_the_grain(tmp_path: Path) -> None:
    lake = daily_lake(tmp_path / "lake")
    base = {"run_date": "2026-11-21", "lake_uri": lake.uri, "training.n_jobs": "1", "horizon_days": "14"}
    # An hourly job whose channel holds daily partitions finds no metrics_hourly rows and says what it expected.
    root = tmp_path / "opt-ml"
    paths = ContractPaths(root)
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text(json.dumps({**base, "run_id": "h", "training.grain": "hourly"}))
    shutil.copytree(Path(lake.uri) / METRICS_DAILY.prefix, paths.channel)
    assert run_training_job(root, lake=lake) == 1
    assert paths.failure.read_text().strip() == (
        f"data channel 'curated' at {paths.channel} holds no metrics_hourly rows "
        "(expected day=YYYY-MM-DD/data.parquet objects)"
    )
    # Two hosts whose manifests disagree on the grain are not published.
    for host in ("algo-1", "algo-2"):
        host_root = tmp_path / host
        host_paths = ContractPaths(host_root)
        host_paths.hyperparameters.parent.mkdir(parents=True)
        host_paths.hyperparameters.write_text(json.dumps({**base, "run_id": "mixed"}))
        host_paths.resource_config.write_text(json.dumps({"current_host": host, "hosts": ["algo-1", "algo-2"]}))
        shutil.copytree(Path(lake.uri) / METRICS_DAILY.prefix, host_paths.channel)
        assert run_training_job(host_root, lake=lake) == 0
    key = staging_keys("mixed", 1, 2)["manifest"]
    manifest = json.loads(lake.store.get_bytes(key))
    assert manifest["grain"] == "daily"
    lake.store.put_bytes(key, json.dumps({**manifest, "grain": "hourly"}).encode())
    mixed = r"training run mixed: hosts trained at different grains \(daily, hourly\)"
    with pytest.raises(CapacityForecasterError, match=mixed):
        publish_training_run(lake, run_id="mixed", run_date=date(2026, 11, 21))
    assert not lake.list_partitions(FORECASTS) and not lake.list_partitions(FORECASTS_HOURLY)
