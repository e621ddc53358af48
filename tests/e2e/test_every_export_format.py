"""A lake built only from real-shaped exports, one of every format of tests/samples/formats/, and an inventory
(xlsx), through the CLI, no generator: `run` writes the register of every server of those files, a consolidation
plan whose savings are the inventory's costs (or the price table's), the report and its exports, and no ``srv-*``
row anywhere; each file's rows reach metrics_daily and the ETL's counts reconcile.

The samples hold two days at 4 h; each is written here as a 35-day export of the same shape (the same layout,
labels, delimiters, decimal marks, encoding and read options; the test checks that each reads as the same shape
as its sample, with the same series), so the idle servers have a month of history to be idle on."""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import openpyxl
import pandas as pd
import pytest

from capacity_forecaster import etl
from capacity_forecaster.cli import main
from capacity_forecaster.formats.options import ReadOptions
from capacity_forecaster.ingest import check_file
from capacity_forecaster.schema import CONSOLIDATION, ETL_FILES, ETL_RUNS, METRICS_DAILY, RISK_REGISTER, TABLES
from capacity_forecaster.settings import load_settings
from capacity_forecaster.storage.lake import open_lake

pytestmark = pytest.mark.slow

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples" / "formats"
RUN_DATE = date(2026, 12, 1)
DAYS = 35
TIMES = pd.date_range(datetime(2026, 11, 30, 20, tzinfo=UTC) - timedelta(days=DAYS - 1), periods=DAYS * 6, freq="4h")
PROM_CPU = '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))'

# (server, metric) -> (level %, growth in points per day); web-02, i-...04 and i-...05 idle (cpu < 15, mem < 35)
LEVELS: dict[tuple[str, str], tuple[float, float]] = {
    ("i-0a1b2c3d4e5f60001", "cpu"): (35.0, 0.0),
    ("i-0a1b2c3d4e5f60001", "mem"): (45.0, 0.0),
    ("i-0a1b2c3d4e5f60002", "cpu"): (55.0, 0.0),
    ("i-0a1b2c3d4e5f60003", "cpu"): (25.0, 0.0),
    ("i-0a1b2c3d4e5f60004", "cpu"): (4.0, 0.0),
    ("i-0a1b2c3d4e5f60004", "mem"): (15.0, 0.0),
    ("i-0a1b2c3d4e5f60005", "cpu"): (6.0, 0.0),
    ("i-0a1b2c3d4e5f60005", "mem"): (22.0, 0.0),
    ("web-01", "cpu"): (45.0, 0.0),
    ("web-01", "mem"): (40.0, 0.0),
    ("web-02", "cpu"): (5.0, 0.0),
    ("web-02", "mem"): (20.0, 0.0),
    ("db-01", "cpu"): (55.0, 0.6),
    ("db-02", "cpu"): (50.0, 0.0),
    ("cache-01", "mem"): (66.0, 0.0),
    ("cache-02", "mem"): (71.0, 0.0),
    ("batch-01", "disk"): (71.0, 0.05),
    ("batch-02", "disk"): (43.0, 0.05),
    ("app-01", "cpu"): (40.0, 0.0),
    ("app-01", "mem"): (55.0, 0.0),
    ("app-02", "disk"): (85.0, 0.0),
    ("app-03", "cpu"): (30.0, 0.0),
    ("app-03", "mem"): (50.0, 0.0),
    ("erp-01", "cpu"): (30.0, 0.0),
    ("erp-01", "mem"): (45.0, 0.0),
    ("muc-01", "net"): (12.0, 0.0),
}
SERVERS = sorted({s for s, _ in LEVELS})
INVENTORY = [
    ("hostname", "Application", "Env", "Data centre", "Instance type", "Monthly cost ($)", "Team"),
    ("web-01", "shop", "prod", "eu-west-1", "m5.2xlarge", 320.5, "web"),
    ("web-02", "shop", "prod", "eu-west-1", "m5.xlarge", 160.25, "web"),
    ("i-0a1b2c3d4e5f60001", "batch", "dev", "us-east-1", "m5.2xlarge", 280.0, "data"),
    ("i-0a1b2c3d4e5f60004", "batch", "dev", "us-east-1", "c5.xlarge", None, "data"),  # priced by the table
    ("i-0a1b2c3d4e5f60005", "batch", "dev", "us-east-1", "c5.xlarge", 124.1, "data"),
    *((s, "misc", "prod", "eu-central-1", "m5.xlarge", 140.16, "ops") for s in SERVERS if s[:2] not in ("we", "i-")),
    *(
        (s, "batch", "dev", "us-east-1", "c5.xlarge", None, "data")
        for s in ("i-0a1b2c3d4e5f60002", "i-0a1b2c3d4e5f60003")
    ),
]


