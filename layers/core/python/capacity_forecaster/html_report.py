"""The capacity report: one self-contained HTML file (inline CSS, JS and SVG; nothing fetched from the network),
plus CSV and Excel exports of the risk register and the consolidation plan.

:func:`render_html` is pure (frames in, text out); :func:`load_report_data` and :func:`write_report` do the I/O.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from capacity_forecaster.report import TOP_HEADERS, top_risks
from capacity_forecaster.risk import SEVERITY_ORDER
from capacity_forecaster.schema import CONSOLIDATION, FORECASTS, FORECASTS_HOURLY, METRICS, SERVERS
from capacity_forecaster.storage.lake import Lake

SECTIONS: Final[tuple[tuple[str, str], ...]] = (
    ("heatmap", "Fleet heatmap"),
    ("top-risks", "Top risks"),
    ("forecasts", "Forecast versus actual"),
    ("profiles", "Utilisation profiles"),
    ("consolidation", "Consolidation plan and savings"),
)
SEVERITY_COLOURS: Final[dict[str, str]] = {
    "critical": "#b91c1c",
    "high": "#ea580c",
    "medium": "#ca8a04",
    "low": "#15803d",
}
PROFILE_PALETTE: Final[tuple[str, ...]] = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#64748b")
HEATMAP_MAX_SERVERS: Final[int] = 300
HISTORY_DAYS: Final[int] = 120


@dataclass
class ReportData:
    """What the report shows, for one run."""

    run_date: date
    register: pd.DataFrame
    servers: pd.DataFrame
    plan: pd.DataFrame
    forecasts: pd.DataFrame
    """Champion forecasts of the series in the forecast charts."""
    actuals: pd.DataFrame
    """Recent daily P95 of those series."""
    features: pd.DataFrame
    """Per-server mean cpu and mem (for the profile scatter), indexed by server_id."""
    top: int = 15
    charts: int = 6


def load_report_data(
    lake: Lake, *, run_date: date | None = None, top: int = 15, charts: int = 6, hourly: bool = False
) -> ReportData:
    """Read what the report needs for ``run_date`` (default: the newest risk register).

    ``hourly``: the run forecast ``forecasts_hourly`` (``training.grain: hourly``); the charts show each day's peak
    hour, as the risk register read them."""
    from capacity_forecaster.forecasting.grain import daily_peaks
    from capacity_forecaster.rightsizing import server_features
    from capacity_forecaster.risk_inputs import champion_forecasts, recent_daily
    from capacity_forecaster.stages import read_risk_register

    run_date, register = read_risk_register(lake, run_date, command="run")
    servers = lake.read_table(SERVERS)
    plan = lake.read_table(CONSOLIDATION, where={"run_date": run_date})
    leaders = top_risks(register, servers, top=charts)[["server_id", "metric"]]
    # The charted series' champion rows only, and the window's daily columns the charts and the scatter use.
    forecasts = champion_forecasts(lake, FORECASTS_HOURLY if hourly else FORECASTS, run_date, series=leaders)
    if hourly and not forecasts.empty:
        forecasts = daily_peaks(forecasts)
    start = pd.Timestamp(run_date) - pd.Timedelta(days=HISTORY_DAYS)
    days = [d.date() for d in pd.date_range(start, pd.Timestamp(run_date), freq="D")]
    daily = recent_daily(lake, days, observed_only=False)
    actuals = daily.merge(leaders, on=["server_id", "metric"])
    features = server_features(daily, days=HISTORY_DAYS)[["cpu_mean", "mem_mean"]] if not daily.empty else None
    return ReportData(
        run_date=run_date,
        register=register,
        servers=servers,
        plan=plan,
        forecasts=forecasts,
        actuals=actuals,
        features=features if features is not None else pd.DataFrame(columns=["cpu_mean", "mem_mean"]),
        top=top,
        charts=charts,
    )


# ------------------------------------------------------------------------------------------------ rendering


def _e(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, float | np.floating):
        return f"{float(value):,.1f}"
    return html.escape(str(value))


def _table(frame: pd.DataFrame, headers: dict[str, str], *, table_id: str, row_class: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label in headers.values())
    rows = []
    for _, row in frame.iterrows():
        cls = f' class="{html.escape(str(row[row_class]))}"' if row_class else ""
        cells = "".join(f"<td>{_e(row[c])}</td>" for c in headers)
        rows.append(f"<tr{cls}>{cells}</tr>")
    body = "".join(rows) or f'<tr><td colspan="{len(headers)}">nothing to show</td></tr>'
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _heat_colour(value: float, threshold: float) -> str:
    """Green under half the threshold, through yellow, to red at and over the threshold."""
    if pd.isna(value):
        return "#e5e7eb"
    x = float(np.clip(value / threshold, 0.0, 1.0))
    hue = 120.0 * (1.0 - x)
    return f"hsl({hue:.0f}, 70%, {45 + 10 * (1 - x):.0f}%)"


def heatmap_svg(register: pd.DataFrame) -> str:
    """Servers (rows, most at risk first) by metric (columns), coloured by peak P90 against the threshold."""
    reg = register.assign(_o=register["severity"].map(SEVERITY_ORDER))
    order = reg.groupby("server_id")["_o"].min().sort_values(kind="stable").index[:HEATMAP_MAX_SERVERS]
    cells = reg.set_index(["server_id", "metric"])
    cell_w, cell_h, label_w, top = 70, 14, 90, 20
    width = label_w + cell_w * len(METRICS)
    height = top + cell_h * len(order)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for j, metric in enumerate(METRICS):
        parts.append(f'<text x="{label_w + j * cell_w + cell_w / 2}" y="14" text-anchor="middle">{metric}</text>')
    for i, server in enumerate(order):
        y = top + i * cell_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 11}" text-anchor="end">{html.escape(str(server))}</text>')
        for j, metric in enumerate(METRICS):
            key = (server, metric)
            if key in cells.index:
                row = cells.loc[key]
                colour = _heat_colour(float(row["peak_p90"]), float(row["threshold"]))
                tip = f"{server} {metric}: {row['severity']}, peak P90 {float(row['peak_p90']):.1f}%"
            else:
                colour, tip = "#e5e7eb", f"{server} {metric}: no forecast"
            parts.append(
                f'<rect x="{label_w + j * cell_w}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                f'fill="{colour}"><title>{html.escape(tip)}</title></rect>'
            )
    parts.append("</svg>")
    note = (
        f"<p>Showing the {HEATMAP_MAX_SERVERS} servers most at risk of {register['server_id'].nunique()}.</p>"
        if register["server_id"].nunique() > HEATMAP_MAX_SERVERS
        else ""
    )
    return note + "".join(parts)


def _scale(values: Sequence[float], lo: float, hi: float, out_lo: float, out_hi: float) -> list[float]:
    span = (hi - lo) or 1.0
    return [out_lo + (v - lo) / span * (out_hi - out_lo) for v in values]


def forecast_chart_svg(
    actuals: pd.DataFrame, forecast: pd.DataFrame, *, threshold: float, title: str, breach: Any = None
) -> str:
    """Recent actual P95, the forecast P50 and its P10-P90 band, and the threshold, for one series."""
    w, h, pad_l, pad_r, pad_t, pad_b = 520, 200, 40, 10, 24, 24
    act = actuals.sort_values("dt")
    fc = forecast.sort_values("ds")
    days = pd.concat([act["dt"], fc["ds"]])
    if days.empty:
        return ""
    t0, t1 = days.min(), days.max()

    def xs(ts: pd.Series) -> list[float]:
        return _scale([(t - t0).days for t in ts], 0, max((t1 - t0).days, 1), pad_l, w - pad_r)

    def ys(values: pd.Series) -> list[float]:
        return _scale([float(v) for v in values], 0.0, 100.0, h - pad_b, pad_t)

    def path(x: list[float], y: list[float]) -> str:
        return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y, strict=True))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">']
    parts.append(f'<text x="{pad_l}" y="15" class="chart-title">{html.escape(title)}</text>')
    for pct in (0, 50, 100):
        y = ys(pd.Series([pct]))[0]
        parts.append(f'<line x1="{pad_l}" x2="{w - pad_r}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end">{pct}</text>')
    if not fc.empty:
        fx = xs(fc["ds"])
        band = path(fx, ys(fc["p90"])) + " " + path(fx[::-1], ys(fc["p10"])[::-1])
        parts.append(f'<polygon points="{band}" class="band"><title>P10-P90</title></polygon>')
        parts.append(f'<polyline points="{path(fx, ys(fc["p50"]))}" class="p50"/>')
    if not act.empty:
        parts.append(f'<polyline points="{path(xs(act["dt"]), ys(act["p95"]))}" class="actual"/>')
    ty = ys(pd.Series([threshold]))[0]
    parts.append(f'<line x1="{pad_l}" x2="{w - pad_r}" y1="{ty:.1f}" y2="{ty:.1f}" class="threshold"/>')
    if breach is not None and not pd.isna(breach):
        bx = xs(pd.Series([pd.Timestamp(breach)]))[0]
        parts.append(f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{pad_t}" y2="{h - pad_b}" class="breach"/>')
    parts.append(
        f'<text x="{pad_l}" y="{h - 6}">{_e(t0)}</text><text x="{w - pad_r}" y="{h - 6}" '
        f'text-anchor="end">{_e(t1)}</text></svg>'
    )
    return "".join(parts)


def profile_scatter_svg(features: pd.DataFrame, plan: pd.DataFrame) -> str:
    """Each server at (mean cpu, mean mem), coloured by its utilisation profile."""
    w, h, pad = 520, 360, 40
    profiles = plan.set_index("server_id")["profile"] if not plan.empty else pd.Series(dtype=str)
    names = sorted(profiles.unique())
    colour = {n: PROFILE_PALETTE[i % len(PROFILE_PALETTE)] for i, n in enumerate(names)}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">']
    parts.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" class="axis"/>')
    parts.append(f'<line x1="{pad}" y1="{h - pad}" x2="{pad}" y2="10" class="axis"/>')
    parts.append(f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">mean cpu %</text>')
    parts.append(f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">mean mem %</text>')
    for server, row in features.iterrows():
        x = _scale([float(row["cpu_mean"])], 0, 100, pad, w - 10)[0]
        y = _scale([float(row["mem_mean"])], 0, 100, h - pad, 10)[0]
        name = str(profiles.get(server, "unknown"))
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour.get(name, "#94a3b8")}">'
            f"<title>{html.escape(str(server))}: {html.escape(name)}</title></circle>"
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="legend"><span class="swatch" style="background:{colour[n]}"></span>{html.escape(n)} '
        f"({int((profiles == n).sum())})</span>"
        for n in names
    )
    return "".join(parts) + f"<div>{legend}</div>"


CSS: Final[str] = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#111827;background:#f9fafb}
header{background:#111827;color:#fff;padding:16px 24px}header h1{margin:0;font-size:22px}
nav a{color:#93c5fd;margin-right:14px;font-size:14px}main{padding:16px 24px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;margin-bottom:16px}
h2{font-size:18px;margin:4px 0 12px}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:8px 14px;min-width:120px;background:#fff}
.card b{display:block;font-size:22px}table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left}th{cursor:pointer;background:#f3f4f6}
tr.critical td:first-child{border-left:4px solid #b91c1c}tr.high td:first-child{border-left:4px solid #ea580c}
tr.medium td:first-child{border-left:4px solid #ca8a04}svg{font-size:11px;font-family:inherit}
.charts{display:flex;flex-wrap:wrap;gap:12px}.band{fill:#93c5fd;opacity:.5}.p50{fill:none;stroke:#1d4ed8;stroke-width:2}
.actual{fill:none;stroke:#111827;stroke-width:1.2}.threshold{stroke:#b91c1c;stroke-dasharray:5 3}
.breach{stroke:#ea580c;stroke-dasharray:2 2}.grid{stroke:#e5e7eb}.axis{stroke:#6b7280}.chart-title{font-weight:600}
.legend{margin-right:14px;font-size:13px}.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}
"""

