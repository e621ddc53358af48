"""The run summary: what is breaching now and what breaks next, as tables on the terminal.

The register is split in two: *breaching now* (at the threshold already, or the P50 forecast crosses it on the
run date) and *next to break* (not breaching yet, but the P50 forecast or the likely breach date falls inside the
horizon), soonest first. The HTML report shows the same two lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import pandas as pd

from capacity_forecaster.risk import SEVERITY_ORDER
from capacity_forecaster.tables import DEFAULT_WIDTH, format_table

TOP_HEADERS: Final = {
    "server_id": "server",
    "application": "application",
    "metric": "metric",
    "severity": "severity",
    "breach_probability": "chance",
    "last_p95": "last P95 %",
    "breach_date_p50": "breach P50",
    "days_to_breach_p50": "days",
    "breach_date_p90": "breach P90",
    "peak_p50": "peak P50 %",
    "model": "model",
    "history_days": "history days",
}
"""The top risks' columns, in order, with the headings the terminal table and the HTML report give them."""
TOP_COLUMNS: Final = list(TOP_HEADERS)
NOW_HEADERS: Final = {
    "server_id": "server",
    "metric": "metric",
    "severity": "severity",
    "last_p95": "last P95 %",
    "threshold": "threshold %",
    "peak_p90": "peak P90 %",
    "short": "short",
    "application": "application",
    "model": "model",
    "history_days": "history days",
}
"""Breaching now: how far over the threshold, and how high it goes; ``short`` marks a series too short to backtest
(``yes``), ``history days`` (last: the first to drop) how much history its forecast stood on."""
NEXT_HEADERS: Final = {
    "server_id": "server",
    "metric": "metric",
    "severity": "severity",
    "breaks_on": "breaks on",
    "days": "in days",
    "breach_probability": "chance",
    "short": "short",
    "last_p95": "last P95 %",
    "breach_date_p90": "P90 crosses",
    "application": "application",
    "peak_p50": "peak P50 %",
    "model": "model",
    "history_days": "history days",
}
"""Next to break: when (the P50 breach date or the likely breach date, whichever comes first), in how many days,
and how likely; ``short`` and ``history days`` as in :data:`NOW_HEADERS`."""
SEVERITY_STYLE: Final = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "green"}


def short_marks(register: pd.DataFrame) -> pd.Series:
    """``yes`` for a series whose history was too short to backtest (``short_history``), empty otherwise (and for a
    register without the column)."""
    if "short_history" not in register.columns:
        return pd.Series("", index=register.index, dtype=object)
    return register["short_history"].fillna(False).astype(bool).map({True: "yes", False: ""}).astype(object)


def _with_application(register: pd.DataFrame, servers: pd.DataFrame | None) -> pd.DataFrame:
    reg = register.assign(short=short_marks(register))
    if servers is not None and not servers.empty and "application" in servers.columns:
        reg = reg.merge(servers[["server_id", "application"]], on="server_id", how="left")
    else:
        reg["application"] = None
    return reg


def _columns(frame: pd.DataFrame, headers: Mapping[str, str]) -> list[str]:
    """The ``headers`` the frame has; ``history_days`` only when some row knows it."""
    unknown = "history_days" in frame.columns and bool(frame["history_days"].isna().all())
    return [c for c in headers if c in frame.columns and not (c == "history_days" and unknown)]


def top_risks(register: pd.DataFrame, servers: pd.DataFrame | None, *, top: int) -> pd.DataFrame:
    """The ``top`` series most at risk: by severity, then soonest P50 breach, then soonest P90 breach, then the
    most likely breach (the chance from 0 to 1)."""
    reg = _with_application(register[register["severity"] != "low"], servers)
    reg["_order"] = reg["severity"].map(SEVERITY_ORDER)
    reg["_chance"] = -reg["breach_probability"]
    reg = reg.sort_values(
        ["_order", "days_to_breach_p50", "days_to_breach_p90", "_chance", "server_id"], na_position="last"
    )
    return reg[TOP_COLUMNS].head(top).reset_index(drop=True)


def is_breaching_now(register: pd.DataFrame) -> pd.Series:
    """At the threshold already, or the P50 forecast crosses it on the run date."""
    days = pd.to_numeric(register["days_to_breach_p50"], errors="coerce")
    return register["already_breaching"].fillna(False).astype(bool) | (days <= 0).fillna(False).astype(bool)


def breaching_now(register: pd.DataFrame, servers: pd.DataFrame | None, *, top: int) -> pd.DataFrame:
    """The ``top`` series breaching now, by severity, then the furthest over their threshold."""
    reg = _with_application(register[is_breaching_now(register)], servers)
    reg["_order"] = reg["severity"].map(SEVERITY_ORDER)
    reg["_over"] = -(reg["last_p95"] - reg["threshold"])
    reg = reg.sort_values(["_order", "_over", "server_id", "metric"], na_position="last")
    return reg[_columns(reg, NOW_HEADERS)].head(top).reset_index(drop=True)


