"""Reading users' monitoring exports: format detection and normalisation to the long format.

Accepted, detected from the content first (gzip, zip/xlsx, Parquet and JSON by their first bytes) and the
extension second:

- long CSV / Parquet: ``timestamp, server_id, metric, value``; any other column is an attribute;
- wide CSV / Parquet: ``timestamp, server_id`` and one column per metric (``cpu, mem, ...`` or any alias, e.g.
  ``CPUUtilization``); columns that are neither keys nor metrics are attributes;
- the shapes of :mod:`capacity_forecaster.formats`: CloudWatch ``GetMetricData`` and ``get-metric-statistics``
  JSON and the console's CSV, Prometheus ``query_range`` JSON, Grafana and Datadog CSV exports;
- text as UTF-8 or UTF-16 with a BOM, delimited by commas, semicolons (decimal commas read) or tabs
  (:mod:`capacity_forecaster.formats.text`); Excel workbooks (:mod:`capacity_forecaster.formats.xlsx`);
- any of the text formats gzip-compressed.

Every format comes out as the four raw columns as read plus ``attributes`` (JSON text of the extra columns, empty
when there are none). Nothing is validated here: row rules (timestamps, metric names, ranges) are the ETL's.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capacity_forecaster import formats
from capacity_forecaster.errors import InputError
from capacity_forecaster.formats import labels, xlsx
from capacity_forecaster.formats import text as formats_text
from capacity_forecaster.formats.frame import ReadContext
from capacity_forecaster.formats.options import ReadOptions, apply_options
from capacity_forecaster.schema import METRICS

REQUIRED_COLUMNS: Final[tuple[str, ...]] = ("timestamp", "server_id", "metric", "value")
KEY_COLUMNS: Final[tuple[str, ...]] = ("timestamp", "server_id")
RAW_FRAME_COLUMNS: Final[tuple[str, ...]] = (*REQUIRED_COLUMNS, "attributes")

DEFAULT_METRIC_ALIASES: Final[dict[str, str]] = {
    # CloudWatch (EC2 and the CloudWatch agent)
    "cpuutilization": "cpu",
    "mem_used_percent": "mem",
    "memoryutilization": "mem",
    "disk_used_percent": "disk",
    "diskspaceutilization": "disk",
    "networkutilization": "net",
    # Prometheus / node exporter style and common spellings
    "cpu_percent": "cpu",
    "cpu_usage": "cpu",
    "cpu_util": "cpu",
    "memory": "mem",
    "memory_percent": "mem",
    "mem_percent": "mem",
    "memory_usage": "mem",
    "disk_percent": "disk",
    "disk_usage": "disk",
    "filesystem_used_percent": "disk",
    "network": "net",
    "net_percent": "net",
    "network_percent": "net",
    # Spreadsheet headers and dashboard series
    "cpu %": "cpu",
    "memory %": "mem",
    "mem %": "mem",
    "disk %": "disk",
    "network %": "net",
    "system.disk.in_use": "disk",  # Datadog agent: used fraction of the disk (0-1: ingest --fraction)
}
"""Metric names (case-insensitive) mapped to the canonical metrics; ``ingest.metric_aliases`` adds to it."""

COLUMN_ALIASES: Final[dict[str, str]] = {
    "time": "timestamp",
    "ts": "timestamp",
    "datetime": "timestamp",
    "date_time": "timestamp",
    "server": "server_id",
    "host": "server_id",
    "hostname": "server_id",
    "instance_id": "server_id",
    "instanceid": "server_id",
    "instance": "server_id",  # Prometheus' label
    "metric_name": "metric",
    "metricname": "metric",
}
"""Header spellings accepted for the key columns, used only when the canonical name is absent."""

PARQUET_MAGIC: Final[bytes] = b"PAR1"
GZIP_MAGIC: Final[bytes] = b"\x1f\x8b"
ZIP_MAGICS: Final[tuple[bytes, ...]] = (b"PK\x03\x04", b"PK\x05\x06")


def metric_aliases(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The alias table: canonical names, the defaults, then ``extra`` (keys lower-cased)."""
    table = {m: m for m in METRICS} | DEFAULT_METRIC_ALIASES
    table.update({str(k).strip().lower(): str(v).strip().lower() for k, v in (extra or {}).items()})
    return table


def canonical_metric(names: pd.Series, aliases: Mapping[str, str]) -> pd.Series:
    """Lower-case and map metric names through ``aliases``; unknown names stay as they are (lower-cased)."""
    lowered = names.astype("string").str.strip().str.lower()
    return lowered.map(lambda m: aliases.get(m, m) if isinstance(m, str) else m).astype("string")


