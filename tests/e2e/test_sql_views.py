"""The planners' SQL views: each parses as Trino SQL (what Athena runs) and runs on DuckDB over a small lake;
``query`` runs them and the documented queries, and nothing else: hostile SQL is refused in one line and leaves the
lake (local or S3) byte-identical and nothing written outside it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import sqlglot
from sqlglot import exp

from capacity_forecaster.cli import main
from capacity_forecaster.pipeline import run_pipeline
from capacity_forecaster.query import VIEW_WINDOW_DAYS, connect, run_query, view_tables, views
from capacity_forecaster.schema import (
    CONSOLIDATION,
    FORECASTS,
    LATEST_RUN,
    METRICS_DAILY,
    MODEL_METRICS,
    RISK_REGISTER,
    SERVERS,
    TABLES,
)
from capacity_forecaster.settings import load_settings
from capacity_forecaster.storage.lake import Lake, open_lake, partition_key
from capacity_forecaster.storage.s3_client import S3Config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

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
    run_pipeline(lake, settings, run_date=RUN_DATE, demo=True)
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


def _file_connection(root: Path) -> Any:
    """DuckDB with each lake table as a view over its Parquet objects (Hive partitions from the keys), the way
    Athena reads the lake, and the planners' views over them."""
    con = duckdb.connect(":memory:")
    for name, table in TABLES.items():
        folder = root / table.prefix
        if not any(folder.glob("**/data.parquet")):
            con.register(f"_empty_{name}", table.arrow_schema(with_partitions=True).empty_table())
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM "_empty_{name}"')
        elif table.partition_keys:
            types = ", ".join(f"'{k}': 'DATE'" for k in table.partition_names)
            glob = folder / "/".join("*" for _ in table.partition_keys) / "data.parquet"
            con.execute(
                f"CREATE VIEW \"{name}\" AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
                f"hive_types = {{{types}}})"
            )
        else:
            con.execute(f"CREATE VIEW \"{name}\" AS SELECT * FROM read_parquet('{folder / 'data.parquet'}')")
    for sql in views().values():
        con.execute(sql)
    return con


def _files_read(con: Any, sql: str) -> dict[str, set[str]]:
    """Table -> the partitions (``key=value`` folders; "" unpartitioned) whose objects a query opened, from
    DuckDB's profile of the query (each Parquet scan lists the files it read)."""
    plan = json.loads(con.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}").fetchall()[0][1])
    read: dict[str, set[str]] = {}

    def walk(node: dict[str, Any]) -> None:
        info = node.get("extra_info", {})
        if node.get("type") == "TABLE_SCAN" and info.get("Function") == "READ_PARQUET":
            files = info.get("Filename(s)", "")
            for path in ([files] if isinstance(files, str) else files) if files else []:
                parts = Path(path).parts
                table = next(p for p in parts if p in TABLES)
                partition = parts[parts.index(table) + 1] if parts[-2] != table else ""
                read.setdefault(table, set()).add(partition)
        for child in node.get("children", []):
            walk(child)

    for node in plan["operator"]:
        walk(node)
    return read


