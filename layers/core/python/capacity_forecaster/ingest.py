"""Ingest: copy users' monitoring exports into the lake's raw zone, where the next ETL run picks them up."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from capacity_forecaster import etl
from capacity_forecaster.errors import InputError
from capacity_forecaster.raw_formats import too_large
from capacity_forecaster.stages import RAW_SUFFIXES, UPLOADS_PREFIX
from capacity_forecaster.storage.keys import TenantPrefix, date_folder, timestamped_name
from capacity_forecaster.storage.lake import Lake

ACCEPTED_SUFFIXES = RAW_SUFFIXES


TAG_LENGTH = 8
"""Hex digits of the content's SHA-256 in an upload's name: two different files never share a key."""


def upload_key(tenant: str, filename: str, now: datetime, *, tag: str = "") -> str:
    """``raw/uploads/tenants/<tenant>/YYYY/MM/DD/<UTC timestamp>_[<tag>_]<name>``: one tenant cannot escape its
    prefix, and the name is sanitised to ``[A-Za-z0-9._-]`` keeping the extension the ETL reads (lower-cased)."""
    name = timestamped_name(filename, now, suffixes=ACCEPTED_SUFFIXES, tag=tag)
    return UPLOADS_PREFIX + TenantPrefix(tenant).key(date_folder(now.date()), name)


def content_tag(path: Path) -> str:
    """The first :data:`TAG_LENGTH` hex digits of the file's SHA-256."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:TAG_LENGTH]


def check_header(path: Path, aliases: Mapping[str, str] | None = None, *, max_bytes: int | None = None) -> None:
    """Fail fast, before uploading, on a file the ETL could not read at all (format, encoding, columns, rows,
    size over ``max_bytes``, decompressed included).

    The whole file is parsed with the ETL's own reader (:func:`etl.read_raw_object`, with the same aliases and
    limit), so ``ingest`` refuses exactly the files the ETL would set aside whole (unreadable, no rows, too large);
    row-level problems are left to the ETL's quarantine.
    """
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise too_large(str(path), size, max_bytes)  # refused before reading it into memory
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({type(exc).__name__})") from None
    etl.read_raw_object(str(path), data, aliases, max_bytes=max_bytes)


def ingest_files(
    lake: Lake,
    paths: Sequence[Path],
    *,
    tenant: str = "default",
    now: datetime | None = None,
    aliases: Mapping[str, str] | None = None,
    max_bytes: int | None = None,
) -> list[str]:
    """Upload each file to the raw zone with metadata; return the URIs written.

    Every file is checked before any is uploaded (``max_bytes``: the ``ingest.max_file_mb`` limit), so a bad one
    in the list uploads nothing. Each key holds a hash of the file's content, so files of one name uploaded in
    one second do not overwrite each other; the same file given twice is uploaded once.
    """
    stamp = now or datetime.now(UTC)
    TenantPrefix(tenant)  # an invalid tenant is refused before any file is read
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if not path.name.lower().endswith(ACCEPTED_SUFFIXES):
            raise InputError(f"{path}: unsupported file type; accepted: {', '.join(ACCEPTED_SUFFIXES)}")
        check_header(path, aliases, max_bytes=max_bytes)
    uris: list[str] = []
    keys: set[str] = set()
    for path in paths:
        key = upload_key(tenant, path.name, stamp, tag=content_tag(path))
        if key in keys:  # the same name and the same bytes given twice: one object, not two copies of its rows
            continue
        keys.add(key)
        uris.append(lake.store.upload_file(path, key, metadata={"source": "ingest", "original_filename": path.name}))
    return uris