JS: Final[str] = """
document.querySelectorAll('table.sortable th').forEach(function (th, index) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.dir !== 'asc';
    th.dataset.dir = asc ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[index].textContent, y = b.cells[index].textContent;
      var nx = parseFloat(x.replace(/,/g, '')), ny = parseFloat(y.replace(/,/g, ''));
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document."""
    reg = data.register
    counts = reg["severity"].value_counts()
    plan = data.plan
    savings = float(plan["monthly_savings"].sum()) if not plan.empty else 0.0
    freed = int((plan["action"] == "consolidate").sum()) if not plan.empty else 0
    downsized = int((plan["action"] == "downsize").sum()) if not plan.empty else 0
    cards = "".join(
        f'<div class="card" style="border-color:{SEVERITY_COLOURS[s]}">{s} series<b>{int(counts.get(s, 0))}</b></div>'
        for s in SEVERITY_ORDER
    )
    cards += (
        f'<div class="card">servers<b>{reg["server_id"].nunique()}</b></div>'
        f'<div class="card">servers freed<b>{freed}</b></div>'
        f'<div class="card">downsized<b>{downsized}</b></div>'
        f'<div class="card">monthly savings<b>${savings:,.0f}</b></div>'
    )
    top = top_risks(reg, data.servers, top=data.top)
    charts = []
    leaders = top_risks(reg, data.servers, top=data.charts)
    thresholds = {
        (str(a), str(b)): float(t) for a, b, t in zip(reg["server_id"], reg["metric"], reg["threshold"], strict=True)
    }
    for row in leaders.itertuples(index=False):
        key = (str(row.server_id), str(row.metric))
        act = data.actuals[(data.actuals["server_id"] == row.server_id) & (data.actuals["metric"] == row.metric)]
        fc = data.forecasts[(data.forecasts["server_id"] == row.server_id) & (data.forecasts["metric"] == row.metric)]
        threshold = thresholds.get(key, 80.0)
        title = f"{row.server_id} {row.metric} ({row.severity}, {row.model})"
        charts.append(forecast_chart_svg(act, fc, threshold=threshold, title=title, breach=row.breach_date_p50))
    chart_html = (
        '<div class="charts">' + "".join(charts) + "</div>"
        "<p>Black: observed daily P95; blue: forecast P50 with the P10-P90 band; red dashed: threshold; "
        "orange dotted: P50 breach date.</p>"
        if charts
        else "<p>No series at risk.</p>"
    )
    moves = plan[plan["action"] != "keep"] if not plan.empty else plan
    plan_headers = {
        "server_id": "server",
        "profile": "profile",
        "action": "action",
        "current_instance_type": "current",
        "target_instance_type": "target type",
        "target_server_id": "target server",
        "forecast_p90_cpu": "P90 cpu %",
        "forecast_p90_mem": "P90 mem %",
        "monthly_savings": "savings $/month",
        "reason": "reason",
    }
    bodies = {
        "heatmap": "<p>Peak P90 forecast per server and metric against its threshold (green: low, red: at or over"
        " the threshold); hover for details.</p>" + heatmap_svg(reg),
        "top-risks": _table(top, TOP_HEADERS, table_id="top-risks-table", row_class="severity"),
        "forecasts": chart_html,
        "profiles": profile_scatter_svg(data.features, plan),
        "consolidation": f"<p>{freed} servers freed, {downsized} downsized: <b>${savings:,.2f}</b> per month.</p>"
        + _table(moves, plan_headers, table_id="consolidation-table"),
    }
    sections = "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2>{bodies[sid]}</section>' for sid, title in SECTIONS
    )
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in SECTIONS)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Capacity report {data.run_date}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Capacity report — run {data.run_date}</h1><nav>{nav}</nav></header>"
        f'<main><div class="cards">{cards}</div><br>{sections}</main><script>{JS}</script></body></html>'
    )


