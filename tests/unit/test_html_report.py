"""The HTML report renders every section, self-contained and well formed; the exports hold every row."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.html_report import (
    HEATMAP_MAX_SERVERS,
    SECTIONS,
    SEVERITY_COLOURS,
    ReportData,
    render_html,
    summary_cards,
    write_report,
)
from capacity_forecaster.report import chart_series
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
    assert list(sheets) == ["Summary", "risk_register", "consolidation"]
    assert len(sheets["risk_register"]) == len(data.register)
    assert "application" in sheets["risk_register"].columns
    assert len(sheets["consolidation"]) == len(data.plan)
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_the_workbook_reads_back_formatted(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    data = report_data()
    book = load_workbook(write_report(data, tmp_path)["xlsx"])
    assert book.sheetnames == ["Summary", "risk_register", "consolidation"] and book.active.title == "Summary"
    summary = book["Summary"]
    rows = [tuple(c.value for c in row) for row in summary.iter_rows(min_row=2)]
    assert rows == [("run date", "2026-01-01"), *((label, value) for label, value, _ in summary_cards(data))]
    savings = next(row[1] for row in summary.iter_rows(min_row=2) if row[0].value == "monthly savings")
    assert savings.number_format == '"$"#,##0.00' and savings.value == round(data.plan["monthly_savings"].sum(), 2)
    assert summary["A1"].font.b and summary.freeze_panes == "A2"

    sheet = book["risk_register"]
    header = [c.value for c in sheet[1]]
    assert header[:2] == ["server_id", "metric"] and "application" in header
    assert sheet.freeze_panes == "A2" and all(c.font.b for c in sheet[1])
    assert sheet.auto_filter.ref == f"A1:{sheet.cell(row=1, column=len(header)).column_letter}{len(data.register) + 1}"
    column = {name: i + 1 for i, name in enumerate(header)}

    def cells(name: str) -> list[Any]:
        return [sheet.cell(row=r, column=column[name]) for r in range(2, sheet.max_row + 1)]

    assert {c.number_format for c in cells("breach_probability")} == {"0%"}
    assert {c.number_format for c in cells("last_p95")} == {"0.0"}
    assert {c.number_format for c in cells("days_to_breach_p50")} == {"0"}
    assert {c.number_format for c in cells("monthly_cost")} == {"#,##0.00"}
    dates = [c for c in cells("breach_date_p50") if c.value is not None]
    assert dates and all(c.is_date and c.number_format == "yyyy-mm-dd" for c in dates)
    assert all(isinstance(c.value, datetime) for c in dates)  # a date, not its text
    widths = {
        name: sheet.column_dimensions[sheet.cell(row=1, column=i).column_letter].width for name, i in column.items()
    }
    assert widths["server_id"] >= len("server_id") + 2 and widths["breach_probability"] >= len("breach_probability")
    assert max(widths.values()) <= 60
    plan = book["consolidation"]
    assert plan.freeze_panes == "A2" and plan.auto_filter.ref and plan["A1"].font.b


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
    probe = PROBE
    page = tmp_path / "report.html"
    page.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
    dom, console = open_in_chromium(page, tmp_path / "profile")
    assert console == []
    assert all(f'id="{sid}"' in dom for sid, _ in SECTIONS)
    assert dom.count("<svg") == text.count("<svg") > 0
    assert dom.count('data-dir="asc"') == text.count('class="sortable"') == 3  # the sorter ran on each click
    assert 'data-clipped="0"' in dom


# ------------------------------------------------------------------------------ a fleet of 1,000 servers

LONG_NAME = "payments-ledger-primary-db-01.eu-west-1.prod.internal.example.com"


def fleet_data(servers: int = 1000) -> ReportData:
    """A register, a plan and features for ``servers`` servers (four metrics each, a tenth with long names), and
    the forecasts and actuals of the charted series: what a 1,000-server run's report holds."""
    rng = np.random.default_rng(16)
    ids = [LONG_NAME.replace("01", f"{i:04d}") if i % 10 == 0 else f"srv-{i:04d}" for i in range(servers)]
    run = pd.Timestamp(RUN)
    n = servers * 4
    severity = rng.choice(["critical", "high", "medium", "low"], size=n, p=[0.06, 0.1, 0.09, 0.75])
    now = (severity == "critical") & (rng.random(n) < 0.5)
    days = np.where(now, 0, rng.integers(1, 90, size=n)).astype(float)
    days[severity == "low"] = np.nan
    p50 = pd.Series(run + pd.to_timedelta(days, unit="D"))
    register = pd.DataFrame(
        {
            "server_id": np.repeat(ids, 4),
            "metric": np.tile(["cpu", "mem", "disk", "net"], servers),
            "model": rng.choice(["seasonal_naive", "linear_trend", "recent_trend"], size=n),
            "threshold": 80.0,
            "last_actual_date": run - pd.Timedelta(days=1),
            "last_p95": rng.uniform(5, 100, size=n),
            "already_breaching": now,
            "breach_date_p50": p50,
            "breach_date_p90": p50 - pd.to_timedelta(rng.integers(0, 5, size=n), unit="D"),
            "days_to_breach_p50": pd.array(days, dtype="Float64").astype("Int32"),
            "days_to_breach_p90": pd.array(days, dtype="Float64").astype("Int32"),
            "peak_p50": rng.uniform(10, 100, size=n),
            "peak_date": run + pd.Timedelta(days=30),
            "severity": severity,
            "finding": "optimized",
            "peak_p90": rng.uniform(10, 100, size=n),
            "seasonal_peak": False,
            "seasonal_peak_kind": "",
            "seasonal_peak_dates": "",
            "breach_probability": np.where(severity == "low", rng.uniform(0, 0.2, size=n), rng.uniform(0.3, 1, size=n)),
            "likely_breach_date": p50,
            "run_date": run,
        }
    )
    action = rng.choice(["keep", "consolidate", "downsize"], size=servers, p=[0.85, 0.05, 0.1])
    plan = pd.DataFrame(
        {
            "server_id": ids,
            "profile": rng.choice(["idle", "steady busy", "spiky", "growing"], size=servers),
            "action": action,
            "current_instance_type": "m5.xlarge",
            "target_instance_type": np.where(action == "downsize", "m5.large", None),
            "target_server_id": np.where(action == "consolidate", ids[1], None),
            "forecast_p90_cpu": rng.uniform(1, 60, size=servers),
            "forecast_p90_mem": rng.uniform(1, 60, size=servers),
            "monthly_savings": np.where(action == "keep", 0.0, 70.08),
            "reason": np.where(action == "keep", "", "idle; P90 peak fits m5.large within threshold less headroom"),
            "run_date": run,
        }
    )
    servers_frame = pd.DataFrame({"server_id": ids, "application": rng.choice(["billing", "erp", "crm"], servers)})
    charted = chart_series(register, servers_frame, charts=6)
    ds = pd.date_range(run, periods=90, freq="D")
    dt = pd.date_range(end=run - pd.Timedelta(days=1), periods=120, freq="D")
    forecasts = pd.concat(
        [
            pd.DataFrame({"server_id": s, "metric": m, "model": "linear_trend", "ds": ds, "is_champion": True})
            .assign(p50=np.linspace(60, 95, 90))
            .assign(p10=lambda f: f["p50"] - 8, p90=lambda f: f["p50"] + 8)
            for s, m in charted.itertuples(index=False, name=None)
        ],
        ignore_index=True,
    )
    actuals = pd.concat(
        [
            pd.DataFrame({"server_id": s, "metric": m, "dt": dt, "p95": rng.uniform(40, 80, 120), "imputed": False})
            for s, m in charted.itertuples(index=False, name=None)
        ],
        ignore_index=True,
    )
    features = pd.DataFrame({"cpu_mean": rng.uniform(0, 90, servers), "mem_mean": rng.uniform(0, 90, servers)})
    features.index = pd.Index(ids)
    return ReportData(
        run_date=RUN,
        register=register,
        servers=servers_frame,
        plan=plan,
        forecasts=forecasts,
        actuals=actuals,
        features=features,
    )


