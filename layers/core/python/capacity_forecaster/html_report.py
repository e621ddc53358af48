"""The capacity report: one self-contained HTML file (inline CSS, JS and SVG; nothing fetched from the network),
plus CSV and Excel exports of the risk register and the consolidation plan.

:func:`render_html` is pure (frames in, text out); :func:`load_report_data` and :func:`write_report` do the I/O.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

import pandas as pd

from capacity_forecaster.excel import workbook_bytes
from capacity_forecaster.report import (
    NEXT_HEADERS,
    NOW_HEADERS,
    breaching_now,
    chart_series,
    is_breaching_now,
    next_to_break,
)
from capacity_forecaster.risk import SEVERITY_ORDER
from capacity_forecaster.schema import CONSOLIDATION, FORECASTS, FORECASTS_HOURLY, METRICS, SERVERS
from capacity_forecaster.storage.lake import Lake
from capacity_forecaster.tables import format_column, format_value

SECTIONS: Final[tuple[tuple[str, str], ...]] = (
    ("heatmap", "Fleet heatmap"),
    ("top-risks", "Breaching now and next to break"),
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
NO_FORECAST_COLOUR: Final[str] = "#e5e7eb"
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
    leaders = chart_series(register, servers, charts=charts)
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

CHAR_PX: Final[float] = 6.6
"""Roughly the width of one character of the 11 px SVG font, for fitting labels."""
BOLD_CHAR_PX: Final[float] = 7.4
"""The same for the bold chart titles."""
LABEL_MAX_PX: Final[int] = 230
"""The heatmap's server names get up to this width; longer ones end in an ellipsis (the full name on hover)."""


def _cell_texts(frame: pd.DataFrame, column: str) -> list[str]:
    return [html.escape(text) for text in format_column(frame[column], column)]


def _table(frame: pd.DataFrame, headers: dict[str, str], *, table_id: str, row_class: str | None = None) -> str:
    columns = [c for c in headers if c in frame.columns]
    head = "".join(f"<th>{html.escape(headers[c])}</th>" for c in columns)
    texts = {c: _cell_texts(frame, c) for c in columns}
    classes = [str(v) for v in frame[row_class]] if row_class and row_class in frame.columns else None
    rows = []
    for i in range(len(frame)):
        cls = f' class="{html.escape(classes[i])}"' if classes else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{texts[c][i]}</td>" for c in columns) + "</tr>")
    body = "".join(rows) or f'<tr><td colspan="{len(columns)}">nothing to show</td></tr>'
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def fit_label(text: str, width_px: float, char_px: float = CHAR_PX) -> tuple[str, bool]:
    """``text`` shortened with an ellipsis to about ``width_px``; whether it was shortened."""
    room = max(int(width_px / char_px), 4)
    return (text, False) if len(text) <= room else (text[: room - 1] + "…", True)


def _svg_text(text: str, width_px: float, attrs: str, char_px: float = CHAR_PX) -> str:
    """An SVG label that fits ``width_px``; a shortened one carries the full text as its <title> (the hover)."""
    shown, cut = fit_label(text, width_px, char_px)
    tip = f"<title>{html.escape(text)}</title>" if cut else ""
    return f"<text {attrs}>{tip}{html.escape(shown)}</text>"


def severity_legend(counts: dict[str, int] | None = None) -> str:
    """One swatch per severity (and for no forecast), with the count of cells when given."""
    entries = [*SEVERITY_COLOURS.items(), ("no forecast", NO_FORECAST_COLOUR)]
    return (
        '<div class="legend-row">'
        + "".join(
            f'<span class="legend"><span class="swatch" style="background:{colour}"></span>{html.escape(name)}'
            + (f" ({counts.get(name, 0)})" if counts is not None else "")
            + "</span>"
            for name, colour in entries
        )
        + "</div>"
    )


