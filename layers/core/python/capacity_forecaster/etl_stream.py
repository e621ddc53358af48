"""The ETL pass at fleet scale: raw files read in chunks, staged on local disk, deduplicated and aggregated in DuckDB.

Memory follows a chunk of rows and DuckDB's memory limit, not a file's size nor the lake's history:

- each new raw file is downloaded to a local work folder and read :data:`CHUNK_ROWS` rows at a time (CSV, gzip
  CSV, Parquet; a CloudWatch JSON and any file up to :data:`STREAM_FROM_BYTES` are read whole by
  :func:`raw_formats.read_monitoring_export`, as before); each chunk's rows pass the row rules
  (:func:`etl.validate_samples` without the duplicate rules) and go to Parquet files in the work folder;
- the duplicate rules, which need every sample of a day, run in DuckDB over those files and the *day store*:
  ``state/etl_samples/dt=<day>/<file id>.parquet``, the valid samples each processed file contributed to each
  day (timestamp, server_id, metric, value). A day the new samples touch is re-aggregated from its day-store
  parts and the new samples, exactly (P95 needs every sample), without re-reading or re-validating the raw
  files that made those parts;
- DuckDB computes the daily (and hourly) P95, counts and median sampling intervals with ``memory_limit`` and a
  ``temp_directory`` in the work folder, so it spills to disk rather than running out of memory.

A processed file recorded in ``etl_files`` before the day store existed has no part: its samples are read from
the raw file and validated once more (the former way), and its parts are written, so later runs find them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capacity_forecaster import etl, raw_formats
from capacity_forecaster.access import ETL_SAMPLES_PREFIX
from capacity_forecaster.errors import InputError
from capacity_forecaster.raw_formats import MiB, too_large

if TYPE_CHECKING:
    import duckdb

    from capacity_forecaster.storage.lake import Lake

CHUNK_ROWS: Final[int] = 100_000
"""Raw rows read, validated and staged at a time (a CSV chunk of about 4 MB, some 40 MB in pandas)."""
STREAM_FROM_BYTES: Final[int] = 16 * MiB
"""Files up to this size are read whole (their peak is small); larger CSV and Parquet files are read in chunks."""
WHOLE_READ_MAX_BYTES: Final[int] = 64 * MiB
"""A CloudWatch JSON export is parsed whole (about 10 times its size in memory): larger ones are refused. The
CloudWatch puller writes one GetMetricData response (at most 100,800 points, a few MB) per file."""
DEFAULT_DUCKDB_MEMORY_MB: Final[int] = 1024
MIN_DUCKDB_MEMORY_MB: Final[int] = 128
"""DuckDB's limit follows the pass's input (its bytes, at least this), up to :func:`duckdb_memory_mb`: a pass
over one file keeps to about its size above the interpreter's own memory; DuckDB spills the rest."""
ROW_BYTES: Final[int] = 40
"""The input bytes a staged row is counted at for DuckDB's limit: at most a row of a long CSV export (43 bytes or
more), so that a CSV's limit stays its size. A compressed file (Parquet, gzip) holds many more rows than its
bytes say, and the duplicate rules' joins and window need memory per row even when they spill (the history of
10,000 servers, 43.8 million rows in 160 MB of Parquet, ran DuckDB out of memory at a 146 MB limit)."""
LAMBDA_MEMORY_SHARE: Final[float] = 0.35
"""In the ETL Lambda, DuckDB may use this share of the function's memory (the rest: Python, a chunk, pandas)."""
SAMPLE_COLUMNS: Final[tuple[str, ...]] = ("timestamp", "server_id", "metric", "value")