def detect_format(name: str, data: bytes) -> str:
    """``parquet``, ``json`` or ``csv`` from the (decompressed) content, falling back on the extension."""
    if data[:4] == PARQUET_MAGIC:
        return "parquet"
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"{", b"["):
        return "json"
    lower = name.lower().removesuffix(".gz")
    if lower.endswith(".parquet"):
        return "parquet"  # named Parquet but not Parquet: let the reader say why
    if lower.endswith(".json"):
        return "json"
    return "csv"


MiB: Final[int] = 1024 * 1024
READ_ERRORS: Final[tuple[type[BaseException], ...]] = (
    UnicodeError,
    ValueError,  # json.JSONDecodeError, pandas' ParserError, numbers pandas cannot convert
    TypeError,
    OverflowError,
    RecursionError,  # JSON nested too deep
    OSError,
    EOFError,
    zlib.error,
    pa.ArrowException,
)
"""What the readers (pandas, pyarrow, json, gzip) raise on bad bytes: each becomes an :class:`InputError`."""


def too_large(name: str, size: int | None, max_bytes: int, *, what: str = "the file") -> InputError:
    """The one-line refusal of a file over ``ingest.max_file_mb`` (``size`` bytes, if known), with how to split it."""
    measured = "" if size is None else f" ({size / MiB:,.1f} MB)"
    return InputError(
        f"{name}: {what}{measured} is over the {max_bytes / MiB:g} MB limit (ingest.max_file_mb, "
        "CF_INGEST_MAX_FILE_MB); split the file, e.g. one file per day, and ingest the parts"
    )


def read_monitoring_export(
    name: str,
    data: bytes,
    aliases: Mapping[str, str] | None = None,
    *,
    max_bytes: int | None = None,
    options: ReadOptions | None = None,
) -> pd.DataFrame:
    """Parse one export into :data:`RAW_FRAME_COLUMNS` (values as read); :class:`InputError` when unusable.

    ``max_bytes`` bounds the (decompressed) input. Whatever the readers raise on bad bytes (:data:`READ_ERRORS`)
    is an :class:`InputError` naming the file, so a poison file is refused, never a traceback. ``options`` (only
    ``ingest`` passes them) are applied to the rows read (:func:`formats.options.apply_options`). The frame's
    ``attrs["shape"]`` names the shape that read it.
    """
    table = metric_aliases() if aliases is None else dict(aliases)
    if not data:
        raise InputError(f"{name}: the file is empty")
    if max_bytes is not None and len(data) > max_bytes:
        raise too_large(name, len(data), max_bytes)
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(name, data, max_bytes)
    ctx = ReadContext(
        table, labels.compile_label_format(options.label_format) if options and options.label_format else None
    )
    fmt = "xlsx" if data[:4] in ZIP_MAGICS else detect_format(name, data)
    try:
        frame = _read_any(name, data, fmt, ctx, max_bytes)
    except READ_ERRORS as exc:
        raise InputError(f"{name}: cannot be read as {fmt}: {type(exc).__name__}: {_first_line(exc)}") from None
    return apply_options(frame, options, table) if options else frame


def _read_any(name: str, data: bytes, fmt: str, ctx: ReadContext, max_bytes: int | None) -> pd.DataFrame:
    if fmt == "parquet":
        return _shaped(name, _read_parquet(name, data), ctx, "parquet")
    if fmt == "xlsx":
        return _shaped(name, xlsx.read_workbook(name, data, max_bytes), ctx, "xlsx")
    text = formats_text.decode(name, data)
    if fmt == "json" or text.lstrip("\ufeff \t\r\n")[:1] in ("{", "["):
        frame = formats.read_json(name, _load_json(name, text), ctx)
    else:
        frame = _shaped(name, formats_text.read_delimited(name, text), ctx, "csv")
    return frame


def _shaped(name: str, frame: pd.DataFrame, ctx: ReadContext, container: str) -> pd.DataFrame:
    """A table read by the first shape that claims it, else as the long or wide format."""
    shaped = formats.read_table(name, frame, ctx)
    if shaped is None:
        shaped = _tabular(name, frame, ctx.aliases)
        shaped.attrs["shape"] = f"{container}-table"
    return shaped