# ------------------------------------------------------------------------------------------------ outputs


def _for_export(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.date
    return out


REPORT_CONTENT_TYPES: Final[dict[str, str]] = {
    "html": "text/html; charset=utf-8",
    "risk_csv": "text/csv; charset=utf-8",
    "consolidation_csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
"""The content type of each report file (what the lake's objects are stored with)."""


@dataclass(frozen=True)
class ReportFile:
    """One file of the report: its name, its bytes and its content type."""

    name: str
    data: bytes
    content_type: str


def report_files(data: ReportData) -> dict[str, ReportFile]:
    """The HTML report, the CSV exports and one Excel workbook, rendered in memory; name -> file."""
    stamp = data.run_date.isoformat()
    register = _for_export(data.register.merge(data.servers, on="server_id", how="left"))
    plan = _for_export(data.plan)
    workbook = io.BytesIO()
    with pd.ExcelWriter(workbook, engine="openpyxl") as writer:
        register.to_excel(writer, sheet_name="risk_register", index=False)
        plan.to_excel(writer, sheet_name="consolidation", index=False)
    payloads = {
        "html": (f"capacity-report-{stamp}.html", render_html(data).encode("utf-8")),
        "risk_csv": (f"risk-register-{stamp}.csv", register.to_csv(index=False).encode("utf-8")),
        "consolidation_csv": (f"consolidation-{stamp}.csv", plan.to_csv(index=False).encode("utf-8")),
        "xlsx": (f"capacity-report-{stamp}.xlsx", workbook.getvalue()),
    }
    return {key: ReportFile(name, payload, REPORT_CONTENT_TYPES[key]) for key, (name, payload) in payloads.items()}


def write_report(data: ReportData, out_dir: Path) -> dict[str, Path]:
    """Write the HTML report, CSV exports and one Excel workbook into ``out_dir``; returns name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, file in report_files(data).items():
        paths[key] = out_dir / file.name
        _atomic_write(paths[key], file.data)
    return paths


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