def heatmap_svg(register: pd.DataFrame) -> str:
    """Servers (rows, most at risk first) by metric (columns), each cell in its series' severity colour."""
    reg = register.assign(_o=register["severity"].map(SEVERITY_ORDER))
    order = reg.groupby("server_id")["_o"].min().sort_values(kind="stable").index[:HEATMAP_MAX_SERVERS]
    cells = reg.set_index(["server_id", "metric"])
    longest = max((len(str(s)) for s in order), default=4)
    label_w = int(min(LABEL_MAX_PX, max(60.0, longest * CHAR_PX))) + 8
    cell_w, cell_h, top = 70, 14, 20
    width = label_w + cell_w * len(METRICS)
    height = top + cell_h * len(order)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="heat">']
    for j, metric in enumerate(METRICS):
        parts.append(f'<text x="{label_w + j * cell_w + cell_w / 2}" y="14" text-anchor="middle">{metric}</text>')
    severity_of = cells["severity"].astype(str).to_dict()
    peak_of = cells["peak_p90"].to_dict()
    size = f'width="{cell_w - 2}" height="{cell_h - 2}"'
    for i, server in enumerate(order):
        # One group per server: its name (whole on hover) and one cell per metric, whose hover names the metric,
        # the severity and the peak P90 forecast.
        name = html.escape(str(server))
        shown, cut = fit_label(str(server), label_w - 8)
        parts.append(
            f'<g transform="translate(0,{top + i * cell_h})"><title>{name}</title>'
            f'<text x="{label_w - 6}" y="11" class="name">{html.escape(shown) if cut else name}</text>'
        )
        for j, metric in enumerate(METRICS):
            key = (server, metric)
            severity = severity_of.get(key)
            if severity is not None:
                tip = f"{metric}: {severity}, peak P90 {format_value(peak_of[key], 'percent')}%"
                cls = f"s-{severity}" if severity in SEVERITY_COLOURS else "s-none"
            else:
                cls, tip = "s-none", f"{metric}: no forecast"
            parts.append(f'<rect x="{label_w + j * cell_w}" {size} class="{cls}"><title>{tip}</title></rect>')
        parts.append("</g>")
    parts.append("</svg>")
    note = (
        f"<p>Showing the {HEATMAP_MAX_SERVERS} servers most at risk of {register['server_id'].nunique()}.</p>"
        if register["server_id"].nunique() > HEATMAP_MAX_SERVERS
        else ""
    )
    counts = {str(k): int(v) for k, v in register["severity"].value_counts().items()}
    return note + severity_legend(counts) + f"<p>Thresholds: {_thresholds(register)}.</p>" + "".join(parts)


def _thresholds(register: pd.DataFrame) -> str:
    """The thresholds the cells were judged against, per metric: "cpu 80%, mem 80%, ..."."""
    by_metric = register.groupby("metric")["threshold"].agg(["min", "max"])
    return ", ".join(
        f"{m} {lo:.0f}%" if lo == hi else f"{m} {lo:.0f}-{hi:.0f}%"
        for m, lo, hi in zip(by_metric.index, by_metric["min"], by_metric["max"], strict=True)
    )


def _scale(values: Sequence[float], lo: float, hi: float, out_lo: float, out_hi: float) -> list[float]:
    span = (hi - lo) or 1.0
    return [out_lo + (v - lo) / span * (out_hi - out_lo) for v in values]


def date_ticks(t0: pd.Timestamp, t1: pd.Timestamp) -> list[tuple[pd.Timestamp, str]]:
    """Ticks for a time axis from ``t0`` to ``t1``: month starts (every second one past eight months), or Mondays
    on a span under two months; each with its label."""
    span = (t1 - t0).days
    if span < 60:
        days = pd.date_range(t0.normalize(), t1, freq="W-MON")
        step = 1 if len(days) <= 8 else 2
        return [(d, d.strftime("%b %d")) for d in days[::step]]
    months = pd.date_range(t0.normalize() + pd.offsets.MonthBegin(0), t1, freq="MS")
    step = 1 if len(months) <= 8 else 2
    picked = list(months[::step])
    return [(d, d.strftime("%b %Y") if i == 0 or d.month == 1 else d.strftime("%b")) for i, d in enumerate(picked)]