def values(server: str, metric: str) -> np.ndarray:
    """Percent at TIMES: the level, its growth, a daily cycle and noise."""
    level, growth = LEVELS[(server, metric)]
    rng = np.random.default_rng(zlib.crc32(f"{server} {metric}".encode()))
    day = (TIMES - TIMES[0]).total_seconds().to_numpy() / 86400
    cycle = 3 * np.sin(2 * np.pi * TIMES.hour.to_numpy() / 24)
    return np.clip(level + growth * day + cycle + rng.normal(0, 0.8, len(TIMES)), 0.5, 99.5).round(2)


def _csv(
    rows: Sequence[Sequence[object]], *, delimiter: str = ",", quoting: Literal[0, 1, 2, 3] = csv.QUOTE_MINIMAL
) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def _comma(v: float) -> str:
    return str(v).replace(".", ",")


def cloudwatch_console() -> bytes:
    cols = [
        ("CPUUtilization", "m1", "AWS/EC2", "i-0a1b2c3d4e5f60001", "cpu"),
        ("CPUUtilization", "m2", "AWS/EC2", "i-0a1b2c3d4e5f60002", "cpu"),
        ("mem_used_percent", "m3", "CWAgent", "i-0a1b2c3d4e5f60001", "mem"),
    ]
    head: list[list[object]] = [
        ["Label", *(c[0] for c in cols)],
        ["Id", *(c[1] for c in cols)],
        ["Namespace", *(c[2] for c in cols)],
        ["MetricName", *(c[0] for c in cols)],
        ["InstanceId", *(c[3] for c in cols)],
        ["Statistic", *("Average" for _ in cols)],
        ["Period", *("14400" for _ in cols)],
    ]
    series = [values(c[3], c[4]) for c in cols]
    body = [[t.strftime("%Y-%m-%dT%H:%M:%S.000Z"), *(v[i] for v in series)] for i, t in enumerate(TIMES)]
    return _csv(head + body)


def get_metric_statistics() -> bytes:
    points = [
        {"Timestamp": t.isoformat(), "Average": float(v), "Unit": "Percent"}
        for t, v in zip(TIMES, values("i-0a1b2c3d4e5f60003", "cpu"), strict=True)
    ]
    return json.dumps({"Label": "CPUUtilization", "Datapoints": points}, indent=4).encode()


def _get_metric_data(server: str, label: Callable[[str], str]) -> bytes:
    results = [
        {
            "Id": f"m{i + 1}",
            "Label": label(name),
            "Timestamps": [t.isoformat() for t in TIMES[::-1]],  # newest first, as the API returns them
            "Values": values(server, metric)[::-1].tolist(),
            "StatusCode": "Complete",
        }
        for i, (name, metric) in enumerate((("CPUUtilization", "cpu"), ("mem_used_percent", "mem")))
    ]
    return json.dumps({"MetricDataResults": results}, indent=4).encode()


def _prometheus(metric: str, extra: dict[str, str], scale: float) -> bytes:
    result: list[dict[str, object]] = [
        {
            "metric": {**extra, "instance": f"{host}:9100", "job": "node"},
            "values": [
                [int(t.timestamp()), f"{v / scale:g}"] for t, v in zip(TIMES, values(host, metric), strict=True)
            ],
        }
        for host in ("web-01", "web-02")
    ]
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()