def test_views_read_only_the_latest_run_and_a_bounded_window_of_days(lake: Lake, tmp_path: Path) -> None:
    """The views join the one-row latest_run table on the partition columns: DuckDB's scans open only the
    latest run's partitions (and forecast_accuracy only its window's runs and days), with older runs and days
    in the lake; Athena's dynamic partition pruning does the same with the same joins."""
    root = tmp_path / "lake"
    shutil.copytree(lake.uri, root)
    copy = open_lake(root)
    window_start = copy.read_table(LATEST_RUN)["window_start"].iloc[0].date()
    assert window_start == RUN_DATE - timedelta(days=VIEW_WINDOW_DAYS)
    old_run, old_day = window_start - timedelta(days=30), window_start - timedelta(days=10)
    for table in (FORECASTS, MODEL_METRICS, RISK_REGISTER, CONSOLIDATION):  # an older run of every output
        rows = copy.read_table(table, where={"run_date": RUN_DATE})
        for day in (old_run, RUN_DATE - timedelta(days=1)):
            copy.write_partition(table, rows.assign(run_date=pd.Timestamp(day)), {"run_date": day})
    newest_day = copy.latest_partition(METRICS_DAILY)
    assert newest_day is not None
    old = copy.read_table(METRICS_DAILY, where={"dt": newest_day["dt"]}).assign(dt=pd.Timestamp(old_day))
    copy.write_partition(METRICS_DAILY, old, {"dt": old_day})

    con = _file_connection(root)
    latest = f"run_date={RUN_DATE}"
    assert _files_read(con, "SELECT * FROM latest_forecasts") == {
        "forecasts": {latest},
        "model_metrics": {latest},
        "latest_run": {""},
    }
    assert _files_read(con, "SELECT * FROM risk_servers") == {
        "risk_register": {latest},
        "servers": {""},
        "latest_run": {""},
    }
    summary = _files_read(con, "SELECT * FROM fleet_summary")
    assert summary["risk_register"] == {latest} and summary["consolidation"] == {latest}
    accuracy = _files_read(con, "SELECT * FROM forecast_accuracy")
    assert f"run_date={old_run}" not in accuracy["forecasts"] and f"run_date={PAST_RUN}" in accuracy["forecasts"]
    days = {date.fromisoformat(p.removeprefix("dt=")) for p in accuracy["metrics_daily"]}
    assert days and min(days) >= window_start and old_day not in days
    # The same views over the same files return the same rows as `query` on the lake.
    for view in ("latest_forecasts", "risk_servers"):
        assert len(con.sql(f"SELECT * FROM {view}").fetchall()) == len(run_query(lake, f"SELECT * FROM {view}"))

    # `query` loads a table it reaches only through the views with the window's partitions only: the older
    # run's and day's objects made unreadable change nothing.
    for table in (FORECASTS, MODEL_METRICS, RISK_REGISTER, CONSOLIDATION):
        copy.store.put_bytes(partition_key(table, {"run_date": old_run}), b"not parquet")
    copy.store.put_bytes(partition_key(METRICS_DAILY, {"dt": old_day}), b"not parquet")
    for view in ("latest_forecasts", "risk_servers", "fleet_summary"):
        assert len(run_query(copy, f"SELECT * FROM {view}")) == len(run_query(lake, f"SELECT * FROM {view}"))
    assert set(run_query(copy, "SELECT * FROM forecast_accuracy")["run_date"]) == {PAST_RUN}