def test_a_1000_server_report_stays_small() -> None:
    text = render_html(fleet_data())
    assert len(text.encode("utf-8")) <= 350_000, len(text.encode("utf-8"))
    heat = re.findall(r"<svg .*?</svg>", text, flags=re.S)[0]
    assert heat.count("<rect") == HEATMAP_MAX_SERVERS * 4
    assert text.count("<circle") == 1000


def test_heatmap_is_coloured_by_severity_with_a_legend() -> None:
    data = fleet_data(200)
    text = render_html(data)
    heat = text.split('id="heatmap"')[1].split("</section>")[0]
    legend, svg = heat.split("<svg", 1)
    for severity, colour in SEVERITY_COLOURS.items():
        assert f"background:{colour}" in legend and severity in legend
        assert f".s-{severity}{{fill:{colour}}}" in text
    cells = re.findall(r'<rect [^>]*class="s-(\w+)"><title>(\w+): (\w+)[^<]*</title>', svg)
    assert len(cells) == 200 * 4
    severity = data.register.set_index(["server_id", "metric"])["severity"]
    rows = re.findall(r"<g [^>]*><title>([^<]*)</title>(.*?)</g>", svg)
    assert len(rows) == 200
    for server, row in rows:  # each cell's colour is its series' severity, named in its tooltip
        for cls, metric, named in re.findall(r'class="s-(\w+)"><title>(\w+): (\w+)', row):
            assert cls == named == severity[(server, metric)]