def grafana_joined() -> bytes:
    hosts = ("db-01", "db-02")
    head = ["Time", *(f'{{instance="{h}:9100", job="node"}}' for h in hosts)]
    series = [values(h, "cpu") for h in hosts]
    body = [[t.strftime("%Y-%m-%d %H:%M:%S"), *(f"{v[i]}%" for v in series)] for i, t in enumerate(TIMES)]
    return _csv([head, *body], quoting=csv.QUOTE_ALL)


def grafana_rows() -> bytes:
    rows: list[list[object]] = [["Series", "Time", "Value"]]
    for host in ("cache-01", "cache-02"):
        rows += [[f"{host} mem", t.isoformat(), float(v)] for t, v in zip(TIMES, values(host, "mem"), strict=True)]
    return _csv(rows, delimiter=";", quoting=csv.QUOTE_NONNUMERIC)


def datadog() -> bytes:
    hosts = ("batch-01", "batch-02")
    series = [values(h, "disk") / 100 for h in hosts]
    head = ["timestamp", *(f"avg:system.disk.in_use{{host:{h}}}" for h in hosts)]
    body = [[t.strftime("%Y-%m-%dT%H:%M:%SZ"), *(round(float(v[i]), 4) for v in series)] for i, t in enumerate(TIMES)]
    return _csv([head, *body])


def semicolon_decimal_comma() -> bytes:
    cpu, mem = values("app-01", "cpu"), values("app-01", "mem")
    body = [
        [t.strftime("%Y-%m-%dT%H:%M:%SZ"), "app-01", _comma(cpu[i]), _comma(mem[i]), "billing"]
        for i, t in enumerate(TIMES)
    ]
    return _csv([["timestamp", "server_id", "cpu", "mem", "team"], *body], delimiter=";")


def semicolon_dot_decimal() -> bytes:
    disk = values("app-02", "disk")
    body = [[t.strftime("%Y-%m-%dT%H:%M:%SZ"), "app-02", "disk", disk[i]] for i, t in enumerate(TIMES)]
    return _csv([["timestamp", "server_id", "metric", "value"], *body], delimiter=";")


def dd_mm_yyyy() -> bytes:
    cpu, mem = values("app-03", "cpu"), values("app-03", "mem")
    body = [[t.strftime("%d.%m.%Y %H:%M"), "app-03", _comma(cpu[i]), _comma(mem[i])] for i, t in enumerate(TIMES)]
    return _csv([["timestamp", "server_id", "cpu", "mem"], *body], delimiter=";")


