"""Ingest: copy users' monitoring exports into the lake's raw zone, where the next ETL run picks them up."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from capacity_forecaster.errors import InputError
from capacity_forecaster.etl import REQUIRED_COLUMNS
from capacity_forecaster.stages import UPLOADS_PREFIX
from capacity_forecaster.storage.keys import TenantPrefix, date_folder, timestamped_name
from capacity_forecaster.storage.lake import Lake

ACCEPTED_SUFFIXES = (".csv", ".csv.gz", ".parquet")


def upload_key(tenant: str, filename: str, now: datetime) -> str:
    """``raw/uploads/tenants/<tenant>/YYYY/MM/DD/<UTC timestamp>_<name>``: one tenant cannot escape its prefix."""
    return UPLOADS_PREFIX + TenantPrefix(tenant).key(date_folder(now.date()), timestamped_name(filename, now))


def check_header(path: Path) -> None:
    """Fail fast, before uploading, on a file that lacks the long format's columns."""
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            columns = [c.lower() for c in pq.read_schema(path).names]
        else:
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8-sig") as fh:
                columns = [c.strip().lower() for c in fh.readline().split(",")]
    except (OSError, UnicodeDecodeError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot be read ({type(exc).__name__}); expected CSV, gzip CSV or Parquet") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(
            f"{path}: missing columns {', '.join(missing)}; the long format is {', '.join(REQUIRED_COLUMNS)}"
        )


def ingest_files(
    lake: Lake, paths: Sequence[Path], *, tenant: str = "default", now: datetime | None = None
) -> list[str]:
    """Upload each file to the raw zone with metadata; return the URIs written.

    Every file is checked before any is uploaded, so a bad one in the list uploads nothing.
    """
    stamp = now or datetime.now(UTC)
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if not path.name.lower().endswith(ACCEPTED_SUFFIXES):
            raise InputError(f"{path}: unsupported file type; accepted: {', '.join(ACCEPTED_SUFFIXES)}")
        check_header(path)
    uris = []
    for path in paths:
        key = upload_key(tenant, path.name, stamp)
        uris.append(lake.store.upload_file(path, key, metadata={"source": "ingest", "original_filename": path.name}))
    return uris
