"""Ingest: copy users' monitoring exports into the lake's raw zone, where the next ETL run picks them up.

Every file of a batch is checked on its own, before any is copied: read with the ETL's reader
(:func:`etl.read_raw_object`) and its row rules (:func:`etl.validate_samples`). A file that cannot be read, of
which no row would survive, or whose values of a percent metric all lie in 0-1 (unless ``--fraction`` or
``--percent`` says what they are) is refused with its reason; the others are copied. A file read with per-file
options (:class:`~capacity_forecaster.formats.options.ReadOptions`) is stored as the long CSV those options give,
so the ETL needs no options; any other file is copied byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from capacity_forecaster import etl, ingest_checks
from capacity_forecaster.errors import CapacityForecasterError, InputError
from capacity_forecaster.formats.options import ReadOptions, normalised_csv
from capacity_forecaster.raw_formats import too_large
from capacity_forecaster.stages import RAW_SUFFIXES, UPLOADS_PREFIX
from capacity_forecaster.storage.keys import TenantPrefix, date_folder, timestamped_name
from capacity_forecaster.storage.lake import Lake

ACCEPTED_SUFFIXES = RAW_SUFFIXES


TAG_LENGTH = 8
"""Hex digits of the content's SHA-256 in an upload's name: two different files never share a key."""
LONG_TAG_LENGTH = 16
"""The tag's length when two different contents of one name share the first :data:`TAG_LENGTH` digits."""


def upload_key(tenant: str, filename: str, now: datetime, *, tag: str = "") -> str:
    """``raw/uploads/tenants/<tenant>/YYYY/MM/DD/<UTC timestamp>_[<tag>_]<name>``: one tenant cannot escape its
    prefix, and the name is sanitised to ``[A-Za-z0-9._-]`` keeping the extension the ETL reads (lower-cased)."""
    name = timestamped_name(filename, now, suffixes=ACCEPTED_SUFFIXES, tag=tag)
    return UPLOADS_PREFIX + TenantPrefix(tenant).key(date_folder(now.date()), name)


def content_tag(path: Path) -> str:
    """The first :data:`TAG_LENGTH` hex digits of the file's SHA-256."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:TAG_LENGTH]


def _read_bytes(path: Path, max_bytes: int | None) -> bytes:
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise too_large(str(path), size, max_bytes)  # refused before reading it into memory
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({type(exc).__name__})") from None


def check_header(path: Path, aliases: Mapping[str, str] | None = None, *, max_bytes: int | None = None) -> None:
    """Fail fast on a file the ETL could not read at all (format, encoding, columns, rows, size over
    ``max_bytes``, decompressed included): the whole file is parsed with the ETL's own reader
    (:func:`etl.read_raw_object`, with the same aliases and limit)."""
    etl.read_raw_object(str(path), _read_bytes(path, max_bytes), aliases, max_bytes=max_bytes)


@dataclass(frozen=True)
class CheckedFile:
    """A file ``ingest`` accepts: the bytes to store, the name to store them under, the rows the ETL will keep."""

    path: Path
    data: bytes
    name: str
    valid_rows: int
    normalised: bool


def check_file(
    path: Path,
    aliases: Mapping[str, str] | None = None,
    *,
    max_bytes: int | None = None,
    options: ReadOptions | None = None,
    now: datetime | None = None,
    percent: bool = False,
) -> CheckedFile:
    """Read ``path`` with the ETL's reader and row rules; :class:`InputError` when it is refused (see the module
    docstring). ``now``: the latest acceptable timestamp (default: now); ``percent``: values under 1 are percent."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if not path.name.lower().endswith(ACCEPTED_SUFFIXES):
        raise InputError(f"{path}: unsupported file type; accepted: {', '.join(ACCEPTED_SUFFIXES)}")
    data = _read_bytes(path, max_bytes)
    if options:
        raw = etl.read_raw_object(str(path), data, aliases, max_bytes=max_bytes, options=options)
    else:
        raw = etl.read_raw_object(str(path), data, aliases, max_bytes=max_bytes)
    limit = pd.Timestamp(now or datetime.now(UTC))
    numbered = raw.assign(source=str(path), row_number=range(len(raw)))
    valid, rejected = etl.validate_samples(numbered, now=limit, aliases=aliases)
    if valid.empty:
        message = ingest_checks.no_rows_message(rejected, str(raw.attrs.get("shape", "")), raw.attrs.get("labels"))
        raise InputError(f"{path}: {message}")
    fractions = ingest_checks.fraction_metrics(valid)
    if fractions and not percent and not (options and options.fraction):
        raise InputError(f"{path}: {ingest_checks.fraction_message(fractions)}")
    if options:
        return CheckedFile(path, normalised_csv(raw), _normalised_name(path.name), len(valid), True)
    return CheckedFile(path, data, path.name, len(valid), False)


