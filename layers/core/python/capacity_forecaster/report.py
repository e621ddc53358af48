"""The run summary: the servers most at risk, with breach dates, as a table on the terminal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from capacity_forecaster.risk import SEVERITY_ORDER

TOP_HEADERS = {
    "server_id": "server",
    "application": "application",
    "metric": "metric",
    "severity": "severity",
    "breach_probability": "chance %",
    "last_p95": "last P95 %",
    "breach_date_p50": "breach P50",
    "days_to_breach_p50": "days",
    "breach_date_p90": "breach P90",
    "peak_p50": "peak P50 %",
    "model": "model",
}
"""The top risks' columns, in order, with the headings the terminal table and the HTML report give them."""
TOP_COLUMNS = list(TOP_HEADERS)
SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "green"}


def top_risks(register: pd.DataFrame, servers: pd.DataFrame | None, *, top: int) -> pd.DataFrame:
    """The ``top`` series most at risk: by severity, then soonest P50 breach, then soonest P90 breach, then the
    most likely breach; the breach chance in percent."""
    reg = register[register["severity"] != "low"].copy()
    if servers is not None and not servers.empty:
        reg = reg.merge(servers[["server_id", "application"]], on="server_id", how="left")
    else:
        reg["application"] = ""
    reg["_order"] = reg["severity"].map(SEVERITY_ORDER)
    reg["_chance"] = -reg["breach_probability"]
    reg = reg.sort_values(
        ["_order", "days_to_breach_p50", "days_to_breach_p90", "_chance", "server_id"], na_position="last"
    )
    reg["breach_probability"] = (reg["breach_probability"] * 100.0).round(0)
    return reg[TOP_COLUMNS].head(top).reset_index(drop=True)


def severity_counts(register: pd.DataFrame) -> dict[str, int]:
    counts = register["severity"].value_counts()
    return {tier: int(counts.get(tier, 0)) for tier in SEVERITY_ORDER}


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _days(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else str(int(value))


def render_summary(
    console: Any,
    *,
    top: pd.DataFrame,
    counts: Mapping[str, int],
    stage_lines: Sequence[str],
    outputs: Mapping[str, str],
) -> None:
    """Print the top risks table, the severity counts, what each stage did and where the outputs are."""
    from rich.table import Table

    table = Table(title="Top servers at risk", header_style="bold")
    headers = TOP_HEADERS
    for column in TOP_COLUMNS:
        numeric = column in {"breach_probability", "last_p95", "peak_p50"}
        table.add_column(headers[column], justify="right" if numeric else "left")
    for row in top.itertuples(index=False):
        values = [(_days if c == "days_to_breach_p50" else _cell)(getattr(row, c)) for c in TOP_COLUMNS]
        table.add_row(*values, style=SEVERITY_STYLE.get(str(row.severity), ""))
    console.print(table)
    console.print("Series by severity: " + ", ".join(f"[{SEVERITY_STYLE[k]}]{k} {v}[/]" for k, v in counts.items()))
    for line in stage_lines:
        console.print(f"  {line}")
    console.print("Outputs:")
    for name, where in outputs.items():
        console.print(f"  {name:<15} {where}")