def test_long_names_end_in_an_ellipsis_with_the_full_name_on_hover() -> None:
    text = render_html(fleet_data(50))
    heat = re.findall(r"<svg .*?</svg>", text, flags=re.S)[0]
    shown = [
        (full, label)
        for full, label in re.findall(r'<g [^>]*><title>([^<]*)</title><text [^>]*class="name">([^<]*)</text>', heat)
        if full != label
    ]
    assert shown, "no shortened name"
    for full, label in shown:
        assert label.endswith("…") and full.startswith(label[:-1]) and len(full) > len(label)
    assert LONG_NAME.replace("01", "0000") in [full for full, _ in shown]


def test_forecast_charts_have_date_ticks_percent_axes_and_the_breach_date() -> None:
    data = fleet_data(100)
    text = render_html(data)
    section = text.split('id="forecasts"')[1].split("</section>")[0]
    charts = re.findall(r"<svg .*?</svg>", section, flags=re.S)
    assert len(charts) == 6
    titles = [re.search(r'class="chart-title">(?:<title>([^<]*)</title>)?([^<]*)<', c).groups() for c in charts]
    kinds = [(full or shown) for full, shown in titles]
    assert sum("breaching now" in k for k in kinds) == 3 and sum(": breaks " in k for k in kinds) == 3
    for chart, kind in zip(charts, kinds, strict=True):
        for pct in ("0%", "50%", "100%"):
            assert f">{pct}</text>" in chart
        ticks = re.findall(r'class="tick">([^<]+)<', chart)
        assert len(ticks) >= 4  # month ticks over four months of history and three of forecast
        if ": breaks " in kind:
            day = re.search(r"breaks (\d{4}-\d\d-\d\d)", kind).group(1)
            assert f"breach {day}</text>" in chart and 'class="breach"' in chart
    scatter = text.split('id="profiles"')[1].split("</section>")[0]
    assert scatter.count('class="tick">') == 10 and "mean cpu (%)" in scatter and "mean mem (%)" in scatter


# After the report's own script, once the page has loaded and laid out: how long that took, how many SVG labels
# run past their picture's edge (a clipped name), and a click on the first header of every sortable table.
PROBE = """<script>
window.addEventListener('load', function () {
  document.body.offsetHeight;
  var clipped = 0;
  document.querySelectorAll('svg').forEach(function (svg) {
    var edge = svg.getBoundingClientRect();
    svg.querySelectorAll('text').forEach(function (t) {
      var box = t.getBoundingClientRect();
      if (box.left < edge.left - 0.5 || box.right > edge.right + 0.5 || box.top < edge.top - 0.5) {
        clipped += 1;
        document.body.setAttribute('data-clipped-text', t.textContent);
      }
    });
  });
  document.querySelectorAll('table.sortable').forEach(function (t) { t.querySelector('th').click(); });
  document.body.setAttribute('data-clipped', clipped);
  document.body.setAttribute('data-loaded-ms', Math.round(performance.now()));
});
</script>"""


@needs_chromium
def test_a_1000_server_report_renders_fast_with_nothing_clipped(tmp_path: Path) -> None:
    text = render_html(fleet_data())
    page = tmp_path / "fleet.html"
    page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom, console = open_in_chromium(page, tmp_path / "profile")
    assert console == []
    assert all(f'id="{sid}"' in dom for sid, _ in SECTIONS)
    assert dom.count("<svg") == text.count("<svg") == 1 + 6 + 1
    assert dom.count('data-dir="asc"') == text.count('class="sortable"') == 3  # both risk lists and the plan
    assert re.search(r'data-clipped="0"', dom), re.search(r'data-clipped="\d+"', dom)
    loaded = int(re.search(r'data-loaded-ms="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    assert loaded < 5_000, f"{loaded} ms to load and lay out"
