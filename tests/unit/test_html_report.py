"""The HTML report renders every section, self-contained and well formed; the exports hold every row."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.html_report import SECTIONS, ReportData, render_html, write_report
from capacity_forecaster.rightsizing import Size, plan_consolidation
from capacity_forecaster.risk import build_risk_register

RUN = date(2026, 1, 1)
THRESHOLDS = {"cpu": 80.0, "mem": 80.0, "disk": 80.0, "net": 80.0}


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.external: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if values.get("id"):
            self.ids.append(str(values["id"]))
        for name in ("src", "href"):
            if values.get(name) and not str(values[name]).startswith("#"):
                self.external.append(f"{tag} {name}={values[name]}")
        if tag in {"section", "table", "svg", "main", "header"}:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in {"section", "table", "svg", "main", "header"}:
            assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
            self.open.pop()


def report_data() -> ReportData:
    servers = pd.DataFrame(
        {
            "server_id": ["hot-1", "idle-1", "idle-2", "ok-1"],
            "application": ["<script>alert(1)</script>", "billing", "billing", "billing"],
            "environment": "prod",
            "datacenter": "dc1",
            "instance_type": "m5.xlarge",
            "cores": 4,
            "memory_gib": 16.0,
            "monthly_cost": 140.16,
        }
    )
    ds = pd.date_range(pd.Timestamp(RUN), periods=30, freq="D")
    levels = {"hot-1": np.linspace(60, 95, 30), "idle-1": np.full(30, 5.0), "idle-2": np.full(30, 4.0)}
    levels["ok-1"] = np.full(30, 50.0)
    forecasts = pd.concat(
        [
            pd.DataFrame(
                {
                    "server_id": s,
                    "metric": m,
                    "model": "linear_trend",
                    "ds": ds,
                    "p10": v - 5,
                    "p50": v,
                    "p90": v + 5,
                    "is_champion": True,
                }
            )
            for s, v in levels.items()
            for m in ("cpu", "mem", "disk", "net")
        ],
        ignore_index=True,
    )
    dt = pd.date_range(end=pd.Timestamp(RUN) - pd.Timedelta(days=1), periods=60, freq="D")
    actuals = pd.concat(
        [
            pd.DataFrame({"server_id": s, "metric": m, "dt": dt, "p95": v[0], "imputed": False})
            for s, v in levels.items()
            for m in ("cpu", "mem", "disk", "net")
        ],
        ignore_index=True,
    )
    register = build_risk_register(
        forecasts,
        actuals,
        run_date=RUN,
        thresholds=THRESHOLDS,
        critical_days=30,
        saturation_days=7,
        overprovisioned_ratio=0.5,
    )
    profiles = pd.Series({"hot-1": "growing", "idle-1": "idle", "idle-2": "idle", "ok-1": "steady"})
    idle = profiles == "idle"
    plan = plan_consolidation(
        servers,
        register,
        profiles,
        idle,
        sizes={"m5.xlarge": Size(4, 16.0, 140.16), "m5.large": Size(2, 8.0, 70.08)},
        thresholds=THRESHOLDS,
        headroom=dict.fromkeys(THRESHOLDS, 10.0),
    ).assign(run_date=pd.Timestamp(RUN))
    features = pd.DataFrame({"cpu_mean": [60.0, 5.0, 4.0, 50.0], "mem_mean": [70.0, 6.0, 5.0, 50.0]})
    features.index = pd.Index(servers["server_id"])
    return ReportData(
        run_date=RUN,
        register=register,
        servers=servers,
        plan=plan,
        forecasts=forecasts,
        actuals=actuals,
        features=features,
        top=10,
        charts=4,
    )


def test_report_has_every_section_and_nothing_external() -> None:
    text = render_html(report_data())
    parser = Collector()
    parser.feed(text)
    assert not parser.open
    assert [sid for sid, _ in SECTIONS] == [i for i in parser.ids if i in dict(SECTIONS)]
    assert parser.external == []
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert parser.tags.count("script") == 1  # the inline table sorter
    # User-supplied text is escaped.
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_charts_and_svgs_are_well_formed() -> None:
    data = report_data()
    text = render_html(data)
    svgs = re.findall(r"<svg .*?</svg>", text, flags=re.S)
    for svg in svgs:
        ET.fromstring(svg)  # raises on malformed SVG
    # heatmap + one chart per series at risk (hot-1's four metrics, capped at charts=4) + scatter
    assert len(svgs) == 1 + 4 + 1
    assert text.count('class="band"') == 4 and text.count('class="threshold"') == 4
    assert text.count("<circle") == 4
    heat = svgs[0]
    assert heat.count("<rect") == 4 * 4


def test_consolidation_section_shows_the_plan_and_savings() -> None:
    data = report_data()
    text = render_html(data)
    consolidation = text.split('id="consolidation"')[1]
    moved = data.plan[data.plan["action"] != "keep"]
    assert len(moved) >= 1
    for server in moved["server_id"]:
        assert server in consolidation
    assert f"${data.plan['monthly_savings'].sum():,.2f}" in consolidation
    top = text.split('id="top-risks"')[1].split("</section>")[0]
    assert "hot-1" in top and 'class="critical"' in top


def test_exports_hold_every_row(tmp_path: Path) -> None:
    data = report_data()
    paths = write_report(data, tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == [
        "capacity-report-2026-01-01.html",
        "capacity-report-2026-01-01.xlsx",
        "consolidation-2026-01-01.csv",
        "risk-register-2026-01-01.csv",
    ]
    assert len(pd.read_csv(paths["risk_csv"])) == len(data.register)
    assert len(pd.read_csv(paths["consolidation_csv"])) == len(data.plan)
    sheets = pd.read_excel(paths["xlsx"], sheet_name=None, engine="openpyxl")
    assert sorted(sheets) == ["consolidation", "risk_register"]
    assert len(sheets["risk_register"]) == len(data.register)
    assert "application" in sheets["risk_register"].columns
    assert len(sheets["consolidation"]) == len(data.plan)
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.parametrize("charts", [0, 1])
def test_few_charts(charts: int) -> None:
    data = report_data()
    data.charts = charts
    text = render_html(data)
    assert text.count('class="band"') == charts


# ------------------------------------------------------------------------------ in a real browser (Chromium)

CHROMIUM = os.environ.get("CF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (apt-get install chromium, or set CF_CHROMIUM to its path)"
)


def open_in_chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM once the page's scripts have run, and every console message the page produced (console.log,
    console.error and uncaught exceptions alike), from headless Chromium with the network switched off."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout, [line for line in done.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]


@needs_chromium
def test_chromium_reports_console_errors_of_a_broken_page(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><p>x</p><script>console.error("planted error"); null.boom();</script>')
    _, console = open_in_chromium(page, tmp_path / "profile")
    assert any("planted error" in line for line in console)
    assert any("Uncaught TypeError" in line for line in console)


@needs_chromium
def test_report_opens_in_chromium_without_console_messages_and_sorts(tmp_path: Path) -> None:
    text = render_html(report_data())
    # After the report's own script: click the first header of the top risks table, as a user would.
    probe = "<script>document.querySelector('#top-risks table.sortable th').click();</script>"
    page = tmp_path / "report.html"
    page.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
    dom, console = open_in_chromium(page, tmp_path / "profile")
    assert console == []
    assert all(f'id="{sid}"' in dom for sid, _ in SECTIONS)
    assert dom.count("<svg") == text.count("<svg") > 0
    assert 'data-dir="asc"' in dom  # the sorter ran on the click
