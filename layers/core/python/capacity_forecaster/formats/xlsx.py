"""Excel workbooks (``.xlsx``), read with openpyxl: the first worksheet that holds data, its first non-empty row as
the header. Cells become text as the CSV reader would give them: dates and times as ISO 8601 (no offset: UTC),
numbers as numbers (never as the sheet formats them, so a decimal comma in the display does not matter), empty
cells as "". Then the table is read like a CSV of the same shape (long, wide, one column per series...)."""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime, time
from typing import Any

import pandas as pd

from capacity_forecaster.errors import InputError

XLSX_ERRORS: tuple[type[BaseException], ...] = (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError, EOFError)


def read_workbook(name: str, data: bytes, max_bytes: int | None = None) -> pd.DataFrame:
    """The first worksheet with data as a frame of text cells; :class:`InputError` when it is not a workbook, or
    when its parts add up to more than ``max_bytes`` once decompressed (checked before any is decompressed)."""
    from openpyxl import load_workbook

    from capacity_forecaster.raw_formats import too_large

    try:
        expanded = sum(item.file_size for item in zipfile.ZipFile(io.BytesIO(data)).infolist())
    except XLSX_ERRORS as exc:
        raise InputError(f"{name}: not a readable Excel workbook (.xlsx): {type(exc).__name__}") from None
    if max_bytes is not None and expanded > max_bytes:
        raise too_large(name, None, max_bytes, what="the workbook once decompressed")
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except XLSX_ERRORS as exc:
        raise InputError(
            f"{name}: not a readable Excel workbook (.xlsx): {type(exc).__name__}; save it as .xlsx or CSV"
        ) from None
    try:
        for sheet in book.worksheets:
            rows = [[_cell(v) for v in row] for row in sheet.iter_rows(values_only=True)]
            rows = [row for row in rows if any(cell != "" for cell in row)]
            if rows:
                return _table(name, rows)
    except XLSX_ERRORS as exc:
        raise InputError(f"{name}: the workbook cannot be read: {type(exc).__name__}") from None
    finally:
        book.close()
    raise InputError(f"{name}: the workbook has no data")


def _table(name: str, rows: list[list[str]]) -> pd.DataFrame:
    header = rows[0]
    while header and header[-1] == "":
        header = header[:-1]
    width = len(header)
    if any(any(cell != "" for cell in row[width:]) for row in rows[1:]):
        raise InputError(f"{name}: the worksheet's rows have more cells than the header")
    body = [(row + [""] * width)[:width] for row in rows[1:]]
    return pd.DataFrame(body, columns=header, dtype=object)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