def workbook() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Export"
    sheet.append(["Timestamp", "Host", "CPU %", "Memory"])
    cpu, mem = values("erp-01", "cpu"), values("erp-01", "mem")
    for i, t in enumerate(TIMES):
        sheet.append([t.to_pydatetime().replace(tzinfo=None), "erp-01", float(cpu[i]), float(mem[i])])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def utf16_text() -> bytes:
    net = values("muc-01", "net")
    lines = ["timestamp\tserver_id\tmetric\tvalue\tsite"]
    lines += [f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')}\tmuc-01\tnet\t{net[i]}\tMünchen" for i, t in enumerate(TIMES)]
    return ("\r\n".join(lines) + "\r\n").encode("utf-16")  # with its BOM


# sample -> (its 35-day export, the ingest options it needs)
EXPORTS: dict[str, tuple[Callable[[], bytes], list[str]]] = {
    "cloudwatch_console.csv": (cloudwatch_console, []),
    "get-metric-statistics_i-0a1b2c3d4e5f60003_cpu.json": (get_metric_statistics, []),
    "get-metric-data_custom_labels.json": (
        lambda: _get_metric_data("i-0a1b2c3d4e5f60004", lambda name: f"{name}-i-0a1b2c3d4e5f60004"),
        ["--label-format", "{metric}-{server}"],
    ),
    "get-metric-data_default_labels.json": (
        lambda: _get_metric_data("i-0a1b2c3d4e5f60005", lambda name: name),
        ["--server", "i-0a1b2c3d4e5f60005"],
    ),
    "prometheus_query_range_cpu.json": (lambda: _prometheus("cpu", {}, 1.0), ["--metric", PROM_CPU]),
    "prometheus_query_range_node_memory.json": (
        lambda: _prometheus("mem", {"__name__": "instance:node_memory_utilisation:ratio"}, 100.0),
        ["--fraction"],
    ),
    "grafana_series_joined.csv": (grafana_joined, ["--metric", "cpu"]),
    "grafana_series_rows.csv": (grafana_rows, []),
    "datadog_timeseries.csv": (datadog, ["--fraction"]),
    "semicolon_decimal_comma.csv": (semicolon_decimal_comma, []),
    "semicolon_dot_decimal.csv": (semicolon_dot_decimal, []),
    "dd_mm_yyyy.csv": (dd_mm_yyyy, ["--date-format", "%d.%m.%Y %H:%M"]),
    "workbook.xlsx": (workbook, []),
    "utf16_unicode_text.txt": (utf16_text, []),
}
OPTION_FIELDS = {
    "--label-format": "label_format",
    "--server": "server",
    "--metric": "metric",
    "--date-format": "date_format",
}


def read_options(args: list[str]) -> ReadOptions:
    """The ReadOptions the CLI arguments give."""
    fields: dict[str, object] = {"fraction": True} if "--fraction" in args else {}
    fields |= {OPTION_FIELDS[k]: v for k, v in zip(args[::2], args[1::2], strict=False) if k in OPTION_FIELDS}
    return ReadOptions(**fields)  # type: ignore[arg-type]


def _series(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["server_id"], frame["metric"], strict=True))


def test_every_sample_has_a_long_export() -> None:
    assert {p.name for p in SAMPLES_DIR.iterdir()} == set(EXPORTS)


