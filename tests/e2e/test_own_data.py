"""A planner's own data end to end, no generator: exports as monitoring tools write them and an inventory in,
`run` out: the risk register, the consolidation plan with savings from the inventory's costs, the report and its
exports, and not one synthetic ``srv-*`` server anywhere."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.schema import CONSOLIDATION, GROUND_TRUTH, METRICS_DAILY, RISK_REGISTER, SERVERS, TABLES
from capacity_forecaster.storage.lake import open_lake

pytestmark = pytest.mark.slow

RUN_DATE = date(2026, 11, 23)
DAYS = 120
METRICS = ("cpu", "mem", "disk", "net")
SHORT = ("web-02.example.com", "net", 20)
"""One series whose export holds only its last 20 days: too short to backtest (training.min_history_days 56)."""
# server -> (cpu level, mem level, cpu growth per day): two idle web servers beside a roomy one, a growing db
LEVELS = {
    "web-01.example.com": (45.0, 30.0, 0.0),
    "web-02.example.com": (4.0, 18.0, 0.0),
    "web-03.example.com": (5.0, 20.0, 0.0),
    "db-01": (40.0, 60.0, 0.35),
    "i-0a1b2c3d4e5f60718": (30.0, 40.0, 0.0),
    "i-0f9e8d7c6b5a40312": (35.0, 45.0, 0.0),
}
INVENTORY = """hostname;Application;Env;Data centre;Instance type;Monthly cost ($);Team;Cost centre
web-01.example.com;shop;prod;eu-west-1;m5.2xlarge;320,50;web;CC-10
web-02.example.com;shop;prod;eu-west-1;m5.xlarge;160,25;web;CC-10
web-03.example.com;shop;prod;eu-west-1;m5.xlarge;;web;CC-10
db-01;ledger;prod;eu-west-1;r5.2xlarge;420;data;CC-20
i-0a1b2c3d4e5f60718;batch;dev;us-east-1;c5.xlarge;;data;
i-0f9e8d7c6b5a40312;batch;dev;us-east-1;c5.xlarge;124,10;data;
"""


def _values(server: str, metric: str, hours: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    cpu, mem, growth = LEVELS[server]
    day = (hours - hours[0]).days.to_numpy(dtype=float)
    daily = np.sin(2 * np.pi * hours.hour.to_numpy() / 24)
    base = {"cpu": cpu + growth * day, "mem": mem + 0.1 * growth * day, "disk": 30.0 + 0 * day, "net": 10.0 + 0 * day}
    return np.clip(base[metric] + 3 * daily + rng.normal(0, 1.0, len(hours)), 0, 100).round(2)


def write_exports(folder: Path) -> list[Path]:
    """A long CSV (hosts web-*), a wide CSV with CloudWatch agent names (db-01) and a GetMetricData JSON of two
    EC2 instances, hourly, for the DAYS days before the run."""
    rng = np.random.default_rng(5)
    hours = pd.date_range(
        datetime(2026, 11, 22, 23, tzinfo=UTC) - timedelta(days=DAYS) + timedelta(hours=1), periods=DAYS * 24, freq="h"
    )
    long = pd.concat(
        [
            pd.DataFrame(
                {
                    "timestamp": hours.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "host": s,
                    "metric": m,
                    "value": _values(s, m, hours, rng),
                }
            ).iloc[-SHORT[2] * 24 if (s, m) == SHORT[:2] else 0 :]
            for s in LEVELS
            if s.startswith("web-")
            for m in METRICS
        ]
    )
    wide = pd.DataFrame({"Timestamp": hours.strftime("%Y-%m-%d %H:%M:%S"), "server": "db-01"})
    for metric, name in zip(METRICS, ("CPUUtilization", "mem_used_percent", "disk_used_percent", "net"), strict=True):
        wide[name] = _values("db-01", metric, hours, rng)
    results = [
        {
            "Id": f"q{i}",
            "Label": f"{s} {name}",
            "Timestamps": [h.isoformat() for h in hours],
            "Values": _values(s, metric, hours, rng).tolist(),
            "StatusCode": "Complete",
        }
        for i, (s, (metric, name)) in enumerate(
            (s, mn)
            for s in LEVELS
            if s.startswith("i-")
            for mn in zip(METRICS, ("CPUUtilization", "mem_used_percent", "disk_used_percent", "net"), strict=True)
        )
    ]
    paths = [folder / "web-hosts.csv", folder / "db-wide.csv", folder / "cloudwatch.json"]
    long.to_csv(paths[0], index=False)
    wide.to_csv(paths[1], index=False)
    paths[2].write_text(json.dumps({"MetricDataResults": results, "Messages": []}))
    return paths


def test_run_on_own_exports_and_an_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake_dir, reports = str(tmp_path / "lake"), tmp_path / "reports"
    base = ["--lake", lake_dir]
    assert main(["run", *base, "--report-dir", str(reports)]) == 2  # an empty lake: what to do, in one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "capacity-forecaster ingest" in err and "capacity-forecaster demo" in err

    exports = tmp_path / "exports"
    exports.mkdir()
    for path in write_exports(exports):
        assert main(["ingest", str(path), *base]) == 0, capsys.readouterr().err
    inventory = tmp_path / "inventory.csv"
    inventory.write_text(INVENTORY, encoding="utf-8")
    assert main(["inventory", str(inventory), *base]) == 0
    assert "servers=6, sized=6, costs_from_inventory=4, costs_from_price_table=2" in capsys.readouterr().out

    horizon = ["--horizon", "60", "--run-date", RUN_DATE.isoformat()]
    assert main(["run", *base, *horizon, "--report-dir", str(reports)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Breaching now" in out and "Next to break" in out and "generate" not in out

    lake = open_lake(lake_dir)
    daily = lake.read_table(METRICS_DAILY)
    assert set(daily["server_id"]) == set(LEVELS) and daily.groupby(["server_id", "metric"]).ngroups == 24
    register = lake.read_table(RISK_REGISTER, where={"run_date": RUN_DATE})
    assert len(register) == 24
    growing = register[(register["server_id"] == "db-01") & (register["metric"] == "cpu")].iloc[0]
    assert growing["breach_date_p90"] is not None and not pd.isna(growing["breach_date_p90"])
    # The 20-day series is flagged short (its champion could not be backtested), the 120-day ones are not.
    short = register[register["short_history"]]
    assert list(zip(short["server_id"], short["metric"], strict=True)) == [SHORT[:2]]
    assert short["severity"].isin(["medium", "low"]).all() and short["history_days"].tolist() == [SHORT[2]]
    assert (register.loc[~register["short_history"], "history_days"] == DAYS).all()

    servers = lake.read_table(SERVERS).set_index("server_id")
    assert servers.loc["web-03.example.com", "monthly_cost"] == pytest.approx(0.192 * 730, abs=0.01)
    assert servers.loc["web-03.example.com", "cost_source"] == "price table 2025-01-01"
    assert servers.loc["web-02.example.com", "cost_source"] == "inventory"
    assert json.loads(str(servers.loc["db-01", "tags"])) == {"Cost centre": "CC-20", "Team": "data"}

    plan = lake.read_table(CONSOLIDATION, where={"run_date": RUN_DATE}).set_index("server_id")
    assert set(plan.index) == set(LEVELS)
    moved = plan[plan["action"] == "consolidate"]
    assert {"web-02.example.com", "web-03.example.com"} <= set(moved.index), plan[["action", "reason"]]
    assert set(moved.loc[["web-02.example.com", "web-03.example.com"], "target_server_id"]) == {"web-01.example.com"}
    # savings: the inventory's cost of web-02 (decimal comma) and the price table's of web-03
    assert moved.loc["web-02.example.com", "monthly_savings"] == pytest.approx(160.25)
    assert moved.loc["web-03.example.com", "monthly_savings"] == pytest.approx(140.16)

    stamp = RUN_DATE.isoformat()
    html = (reports / f"capacity-report-{stamp}.html").read_text(encoding="utf-8")
    assert "web-01.example.com" in html and "srv-" not in html
    exported = pd.read_csv(reports / f"consolidation-{stamp}.csv")
    assert exported["monthly_savings"].sum() == pytest.approx(plan["monthly_savings"].sum())
    exported_register = pd.read_csv(reports / f"risk-register-{stamp}.csv")
    assert len(exported_register) == 24 and exported_register["short_history"].sum() == 1
    assert "1 series had too little history to backtest" in html
    sheets = pd.read_excel(reports / f"capacity-report-{stamp}.xlsx", sheet_name=None)
    assert {"risk_register", "consolidation"} <= set(sheets)

    assert lake.read_table(GROUND_TRUTH).empty
    for table in TABLES.values():
        frame = lake.read_table(table)
        if "server_id" in frame.columns:
            assert not frame["server_id"].astype(str).str.startswith("srv-").any(), table.name
    files = [p for p in [*reports.iterdir(), *Path(lake_dir).rglob("*")] if p.is_file() and p.suffix != ".parquet"]
    assert not [p for p in files if b"srv-" in p.read_bytes()]


def test_run_refuses_demo_options_and_the_demo_runs_on_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = ["--lake", str(tmp_path / "lake")]
    assert main(["run", *lake, "--servers", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "capacity-forecaster demo --servers" in err
    assert not (tmp_path / "lake").exists()  # nothing generated
    args = [*lake, "--servers", "6", "--days", "60", "--horizon", "14", "--run-date", RUN_DATE.isoformat()]
    assert main(["demo", *args, "--report-dir", str(tmp_path / "reports")]) == 0
    servers = open_lake(tmp_path / "lake").read_table(SERVERS)
    assert sorted(servers["server_id"]) == [f"srv-{i:04d}" for i in range(1, 7)]
    capsys.readouterr()
    # the demo's lake is an ordinary lake: `run` on it carries on without generating (no new raw files)
    assert (
        main(
            [
                "run",
                *lake,
                "--horizon",
                "14",
                "--run-date",
                RUN_DATE.isoformat(),
                "--report-dir",
                str(tmp_path / "reports"),
            ]
        )
        == 0
    )
    assert "generate:" not in capsys.readouterr().out
    assert main(["consolidate", *lake]) == 0
    assert capsys.readouterr().out.startswith("consolidation: run_date=2026-11-23, servers=6")