def _normalised_name(name: str) -> str:
    lower = name.lower()
    ext = next((x for x in sorted(ACCEPTED_SUFFIXES, key=len, reverse=True) if lower.endswith(x)), "")
    return f"{name[: len(name) - len(ext)]}_normalised.csv"


@dataclass
class IngestReport:
    """What one ``ingest`` did: URIs written, files refused (path, reason), files skipped as copies of another."""

    uploaded: list[str] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, Path]] = field(default_factory=list)


def ingest_batch(
    lake: Lake,
    paths: Sequence[Path],
    *,
    tenant: str = "default",
    now: datetime | None = None,
    aliases: Mapping[str, str] | None = None,
    max_bytes: int | None = None,
    options: ReadOptions | None = None,
    percent: bool = False,
) -> IngestReport:
    """Check every file, copy the good ones, list the bad ones (see the module docstring).

    Keys hold the UTC time of the batch and a hash of the stored bytes: files of one name in one batch or one
    second never share a key (a longer hash when the first digits collide); a file whose bytes another file of
    the batch already has is skipped, not stored twice.
    """
    stamp = now or datetime.now(UTC)
    TenantPrefix(tenant)  # an invalid tenant is refused before any file is read
    report = IngestReport()
    checked: list[CheckedFile] = []
    for path in paths:
        try:
            checked.append(check_file(path, aliases, max_bytes=max_bytes, options=options, now=stamp, percent=percent))
        except CapacityForecasterError as exc:
            report.refused.append((path, str(exc).removeprefix(f"{path}: ")))
    by_digest: dict[str, Path] = {}
    digest_of_key: dict[str, str] = {}
    for item in checked:
        digest = hashlib.sha256(item.data).hexdigest()
        if digest in by_digest:
            report.skipped.append((item.path, by_digest[digest]))
            continue
        by_digest[digest] = item.path
        key = upload_key(tenant, item.name, stamp, tag=digest[:TAG_LENGTH])
        if digest_of_key.get(key, digest) != digest:
            key = upload_key(tenant, item.name, stamp, tag=digest[:LONG_TAG_LENGTH])
        digest_of_key[key] = digest
        metadata = {"source": "ingest", "original_filename": item.path.name}
        if item.normalised and options:
            metadata["normalised"] = options.describe().encode("ascii", "replace").decode()
            report.uploaded.append(lake.store.put_bytes(key, item.data, content_type="text/csv", metadata=metadata))
        else:
            report.uploaded.append(lake.store.upload_file(item.path, key, metadata=metadata))
    return report


def ingest_files(
    lake: Lake,
    paths: Sequence[Path],
    *,
    tenant: str = "default",
    now: datetime | None = None,
    aliases: Mapping[str, str] | None = None,
    max_bytes: int | None = None,
    options: ReadOptions | None = None,
) -> list[str]:
    """:func:`ingest_batch`, then an :class:`InputError` naming the refused files if there were any (the good
    ones are copied all the same); returns the URIs written."""
    report = ingest_batch(lake, paths, tenant=tenant, now=now, aliases=aliases, max_bytes=max_bytes, options=options)
    if report.refused:
        path, reason = report.refused[0]
        more = f" (and {len(report.refused) - 1} more files refused)" if len(report.refused) > 1 else ""
        raise InputError(f"{path}: {reason}{more}")
    return report.uploaded
