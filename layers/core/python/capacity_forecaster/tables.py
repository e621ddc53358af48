"""One formatter for every console table: ``risk``, ``run`` and ``query --format table`` print through it.

Each value is shown as what it means, decided by the column's name and type: dates as ``YYYY-MM-DD`` (a time
only when one is there), days and counts as whole numbers, utilisation percentages with one decimal,
probabilities as whole percents, money with two decimals, NULL as an empty cell. Columns are kept in priority
order (the order given, key columns first) while they fit the width; the rest are dropped and named in a footer
line, so that no header and no server id is ever cut. Only free text (a reason, a list of dates) is shortened,
with an ellipsis.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

import numpy as np
import pandas as pd

DEFAULT_WIDTH: Final = 100
GAP: Final = "  "
"""Between two columns."""
TEXT_MAX: Final = 40
"""Free-text cells longer than this are shortened with an ellipsis; key columns never are."""
KEY_COLUMNS: Final = frozenset({"server_id", "metric", "target_server_id"})
"""Kept whatever the width, never shortened."""

_PROBABILITY = re.compile(r"(probability|proba|chance)")
_DAYS = re.compile(r"(^days_|_days$|^days$)")
_COUNT = re.compile(r"(^n_|_count$|^count|^rows_|_rows$|^servers_|^series$|^cores$)")
_MONEY = re.compile(r"(cost|savings|price|usd)")
_PERCENT = re.compile(r"(^|_)(p\d{2}|threshold|value|mean|max|min|pct|percent|utilisation|utilization)($|_)")


@dataclass(frozen=True)
class Column:
    """One column as it is printed: its header, its cells and whether it lines up on the right."""

    name: str
    header: str
    cells: list[str]
    numeric: bool

    @property
    def width(self) -> int:
        return max([len(self.header), *(len(c) for c in self.cells)])


def is_null(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value)) if not isinstance(value, str | bytes | list | tuple | dict) else False
    except (TypeError, ValueError):
        return False


def value_kind(name: str, dtype: Any) -> str:
    """How a column's values read: datetime (:func:`format_column` tells date from datetime), bool, integer,
    probability, money, percent, number or text."""
    lowered = name.lower()
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    numeric = pd.api.types.is_numeric_dtype(dtype)
    if numeric and _PROBABILITY.search(lowered):
        return "probability"
    if numeric and (_DAYS.search(lowered) or _COUNT.search(lowered)):
        return "integer"
    if numeric and pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if numeric and _MONEY.search(lowered):
        return "money"
    if numeric and _PERCENT.search(lowered):
        return "percent"
    if numeric:
        return "number"
    return "text"


def format_value(value: Any, kind: str = "text") -> str:
    """One cell's text for a value of ``kind`` (see :func:`value_kind`); NULL is empty."""
    if is_null(value):
        return ""
    if isinstance(value, datetime | pd.Timestamp):
        ts = pd.Timestamp(value)
        with_time = kind == "datetime" or (kind != "date" and ts != ts.normalize())
        return ts.strftime("%Y-%m-%d %H:%M") if with_time else ts.strftime("%Y-%m-%d")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer | float | np.floating) and kind != "text":
        number = float(value)
        if not math.isfinite(number):
            return str(number)
        if kind == "probability":
            return f"{number * 100:.0f}%"
        if kind == "integer":
            return f"{round(number):d}"
        if kind == "money":
            return f"{number:,.2f}"
        if kind == "percent":
            return f"{number:.1f}"
        if isinstance(value, int | np.integer):
            return str(int(value))
        return _number(number)
    if isinstance(value, float | np.floating):
        return _number(float(value))
    return str(value)


def _number(number: float) -> str:
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    magnitude = abs(number)
    if magnitude >= 100:
        return f"{number:.1f}"
    if magnitude >= 1:
        return f"{number:.2f}"
    return f"{number:.3f}"


def format_column(series: pd.Series, name: str | None = None) -> list[str]:
    """Every cell of a column, as :func:`format_value` reads the column's name and type."""
    column = str(name if name is not None else series.name)
    if series.dtype == object:  # DuckDB's DECIMAL arrives as Python Decimals
        present = [v for v in series if not is_null(v)]
        if present and all(isinstance(v, Decimal) for v in present):
            series = series.astype("Float64")
    kind = value_kind(column, series.dtype)
    if kind == "datetime":  # a time of day only when some value has one
        values = series.dropna()
        kind = "date" if (values == values.dt.normalize()).all() else "datetime"
    return [format_value(v, kind) for v in series.tolist()]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def layout(
    frame: pd.DataFrame,
    *,
    width: int = DEFAULT_WIDTH,
    headers: Mapping[str, str] | None = None,
    priority: Sequence[str] | None = None,
) -> tuple[list[Column], list[str]]:
    """The columns that fit ``width`` (in the frame's order) and the headers of those left out.

    ``priority``: the columns in the order they are kept (default: the key columns, then the frame's order)."""
    headers = headers or {}
    columns: dict[str, Column] = {}
    for name in frame.columns:
        cells = format_column(frame[name], str(name))
        kind = value_kind(str(name), frame[name].dtype)
        if str(name) not in KEY_COLUMNS and kind == "text":
            cells = [_shorten(c, TEXT_MAX) for c in cells]
        numeric = kind not in ("text", "datetime", "bool")
        columns[str(name)] = Column(str(name), headers.get(str(name), str(name)), cells, numeric)
    order = list(priority) if priority is not None else list(columns)
    order = [c for c in order if c in columns] + [c for c in columns if c not in order]
    order.sort(key=lambda c: c not in KEY_COLUMNS)  # stable: keys first, else as given
    kept: set[str] = set()
    used = 0
    for name in order:
        need = columns[name].width + (len(GAP) if kept else 0)
        if used + need <= width or name in KEY_COLUMNS:
            kept.add(name)
            used += need
    shown = [columns[n] for n in columns if n in kept]
    dropped = [columns[n].header for n in order if n not in kept]
    return shown, dropped


def format_table(
    frame: pd.DataFrame,
    *,
    width: int = DEFAULT_WIDTH,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    priority: Sequence[str] | None = None,
    empty: str = "no rows",
) -> list[str]:
    """The table as lines of at most ``width`` characters: a title, the headers, a rule, one line per row, and a
    footer naming the columns left out."""
    lines = [title] if title else []
    if frame.empty and len(frame.columns) == 0:
        return [*lines, f"  ({empty})"]
    shown, dropped = layout(frame, width=width, headers=headers, priority=priority)

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(col.width) if col.numeric else cell.ljust(col.width)
            for col, cell in zip(shown, cells, strict=True)
        ]
        return GAP.join(parts).rstrip()

    lines.append(line([c.header for c in shown]))
    lines.append(GAP.join("─" * c.width for c in shown))
    lines.extend(line([c.cells[i] for c in shown]) for i in range(len(frame)))
    if frame.empty:
        lines.append(f"  ({empty})")
    if dropped:
        note = f"not shown at {width} columns (--format csv has them all): {', '.join(dropped)}"
        lines.extend(textwrap.wrap(note, width=width, initial_indent="  ", subsequent_indent="    "))
    return lines