def next_to_break(register: pd.DataFrame, servers: pd.DataFrame | None, *, top: int) -> pd.DataFrame:
    """The ``top`` series not breaching yet whose P50 forecast or likely breach date falls in the horizon, soonest
    first (then the most likely); ``breaks_on`` is the earlier of the two dates, ``days`` its distance from the
    run date."""
    reg = _with_application(register[~is_breaching_now(register)], servers)
    p50 = pd.to_datetime(reg["breach_date_p50"])
    likely = pd.to_datetime(reg["likely_breach_date"])
    reg["breaks_on"] = pd.concat([p50, likely], axis=1).min(axis=1)
    reg = reg[reg["breaks_on"].notna()]
    if "run_date" in reg.columns:
        reg["days"] = (reg["breaks_on"] - pd.to_datetime(reg["run_date"])).dt.days
    else:  # no run date: the P50 date's distance
        reg["days"] = pd.to_numeric(reg["days_to_breach_p50"], errors="coerce")
    reg["_chance"] = -reg["breach_probability"]
    reg = reg.sort_values(["breaks_on", "_chance", "server_id", "metric"], na_position="last")
    return reg[_columns(reg, NEXT_HEADERS)].head(top).reset_index(drop=True)


def chart_series(register: pd.DataFrame, servers: pd.DataFrame | None, *, charts: int) -> pd.DataFrame:
    """The series the report charts: the soonest to break and the worst breaching now, alternately (next to break
    first), ``charts`` in all; when one list runs short the other fills in. Columns server_id and metric."""
    upcoming = next_to_break(register, servers, top=charts)[["server_id", "metric"]]
    now = breaching_now(register, servers, top=charts)[["server_id", "metric"]]
    picked: list[tuple[str, str]] = []
    lists = [list(upcoming.itertuples(index=False, name=None)), list(now.itertuples(index=False, name=None))]
    while len(picked) < charts and any(lists):
        for source in lists:
            if source and len(picked) < charts:
                picked.append(source.pop(0))
    return pd.DataFrame(picked, columns=["server_id", "metric"])


def severity_counts(register: pd.DataFrame) -> dict[str, int]:
    counts = register["severity"].value_counts()
    return {tier: int(counts.get(tier, 0)) for tier in SEVERITY_ORDER}


def print_table(
    console: Any,
    frame: pd.DataFrame,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    width: int = DEFAULT_WIDTH,
    empty: str = "no rows",
) -> None:
    """Print a frame through :func:`capacity_forecaster.tables.format_table`, each row in its severity's colour
    when it has one."""
    from rich.text import Text

    lines = format_table(frame, width=width, title=title, headers=headers, priority=list(headers or []), empty=empty)
    first_row = (1 if title else 0) + 2
    styles = [SEVERITY_STYLE.get(str(s), "") for s in frame["severity"]] if "severity" in frame.columns else []
    for i, line in enumerate(lines):
        row = i - first_row
        style = styles[row] if 0 <= row < len(styles) else ("bold" if i < first_row - 1 else "")
        console.print(Text(line, style=style), soft_wrap=True, overflow="ignore", crop=False)


def print_risks(console: Any, register: pd.DataFrame, servers: pd.DataFrame | None, *, top: int, width: int) -> None:
    """The two lists: breaching now, then next to break."""
    now_all = int(is_breaching_now(register).sum())
    now = breaching_now(register, servers, top=top)
    nxt_all = next_to_break(register, servers, top=len(register))
    nxt = nxt_all.head(top)

    def shown(listed: int, total: int) -> str:
        return f" (top {listed} of {total})" if total > listed else ""

    print_table(
        console,
        now,
        title=f"Breaching now{shown(len(now), now_all)}",
        headers=NOW_HEADERS,
        width=width,
        empty="nothing breaching now",
    )
    console.print("")
    print_table(
        console,
        nxt,
        title=f"Next to break: not breaching yet, soonest first{shown(len(nxt), len(nxt_all))}",
        headers=NEXT_HEADERS,
        width=width,
        empty="no breach forecast inside the horizon",
    )


def render_summary(
    console: Any,
    *,
    register: pd.DataFrame,
    servers: pd.DataFrame | None,
    top: int,
    stage_lines: Sequence[str],
    outputs: Mapping[str, str],
    width: int = DEFAULT_WIDTH,
) -> None:
    """Print the two risk lists, the severity counts, what each stage did and where the outputs are."""
    print_risks(console, register, servers, top=top, width=width)
    counts = severity_counts(register)
    console.print("Series by severity: " + ", ".join(f"[{SEVERITY_STYLE[k]}]{k} {v}[/]" for k, v in counts.items()))
    for line in stage_lines:
        console.print(f"  {line}", soft_wrap=True, markup=False)
    console.print("Outputs:")
    for name, where in outputs.items():
        console.print(f"  {name:<15} {where}", soft_wrap=True, markup=False)