_STAGED = pa.schema(
    [
        ("seq", pa.int64()),
        ("file_idx", pa.int32()),
        ("source", pa.string()),
        ("row_number", pa.int64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("server_id", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("attributes", pa.string()),
        ("raw_timestamp", pa.string()),
        ("raw_server_id", pa.string()),
        ("raw_metric", pa.string()),
        ("raw_value", pa.string()),
    ]
)
_REJECTED = pa.schema(
    [
        ("source", pa.string()),
        ("row_number", pa.int64()),
        ("timestamp", pa.string()),
        ("server_id", pa.string()),
        ("metric", pa.string()),
        ("value", pa.string()),
        ("reason", pa.string()),
    ]
)
_PART = pa.schema(
    [
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("server_id", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)
SEQ_FILE_SHIFT: Final[int] = 40
"""A staged row's ``seq`` (its order among the pass's rows) is ``file index << 40 | row number``."""


def duckdb_memory_mb() -> int:
    """DuckDB's memory limit: ``CF_ETL_DUCKDB_MEMORY_MB``, else a share of the Lambda's memory, else 1 GB."""
    configured = os.environ.get("CF_ETL_DUCKDB_MEMORY_MB", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    lambda_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "").strip()
    if lambda_mb.isdigit():
        return max(256, int(int(lambda_mb) * LAMBDA_MEMORY_SHARE))
    return DEFAULT_DUCKDB_MEMORY_MB


def file_id(key: str) -> str:
    """The name of a raw object's parts in the day store: a digest of its key."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def part_key(day: str, key: str) -> str:
    """``state/etl_samples/dt=YYYY-MM-DD/<file id>.parquet``."""
    return f"{ETL_SAMPLES_PREFIX}dt={day}/{file_id(key)}.parquet"


STALE_WORK_SECONDS: Final[int] = 6 * 3600
"""Work folders older than this were left by killed runs (a Lambda runs 15 minutes at most): removed."""


def release_memory() -> None:
    """Hand freed memory back to the system: pyarrow's pool and glibc's heap keep what pandas, pyarrow and
    DuckDB freed (some 70 MB after a 100 MB file's staging), which would add to the next step's peak."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


@contextmanager
def work_folder() -> Iterator[Path]:
    """A local folder for staged rows and DuckDB's spill files (``/tmp`` in Lambda), removed afterwards; folders
    that killed runs left (a warm Lambda keeps its ``/tmp``) are removed first."""
    import time

    for stale in Path(tempfile.gettempdir()).glob("cf-etl-*"):
        try:
            if time.time() - stale.stat().st_mtime > STALE_WORK_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    path = Path(tempfile.mkdtemp(prefix="cf-etl-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- reading


class _Guard(io.RawIOBase):
    """A binary stream that refuses NUL bytes (binary data, not CSV) and more than ``max_bytes`` bytes."""

    def __init__(self, name: str, stream: io.BufferedIOBase, max_bytes: int | None, what: str) -> None:
        super().__init__()
        self._name, self._stream, self._max, self._what, self.read_bytes = name, stream, max_bytes, what, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        self.read_bytes += len(data)
        if self._max is not None and self.read_bytes > self._max:
            raise too_large(self._name, None, self._max, what=self._what)
        if b"\x00" in data:
            raise InputError(f"{self._name}: the file is binary, not CSV text")
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def iter_raw_chunks(
    name: str, path: Path, aliases: Mapping[str, str], *, max_bytes: int | None, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The raw frame of one local file (:data:`raw_formats.RAW_FRAME_COLUMNS`), ``chunk_rows`` input rows at a time.

    Small files, JSON and anything not recognised as CSV or Parquet are read whole through
    :func:`raw_formats.read_monitoring_export`; large CSV (gzip or not) and Parquet stream. Raises
    :class:`InputError` (one line) when the file cannot be used, possibly after some chunks were yielded.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(512)
    gz = head[:2] == raw_formats.GZIP_MAGIC
    if _is_json(head) and size > WHOLE_READ_MAX_BYTES:
        raise _json_too_large(name, size)
    whole = size <= STREAM_FROM_BYTES or _is_json(head) or head[:4] in raw_formats.ZIP_MAGICS
    cap = max_bytes
    if gz and not whole:
        import gzip
        import zlib

        try:
            with gzip.open(path, "rb") as inner:
                peek = inner.read(512)
        except (OSError, EOFError, zlib.error):
            peek = b""  # corrupt: the whole read says why
        if not peek or peek[:4] == raw_formats.PARQUET_MAGIC or _is_json(peek) or peek[:4] in raw_formats.ZIP_MAGICS:
            whole, cap = True, WHOLE_READ_MAX_BYTES if max_bytes is None else min(max_bytes, WHOLE_READ_MAX_BYTES)
    if whole:
        try:
            yield etl.read_raw_object(name, path.read_bytes(), aliases, max_bytes=cap)
        except InputError as exc:
            if cap is not None and cap != max_bytes and "limit" in str(exc):
                raise _json_too_large(name, None) from None
            raise
    elif head[:4] == raw_formats.PARQUET_MAGIC:
        yield from _parquet_chunks(name, path, aliases, chunk_rows)
    else:
        yield from _csv_chunks(name, path, aliases, max_bytes=max_bytes, gz=gz, chunk_rows=chunk_rows)


def _is_json(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[")


def _json_too_large(name: str, size: int | None) -> InputError:
    measured = "" if size is None else f" ({size / MiB:,.1f} MB)"
    return InputError(
        f"{name}: a JSON or gzip-compressed Parquet file{measured} is read whole, so at most "
        f"{WHOLE_READ_MAX_BYTES // MiB} MB once decompressed; split it (one GetMetricData response per file) "
        "or export CSV or plain Parquet, which are read in chunks up to ingest.max_file_mb"
    )


def _csv_chunks(
    name: str, path: Path, aliases: Mapping[str, str], *, max_bytes: int | None, gz: bool, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    import gzip
    import zlib

    raw: io.BufferedIOBase = gzip.open(path, "rb") if gz else path.open("rb")  # noqa: SIM115
    guard = _Guard(name, raw, max_bytes if gz else None, "the file once decompressed")
    text = io.TextIOWrapper(io.BufferedReader(guard, 1 << 20), encoding="utf-8-sig", errors="strict", newline="")
    yielded = False
    try:
        reader = pd.read_csv(
            text, dtype=str, keep_default_na=False, skipinitialspace=True, chunksize=chunk_rows, low_memory=True
        )
        for chunk in reader:
            if not isinstance(chunk.index, pd.RangeIndex):
                raise InputError(f"{name}: cannot be read as csv: the rows have more fields than the header")
            if chunk.empty and yielded:
                continue
            yield raw_formats._tabular(name, chunk, aliases)
            yielded = True
    except UnicodeDecodeError:
        raise InputError(f"{name}: the file is not UTF-8 text") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{name}: the file is empty") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{name}: cannot be read as csv: {etl._first_line(exc)}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: corrupt gzip data: {etl._first_line(exc)}") from None
    finally:
        text.close()
    if not yielded:
        raise InputError(f"{name}: the file has a header but no rows")


def _parquet_chunks(name: str, path: Path, aliases: Mapping[str, str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        parquet = pq.ParquetFile(path)
        batches = parquet.iter_batches(batch_size=chunk_rows)
        yielded = False
        for batch in batches:
            table = pa.Table.from_batches([batch])
            frame = raw_formats._text_columns(name, table).to_pandas()
            yield raw_formats._tabular(name, frame, aliases)
            yielded = True
        if not yielded:
            empty = parquet.schema_arrow.empty_table().to_pandas()
            yield raw_formats._tabular(name, empty, aliases)
    except raw_formats.READ_ERRORS as exc:
        raise InputError(f"{name}: cannot be read as parquet: {type(exc).__name__}: {etl._first_line(exc)}") from None


# ----------------------------------------------------------------------------------------------- staging


@dataclass
class Staging:
    """The pass's staged rows: per file, the rows that passed the row rules and the rows they rejected."""

    folder: Path
    rows_in: int = 0
    file_rows: dict[int, int] = field(default_factory=dict)
    series_days: int = 0
    """Distinct (server, metric, UTC day) of the valid rows, counted chunk by chunk (an upper bound where a
    series' day spans chunks): the rows the aggregate returns to pandas."""

    @property
    def valid_glob(self) -> str:
        return str(self.folder / "valid-*.parquet")

    @property
    def rejected_glob(self) -> str:
        return str(self.folder / "rejected-*.parquet")

    def stage_file(
        self, file_idx: int, key: str, chunks: Iterator[pd.DataFrame], *, now: pd.Timestamp, aliases: Mapping[str, str]
    ) -> int:
        """Validate and stage one file's chunks; return its row count. On :class:`InputError` nothing of it stays."""
        valid_path = self.folder / f"valid-{file_idx:06d}.parquet"
        rejected_path = self.folder / f"rejected-{file_idx:06d}.parquet"
        offset = groups = 0
        try:
            with pq.ParquetWriter(valid_path, _STAGED) as valid_out, pq.ParquetWriter(rejected_path, _REJECTED) as bad:
                for frame in chunks:
                    raw = frame.reset_index(drop=True).assign(source=key, row_number=range(offset, offset + len(frame)))
                    valid, rejected = etl.validate_samples(raw, now=now, aliases=aliases, duplicates=False)
                    if not rejected.empty:
                        bad.write_table(pa.Table.from_pandas(rejected, schema=_REJECTED, preserve_index=False))
                    if not valid.empty:
                        staged = _staged_table(file_idx, raw, valid, offset)
                        valid_out.write_table(staged)
                        groups += _series_days(staged)
                    offset += len(frame)
        except BaseException:
            valid_path.unlink(missing_ok=True)
            rejected_path.unlink(missing_ok=True)
            raise
        finally:
            release_memory()
        self.rows_in += offset
        self.series_days += groups
        self.file_rows[file_idx] = offset
        return offset


def _series_days(staged: pa.Table) -> int:
    """Distinct (server, metric, UTC day) of a staged table."""
    import pyarrow.compute as pc

    keys = pa.table(
        {
            "server_id": staged["server_id"],
            "metric": staged["metric"],
            "day": pc.floor_temporal(staged["timestamp"], unit="day"),
        }
    )
    return int(keys.group_by(["server_id", "metric", "day"]).aggregate([]).num_rows)


def _staged_table(file_idx: int, raw: pd.DataFrame, valid: pd.DataFrame, offset: int) -> pa.Table:
    """Valid rows with their order, attributes and the four raw columns as text (for a later duplicate reason)."""
    at = raw.iloc[valid["row_number"].to_numpy() - offset]

    def as_text(col: pd.Series) -> pa.Array:
        if col.dtype == object:
            try:
                return pa.array(col.to_numpy(), pa.string(), from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass
        return pa.array(col.astype("string").fillna("").astype(str).to_numpy(), pa.string())

    rows = valid["row_number"].to_numpy(dtype="int64")
    attributes = at["attributes"] if "attributes" in at.columns else pd.Series("", index=at.index)
    return pa.table(
        {
            "seq": pa.array((file_idx << SEQ_FILE_SHIFT) | rows, pa.int64()),
            "file_idx": pa.array([file_idx] * len(valid), pa.int32()),
            "source": pa.array(valid["source"].to_numpy(), pa.string()),
            "row_number": pa.array(rows, pa.int64()),
            "timestamp": _timestamps(valid["timestamp"]),
            "server_id": pa.array(valid["server_id"].to_numpy(), pa.string()),
            "metric": pa.array(valid["metric"].to_numpy(), pa.string()),
            "value": pa.array(valid["value"].to_numpy(dtype="float64"), pa.float64()),
            "attributes": as_text(attributes.astype(object)),
            "raw_timestamp": as_text(at["timestamp"]),
            "raw_server_id": as_text(at["server_id"]),
            "raw_metric": as_text(at["metric"]),
            "raw_value": as_text(at["value"]),
        },
        schema=_STAGED,
    )


def _timestamps(col: pd.Series) -> pa.Array:
    micros = col.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    return pa.array(micros.astype("int64"), pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def write_context(path: Path, samples: pd.DataFrame) -> None:
    """Valid samples of legacy files (read from their raw objects) as a day-store-shaped local Parquet file."""
    table = pa.table(
        {
            "timestamp": _timestamps(samples["timestamp"]),
            "server_id": pa.array(samples["server_id"].astype(str).to_numpy(), pa.string()),
            "metric": pa.array(samples["metric"].astype(str).to_numpy(), pa.string()),
            "value": pa.array(samples["value"].to_numpy(dtype="float64"), pa.float64()),
            "source": pa.array(samples["source"].astype(str).to_numpy(), pa.string()),
        }
    )
    pq.write_table(table, path)


# ----------------------------------------------------------------------------------------------- DuckDB


def connect(folder: Path, input_bytes: int | None = None, rows: int = 0) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that spills to ``folder`` beyond :func:`duckdb_memory_mb`, or beyond the pass's input
    when that is less: ``input_bytes``, or ``rows`` staged rows at :data:`ROW_BYTES` each where that is more, and
    at least :data:`MIN_DUCKDB_MEMORY_MB`."""
    import duckdb

    spill = folder / "duckdb-spill"
    spill.mkdir(exist_ok=True)
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    limit_mb = duckdb_memory_mb()
    if input_bytes is not None:
        limit_mb = min(limit_mb, max(MIN_DUCKDB_MEMORY_MB, input_bytes // MiB, rows * ROW_BYTES // MiB))
    con.execute(f"SET memory_limit = '{limit_mb}MB'")
    con.execute(f"SET temp_directory = '{spill}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET threads = {max(1, min(os.cpu_count() or 1, 4))}")
    return con


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def staged_days(con: duckdb.DuckDBPyConnection, staging: Staging) -> list[str]:
    """UTC days of the staged rows (before the duplicate rules)."""
    if not list(staging.folder.glob("valid-*.parquet")):
        return []
    rows = con.sql(
        f'SELECT DISTINCT CAST(CAST("timestamp" AS TIMESTAMP) AS DATE) FROM read_parquet({_quote(staging.valid_glob)})'
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


DUPLICATES_SQL: Final[str] = """
CREATE TEMP TABLE dup AS
WITH repeated AS (
    SELECT server_id, metric, "timestamp", min(value) <> max(value) AS conflicting
    FROM new GROUP BY ALL HAVING count(*) > 1
), seen AS (
    SELECT server_id, metric, "timestamp", any_value(value) AS seen_value FROM ctx GROUP BY ALL
), candidates AS (
    SELECT n.seq, n.value, r.conflicting, s.seen_value,
           row_number() OVER (PARTITION BY n.server_id, n.metric, n."timestamp", n.value ORDER BY n.seq) AS nth
    FROM new n
    LEFT JOIN repeated r USING (server_id, metric, "timestamp")
    LEFT JOIN seen s USING (server_id, metric, "timestamp")
    WHERE r.conflicting IS NOT NULL OR s.seen_value IS NOT NULL
)
SELECT seq,
       CASE WHEN coalesce(conflicting, false)
                 OR (seen_value IS NOT NULL AND abs(value - seen_value) > 1e-8 + 1e-5 * abs(seen_value))
            THEN 'conflicting_duplicate' ELSE 'duplicate' END AS reason
FROM candidates
WHERE coalesce(conflicting, false) OR nth > 1 OR seen_value IS NOT NULL
"""
"""The duplicate rules of :func:`etl.validate_samples` over the staged rows (``new``) and the day's earlier
samples (``ctx``): a key with several values among the new rows, or a value other than the earlier one (to
``numpy.isclose``), is a conflicting duplicate; a later repeat of a (key, value), or a repeat of an earlier
sample, a duplicate."""


def deduplicate(con: duckdb.DuckDBPyConnection, staging: Staging, context_files: list[str]) -> None:
    """Views ``new`` (staged rows), ``ctx`` (the day store's samples), table ``dup`` and view ``valid``."""
    files = sorted(str(p) for p in staging.folder.glob("valid-*.parquet"))
    if files:
        con.execute(f"CREATE VIEW new AS SELECT * FROM read_parquet([{', '.join(map(_quote, files))}])")
    else:
        con.execute(f"CREATE VIEW new AS SELECT * FROM {_empty_select(_STAGED)}")
    if context_files:
        listed = ", ".join(map(_quote, context_files))
        con.execute(
            f'CREATE VIEW ctx AS SELECT "timestamp", server_id, metric, value '
            f"FROM read_parquet([{listed}], union_by_name = true)"
        )
    else:
        con.execute(f"CREATE VIEW ctx AS SELECT * FROM {_empty_select(_PART)}")
    con.execute(DUPLICATES_SQL)
    con.execute("CREATE VIEW valid AS SELECT * FROM new ANTI JOIN dup USING (seq)")
    release_memory()


def _empty_select(schema: pa.Schema) -> str:
    types = {pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.string(): "VARCHAR", pa.float64(): "DOUBLE"}
    cols = ", ".join(
        f'CAST(NULL AS {"TIMESTAMPTZ" if pa.types.is_timestamp(f.type) else types[f.type]}) AS "{f.name}"'
        for f in schema
    )
    return f"(SELECT {cols} WHERE false)"


def counts(con: duckdb.DuckDBPyConnection) -> tuple[int, dict[str, int]]:
    """Rows valid after the duplicate rules, and the duplicate reasons with their counts."""
    valid = con.execute("SELECT count(*) FROM valid").fetchall()[0]
    reasons = dict(con.sql("SELECT reason, count(*) FROM dup GROUP BY reason").fetchall())
    return int(valid[0] if valid else 0), {str(k): int(v) for k, v in reasons.items()}


def rejected_rows(con: duckdb.DuckDBPyConnection, staging: Staging) -> pd.DataFrame:
    """Rows the row rules rejected and rows the duplicate rules rejected, in the pass's row order."""
    duplicates = """
        SELECT n.seq, n.source, n.row_number, coalesce(n.raw_timestamp, '') AS "timestamp",
               coalesce(n.raw_server_id, '') AS server_id, coalesce(n.raw_metric, '') AS metric,
               coalesce(n.raw_value, '') AS value, d.reason
        FROM new n JOIN dup d USING (seq)"""
    files = sorted(str(p) for p in staging.folder.glob("rejected-*.parquet"))
    parts = [duplicates]
    if files:
        listed = ", ".join(map(_quote, files))
        parts.append(
            f"SELECT (CAST(regexp_extract(filename, 'rejected-(\\d+)', 1) AS BIGINT) << {SEQ_FILE_SHIFT}) "
            f'| row_number AS seq, source, row_number, "timestamp", server_id, metric, value, reason '
            f"FROM read_parquet([{listed}], filename = true)"
        )
    sql = " UNION ALL ".join(parts)
    out = con.sql(f"SELECT * EXCLUDE (seq) FROM ({sql}) ORDER BY seq").to_arrow_table().to_pandas()
    return out.astype({"row_number": "int64"})


def define_samples(con: duckdb.DuckDBPyConnection, context_files: list[str], days: list[str]) -> None:
    """View ``samples``: every valid sample of ``days``, the new ones and the day store's."""
    listed = ", ".join(map(_quote, days)) or "NULL"
    con.execute(
        'CREATE VIEW samples AS SELECT "timestamp", server_id, metric, value FROM ('
        'SELECT "timestamp", server_id, metric, value FROM valid UNION ALL '
        'SELECT "timestamp", server_id, metric, value FROM ctx) '
        f'WHERE CAST(CAST("timestamp" AS TIMESTAMP) AS DATE) IN ({listed})'
    )


AGGREGATE_BATCH_ROWS: Final[int] = 2_000_000
"""The samples (at most as many groups) one aggregate query takes: the days of view ``samples`` are aggregated in
batches of about this many rows. DuckDB's exact quantile keeps a state per group that it does not spill: a pass
of daily exports (one sample a group) ran out of memory at 12 million groups under a 438 MB limit, while the same
rows in batches of days stay under it."""


def day_batches(days: Sequence[str], rows: int) -> list[list[str]]:
    """``days`` (sorted) in consecutive batches of about :data:`AGGREGATE_BATCH_ROWS` of the ``rows`` spread over
    them."""
    if not days:
        return []
    per_batch = max(1, math.floor(AGGREGATE_BATCH_ROWS / max(1.0, rows / len(days))))
    return [list(days[i : i + per_batch]) for i in range(0, len(days), per_batch)]


def sample_batches(con: duckdb.DuckDBPyConnection, days: Sequence[str]) -> list[list[str]]:
    """:func:`day_batches` of view ``samples``'s ``days`` (counted only when there are several)."""
    rows = int(con.sql("SELECT count(*) FROM samples").fetchall()[0][0]) if len(days) > 1 else 0
    return day_batches(days, rows)


def aggregate(
    con: duckdb.DuckDBPyConnection,
    grain: str,
    *,
    period_seconds: int,
    min_coverage: float,
    batches: Sequence[Sequence[str]] = (),
) -> pd.DataFrame:
    """P95, sample count and coverage per series and day (or hour) of view ``samples``, as the pandas path does;
    with several ``batches`` of its days (:func:`sample_batches`), the quantiles are computed batch by batch."""
    if len(batches) <= 1:
        out = con.sql(etl.AGGREGATE_SQL.format(grain=grain, where="")).to_arrow_table().to_pandas()
    else:
        day_of = 'CAST(CAST("timestamp" AS TIMESTAMP) AS DATE)'
        frames = [
            con.sql(etl.AGGREGATE_SQL.format(grain=grain, where=f"WHERE {day_of} IN ({', '.join(map(_quote, b))})"))
            .to_arrow_table()
            .to_pandas()
            for b in batches
        ]
        out = pd.concat(frames, ignore_index=True).sort_values(["server_id", "metric", "dt"], ignore_index=True)
        del frames
    out["dt"] = out["dt"].astype("datetime64[ns]")
    out["n_samples"] = out["n_samples"].astype("int32")
    out["p95"] = out["p95"].astype("float64")
    intervals = con.sql(etl.MEDIAN_INTERVAL_SQL).to_arrow_table().to_pandas()
    base = out[["server_id", "metric", "dt", "p95", "n_samples"]]
    del out
    release_memory()
    return etl.coverage_from_intervals(base, intervals, period_seconds=period_seconds, min_coverage=min_coverage)


def spans(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """First and last UTC day of each source's valid rows (index: source; columns min, max)."""
    frame = (
        con.sql(
            'SELECT source, min(CAST(CAST("timestamp" AS TIMESTAMP) AS DATE)) AS "min", '
            'max(CAST(CAST("timestamp" AS TIMESTAMP) AS DATE)) AS "max" FROM valid GROUP BY source'
        )
        .to_arrow_table()
        .to_pandas()
    )
    for col in ("min", "max"):
        frame[col] = pd.to_datetime(frame[col]).astype("datetime64[ns]")
    return frame.set_index("source")


def attribute_samples(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per server and attributes text, the latest valid sample carrying it (ties: the later row), in row order:
    what :func:`etl.server_attributes` keeps of all of them."""
    return (
        con.sql(
            """
            SELECT server_id, latest.ts AS "timestamp", latest.src AS source, attributes FROM (
                SELECT server_id, attributes,
                       arg_max({'ts': "timestamp", 'src': source, 'seq': seq}, {'ts': "timestamp", 'seq': seq})
                           AS latest
                FROM valid WHERE attributes IS NOT NULL AND attributes <> '' GROUP BY ALL
            ) ORDER BY latest.seq
            """
        )
        .to_arrow_table()
        .to_pandas()
    )


def write_parts(con: duckdb.DuckDBPyConnection, lake: Lake, folder: Path, extra: str = "") -> list[str]:
    """Write the valid samples of each new file and day to the day store; return the keys written.

    ``extra`` names a view of further samples with a ``source`` column (legacy files' samples) to write too."""
    release_memory()
    out = folder / "parts"
    select = 'SELECT left(sha256(source), 24) AS fid, CAST(CAST("timestamp" AS TIMESTAMP) AS DATE) AS dt, ' + (
        '"timestamp", server_id, metric, value'
    )
    union = f"{select} FROM valid" + (f" UNION ALL {select} FROM {extra}" if extra else "")
    con.execute(f"COPY ({union}) TO {_quote(str(out))} (FORMAT parquet, PARTITION_BY (fid, dt), COMPRESSION zstd)")
    keys = []
    for folder_ in sorted(out.glob("fid=*/dt=*")):
        files = sorted(folder_.glob("*.parquet"))
        path = files[0]
        if len(files) > 1:  # DuckDB split the partition: one object per file and day
            path = folder_ / "merged.parquet"
            _concatenate(files, path)
        day = folder_.name.removeprefix("dt=")
        fid = folder_.parent.name.removeprefix("fid=")
        key = f"{ETL_SAMPLES_PREFIX}dt={day}/{fid}.parquet"
        lake.store.upload_file(path, key)
        keys.append(key)
    return keys


def _concatenate(files: list[Path], path: Path) -> None:
    """One Parquet file of ``files``' rows, a row group at a time (a large file's day is never held whole)."""
    schema = pq.read_schema(files[0])
    with pq.ParquetWriter(path, schema, compression="zstd") as out:
        for name in files:
            source = pq.ParquetFile(name)
            for group in range(source.num_row_groups):
                out.write_table(source.read_row_group(group).cast(schema))