def test_run_on_one_long_export_of_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake_dir, reports, exports = tmp_path / "lake", tmp_path / "reports", tmp_path / "exports"
    exports.mkdir()
    base = ["--lake", str(lake_dir)]
    aliases = load_settings(environ={}, overrides={"lake": str(lake_dir)}).ingest.aliases()
    expected_rows = 0
    for name, (write, args) in EXPORTS.items():
        path = exports / name
        path.write_bytes(write())
        options = read_options(args)
        sample = etl.read_raw_object(name, (SAMPLES_DIR / name).read_bytes(), aliases, options=options)
        export = etl.read_raw_object(name, path.read_bytes(), aliases, options=options)
        assert export.attrs["shape"] == sample.attrs["shape"], name  # the same shape as the real sample
        assert _series(export) == _series(sample), name
        expected_rows += check_file(path, aliases, options=options).valid_rows
        assert main(["ingest", str(path), *args, *base]) == 0, capsys.readouterr().err
    assert expected_rows == len(TIMES) * len(LEVELS)

    inventory = tmp_path / "inventory.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in INVENTORY:
        sheet.append(list(row))
    book.save(inventory)
    assert main(["inventory", str(inventory), *base]) == 0, capsys.readouterr().err
    assert f"servers={len(SERVERS)}, sized={len(SERVERS)}" in capsys.readouterr().out

    args = [*base, "--horizon", "30", "--run-date", RUN_DATE.isoformat(), "--report-dir", str(reports)]
    assert main(["run", *args]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "generate" not in out and "Next to break" in out and "servers_freed=3" in out

    lake = open_lake(lake_dir)
    # every file's rows reached metrics_daily: each series has a sample at each of its 4-hourly times
    runs = lake.read_table(ETL_RUNS)
    assert len(runs) == 1
    etl_run = runs.iloc[0]
    assert etl_run["status"] == "succeeded" and etl_run["files_read"] == len(EXPORTS)
    assert etl_run["rows_in"] == etl_run["rows_written"] + etl_run["rows_quarantined"]
    assert etl_run["rows_written"] == expected_rows and etl_run["rows_quarantined"] == 0
    files = lake.read_table(ETL_FILES)
    assert len(files) == len(EXPORTS) and set(files["status"]) == {"processed"}
    assert files["rows"].sum() == etl_run["rows_in"]
    daily = lake.read_table(METRICS_DAILY)
    counts = daily.groupby(["server_id", "metric"])["n_samples"].sum()
    assert set(counts.index) == set(LEVELS) and set(counts) == {len(TIMES)}

    register = lake.read_table(RISK_REGISTER, where={"run_date": RUN_DATE})
    assert _series(register) == set(LEVELS) and len(register) == len(LEVELS)
    growing = register[(register["server_id"] == "db-01") & (register["metric"] == "cpu")]
    assert growing["breach_date_p90"].notna().all() and len(growing) == 1

    plan = lake.read_table(CONSOLIDATION, where={"run_date": RUN_DATE}).set_index("server_id")
    assert set(plan.index) == set(SERVERS)
    moved = plan[plan["action"] == "consolidate"]
    assert set(moved.index) == {"web-02", "i-0a1b2c3d4e5f60004", "i-0a1b2c3d4e5f60005"}, plan[["action", "reason"]]
    assert moved.loc["web-02", "target_server_id"] == "web-01"
    assert set(moved.loc[["i-0a1b2c3d4e5f60004", "i-0a1b2c3d4e5f60005"], "target_server_id"]) == {"i-0a1b2c3d4e5f60001"}
    # savings: the inventory's costs, and the price table's c5.xlarge (0.17 USD/h x 730 h) where it gave none
    assert moved.loc["web-02", "monthly_savings"] == pytest.approx(160.25)
    assert moved.loc["i-0a1b2c3d4e5f60005", "monthly_savings"] == pytest.approx(124.10)
    assert moved.loc["i-0a1b2c3d4e5f60004", "monthly_savings"] == pytest.approx(0.17 * 730)

    stamp = RUN_DATE.isoformat()
    html = (reports / f"capacity-report-{stamp}.html").read_text(encoding="utf-8")
    assert all(s in html for s in SERVERS)
    exported = pd.read_csv(reports / f"consolidation-{stamp}.csv")
    assert exported["monthly_savings"].sum() == pytest.approx(plan["monthly_savings"].sum())
    assert _series(pd.read_csv(reports / f"risk-register-{stamp}.csv")) == set(LEVELS)
    sheets = pd.read_excel(reports / f"capacity-report-{stamp}.xlsx", sheet_name=None)
    assert {"risk_register", "consolidation"} <= set(sheets) and len(sheets["risk_register"]) == len(LEVELS)

    for table in TABLES.values():
        frame = lake.read_table(table)
        if "server_id" in frame.columns:
            assert not frame["server_id"].astype(str).str.startswith("srv-").any(), table.name
    written = [p for p in [*reports.iterdir(), *lake_dir.rglob("*")] if p.is_file() and p.suffix != ".parquet"]
    assert written and not [p for p in written if b"srv-" in p.read_bytes()]


def test_run_on_the_two_day_samples_themselves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The samples as they are (two days each): `run` does not need a month to finish; without an inventory
    consolidation says what is missing."""
    base = ["--lake", str(tmp_path / "lake")]
    for name, (_, args) in EXPORTS.items():
        assert main(["ingest", str(SAMPLES_DIR / name), *args, *base]) == 0, capsys.readouterr().err
    reports = tmp_path / "reports"
    assert main(["run", *base, "--run-date", RUN_DATE.isoformat(), "--report-dir", str(reports)]) == 0
    out = capsys.readouterr().out
    assert "consolidation: no inventory: every server is kept" in out
    register = open_lake(tmp_path / "lake").read_table(RISK_REGISTER, where={"run_date": RUN_DATE})
    assert _series(register) == set(LEVELS)  # the long exports' series are the samples'
    assert (reports / f"capacity-report-{RUN_DATE.isoformat()}.html").is_file()