def _gunzip(name: str, data: bytes, max_bytes: int | None) -> bytes:
    """Decompress (every gzip member), reading at most ``max_bytes`` + 1 bytes so a gzip bomb stops early."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(-1 if max_bytes is None else max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: corrupt gzip data: {_first_line(exc)}") from None
    if not out:
        raise InputError(f"{name}: the file is empty once decompressed")
    if max_bytes is not None and len(out) > max_bytes:
        raise too_large(name, None, max_bytes, what="the file once decompressed")
    return out


def _read_parquet(name: str, data: bytes) -> pd.DataFrame:
    try:
        table = pq.read_table(io.BytesIO(data))
    except pa.ArrowException as exc:
        raise InputError(f"{name}: cannot be read as parquet: {_first_line(exc)}") from None
    return _text_columns(name, table).to_pandas()


def _text_columns(name: str, table: pa.Table) -> pa.Table:
    """Binary columns as UTF-8 text (:class:`InputError` when they are not), nested ones as JSON text.

    Everything else (numbers, booleans, dates, text) is kept as read: the ETL's row rules judge the values.
    """
    for i, field_ in enumerate(table.schema):
        kind = field_.type.value_type if pa.types.is_dictionary(field_.type) else field_.type
        if pa.types.is_dictionary(field_.type):
            column = table.column(i).cast(kind)
            table = table.set_column(i, field_.name, column)
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
            try:
                text = table.column(i).cast(pa.binary()).cast(pa.string())
            except pa.ArrowInvalid:
                raise InputError(f"{name}: column {field_.name!r} holds binary data that is not UTF-8 text") from None
            table = table.set_column(i, field_.name, text)
        elif pa.types.is_nested(kind):
            values = [None if v is None else json.dumps(v, default=str) for v in table.column(i).to_pylist()]
            table = table.set_column(i, field_.name, pa.array(values, pa.string()))
    return table


def _tabular(name: str, frame: pd.DataFrame, aliases: Mapping[str, str]) -> pd.DataFrame:
    """Long or wide table -> the raw frame."""
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    if frame.columns.duplicated().any():
        dupes = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise InputError(f"{name}: duplicate column names {', '.join(dupes)}")
    renames = {c: COLUMN_ALIASES[c] for c in frame.columns if c in COLUMN_ALIASES}
    renames = {c: t for c, t in renames.items() if t not in frame.columns}
    if len(set(renames.values())) < len(renames):
        raise InputError(f"{name}: several columns could be the same key column: {', '.join(sorted(renames))}")
    frame = frame.rename(columns=renames)
    if "metric" in frame.columns or "value" in frame.columns:
        return _long(name, frame)
    metric_cols = [c for c in frame.columns if c not in KEY_COLUMNS and c in aliases]
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing or not metric_cols:
        raise InputError(
            f"{name}: missing required columns {', '.join(missing or ['metric', 'value'])} "
            f"(long format: {', '.join(REQUIRED_COLUMNS)}; wide format: timestamp, server_id and metric columns); "
            f"{_known()}"
        )
    if frame.empty:
        raise InputError(f"{name}: the file has a header but no rows")
    extras = [c for c in frame.columns if c not in KEY_COLUMNS and c not in metric_cols]
    attributes = _attributes(frame, extras)
    k = len(metric_cols)
    # Row order: each input line's metrics together, in column order.
    return pd.DataFrame(
        {
            "timestamp": np.repeat(frame["timestamp"].to_numpy(), k),
            "server_id": np.repeat(frame["server_id"].to_numpy(), k),
            "metric": np.tile(np.array(metric_cols, dtype=object), len(frame)),
            "value": frame[metric_cols].to_numpy(dtype=object).ravel(),
            "attributes": np.repeat(np.asarray(attributes, dtype=object), k) if extras else "",
        }
    )


def _long(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{name}: missing required columns {', '.join(missing)} (need {', '.join(REQUIRED_COLUMNS)})")
    if frame.empty:
        raise InputError(f"{name}: the file has a header but no rows")
    extras = [c for c in frame.columns if c not in REQUIRED_COLUMNS]
    out = frame[list(REQUIRED_COLUMNS)].reset_index(drop=True)
    return out.assign(attributes=_attributes(frame.reset_index(drop=True), extras))


def _known() -> str:
    """The shapes and column aliases accepted, for the unknown-shape error."""
    aliases = ", ".join(f"{k} -> {v}" for k, v in COLUMN_ALIASES.items())
    return f"shapes read: {formats.known_shapes()}; column aliases: {aliases}"


def _attributes(frame: pd.DataFrame, extras: list[str]) -> Any:
    """JSON text of the extra columns per row (sorted keys, values as text); "" when there are none."""
    if not extras:
        return ""
    text = frame[extras].astype("string").fillna("")
    return [json.dumps(dict(zip(extras, row, strict=True)), sort_keys=True) for row in text.itertuples(index=False)]


def _load_json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}: not valid JSON: {exc.msg} at line {exc.lineno}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
