"""Text exports: encoding (UTF-8, UTF-16 with a byte-order mark) and delimiter (comma, semicolon, tab) detection.

Excel in most of Europe saves CSV with ``;`` between fields and a decimal comma (``41,5``); Excel's "Unicode
Text" is UTF-16 with a BOM and tabs. Both are read like a plain CSV: the delimiter is the one of ``,`` ``;``
``\\t`` that occurs most in the header line (outside quotes), or the one a leading ``sep=;`` line (Excel's hint,
written by Grafana's "Download for Excel") names; with ``;`` or a tab, a cell that is a number with one decimal
comma (``41,5``, ``-0,25``) is read as ``41.5``. With ``,`` a decimal comma cannot occur unquoted and is left
alone (the row rules reject ``"40,5"`` as not a number).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from typing import Final

import pandas as pd

from capacity_forecaster.errors import InputError

DELIMITERS: Final[tuple[str, ...]] = (",", ";", "\t")
BOMS: Final[tuple[tuple[bytes, str], ...]] = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
DECIMAL_COMMA: Final[re.Pattern[str]] = re.compile(r"^[-+]?\d+,\d+$")
SEP_HINT: Final[re.Pattern[str]] = re.compile(r"^\ufeff?\"?sep=(.)\"?\s*$")


def decode(name: str, data: bytes) -> str:
    """The text of ``data``: UTF-8 (with or without a BOM) or UTF-16 with a BOM; :class:`InputError` otherwise."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                raise InputError(f"{name}: the file starts with a byte-order mark but is not {encoding} text") from None
    if _looks_utf16(data):
        raise InputError(
            f"{name}: the file is not UTF-8 text (it looks like UTF-16 without a byte-order mark); "
            "save it as UTF-8, or as UTF-16 with a BOM"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{name}: the file is not UTF-8 text (nor UTF-16 with a byte-order mark)") from None


def _looks_utf16(data: bytes) -> bool:
    head = data[:200]
    return len(head) >= 8 and (head[1::2].count(0) > len(head) // 4 or head[0::2].count(0) > len(head) // 4)


def sniff_delimiter(text: str) -> tuple[str, str]:
    """``(delimiter, text)``: the header's delimiter, and the text without a leading ``sep=`` line."""
    first, _, rest = text.lstrip("\ufeff").partition("\n")
    hint = SEP_HINT.match(first.rstrip("\r"))
    if hint:
        return hint.group(1), rest
    header = next((line for line in text[:65536].splitlines() if line.strip()), "")
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {d: unquoted.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return (best if counts[best] else ","), text


def read_delimited(name: str, text: str) -> pd.DataFrame:
    """A delimited text as a frame of text cells (header on the first line); decimal commas converted (see above)."""
    if "\x00" in text:
        raise InputError(f"{name}: the file is binary, not CSV text")
    if not text.strip():
        raise InputError(f"{name}: the file is empty")
    sep, text = sniff_delimiter(text)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            quoting=csv.QUOTE_MINIMAL,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{name}: cannot be read as csv: {_first_line(exc)}") from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took the surplus leading fields as an index
        raise InputError(f"{name}: cannot be read as csv: the rows have more fields than the header")
    if sep != ",":
        frame = frame.apply(_decimal_commas)
    return frame


def _decimal_commas(column: pd.Series) -> pd.Series:
    text = column.astype(str).str.strip()
    comma = text.str.match(DECIMAL_COMMA)
    if not comma.any():
        return column
    return column.where(~comma, text.str.replace(",", ".", regex=False))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
