"""Object keys: pure functions that build and check lake keys, tenant prefixes and ``s3://`` URIs.

A valid key is relative and ``/``-separated, with no empty, ``.`` or ``..`` segment, no backslash and no
control character: it means the same on S3 and on a local file system, and cannot climb out of its prefix.
Every rejection raises :class:`~capacity_forecaster.storage.errors.InvalidKeyError` (also a ``ValueError``).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from capacity_forecaster.storage.errors import InvalidKeyError

__all__ = [
    "TenantPrefix",
    "date_folder",
    "join_key",
    "parse_s3_uri",
    "timestamped_name",
    "validate_bucket_name",
    "validate_key",
    "validate_prefix",
]

MAX_KEY_BYTES = 1024  # the S3 limit, in UTF-8 bytes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TENANT = re.compile(r"[a-z0-9_-]{1,63}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_PARTITION_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_NAME = 200


def _invalid(problem: str, value: object, hint: str | None = None) -> InvalidKeyError:
    # Imported here: errors.py imports object_store.py, which imports this module.
    from capacity_forecaster.storage.errors import InvalidKeyError

    return InvalidKeyError(problem, key=str(value), hint=hint)


def __getattr__(name: str) -> Any:
    """Expose ``InvalidKeyError`` from here too, without a circular import at load time."""
    if name == "InvalidKeyError":
        from capacity_forecaster.storage.errors import InvalidKeyError

        return InvalidKeyError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_segments(text: str, what: str) -> None:
    """Reject the shapes that make a key ambiguous or let it escape its prefix."""
    if _CONTROL.search(text):
        raise _invalid(f"invalid {what}", text, "control characters are not allowed")
    if "\\" in text:
        raise _invalid(f"invalid {what}", text, "use '/' as the separator, not '\\'")
    if text.startswith("/"):
        raise _invalid(f"invalid {what}", text, "keys are relative; remove the leading '/'")
    for segment in text.split("/"):
        if segment == "":
            raise _invalid(f"invalid {what}", text, "empty segments ('//' or a trailing '/') are not allowed")
        if segment in (".", ".."):
            raise _invalid(f"invalid {what}", text, f"'{segment}' segments are not allowed")
    if len(text.encode("utf-8")) > MAX_KEY_BYTES:
        raise _invalid(f"invalid {what}", text[:40] + "...", f"keys are limited to {MAX_KEY_BYTES} bytes")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid relative object key; raise ``InvalidKeyError`` otherwise."""
    if not isinstance(key, str):
        raise _invalid("invalid object key", repr(key), "a key must be a string")
    if not key:
        raise _invalid("invalid object key", key, "the key is empty")
    _check_segments(key, "object key")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is empty or a valid key, optionally ending with one ``/``."""
    if not isinstance(prefix, str):
        raise _invalid("invalid key prefix", repr(prefix), "a prefix must be a string")
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if prefix and not body:
        raise _invalid("invalid key prefix", prefix, "use '' for the whole store, not '/'")
    if body:
        _check_segments(body, "key prefix")
    return prefix


def join_key(*parts: str) -> str:
    """Join key parts with ``/``; empty parts are skipped and one trailing ``/`` per part is dropped.

    ``join_key("raw/", "2026/01/02", "m.csv") == "raw/2026/01/02/m.csv"``. The result is validated, so a part
    such as ``"/abs"`` or ``".."`` is rejected rather than silently normalised.
    """
    pieces = []
    for part in parts:
        if not isinstance(part, str):
            raise _invalid("invalid object key", repr(part), "key parts must be strings")
        if part:
            pieces.append(part[:-1] if part.endswith("/") else part)
    if not pieces:
        raise _invalid("invalid object key", "", "no key parts given")
    return validate_key("/".join(pieces))


def date_folder(d: date, style: Literal["ymd", "hive"] = "ymd", name: str = "dt") -> str:
    """``YYYY/MM/DD`` (``style="ymd"``) or ``<name>=YYYY-MM-DD`` (``style="hive"``) for a date."""
    if not isinstance(d, date):
        raise TypeError(f"date_folder needs a date, got {type(d).__name__}")
    day = d.date() if isinstance(d, datetime) else d
    if style == "ymd":
        return f"{day.year:04d}/{day.month:02d}/{day.day:02d}"
    if style == "hive":
        if not _PARTITION_NAME.fullmatch(name):
            raise _invalid("invalid partition name", name, "use lower-case letters, digits and '_'")
        return f"{name}={day.isoformat()}"
    raise ValueError(f"unknown date folder style {style!r}: use 'ymd' or 'hive'")


def _safe_name(original_filename: str, suffixes: tuple[str, ...] = ()) -> str:
    """The file name part of ``original_filename`` reduced to ``[A-Za-z0-9._-]``, at most 200 characters.

    A suffix from ``suffixes`` (matched case-insensitively, the longest first) is kept whole and in lower case,
    however odd the rest of the name: ``..CSV`` becomes ``upload.csv``, never a name without its extension.
    """
    base = re.split(r"[/\\]", original_filename)[-1]
    lower = base.lower()
    ext = next((x for x in sorted(suffixes, key=len, reverse=True) if lower.endswith(x.lower())), "")
    stem = base[: len(base) - len(ext)] if ext else base
    ascii_name = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    if ext:
        safe = _UNSAFE_NAME_CHARS.sub("_", ascii_name).lstrip("._-").rstrip(".")
        return (safe[: _MAX_NAME - len(ext)] or "upload") + ext.lower()
    safe = _UNSAFE_NAME_CHARS.sub("_", ascii_name).strip("_").lstrip(".")
    if len(safe) > _MAX_NAME:  # keep a short extension, cut the stem
        stem, dot, tail = safe.rpartition(".")
        tail = dot + tail if dot and stem and len(tail) <= 16 else ""
        safe = safe[: _MAX_NAME - len(tail)] + tail
    return safe


def timestamped_name(
    original_filename: str, now: datetime | None = None, *, suffixes: tuple[str, ...] = (), tag: str = ""
) -> str:
    """``YYYYMMDDTHHMMSSZ_[<tag>_]<safe name>``: the UTC time of ``now`` (default: now) and a sanitised file name.

    ``suffixes``: extensions kept whole (see :func:`_safe_name`); ``tag``: a short ``[a-z0-9]`` marker (ingest
    passes a content hash) that keeps two files of one name and one second apart. A naive ``now`` is rejected:
    the prefix must be UTC, and a naive time could be local.
    """
    if not isinstance(original_filename, str) or not original_filename.strip():
        raise _invalid("invalid file name", original_filename, "the file name is empty")
    if tag and not re.fullmatch(r"[a-z0-9]{1,16}", tag):
        raise _invalid("invalid file name tag", tag, "use 1 to 16 characters from a-z and 0-9")
    safe = _safe_name(original_filename, suffixes)
    if not safe:
        raise _invalid("invalid file name", original_filename, "it has no usable characters ([A-Za-z0-9._-])")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("timestamped_name needs a timezone-aware datetime (e.g. datetime.now(UTC))")
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}_" + (f"{tag}_" if tag else "") + safe


class TenantPrefix:
    """Keys under ``tenants/<tenant>/``; no combination of parts yields a key outside that prefix."""

    ROOT = "tenants"

    def __init__(self, tenant: str) -> None:
        if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
            raise _invalid("invalid tenant id", tenant, "use 1 to 63 characters from a-z, 0-9, '-' and '_' (no '/')")
        self.tenant = tenant
        self.prefix = f"{self.ROOT}/{tenant}/"

    def key(self, *parts: str) -> str:
        """``tenants/<tenant>/<parts...>``; every part must itself be a valid relative key."""
        if not parts:
            raise _invalid("invalid object key", self.prefix, "name at least one key part under the tenant")
        for part in parts:
            validate_key(part)
        key = validate_key(self.prefix + "/".join(parts))
        if not key.startswith(self.prefix):  # cannot happen after validation; kept as a last line of defence
            raise _invalid("key escapes its tenant prefix", key, f"keys must start with {self.prefix}")
        return key

    def owns(self, key: str) -> bool:
        """Whether ``key`` lies under this tenant's prefix."""
        return isinstance(key, str) and key.startswith(self.prefix)

    def __repr__(self) -> str:
        return f"TenantPrefix({self.tenant!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TenantPrefix) and other.tenant == self.tenant

    def __hash__(self) -> int:
        return hash(self.tenant)


def validate_bucket_name(bucket: str) -> str:
    """Return ``bucket`` if it follows the S3 bucket naming rules; raise ``InvalidKeyError`` otherwise."""
    ok = (
        isinstance(bucket, str)
        and _BUCKET.fullmatch(bucket) is not None
        and ".." not in bucket
        and ".-" not in bucket
        and "-." not in bucket
        and not _IPV4.fullmatch(bucket)
    )
    if not ok:
        raise _invalid(
            "invalid bucket name",
            bucket,
            "use 3 to 63 characters from a-z, 0-9, '.' and '-', starting with a letter or digit",
        )
    return bucket


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into ``(bucket, prefix)``; the prefix may be ``""`` or end with ``/``."""
    if not isinstance(uri, str) or not uri.lower().startswith("s3://"):
        raise _invalid("invalid S3 URI", uri, "it must look like s3://bucket/prefix")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise _invalid("invalid S3 URI", uri, "the bucket name is missing (s3://bucket/prefix)")
    validate_bucket_name(bucket)
    return bucket, validate_prefix(prefix)