def test_cli_query_uses_the_views(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT CAST(sum(servers) AS BIGINT) AS n FROM fleet_summary"
    assert main(["query", "--lake", lake.uri, sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": SERVERS_N}]


def documented_queries() -> list[str]:
    """Every ``capacity-forecaster query "<SQL>"`` in the README and docs/."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found += re.findall(r'capacity-forecaster query "([^"]+)"', path.read_text(encoding="utf-8"))
    return found


# What a user may run besides the documented queries: each view, and the read-only statements that are not SELECT.
READ_ONLY = [
    *(f"SELECT * FROM {name}" for name in sorted(views())),
    "WITH r AS (SELECT * FROM risk_servers) SELECT severity, count(*) AS n FROM r GROUP BY severity",
    "DESCRIBE risk_servers",
    "SUMMARIZE servers",
    "EXPLAIN SELECT * FROM fleet_summary",
]

# {lake}: the lake's root; {out}: a folder outside it that holds one Parquet file (outside.parquet).
HOSTILE = [
    "COPY (SELECT 1 AS x) TO '{lake}/curated/servers/data.parquet' (FORMAT parquet)",
    "COPY servers TO '{out}/servers.csv'",
    "COPY servers FROM '{out}/outside.parquet'",
    "EXPORT DATABASE '{out}/export'",
    "ATTACH '{out}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_parquet('{out}/outside.parquet')",
    "SELECT * FROM '{out}/outside.parquet'",
    "SELECT * FROM read_parquet('{lake}/curated/servers/data.parquet')",
    "SELECT * FROM glob('/*')",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA enable_profiling",
    "CREATE TABLE t AS SELECT * FROM servers",
    "CREATE VIEW risk AS SELECT 1",
    "INSERT INTO servers SELECT * FROM servers",
    "UPDATE servers SET cores = 0",
    "DELETE FROM risk_register",
    "SELECT 1; COPY servers TO '{out}/servers.csv'",
    "SELECT 1 /* ; */ ; COPY servers TO '{out}/servers.csv'",
    "SELECT 1 --\n; ATTACH '{out}/other.duckdb' AS other",
    "EXPLAIN ANALYZE COPY servers TO '{out}/servers.csv'",
    "",
    "  \n ",
]


def local_snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> the SHA-256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def s3_snapshot(client: Any, bucket: str) -> dict[str, str]:
    """Every object in ``bucket`` -> the SHA-256 of its bytes."""
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    return {key: hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() for key in keys}


def query_json(capsys: pytest.CaptureFixture[str], uri: str, sql: str) -> list[dict[str, Any]]:
    assert main(["query", "--lake", uri, sql, "--format", "json"]) == 0, capsys.readouterr().err
    out: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return out


def assert_refused(capsys: pytest.CaptureFixture[str], uri: str, sql: str) -> None:
    assert main(["query", "--lake", uri, sql]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(r"error: query (refused|failed): [^\n]+\n", captured.err), captured.err


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the lake with one Parquet file in it."""
    pd.DataFrame({"secret": [42]}).to_parquet(tmp_path / "outside.parquet")
    return tmp_path


def test_documented_queries_and_read_only_statements_run(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    documented = documented_queries()
    assert len(documented) >= 3, documented
    for sql in documented + READ_ONLY:
        query_json(capsys, lake.uri, sql)
    severities = query_json(capsys, lake.uri, READ_ONLY[len(views())])
    assert sum(row["n"] for row in severities) == len(lake.read_table(RISK_REGISTER, where={"run_date": RUN_DATE}))


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_sql_is_refused_in_one_line_and_changes_nothing(
    lake: Lake, outside: Path, template: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = local_snapshot(Path(lake.uri))
    assert_refused(capsys, lake.uri, template.format(lake=lake.uri, out=outside))
    assert local_snapshot(Path(lake.uri)) == before
    assert sorted(p.name for p in outside.iterdir()) == ["outside.parquet"]
    assert query_json(capsys, lake.uri, "SELECT count(*) AS n FROM risk_servers")[0]["n"] > 0


def test_the_connection_alone_reads_no_file_and_cannot_be_unlocked(lake: Lake, outside: Path) -> None:
    """The second wall, without the statement check: what DuckDB itself refuses once the views exist."""
    before = local_snapshot(Path(lake.uri))
    con = connect(lake)
    try:
        for template in [*HOSTILE[:13], "SET lock_configuration = false", "SET allowed_directories = ['/']"]:
            with pytest.raises(duckdb.Error):
                con.execute(template.format(lake=lake.uri, out=outside)).fetchall()
        assert con.execute("SELECT sum(servers) FROM fleet_summary").fetchone() == (SERVERS_N,)
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
    finally:
        con.close()
    assert local_snapshot(Path(lake.uri)) == before
    assert sorted(p.name for p in outside.iterdir()) == ["outside.parquet"]


@pytest.mark.usefixtures("s3_endpoint_env")
def test_query_on_an_s3_lake_is_read_only(
    lake: Lake, s3_bucket: str, s3_boto_client: Any, s3_config: S3Config, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(lake.uri)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3_boto_client.put_object(Bucket=s3_bucket, Key=f"fleet/{path.relative_to(root)}", Body=path.read_bytes())
    uri = f"s3://{s3_bucket}/fleet"
    before = s3_snapshot(s3_boto_client, s3_bucket)

    def rows(lake_uri: str, sql: str) -> list[str]:  # the same rows; a view without ORDER BY has no fixed order
        return sorted(json.dumps(r, sort_keys=True) for r in query_json(capsys, lake_uri, sql))

    for sql in documented_queries() + READ_ONLY[: len(views())]:
        assert rows(uri, sql) == rows(lake.uri, sql)
    for template in HOSTILE[:13]:
        assert_refused(capsys, uri, template.format(lake=uri, out=f"s3://{s3_bucket}/elsewhere"))
    con = connect(open_lake(uri, s3_config), ["servers"])
    try:
        for template in HOSTILE[:2] + HOSTILE[11:12]:
            with pytest.raises(duckdb.Error):
                con.execute(template.format(lake=uri, out=f"s3://{s3_bucket}/elsewhere")).fetchall()
    finally:
        con.close()
    assert s3_snapshot(s3_boto_client, s3_bucket) == before