def forecast_chart_svg(
    actuals: pd.DataFrame,
    forecast: pd.DataFrame,
    *,
    threshold: float,
    title: str,
    breach: Any = None,
    run_date: Any = None,
) -> str:
    """Recent actual P95, the forecast P50 and its P10-P90 band, and the threshold, for one series: a % axis,
    date ticks, the breach date marked and labelled."""
    w, h, pad_l, pad_r, pad_t, pad_b = 560, 220, 44, 12, 30, 28
    act = actuals.sort_values("dt")
    fc = forecast.sort_values("ds")
    days = pd.concat([pd.to_datetime(act["dt"]), pd.to_datetime(fc["ds"])])
    if days.empty:
        return ""
    t0, t1 = days.min(), days.max()

    def xs(ts: pd.Series) -> list[float]:
        return _scale([(pd.Timestamp(t) - t0).days for t in ts], 0, max((t1 - t0).days, 1), pad_l, w - pad_r)

    def ys(values: pd.Series) -> list[float]:
        return _scale([float(v) for v in values], 0.0, 100.0, h - pad_b, pad_t)

    def path(x: list[float], y: list[float]) -> str:
        return " ".join(f"{a:.0f},{b:.0f}" for a, b in zip(x, y, strict=True))  # whole pixels: a smaller page

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">']
    parts.append(_svg_text(title, w - pad_l, f'x="{pad_l}" y="15" class="chart-title"', BOLD_CHAR_PX))
    for pct in (0, 25, 50, 75, 100):
        y = ys(pd.Series([pct]))[0]
        parts.append(f'<line x1="{pad_l}" x2="{w - pad_r}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end">{pct}%</text>')
    base = h - pad_b
    parts.append(f'<line x1="{pad_l}" x2="{w - pad_r}" y1="{base}" y2="{base}" class="axis"/>')
    for tick, label in date_ticks(t0, t1):
        x = xs(pd.Series([tick]))[0]
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" class="axis"/>')
        parts.append(f'<text x="{x:.1f}" y="{base + 15}" text-anchor="middle" class="tick">{label}</text>')
    if not fc.empty:
        fx = xs(fc["ds"])
        band = path(fx, ys(fc["p90"])) + " " + path(fx[::-1], ys(fc["p10"])[::-1])
        parts.append(f'<polygon points="{band}" class="band"><title>P10-P90</title></polygon>')
        parts.append(f'<polyline points="{path(fx, ys(fc["p50"]))}" class="p50"/>')
    if not act.empty:
        parts.append(f'<polyline points="{path(xs(act["dt"]), ys(act["p95"]))}" class="actual"/>')
    ty = ys(pd.Series([threshold]))[0]
    parts.append(
        f'<line x1="{pad_l}" x2="{w - pad_r}" y1="{ty:.1f}" y2="{ty:.1f}" class="threshold">'
        f"<title>threshold {threshold:.0f}%</title></line>"
    )
    if run_date is not None and t0 <= pd.Timestamp(run_date) <= t1:
        rx = xs(pd.Series([pd.Timestamp(run_date)]))[0]
        parts.append(f'<line x1="{rx:.1f}" x2="{rx:.1f}" y1="{pad_t}" y2="{base}" class="today"/>')
    if breach is not None and not pd.isna(breach):
        when = pd.Timestamp(breach)
        bx = min(max(xs(pd.Series([when]))[0], pad_l), w - pad_r)
        label = f"breach {when:%Y-%m-%d}"
        anchor = "end" if bx > w - pad_r - len(label) * CHAR_PX / 2 else ("start" if bx < pad_l + 40 else "middle")
        parts.append(
            f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{pad_t - 4}" y2="{base}" class="breach">'
            f"<title>{label}</title></line>"
            f'<text x="{bx:.1f}" y="{pad_t - 6}" text-anchor="{anchor}" class="breach-label">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def profile_scatter_svg(features: pd.DataFrame, plan: pd.DataFrame) -> str:
    """Each server at (mean cpu, mean mem), coloured by its utilisation profile, on 0-100% axes with ticks."""
    w, h, pad_l, pad_b, pad_t, pad_r = 540, 380, 52, 44, 12, 24
    profiles = plan.set_index("server_id")["profile"] if not plan.empty else pd.Series(dtype=str)
    names = sorted(str(n) for n in profiles.unique())
    palette_index = {n: i % len(PROFILE_PALETTE) for i, n in enumerate(names)}
    colour = {n: PROFILE_PALETTE[i] for n, i in palette_index.items()}

    def sx(v: float) -> float:
        return _scale([v], 0, 100, pad_l, w - pad_r)[0]

    def sy(v: float) -> float:
        return _scale([v], 0, 100, h - pad_b, pad_t)[0]

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">']
    for pct in (0, 25, 50, 75, 100):
        x, y = sx(pct), sy(pct)
        parts.append(f'<line x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{h - pad_b}" class="grid"/>')
        parts.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{w - pad_r}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{h - pad_b + 15}" text-anchor="middle" class="tick">{pct}%</text>')
        parts.append(f'<text x="{pad_l - 5}" y="{y + 4:.1f}" text-anchor="end" class="tick">{pct}%</text>')
    parts.append(f'<line x1="{pad_l}" y1="{h - pad_b}" x2="{w - pad_r}" y2="{h - pad_b}" class="axis"/>')
    parts.append(f'<line x1="{pad_l}" y1="{h - pad_b}" x2="{pad_l}" y2="{pad_t}" class="axis"/>')
    parts.append(f'<text x="{(pad_l + w - pad_r) / 2}" y="{h - 8}" text-anchor="middle">mean cpu (%)</text>')
    mid = (pad_t + h - pad_b) / 2
    parts.append(f'<text x="14" y="{mid}" transform="rotate(-90 14 {mid})" text-anchor="middle">mean mem (%)</text>')
    for server, row in features.iterrows():
        cpu, mem = float(row["cpu_mean"]), float(row["mem_mean"])
        if pd.isna(cpu) or pd.isna(mem):
            continue
        x, y = sx(min(max(cpu, 0.0), 100.0)), sy(min(max(mem, 0.0), 100.0))
        name = str(profiles.get(server, "unknown"))
        parts.append(
            f'<circle cx="{x:.0f}" cy="{y:.0f}" r="4" class="p{palette_index.get(name, len(PROFILE_PALETTE))}">'
            f"<title>{html.escape(str(server))}: {html.escape(name)}, cpu {cpu:.0f}%, mem {mem:.0f}%</title></circle>"
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="legend"><span class="swatch" style="background:{colour[n]}"></span>{html.escape(n)} '
        f"({int((profiles == n).sum())})</span>"
        for n in names
    )
    return "".join(parts) + f"<div>{legend}</div>"


CSS: Final[str] = (
    """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#111827;background:#f9fafb}
header{background:#111827;color:#fff;padding:16px 24px}header h1{margin:0;font-size:22px}
nav a{color:#93c5fd;margin-right:14px;font-size:14px}main{padding:16px 24px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;margin-bottom:16px}
h2{font-size:18px;margin:4px 0 12px}h3{font-size:15px;margin:12px 0 6px}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:8px 14px;min-width:120px;background:#fff}
.card b{display:block;font-size:22px}table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left;white-space:nowrap}
td:last-child{white-space:normal}th{cursor:pointer;background:#f3f4f6}
tr.critical td:first-child{border-left:4px solid #b91c1c}tr.high td:first-child{border-left:4px solid #ea580c}
tr.medium td:first-child{border-left:4px solid #ca8a04}svg{font-size:11px;font-family:inherit}
tr.short-history td{font-style:italic;color:#4b5563}.short-note{color:#4b5563}
.charts{display:flex;flex-wrap:wrap;gap:12px}.band{fill:#93c5fd;opacity:.5}.p50{fill:none;stroke:#1d4ed8;stroke-width:2}
.actual{fill:none;stroke:#111827;stroke-width:1.2}.threshold{stroke:#b91c1c;stroke-dasharray:5 3}
.breach{stroke:#ea580c;stroke-width:1.5;stroke-dasharray:3 2}.breach-label{fill:#c2410c;font-weight:600}
.today{stroke:#6b7280;stroke-dasharray:1 3}.grid{stroke:#e5e7eb}.axis{stroke:#6b7280}.tick{fill:#374151}
.chart-title{font-weight:600}.legend{margin-right:14px;font-size:13px}.legend-row{margin:6px 0}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}
"""
    + "".join(f".s-{name}{{fill:{colour}}}" for name, colour in SEVERITY_COLOURS.items())
    + (".s-none{fill:" + NO_FORECAST_COLOUR + "}.heat text.name{text-anchor:end}")
    + "".join(f".p{i}{{fill:{c}}}" for i, c in enumerate((*PROFILE_PALETTE, "#94a3b8")))
)

JS: Final[str] = """
document.querySelectorAll('table.sortable th').forEach(function (th, index) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.dir !== 'asc';
    th.dataset.dir = asc ? 'asc' : 'desc';
    var column = th.cellIndex;
    function text(row) { var cell = row.cells[column]; return cell ? cell.textContent : ''; }
    rows.sort(function (a, b) {
      var x = text(a), y = text(b);
      var nx = parseFloat(x.replace(/[,%$]/g, '')), ny = parseFloat(y.replace(/[,%$]/g, ''));
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def summary_cards(data: ReportData) -> list[tuple[str, int | float, str]]:
    """The report's headline figures, (label, value, kind: count or money): series per severity, breaching now,
    next to break inside the horizon, series with a short history, servers, and the consolidation plan's result.
    The Excel export's Summary sheet shows the same."""
    reg, plan = data.register, data.plan
    counts = reg["severity"].value_counts()
    savings = float(plan["monthly_savings"].sum()) if not plan.empty else 0.0
    freed = int((plan["action"] == "consolidate").sum()) if not plan.empty else 0
    downsized = int((plan["action"] == "downsize").sum()) if not plan.empty else 0
    upcoming = len(next_to_break(reg, None, top=len(reg)))
    cards: list[tuple[str, int | float, str]] = [
        (f"{s} series", int(counts.get(s, 0)), "count") for s in SEVERITY_ORDER
    ]
    cards += [
        ("breaching now", int(is_breaching_now(reg).sum()), "count"),
        ("next to break", upcoming, "count"),
        ("short history", int(reg["short_history"].sum()) if "short_history" in reg.columns else 0, "count"),
        ("servers", int(reg["server_id"].nunique()), "count"),
        ("servers freed", freed, "count"),
        ("downsized", downsized, "count"),
        ("monthly savings", round(savings, 2), "money"),
    ]
    return cards


def _in_days(days: Any) -> str:
    n = int(days)
    return "today" if n <= 0 else ("tomorrow" if n == 1 else f"in {n} days")


def _chart_title(row: Any, kind: str) -> str:
    return f"{row.server_id} {row.metric}: {kind} ({row.severity}, {row.model})"


def _list_headers(headers: dict[str, str]) -> dict[str, str]:
    """A risk list's columns in the report: the terminal's, the short-history marker headed ``history`` (it gives
    the days of history, which get no column of their own)."""
    return {c: ("history" if c == "short" else h) for c, h in headers.items() if c != "history_days"}


def _marked(listed: pd.DataFrame) -> pd.DataFrame:
    """A risk list with its rows' classes (``_row``: the severity, and ``short-history`` on a short series) and the
    short-history marker as the report shows it: ``short`` with the days of history when known."""
    out = listed.copy()
    short = out["short"].eq("yes") if "short" in out.columns else pd.Series(False, index=out.index)
    days = out["history_days"] if "history_days" in out.columns else pd.Series(pd.NA, index=out.index)
    out["short"] = [
        ("short" if pd.isna(d) else f"short: {int(d)} days") if s else "" for s, d in zip(short, days, strict=True)
    ]
    out["_row"] = [f"{sev} short-history" if s else str(sev) for sev, s in zip(out["severity"], short, strict=True)]
    return out


def short_history_note(register: pd.DataFrame) -> str:
    """One line with the number of short-history series (empty when there are none)."""
    n = int(register["short_history"].fillna(False).astype(bool).sum()) if "short_history" in register.columns else 0
    if not n:
        return ""
    return (
        f'<p class="short-note">{n} series had too little history to backtest (marked <i>short</i>): their '
        "forecasts were fitted on what there was and are less certain, so their severity is at most medium "
        "unless they are breaching now.</p>"
    )


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document."""
    reg = data.register
    plan = data.plan
    savings = float(plan["monthly_savings"].sum()) if not plan.empty else 0.0
    freed = int((plan["action"] == "consolidate").sum()) if not plan.empty else 0
    downsized = int((plan["action"] == "downsize").sum()) if not plan.empty else 0
    cards = "".join(
        f'<div class="card" style="border-color:{SEVERITY_COLOURS.get(label.split()[0], "#e5e7eb")}">'
        f"{html.escape(label)}<b>{f'${value:,.0f}' if kind == 'money' else f'{value:,}'}</b></div>"
        for label, value, kind in summary_cards(data)
    )
    now = breaching_now(reg, data.servers, top=data.top)
    upcoming = next_to_break(reg, data.servers, top=data.top)
    described: dict[tuple[str, str], tuple[Any, str, Any]] = {
        (str(r.server_id), str(r.metric)): (r, "breaching now", None)
        for r in breaching_now(reg, data.servers, top=data.charts).itertuples(index=False)
    }
    for r in next_to_break(reg, data.servers, top=data.charts).itertuples(index=False):
        described[(str(r.server_id), str(r.metric))] = (
            r,
            f"breaks {r.breaks_on:%Y-%m-%d}, {_in_days(r.days)}",
            r.breaks_on,
        )
    thresholds = {
        (str(a), str(b)): float(t) for a, b, t in zip(reg["server_id"], reg["metric"], reg["threshold"], strict=True)
    }
    charts = []
    for server, metric in chart_series(reg, data.servers, charts=data.charts).itertuples(index=False, name=None):
        key = (str(server), str(metric))
        row, kind, breach = described[key]
        act = data.actuals[(data.actuals["server_id"] == server) & (data.actuals["metric"] == metric)]
        fc = data.forecasts[(data.forecasts["server_id"] == server) & (data.forecasts["metric"] == metric)]
        title = _chart_title(row, kind)
        charts.append(
            forecast_chart_svg(
                act, fc, threshold=thresholds.get(key, 80.0), title=title, breach=breach, run_date=data.run_date
            )
        )
    chart_html = (
        '<div class="charts">' + "".join(charts) + "</div>"
        "<p>The series next to break and those breaching now, alternately. Black: observed daily P95; blue: "
        "forecast P50 with the P10-P90 band; red dashed: threshold; grey dotted: the run date; orange: the breach "
        "date (the P50 or the likely breach date, whichever comes first).</p>"
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
    top_html = (
        short_history_note(reg)
        + f"<h3>Breaching now ({int(is_breaching_now(reg).sum())} series)</h3>"
        + _table(_marked(now), _list_headers(NOW_HEADERS), table_id="breaching-now-table", row_class="_row")
        + "<h3>Next to break (not breaching yet, soonest first)</h3>"
        + _table(_marked(upcoming), _list_headers(NEXT_HEADERS), table_id="next-to-break-table", row_class="_row")
    )
    bodies = {
        "heatmap": "<p>Each server's metrics in the colour of their severity, most at risk first; hover a cell "
        "for its peak P90 forecast.</p>" + heatmap_svg(reg),
        "top-risks": top_html,
        "forecasts": chart_html,
        "profiles": profile_scatter_svg(data.features, plan),
        "consolidation": f"<p>{freed} server{'' if freed == 1 else 's'} freed, {downsized} downsized: "
        f"<b>${savings:,.2f}</b> per month.</p>" + _table(moves, plan_headers, table_id="consolidation-table"),
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
    summary = [("run date", stamp, "text"), *summary_cards(data)]
    workbook = workbook_bytes({"risk_register": register, "consolidation": plan}, summary)
    payloads = {
        "html": (f"capacity-report-{stamp}.html", render_html(data).encode("utf-8")),
        "risk_csv": (f"risk-register-{stamp}.csv", register.to_csv(index=False).encode("utf-8")),
        "consolidation_csv": (f"consolidation-{stamp}.csv", plan.to_csv(index=False).encode("utf-8")),
        "xlsx": (f"capacity-report-{stamp}.xlsx", workbook),
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
