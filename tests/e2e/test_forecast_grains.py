"""Forecast grains and horizons end to end: a weeks-long 5-minute trace forecast hourly, and a 180-day horizon."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.generate import FleetSpec, generate_fleet, generate_raw_samples
from capacity_forecaster.pipeline import run_pipeline
from capacity_forecaster.schema import (
    FORECASTS,
    FORECASTS_HOURLY,
    METRICS_HOURLY,
    MODEL_METRICS,
    MODEL_METRICS_HOURLY,
    RISK_REGISTER,
)
from capacity_forecaster.settings import load_settings
from capacity_forecaster.storage.lake import open_lake

pytestmark = pytest.mark.slow

END = date(2026, 11, 21)
TRACE_DAYS = 21
HORIZON_HOURS = 168
MODELS = ("seasonal_naive", "linear_trend", "random_forest")


def five_minute_trace(path: Path) -> pd.DataFrame:
    """3 servers x 4 metrics x 3 weeks of 5-minute samples from the generator (diurnal shape, missing days)."""
    thresholds = dict.fromkeys(("cpu", "mem", "disk", "net"), 80.0)
    fleet = generate_fleet(FleetSpec(servers=3, days=60, end_date=END, horizon_days=90, seed=7, thresholds=thresholds))
    observed = set(fleet.daily["dt"].dt.date)
    days = [d for d in (END - timedelta(days=k) for k in range(TRACE_DAYS)) if d in observed]
    samples = generate_raw_samples(fleet, days, seed=7)
    samples[["timestamp", "server_id", "metric", "value"]].to_csv(path, index=False)
    return samples


def test_hourly_grain_from_a_five_minute_trace_to_the_risk_register(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = five_minute_trace(tmp_path / "trace.csv")
    assert samples["server_id"].nunique() == 3 and len(samples) > 60_000
    lake_dir = str(tmp_path / "lake")
    config = tmp_path / "config.yaml"
    config.write_text(f"training: {{models: [{', '.join(MODELS)}], rf_max_rows: 3000, n_jobs: 1}}\n")
    common = ["--lake", lake_dir, "--config", str(config)]
    assert main(["ingest", str(tmp_path / "trace.csv"), *common]) == 0
    assert main(["etl", *common, "--grain", "hourly"]) == 0
    train = ["train", *common, "--grain", "hourly", "--run-date", "2026-11-22", "--hosts", "2"]
    assert main(train) == 0
    assert "grain=hourly" in capsys.readouterr().out
    lake = open_lake(lake_dir)
    hourly = lake.read_table(METRICS_HOURLY)
    forecasts = lake.read_table(FORECASTS_HOURLY)
    metrics = lake.read_table(MODEL_METRICS_HOURLY)
    assert not lake.list_partitions(FORECASTS) and not lake.list_partitions(MODEL_METRICS)  # daily untouched

    # Shapes: every series, every model, one row per hour of the horizon, from the hour after the last actual.
    n_series = hourly.groupby(["server_id", "metric"]).ngroups
    assert n_series == 12
    assert len(metrics) == n_series * (len(MODELS) + 1)  # and their median
    assert (metrics["status"] == "ok").all() and (metrics["n_origins"] == 2).all()
    assert (metrics.groupby(["server_id", "metric"])["is_champion"].sum() == 1).all()
    assert len(forecasts) == n_series * (len(MODELS) + 1) * HORIZON_HOURS
    last_hour = hourly["dt"].max()
    assert last_hour == pd.Timestamp("2026-11-21 23:00", tz="UTC")
    for _, group in forecasts.groupby(["server_id", "metric", "model"]):
        assert group["horizon_step"].tolist() == list(range(1, HORIZON_HOURS + 1))
        expected = pd.date_range(last_hour + pd.Timedelta(hours=1), periods=HORIZON_HOURS, freq="h")
        assert (pd.DatetimeIndex(group["ds"]) == expected).all()
    assert (forecasts["p10"] <= forecasts["p50"]).all() and (forecasts["p50"] <= forecasts["p90"]).all()
    assert forecasts[["p10", "p90"]].stack().between(0, 100).all()

    # Season 24: the seasonal naive repeats each series' last observed day, hour by hour.
    for (server, metric), group in hourly.sort_values("dt").groupby(["server_id", "metric"]):
        naive = forecasts[
            (forecasts["server_id"] == server)
            & (forecasts["metric"] == metric)
            & (forecasts["model"] == "seasonal_naive")
        ]
        np.testing.assert_allclose(naive["p50"], np.tile(group["p95"].to_numpy()[-24:], 7))
    # The hour-of-day shape carries into the random forest's forecast of cpu (the generator's busy hours).
    cpu = hourly[hourly["metric"] == "cpu"].assign(hour=lambda f: f["dt"].dt.hour)
    rf = forecasts[(forecasts["metric"] == "cpu") & (forecasts["model"] == "random_forest")]
    observed_profile = cpu.groupby(["server_id", "hour"])["p95"].mean()
    forecast_profile = rf.assign(hour=rf["ds"].dt.hour).groupby(["server_id", "hour"])["p50"].mean()
    assert np.corrcoef(observed_profile, forecast_profile)[0, 1] > 0.9

    # Re-running the same day replaces the same partitions: identical output, no duplicates.
    assert main(train) == 0
    pd.testing.assert_frame_equal(lake.read_table(FORECASTS_HOURLY), forecasts)

    # Risk works on the hourly forecasts: a day's peak hour decides its breach date.
    assert main(["risk", *common, "--grain", "hourly", "--format", "csv"]) == 0
    register = lake.read_table(RISK_REGISTER)
    assert len(register) == n_series
    # Each series' register row is read from its champion (a model or the models' median).
    champions = metrics[metrics["is_champion"]].set_index(["server_id", "metric"])["model"]
    assert register.set_index(["server_id", "metric"])["model"].sort_index().equals(champions.sort_index())
    breaches = register["breach_date_p90"].dropna()
    assert breaches.between(pd.Timestamp("2026-11-22"), pd.Timestamp("2026-11-28")).all()
    # Every series was backtested: none is short; its days of history are its hours (model_metrics_hourly), a day
    # per 24 begun.
    assert not register["short_history"].any()
    spans = hourly.groupby(["server_id", "metric"])["dt"].agg(
        lambda dt: (dt.max() - dt.min()) // pd.Timedelta(hours=1) + 1
    )
    days = register.set_index(["server_id", "metric"])["history_days"]
    assert days.sort_index().tolist() == [-(-int(h) // 24) for h in spans.sort_index()]

    # A shorter hourly horizon from the command line.
    assert main([*train[:-2], "--horizon-hours", "48"]) == 0
    assert lake.read_table(FORECASTS_HOURLY)["horizon_step"].max() == 48


def test_hourly_training_without_hourly_metrics_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--lake", str(tmp_path / "lake"), "--grain", "hourly"]) == 2
    assert "run `capacity-forecaster etl --grain hourly` first" in capsys.readouterr().err


def test_a_180_day_horizon_runs_through_train_and_risk(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    overrides = {"lake": str(tmp_path / "lake"), "fleet.servers": 6, "fleet.days": 400, "horizon_days": 180}
    settings = load_settings(environ={}, overrides=overrides)
    run_date = date(2026, 11, 23)
    run_pipeline(lake, settings, run_date=run_date, demo=True)
    forecasts = lake.read_table(FORECASTS, where={"run_date": run_date})
    steps = forecasts.groupby(["server_id", "metric", "model"])["horizon_step"].agg(["min", "max", "count"])
    assert len(steps) == 6 * 4 * (len(settings.training.models) + 1)  # and their median
    assert (steps["min"] == 1).all() and (steps["max"] == 180).all() and (steps["count"] == 180).all()
    assert forecasts["ds"].max() == pd.Timestamp("2026-11-22") + pd.Timedelta(days=180)
    register = lake.read_table(RISK_REGISTER, where={"run_date": run_date})
    assert len(register) == 6 * 4
    assert register["days_to_breach_p90"].dropna().between(0, 180).all()
    # Some series breach only after day 90: the longer horizon sees them.
    late = register[register["days_to_breach_p90"] > 90]
    assert not late.empty and (late["severity"] != "low").all()
