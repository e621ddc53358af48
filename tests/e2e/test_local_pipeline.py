"""The whole pipeline end to end on a small fleet: on a local lake, and on the moto S3 server."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.forecasting.backtest import COMBINATION
from capacity_forecaster.pipeline import run_pipeline
from capacity_forecaster.schema import (
    CONSOLIDATION,
    ETL_RUNS,
    FORECASTS,
    GROUND_TRUTH,
    METRICS_DAILY,
    MODEL_METRICS,
    RAW_SAMPLES,
    RISK_REGISTER,
    SERVERS,
    TABLES,
)
from capacity_forecaster.settings import TrainingSettings, load_settings
from capacity_forecaster.storage.lake import Lake, open_lake

pytestmark = pytest.mark.slow

RUN_DATE = date(2026, 11, 23)
SERVERS_N, DAYS, HORIZON = 24, 150, 60
QUICK_MODELS = {"training.models": ["seasonal_naive", "linear_trend", "recent_trend"]}
"""For the tests of the ETL and the storage paths: the default models (Prophet's fits are most of a run's time)
run end to end in test_pipeline_on_a_local_lake_is_complete_and_idempotent and test_cli_run_query_and_errors."""


def small_settings(lake: str, **extra: object) -> object:
    overrides = {
        "lake": lake,
        "fleet.servers": SERVERS_N,
        "fleet.days": DAYS,
        "horizon_days": HORIZON,
        **extra,
    }
    return load_settings(environ={}, overrides=overrides)


def table_snapshot(lake: Lake) -> dict[str, pd.DataFrame]:
    names = (METRICS_DAILY, FORECASTS, MODEL_METRICS, RISK_REGISTER, SERVERS, GROUND_TRUTH, CONSOLIDATION)
    return {t.name: lake.read_table(t) for t in names}


def check_run(lake: Lake, models: tuple[str, ...] = TrainingSettings().models) -> None:
    n_series = SERVERS_N * 4
    servers = lake.read_table(SERVERS)
    assert len(servers) == SERVERS_N
    raw = lake.read_table(RAW_SAMPLES)
    daily = lake.read_table(METRICS_DAILY)
    assert daily.groupby(["server_id", "metric"]).ngroups == n_series
    assert not daily.duplicated(["server_id", "metric", "dt"]).any()
    assert daily["p95"].between(0, 100).all()
    # Missing days in the export are imputed, and flagged.
    assert len(daily) >= len(raw)
    assert daily["imputed"].sum() == len(daily) - len(raw)

    runs = lake.read_table(ETL_RUNS)
    assert (runs["rows_in"] == runs["rows_written"] + runs["rows_quarantined"]).all()

    forecasts = lake.read_table(FORECASTS)
    champions = forecasts[forecasts["is_champion"]]
    assert champions.groupby(["server_id", "metric"]).ngroups == n_series
    assert (champions.groupby(["server_id", "metric"]).size() == HORIZON).all()
    assert (forecasts["p10"] <= forecasts["p50"]).all() and (forecasts["p50"] <= forecasts["p90"]).all()
    assert forecasts[["p10", "p50", "p90"]].stack().between(0, 100).all()
    metrics = lake.read_table(MODEL_METRICS)
    assert set(metrics["model"]) == {*models, COMBINATION}

    register = lake.read_table(RISK_REGISTER)
    assert len(register) == n_series
    assert set(register["severity"]) <= {"critical", "high", "medium", "low"}
    truth = lake.read_table(GROUND_TRUTH)
    breaching = truth[truth["will_breach"]].merge(register, on=["server_id", "metric"])
    assert len(breaching) > 0
    flagged = breaching["breach_date_p90"].notna() | breaching["already_breaching"]
    # Planted breaches are found: the baseline models alone catch 85% on this small, short fleet.
    assert flagged.mean() >= 0.8, breaching.loc[~flagged, ["server_id", "metric"]]

    plan = lake.read_table(CONSOLIDATION)
    assert sorted(plan["server_id"]) == sorted(servers["server_id"])
    assert set(plan["action"]) <= {"consolidate", "downsize", "keep"}
    assert (plan["monthly_savings"] >= 0).all() and (plan.loc[plan["action"] == "keep", "monthly_savings"] == 0).all()
    moved = plan[plan["action"] == "consolidate"]
    assert set(moved["target_server_id"]).isdisjoint(moved["server_id"])


def test_pipeline_on_a_local_lake_is_complete_and_idempotent(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    settings = small_settings(str(tmp_path / "lake"))
    result = run_pipeline(lake, settings, run_date=RUN_DATE, demo=True)
    check_run(lake)
    assert len(result.top) > 0
    assert set(result.outputs) >= {"metrics_daily", "forecasts", "risk_register"}
    first = table_snapshot(lake)
    objects = sorted(o.key for o in lake.store.list(""))

    run_pipeline(lake, settings, run_date=RUN_DATE, demo=True)
    second = table_snapshot(lake)
    for name, frame in first.items():
        keys = [c for c in ("server_id", "metric", "model", "dt", "ds") if c in frame.columns]
        pd.testing.assert_frame_equal(
            frame.sort_values(keys, ignore_index=True), second[name].sort_values(keys, ignore_index=True)
        )
    # Same objects (the run log gains a row, in the same partition); only the publish record stays in staging.
    assert sorted(o.key for o in lake.store.list("")) == objects
    assert [k for k in objects if k.startswith("staging/")] == ["staging/training/run_id=local-20261123/published.json"]
    assert len(lake.read_table(ETL_RUNS)) == 2


def test_raw_samples_days_are_aggregated_by_the_etl(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    settings = small_settings(str(tmp_path / "lake"), **{"fleet.servers": 6, "fleet.days": 60, **QUICK_MODELS})
    raw_day = date(2026, 11, 20)
    run_pipeline(lake, settings, run_date=RUN_DATE, demo=True, raw_days=[raw_day])
    daily = lake.read_table(METRICS_DAILY, where={"dt": raw_day})
    assert (daily["n_samples"] == 288).all()
    other = lake.read_table(METRICS_DAILY, where={"dt": date(2026, 11, 19)})
    assert (other.loc[~other["imputed"], "n_samples"] == 1).all()


def test_cli_run_query_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake = str(tmp_path / "lake")
    args = ["--lake", lake, "--servers", "8", "--days", "90", "--horizon", "30", "--run-date", "2026-11-23"]
    reports = tmp_path / "reports"
    assert main(["demo", *args, "--report-dir", str(reports)]) == 0
    out = capsys.readouterr().out
    assert "Breaching now" in out and "Next to break" in out and "risk_register" in out
    assert "00:00:00" not in out and "nan" not in out
    report = reports / "capacity-report-2026-11-23.html"
    assert out.rstrip().splitlines()[-1] == f"Report: {report}" and report.exists()

    assert main(["report", "--lake", lake, "--output-dir", str(tmp_path / "again")]) == 0
    listed = capsys.readouterr().out
    assert "capacity-report-2026-11-23.xlsx" in listed
    assert (tmp_path / "again" / "capacity-report-2026-11-23.html").read_text() == report.read_text()

    assert main(["query", "--lake", lake, "SELECT count(*) AS n FROM risk_register", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 32}]
    assert main(["risk", "--lake", lake, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("server_id,metric,model,threshold")

    assert main(["query", "--lake", lake, "SELECT nope FROM risk_register"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: query failed") and err.count("\n") == 1
    assert main(["train", "--lake", str(tmp_path / "empty")]) == 2
    assert "run `capacity-forecaster etl`" in capsys.readouterr().err


def test_every_table_is_queryable_even_when_empty(tmp_path: Path) -> None:
    from capacity_forecaster.query import run_query

    lake = open_lake(tmp_path / "lake")
    for name in TABLES:
        assert run_query(lake, f"SELECT * FROM {name}").empty


@pytest.mark.usefixtures("moto_server")
def test_pipeline_on_an_s3_lake(s3_bucket: str, s3_endpoint_env: None) -> None:
    uri = f"s3://{s3_bucket}/fleet"
    settings = small_settings(uri, **QUICK_MODELS)
    lake = open_lake(uri, settings.s3_config())
    run_pipeline(lake, settings, run_date=RUN_DATE, demo=True)
    check_run(lake, tuple(QUICK_MODELS["training.models"]))
    keys = [o.key for o in lake.store.list("curated/forecasts/")]
    assert keys == [f"curated/forecasts/run_date={RUN_DATE}/data.parquet"]
