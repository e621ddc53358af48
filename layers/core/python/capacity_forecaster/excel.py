"""The report's Excel workbook: a Summary sheet with the report's headline figures, then one sheet per table, each
with a frozen bold header, an autofilter, columns as wide as their contents and number formats that say what the
numbers are (the same reading of a column's name and type as the console tables: :mod:`capacity_forecaster.tables`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, Final

import pandas as pd

from capacity_forecaster.tables import format_column, value_kind

NUMBER_FORMATS: Final[dict[str, str]] = {
    "probability": "0%",
    "percent": "0.0",
    "money": "#,##0.00",
    "integer": "0",
    "number": "0.00",
    "date": "yyyy-mm-dd",
    "datetime": "yyyy-mm-dd hh:mm",
}
"""Excel's number format for each kind of value (see :func:`capacity_forecaster.tables.value_kind`)."""
SUMMARY_FORMATS: Final[dict[str, str]] = {"count": "#,##0", "money": '"$"#,##0.00', "text": "@"}
MAX_WIDTH: Final = 60
"""Widest column, in characters; longer text wraps in the cell's own width."""


def _kind(frame: pd.DataFrame, column: str) -> str:
    kind = value_kind(column, frame[column].dtype)
    if kind == "text" and frame[column].dtype == object:  # Python dates (the exports write dates, not times)
        present = frame[column].dropna()
        if len(present) and all(hasattr(v, "isoformat") and not isinstance(v, str) for v in present):
            return "date"
    if kind == "datetime":
        values = pd.to_datetime(frame[column]).dropna()
        return "date" if (values == values.dt.normalize()).all() else "datetime"
    return kind


def _format_sheet(sheet: Any, frame: pd.DataFrame) -> None:
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    sheet.freeze_panes = "A2"
    if len(frame.columns):
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(frame.columns))}{max(len(frame), 1) + 1}"
    bold = Font(bold=True)
    for index, column in enumerate(frame.columns, start=1):
        name = str(column)
        letter = get_column_letter(index)
        sheet.cell(row=1, column=index).font = bold
        kind = _kind(frame, name)
        texts = format_column(frame[column], name)
        width = max([len(name), *(len(t) for t in texts)]) + 2
        sheet.column_dimensions[letter].width = min(width, MAX_WIDTH)
        number_format = NUMBER_FORMATS.get(kind)
        if number_format is None:
            continue
        for (cell,) in sheet.iter_rows(min_row=2, max_row=len(frame) + 1, min_col=index, max_col=index):
            cell.number_format = number_format


def _summary_sheet(book: Any, cards: Sequence[tuple[str, Any, str]]) -> None:
    from openpyxl.styles import Font

    sheet = book.create_sheet("Summary", 0)
    sheet.append(["figure", "value"])
    for label, value, kind in cards:
        sheet.append([label, value])
        sheet.cell(row=sheet.max_row, column=2).number_format = SUMMARY_FORMATS.get(kind, "General")
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    sheet.column_dimensions["A"].width = max(len(str(label)) for label, _, _ in cards) + 2 if cards else 12
    sheet.column_dimensions["B"].width = 16


def workbook_bytes(sheets: Mapping[str, pd.DataFrame], summary: Sequence[tuple[str, Any, str]]) -> bytes:
    """The workbook: ``summary`` rows (label, value, kind: count, money or text) on a first sheet named Summary,
    then each frame on a sheet of its name."""
    out = io.BytesIO()
    with pd.ExcelWriter(out, engine="openpyxl") as writer:
        for name, frame in sheets.items():
            frame.to_excel(writer, sheet_name=name, index=False)
            _format_sheet(writer.sheets[name], frame)
        _summary_sheet(writer.book, summary)
        writer.book.active = 0
    return out.getvalue()
