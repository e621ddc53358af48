"""The planners' SQL views: each parses as Trino SQL (what Athena runs) and runs on DuckDB over a small lake."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
import sqlglot
from sqlglot import exp

from capacity_forecaster.cli import main
from capacity_forecaster.pipeline import run_pipeline
from capacity_forecaster.query import run_query, view_tables, views
from capacity_forecaster.schema import CONSOLIDATION, FORECASTS, METRICS_DAILY, RISK_REGISTER, SERVERS, TABLES
from capacity_forecaster.settings import load_settings
from capacity_forecaster.storage.lake import Lake, open_lake

pytestmark = pytest.mark.slow

RUN_DATE = date(2026, 11, 23)
PAST_RUN = date(2026, 11, 1)
SERVERS_N, HORIZON = 8, 30


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = str(tmp_path_factory.mktemp("views") / "lake")
    settings = load_settings(
        environ={}, overrides={"lake": root, "fleet.servers": SERVERS_N, "fleet.days": 90, "horizon_days": HORIZON}
    )
    lake = open_lake(root)
    run_pipeline(lake, settings, run_date=RUN_DATE)
    # An earlier run whose champion forecast is the actual + 1 point, band +-5: scored by forecast_accuracy.
    daily = lake.read_table(METRICS_DAILY)
    past = daily[(daily["dt"] >= pd.Timestamp(PAST_RUN)) & ~daily["imputed"]]
    forecasts = pd.DataFrame(
        {
            "server_id": past["server_id"],
            "metric": past["metric"],
            "model": "linear_trend",
            "ds": past["dt"],
            "horizon_step": (past["dt"] - pd.Timestamp(PAST_RUN)).dt.days + 1,
            "p10": past["p95"] - 4.0,
            "p50": past["p95"] + 1.0,
            "p90": past["p95"] + 6.0,
            "is_champion": True,
        }
    )
    lake.write_partition(FORECASTS, forecasts, {"run_date": PAST_RUN})
    return lake


@pytest.mark.parametrize("name", sorted(views()))
def test_view_parses_as_trino_and_names_known_tables(name: str) -> None:
    sql = views()[name]
    tree = sqlglot.parse_one(sql, read="trino")
    assert isinstance(tree, exp.Create) and str(tree.args["kind"]).upper() == "VIEW"
    assert tree.this.name == name
    assert view_tables(sql) and set(view_tables(sql)) <= set(TABLES)
    # Round trip through the Trino dialect still parses (what a named query in Athena would hold).
    assert sqlglot.parse_one(tree.sql(dialect="trino"), read="trino") is not None


def test_views_are_the_four_planners_questions() -> None:
    assert sorted(views()) == ["fleet_summary", "forecast_accuracy", "latest_forecasts", "risk_servers"]


def test_latest_forecasts_has_one_champion_row_per_series_and_day(lake: Lake) -> None:
    latest = run_query(lake, "SELECT * FROM latest_forecasts")
    assert set(latest["run_date"]) == {RUN_DATE}
    assert not latest.duplicated(["server_id", "metric", "ds"]).any()
    assert len(latest) == SERVERS_N * 4 * HORIZON
    assert latest["backtest_mae"].notna().all()


def test_risk_servers_joins_every_register_row_with_its_server(lake: Lake) -> None:
    joined = run_query(lake, "SELECT * FROM risk_servers ORDER BY severity_rank, server_id, metric")
    register = lake.read_table(RISK_REGISTER, where={"run_date": RUN_DATE})
    assert len(joined) == len(register)
    assert joined["application"].notna().all() and joined["datacenter"].notna().all()
    assert joined["severity_rank"].is_monotonic_increasing


def test_fleet_summary_adds_up_to_the_fleet_and_the_plan(lake: Lake) -> None:
    summary = run_query(lake, "SELECT * FROM fleet_summary")
    servers = lake.read_table(SERVERS)
    plan = lake.read_table(CONSOLIDATION, where={"run_date": RUN_DATE})
    assert summary["servers"].sum() == len(servers)
    assert summary["monthly_cost"].sum() == pytest.approx(servers["monthly_cost"].sum(), abs=0.05)
    assert summary["monthly_savings"].sum() == pytest.approx(plan["monthly_savings"].sum(), abs=0.05)
    assert summary["servers_freed"].sum() == (plan["action"] == "consolidate").sum()
    assert not summary.duplicated(["application", "datacenter"]).any()


def test_forecast_accuracy_scores_runs_against_later_actuals(lake: Lake) -> None:
    accuracy = run_query(lake, "SELECT * FROM forecast_accuracy ORDER BY run_date, metric")
    past = accuracy[accuracy["run_date"] == PAST_RUN]
    assert sorted(past["metric"]) == ["cpu", "disk", "mem", "net"]
    assert past["mae"].to_numpy() == pytest.approx(1.0)
    assert past["bias"].to_numpy() == pytest.approx(-1.0)
    assert (past["coverage_p10_p90"] == 1.0).all()
    # The newest run forecasts days not observed yet: nothing to score.
    assert RUN_DATE not in set(accuracy["run_date"])


def test_cli_query_uses_the_views(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT CAST(sum(servers) AS BIGINT) AS n FROM fleet_summary"
    assert main(["query", "--lake", lake.uri, sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": SERVERS_N}]
