"""What risk, consolidation and the report read: the champion's rows of one run and a bounded window of days.

The lake is the fleet-scale benchmark's (``benchmarks/bench_risk_scale.build_lake``) at a small size: every
default model's forecasts, 1% of the days imputed, 200 days of history.
"""

from __future__ import annotations

import io
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from benchmarks.bench_risk_scale import RUN_DATE, build_lake
from capacity_forecaster.rightsizing import PROFILE_METRICS, idle_servers, server_features
from capacity_forecaster.risk_inputs import (
    FORECAST_COLUMNS,
    champion_forecasts,
    lookback_days,
    newest_days,
    recent_daily,
    recent_observed,
)
from capacity_forecaster.schema import CONSOLIDATION, FORECASTS, METRICS_DAILY, RISK_REGISTER
from capacity_forecaster.settings import Settings
from capacity_forecaster.stages import risk_register, run_consolidation, run_report, run_risk
from capacity_forecaster.storage.lake import Lake, open_lake, partition_key, to_arrow
from capacity_forecaster.storage.s3_client import S3Config

DAYS = 200


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("risk-inputs")
    build_lake(root, servers=12, days=DAYS, horizon=30, seed=3)
    return open_lake(root)


def test_champion_rows_only_in_the_asked_columns_read_a_row_group_at_a_time(tmp_path: Path, lake: Lake) -> None:
    everything = lake.read_table(FORECASTS, where={"run_date": RUN_DATE})
    copy = open_lake(tmp_path)
    buf = io.BytesIO()  # the same rows in row groups of 100, so the filter runs on each group
    pq.write_table(to_arrow(FORECASTS, everything.drop(columns="run_date")), buf, row_group_size=100)
    copy.store.put_bytes(partition_key(FORECASTS, {"run_date": RUN_DATE}), buf.getvalue())
    assert pq.ParquetFile(io.BytesIO(buf.getvalue())).num_row_groups > 10

    expected = everything[everything["is_champion"]][list(FORECAST_COLUMNS)].reset_index(drop=True)
    got = champion_forecasts(copy, FORECASTS, RUN_DATE)
    pd.testing.assert_frame_equal(got, expected)
    assert len(got) == len(everything.drop_duplicates(["server_id", "metric", "ds"]))  # one candidate per series
    two = champion_forecasts(copy, FORECASTS, RUN_DATE, columns=("server_id", "p90"))
    assert list(two.columns) == ["server_id", "p90"] and len(two) == len(expected)

    leaders = pd.DataFrame({"server_id": ["srv-000003", "srv-000007"], "metric": ["mem", "cpu"]})
    charted = champion_forecasts(copy, FORECASTS, RUN_DATE, series=leaders)
    assert sorted(set(zip(charted["server_id"], charted["metric"], strict=True))) == [
        ("srv-000003", "mem"),
        ("srv-000007", "cpu"),
    ]
    assert champion_forecasts(copy, FORECASTS, RUN_DATE + timedelta(days=1)).empty


def test_recent_observed_reads_the_lookback_window_and_skips_imputed_days(lake: Lake) -> None:
    newest = RUN_DATE - timedelta(days=1)
    assert lookback_days(7) == 37 and lookback_days(90) == 180
    window = newest_days(lake, lookback_days(7))
    assert window[0] == newest - timedelta(days=36) and window[-1] == newest and len(window) == 37
    recent = recent_observed(lake, 7)
    assert recent["dt"].min() == pd.Timestamp(window[0]) and not recent["imputed"].any()
    full = lake.read_table(METRICS_DAILY)
    inside = full[(full["dt"] >= pd.Timestamp(window[0])) & ~full["imputed"]]
    assert len(recent) == len(inside)

    cpu_mem = recent_daily(lake, window[-3:], metrics=("cpu", "mem"), observed_only=False, columns=("dt", "p95"))
    assert list(cpu_mem.columns) == ["dt", "p95"] and len(cpu_mem) == 3 * 12 * 2
    assert recent_daily(lake, [date(2001, 1, 1)]).empty


def test_stages_give_the_full_reads_results_and_never_open_what_they_do_not_need(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    build_lake(root, servers=12, days=DAYS, horizon=30, seed=5)
    lake, settings = open_lake(root), Settings(lake=str(root))
    full = risk_register(
        lake.read_table(FORECASTS, where={"run_date": RUN_DATE}),
        lake.read_table(METRICS_DAILY),
        settings.risk,
        RUN_DATE,
    )
    run_risk(lake, settings, run_date=RUN_DATE)
    run_consolidation(lake, settings, run_date=RUN_DATE)
    register = lake.read_table(RISK_REGISTER, where={"run_date": RUN_DATE}).drop(columns="run_date")
    pd.testing.assert_frame_equal(register, full.drop(columns="run_date"), check_dtype=False)
    plan = lake.read_table(CONSOLIDATION, where={"run_date": RUN_DATE})
    cfg = settings.rightsizing
    window = recent_observed(lake, max(cfg.profile_days, cfg.idle_days), metrics=PROFILE_METRICS)
    daily = lake.read_table(METRICS_DAILY)
    pd.testing.assert_frame_equal(
        server_features(window, days=cfg.profile_days), server_features(daily, days=cfg.profile_days)
    )
    pd.testing.assert_series_equal(
        idle_servers(window, days=cfg.idle_days, cpu_p95=cfg.idle_cpu_p95, mem_p95=cfg.idle_mem_p95),
        idle_servers(daily, days=cfg.idle_days, cpu_p95=cfg.idle_cpu_p95, mem_p95=cfg.idle_mem_p95),
    )

    # Older days than the widest look-back window (rightsizing.profile_days 90: 180 days) and another run's
    # forecasts are made unreadable: the stages do not open them, and their results do not change.
    widest = lookback_days(max(settings.rightsizing.profile_days, settings.rightsizing.idle_days))
    kept = set(newest_days(lake, widest))
    for values in lake.list_partitions(METRICS_DAILY):
        if date.fromisoformat(values["dt"]) not in kept:
            lake.store.put_bytes(partition_key(METRICS_DAILY, values), b"not parquet")
    lake.store.put_bytes(partition_key(FORECASTS, {"run_date": RUN_DATE - timedelta(days=1)}), b"not parquet")
    run_risk(lake, settings, run_date=RUN_DATE)
    run_consolidation(lake, settings, run_date=RUN_DATE)
    run_report(lake, settings, run_date=RUN_DATE)
    again = lake.read_table(RISK_REGISTER, where={"run_date": RUN_DATE}).drop(columns="run_date")
    pd.testing.assert_frame_equal(again, register)
    pd.testing.assert_frame_equal(lake.read_table(CONSOLIDATION, where={"run_date": RUN_DATE}), plan)


def test_an_s3_lake_is_read_the_same_way(lake: Lake, s3_config: S3Config, s3_bucket: str) -> None:
    s3 = open_lake(f"s3://{s3_bucket}/lake", s3_config)
    day = RUN_DATE - timedelta(days=1)
    for table, where in ((FORECASTS, {"run_date": RUN_DATE}), (METRICS_DAILY, {"dt": day})):
        s3.write_partition(table, lake.read_table(table, where=where), where)
    pd.testing.assert_frame_equal(
        champion_forecasts(s3, FORECASTS, RUN_DATE), champion_forecasts(lake, FORECASTS, RUN_DATE)
    )
    pd.testing.assert_frame_equal(recent_daily(s3, [day]), recent_daily(lake, [day]))
