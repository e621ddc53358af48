"""A thin, typed S3 client: configuration from the environment, encrypted uploads, translated errors.

Retries are botocore's own retry modes (``standard`` or ``adaptive``), which retry getting a response but not
reading its body: a GetObject body that breaks part-way is read again here (:meth:`S3Client.get_bytes`), from the
start, pinned to the first response's ETag, within the same number of attempts. Large files go through boto3's
transfer manager (multipart above ``multipart_threshold``). Every botocore failure is raised as a
:mod:`~capacity_forecaster.storage.errors` exception with the S3 error code, bucket, key and request id.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast, get_args
from urllib.parse import quote, urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError, ProfileNotFound, ResponseStreamingError
from botocore.exceptions import ReadTimeoutError as BotoReadTimeoutError
from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceeded
from s3transfer.exceptions import S3DownloadFailedError, S3UploadFailedError
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeoutError

from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.redact import redact
from capacity_forecaster.storage.errors import (
    S3AccessDeniedError,
    S3BucketNotFoundError,
    S3CredentialsError,
    S3ObjectNotFoundError,
    S3PreconditionFailedError,
    S3ThrottledError,
    S3TransferError,
    StorageError,
    translate_client_error,
)
from capacity_forecaster.storage.keys import validate_bucket_name, validate_key, validate_prefix
from capacity_forecaster.storage.object_store import ObjectInfo

__all__ = ["AccessCheck", "AccessReport", "MiB", "S3Client", "S3Config", "build_metadata", "guess_content_type"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
RetryMode = Literal["standard", "adaptive"]
SseMode = Literal["AES256", "aws:kms"]
RESERVED_METADATA = ("uploaded_at",)  # always set by the uploader
MAX_METADATA_BYTES = 2048  # S3's limit on user metadata
DELETE_BATCH = 1000  # S3's limit per DeleteObjects call

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9_-]*")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
_CONTENT_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".csv": "text/csv",
    ".json": "application/json",
    ".gz": "application/gzip",
}
_MIME = mimetypes.MimeTypes()  # built-in table only: the same answer on every machine
_TRANSLATABLE: tuple[type[BaseException], ...] = (
    BotoCoreError,
    ClientError,
    Boto3Error,
    TransferRetriesExceeded,
    S3UploadFailedError,
    S3DownloadFailedError,
)
_TRANSFER_FAILURES: tuple[type[BaseException], ...] = (*_TRANSLATABLE, OSError)  # OSError: the local file
BODY_READ_ERRORS: tuple[type[BaseException], ...] = (
    IncompleteReadError,
    ResponseStreamingError,
    BotoReadTimeoutError,
    ProtocolError,
    Urllib3ReadTimeoutError,
    ConnectionError,  # ConnectionResetError and friends
)
"""A response body that broke part-way: the read is retried (botocore retries only getting the response)."""
BODY_RETRY_BASE_S = 0.2
BODY_RETRY_CAP_S = 5.0
# Errors that say something specific (credentials, permissions, names, throttling): kept as such in transfers.
_SPECIFIC_ERRORS = (
    S3CredentialsError,
    S3AccessDeniedError,
    S3BucketNotFoundError,
    S3ObjectNotFoundError,
    S3ThrottledError,
)


# --- configuration -----------------------------------------------------------------------------------------


def _fail(label: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{label} must be {expected}, got {value!r}")


def _check_int(label: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(label, f"an integer from {low} to {high}", value)


def _check_timeout(label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise _fail(label, "a number of seconds above 0 and at most 3600", value)


def _check_endpoint(label: str, value: object) -> None:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise _fail(label, "an http:// or https:// URL", value)
    if "@" in parts.netloc or redact(str(value)) != value:  # botocore cannot use them, and they would be logged
        raise _fail(label, "a URL without credentials (give them as AWS_PROFILE or AWS_* variables)", value)


@dataclass(frozen=True)
class S3Config:
    """How to reach S3. Build it with :meth:`from_env` to honour the ``CF_S3_*`` and ``AWS_*`` variables."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    profile: str | None = None
    retry_mode: RetryMode = "standard"
    max_attempts: int = 5  # total attempts per request, the first one included
    multipart_threshold: int = 5 * MiB
    multipart_chunksize: int = 8 * MiB
    max_concurrency: int = 4
    sse: SseMode = "AES256"
    kms_key_id: str | None = None
    connect_timeout: float = 5
    read_timeout: float = 60

    def __post_init__(self) -> None:
        if not isinstance(self.region, str) or not _REGION.fullmatch(self.region):
            raise _fail("region", "an AWS region such as 'eu-west-1'", self.region)
        if self.endpoint_url is not None:
            _check_endpoint("endpoint_url", self.endpoint_url)
        if self.profile is not None and (not isinstance(self.profile, str) or not self.profile.strip()):
            raise _fail("profile", "a non-empty profile name", self.profile)
        if self.retry_mode not in get_args(RetryMode):
            raise _fail("retry_mode", "'standard' or 'adaptive'", self.retry_mode)
        _check_int("max_attempts", self.max_attempts, 1, 20)
        _check_int("multipart_threshold", self.multipart_threshold, 5 * MiB, 5 * GiB)
        _check_int("multipart_chunksize", self.multipart_chunksize, 5 * MiB, 5 * GiB)
        _check_int("max_concurrency", self.max_concurrency, 1, 64)
        _check_timeout("connect_timeout", self.connect_timeout)
        _check_timeout("read_timeout", self.read_timeout)
        if self.sse not in get_args(SseMode):
            raise _fail("sse", "'AES256' or 'aws:kms'", self.sse)
        if self.kms_key_id is not None:
            if not isinstance(self.kms_key_id, str) or not self.kms_key_id or any(c.isspace() for c in self.kms_key_id):
                raise _fail("kms_key_id", "a KMS key id, key ARN or alias", self.kms_key_id)
            if self.sse != "aws:kms":
                raise ConfigError("kms_key_id is set but sse is 'AES256': set sse to 'aws:kms' or drop the key id")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> S3Config:
        """Read the settings from ``environ`` (default ``os.environ``); ``overrides`` that are not None win.

        Variables: CF_S3_REGION / AWS_REGION / AWS_DEFAULT_REGION, CF_S3_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 /
        AWS_ENDPOINT_URL, AWS_PROFILE, CF_S3_RETRY_MODE, CF_S3_MAX_ATTEMPTS, CF_S3_SSE, CF_S3_KMS_KEY_ID.
        """
        env = os.environ if environ is None else environ
        values = _settings_from_env(env)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown S3 setting {unknown[0]!r}: use one of {', '.join(sorted(known))}")
        values.update({name: value for name, value in overrides.items() if value is not None})
        if values.get("kms_key_id") and "sse" not in values:
            values["sse"] = "aws:kms"  # a key id alone means SSE-KMS
        return cls(**values)

    def with_overrides(self, **changes: Any) -> S3Config:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)

    def session(self) -> boto3.Session:
        """A boto3 session with this profile and region; a missing profile is a one-line :class:`ConfigError`."""
        try:
            return boto3.Session(profile_name=self.profile, region_name=self.region)
        except ProfileNotFound:
            raise ConfigError(f"AWS profile {self.profile!r} not found: check AWS_PROFILE and ~/.aws/config") from None

    def botocore_config(self, **extra: Any) -> BotoConfig:
        """The botocore settings every AWS client of the project shares (retry mode and attempts, timeouts, user
        agent), plus ``extra`` ones of a particular client."""
        return BotoConfig(
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            user_agent_extra="capacity-forecaster",
            **extra,
        )


def _first(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings the environment sets, each checked with the variable's name in the message."""
    values: dict[str, Any] = {}
    if found := _first(env, "CF_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        if not _REGION.fullmatch(found[1]):
            raise _fail(found[0], "an AWS region such as 'eu-west-1'", found[1])
        values["region"] = found[1]
    if found := _first(env, "CF_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        _check_endpoint(found[0], found[1])
        values["endpoint_url"] = found[1]
    if found := _first(env, "AWS_PROFILE"):
        values["profile"] = found[1]
    if found := _first(env, "CF_S3_RETRY_MODE"):
        if found[1].lower() not in get_args(RetryMode):
            raise _fail(found[0], "'standard' or 'adaptive'", found[1])
        values["retry_mode"] = found[1].lower()
    if found := _first(env, "CF_S3_MAX_ATTEMPTS"):
        try:
            values["max_attempts"] = int(found[1])
        except ValueError:
            raise _fail(found[0], "an integer from 1 to 20", found[1]) from None
        _check_int(found[0], values["max_attempts"], 1, 20)
    if found := _first(env, "CF_S3_SSE"):
        sse = {"aes256": "AES256", "aws:kms": "aws:kms"}.get(found[1].lower())
        if sse is None:
            raise _fail(found[0], "'AES256' or 'aws:kms'", found[1])
        values["sse"] = sse
    if found := _first(env, "CF_S3_KMS_KEY_ID"):
        values["kms_key_id"] = found[1]
    return values


# --- helpers -----------------------------------------------------------------------------------------------


def guess_content_type(name: str) -> str:
    """Content type of a file or key name, from its extension (``application/octet-stream`` if not known)."""
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    guessed, _encoding = _MIME.guess_type(PurePosixPath(name).name, strict=False)
    return guessed or "application/octet-stream"


def _header_safe(value: str) -> str:
    """Metadata travels as HTTP headers: printable ASCII stays, anything else is percent-encoded (UTF-8)."""
    return value if _PRINTABLE_ASCII.fullmatch(value) else quote(value, safe="")


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_metadata(
    *, source: str, original_filename: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """User metadata of an upload: ``uploaded_at`` (now, UTC), ``source``, ``original_filename`` and checked extras.

    ``source`` and ``original_filename`` given in ``extra`` win over the arguments (the ObjectStore protocol has
    only ``metadata`` to carry them); ``uploaded_at`` cannot be set. Non-ASCII values are percent-encoded.
    """
    meta: dict[str, str] = {"source": source}
    if original_filename is not None:
        meta["original_filename"] = original_filename
    for name, value in (extra or {}).items():
        if name in RESERVED_METADATA:
            raise InputError(f"metadata key {name!r} is set by the uploader and cannot be given")
        if not isinstance(name, str) or not _METADATA_KEY.fullmatch(name):
            raise InputError(f"metadata key {name!r} must use lower-case letters, digits, '-' and '_'")
        if not isinstance(value, str):
            raise InputError(f"metadata value of {name!r} must be a string, got {type(value).__name__}")
        meta[name] = value
    meta = {name: _header_safe(value) for name, value in meta.items()}
    meta["uploaded_at"] = _utc_now_iso()
    size = sum(len(k) + len(v) for k, v in meta.items())
    if size > MAX_METADATA_BYTES:
        raise InputError(f"object metadata is {size} bytes; S3 allows {MAX_METADATA_BYTES}: send less metadata")
    return meta


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _quoted(etag: str) -> str:
    return f'"{_etag(etag)}"'


@dataclass(frozen=True)
class AccessCheck:
    """One line of a ``doctor`` report."""

    name: str
    ok: bool
    message: str


@dataclass(frozen=True)
class AccessReport:
    """What :meth:`S3Client.check_access` found, check by check."""

    bucket: str
    checks: tuple[AccessCheck, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[AccessCheck]:
        return [check for check in self.checks if not check.ok]

    def lines(self) -> list[str]:
        """``[ok] name: message`` / ``[FAIL] name: message`` lines for printing."""
        return [f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.message}" for c in self.checks]


# --- the client --------------------------------------------------------------------------------------------


class S3Client:
    """S3 operations with encryption, metadata, retries and error translation built in."""

    def __init__(self, config: S3Config | None = None, *, session: boto3.Session | None = None) -> None:
        self.config = config or S3Config.from_env()
        self._session = session or self.config.session()
        try:  # creating the client resolves the credentials: a partial or broken set fails here
            self._s3: Any = self._session.client(  # Any: no S3 type stubs are installed
                "s3",
                region_name=self.config.region,
                endpoint_url=self.config.endpoint_url,
                config=self._botocore_config(),
            )
        except _TRANSLATABLE as exc:
            raise translate_client_error(exc, operation="CreateClient") from exc
        self._transfer_config = TransferConfig(
            multipart_threshold=self.config.multipart_threshold,
            multipart_chunksize=self.config.multipart_chunksize,
            max_concurrency=self.config.max_concurrency,
            preferred_transfer_client="classic",
        )
        self._uploads_lock = threading.Lock()
        self._multipart_ids: dict[tuple[str, str], set[str]] = {}
        self._s3.meta.events.register("after-call.s3.CreateMultipartUpload", self._on_multipart_created)

    # -- plumbing

    def _botocore_config(self) -> BotoConfig:
        cfg = self.config
        return cfg.botocore_config(
            max_pool_connections=max(10, cfg.max_concurrency + 2),
            s3={"addressing_style": "path"} if cfg.endpoint_url else None,
        )

    @property
    def boto_client(self) -> Any:
        """The underlying boto3 S3 client (for what this class does not wrap)."""
        return self._s3

    def close(self) -> None:
        """Close the HTTP connections."""
        self._s3.close()

    def __enter__(self) -> S3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _translated(self, operation: str, bucket: str, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except _TRANSLATABLE as exc:
            raise translate_client_error(exc, operation=operation, bucket=bucket, key=key) from exc

    def _sse_args(self) -> dict[str, str]:
        args: dict[str, str] = {"ServerSideEncryption": self.config.sse}
        if self.config.sse == "aws:kms" and self.config.kms_key_id:
            args["SSEKMSKeyId"] = self.config.kms_key_id
        return args

    @staticmethod
    def uri(bucket: str, key: str = "") -> str:
        """``s3://bucket/key``."""
        return f"s3://{bucket}/{key}"

    # -- buckets

    def ensure_bucket(self, bucket: str) -> bool:
        """Create ``bucket`` in the configured region unless it exists; True if this call created it."""
        validate_bucket_name(bucket)
        try:
            with self._translated("HeadBucket", bucket):
                self._s3.head_bucket(Bucket=bucket)
            return False
        except S3BucketNotFoundError:
            pass
        params: dict[str, Any] = {"Bucket": bucket}
        if self.config.region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.config.region}
        try:
            self._s3.create_bucket(**params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":
                return False  # created concurrently by another of our processes
            raise translate_client_error(exc, operation="CreateBucket", bucket=bucket) from exc
        except _TRANSLATABLE as exc:
            raise translate_client_error(exc, operation="CreateBucket", bucket=bucket) from exc
        log.info("created bucket s3://%s in %s", bucket, self.config.region)
        return True

    # -- writes

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        source: str = "cli",
    ) -> str:
        """Write ``data`` to ``key`` in one (atomic) PUT; return its URI."""
        validate_key(key)
        meta = build_metadata(source=source, extra=metadata)
        with self._translated("PutObject", bucket, key):
            self._s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType=content_type or guess_content_type(key),
                Metadata=meta,
                **self._sse_args(),
            )
        return self.uri(bucket, key)

    def put_conditional(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        content_type: str | None = None,
        source: str = "cli",
    ) -> str:
        """Write ``data`` only if no object is at ``key`` (``If-None-Match: *``) or, with ``if_match``, only if
        the object's ETag is still that; return the new ETag. :class:`S3PreconditionFailedError` otherwise (a
        missing object under ``if_match`` included)."""
        validate_key(key)
        condition = {"IfMatch": _quoted(if_match)} if if_match is not None else {"IfNoneMatch": "*"}
        with self._translated("PutObject", bucket, key):
            try:
                response = self._s3.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=data,
                    ContentType=content_type or guess_content_type(key),
                    Metadata=build_metadata(source=source),
                    **condition,
                    **self._sse_args(),
                )
            except ClientError as exc:
                if if_match is not None and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise S3PreconditionFailedError(
                        code="NoSuchKey", bucket=bucket, key=key, operation="PutObject"
                    ) from None
                raise
        return _etag(response.get("ETag"))

    def get_with_etag(self, bucket: str, key: str) -> tuple[bytes, str]:
        """The whole object and its ETag; :class:`S3ObjectNotFoundError` when it does not exist."""
        validate_key(key)
        return self._get_object(bucket, key)

    def delete_if_match(self, bucket: str, key: str, etag: str) -> None:
        """Delete ``key`` only if its ETag is still ``etag`` (a conditional delete; S3 needs s3:GetObject on the
        key as well as s3:DeleteObject for it). Already gone: not an error."""
        validate_key(key)
        try:
            with self._translated("DeleteObject", bucket, key):
                self._s3.delete_object(Bucket=bucket, Key=key, IfMatch=_quoted(etag))
        except S3ObjectNotFoundError:
            return

    def upload_file(
        self,
        path: str | Path,
        bucket: str,
        key: str,
        *,
        source: str = "cli",
        content_type: str | None = None,
        extra_metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Upload a local file through the transfer manager (multipart above the threshold); return its URI.

        A failed multipart upload is aborted, so no orphaned parts are left to pay for.
        """
        path = Path(path)
        validate_key(key)
        if not path.is_file():
            raise InputError(f"cannot upload {path}: no such file")
        size = path.stat().st_size
        extra_args: dict[str, Any] = {
            "ContentType": content_type or guess_content_type(path.name),
            "Metadata": build_metadata(source=source, original_filename=path.name, extra=extra_metadata),
            **self._sse_args(),
        }
        multipart = size >= self.config.multipart_threshold
        try:
            with create_transfer_manager(self._s3, self._transfer_config) as manager:
                manager.upload(str(path), bucket, key, extra_args=extra_args).result()
        except _TRANSFER_FAILURES as exc:
            err = translate_client_error(exc, operation="PutObject", bucket=bucket, key=key)
            if multipart:
                self._abort_leftover_uploads(bucket, key)
            done = "the multipart upload was aborted, nothing was written" if multipart else "nothing was written"
            raise self._as_transfer_error(err, done) from exc
        finally:
            if multipart:
                with self._uploads_lock:
                    self._multipart_ids.pop((bucket, key), None)
        log.info("uploaded %s to s3://%s/%s (%d bytes%s)", path.name, bucket, key, size, ", multipart" * multipart)
        return self.uri(bucket, key)

    def copy_object(self, bucket: str, key: str, target: str) -> str:
        """Copy ``key`` to ``target`` in the bucket, server-side (multipart copy above the threshold), encrypted and
        with its metadata; return the new URI. Nothing passes through this process."""
        validate_key(key)
        validate_key(target)
        try:
            with create_transfer_manager(self._s3, self._transfer_config) as manager:
                source = {"Bucket": bucket, "Key": key}
                manager.copy(source, bucket, target, extra_args=self._sse_args()).result()
        except _TRANSFER_FAILURES as exc:
            err = translate_client_error(exc, operation="CopyObject", bucket=bucket, key=key)
            raise self._as_transfer_error(err, f"the copy to {target} did not complete") from exc
        return self.uri(bucket, target)

    @staticmethod
    def _as_transfer_error(err: StorageError, what_happened: str) -> StorageError:
        """Keep specific errors (credentials, access, names, throttling); make the rest an S3TransferError."""
        if isinstance(err, (*_SPECIFIC_ERRORS, S3TransferError)):
            return err
        return S3TransferError(
            hint=f"{what_happened}; run the command again",
            code=err.code,
            bucket=err.bucket,
            key=err.key,
            request_id=err.request_id,
            operation=err.operation,
            status=err.status,
            attempts=err.attempts,
            host_id=err.host_id,
        )

    def _on_multipart_created(self, parsed: Mapping[str, Any] | None = None, **_: Any) -> None:
        """Event hook: note the multipart uploads this client starts, to abort them if the transfer fails."""
        if parsed and parsed.get("UploadId") and parsed.get("Bucket") and parsed.get("Key"):
            with self._uploads_lock:
                self._multipart_ids.setdefault((parsed["Bucket"], parsed["Key"]), set()).add(parsed["UploadId"])

    def _abort_leftover_uploads(self, bucket: str, key: str) -> int:
        """Abort this client's still-open multipart uploads of ``key`` (s3transfer normally has already)."""
        with self._uploads_lock:
            ours = self._multipart_ids.pop((bucket, key), set())
        if not ours:
            return 0
        aborted = 0
        try:
            listing = self._s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
            for upload in listing.get("Uploads", []):
                if upload.get("Key") == key and upload.get("UploadId") in ours:
                    self._s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                    aborted += 1
        except _TRANSLATABLE as exc:
            err = translate_client_error(exc, operation="AbortMultipartUpload", bucket=bucket, key=key)
            log.warning("could not check for or abort leftover multipart uploads: %s", err)
        if aborted:
            log.warning("aborted %d leftover multipart upload(s) of s3://%s/%s", aborted, bucket, key)
        return aborted

    # -- reads

    def get_bytes(self, bucket: str, key: str) -> bytes:
        """The whole object; :class:`S3ObjectNotFoundError` when it does not exist."""
        validate_key(key)
        return self._get_object(bucket, key)[0]

    def _get_object(self, bucket: str, key: str) -> tuple[bytes, str]:
        """GetObject and read its body; a body that breaks part-way (:data:`BODY_READ_ERRORS`) is fetched again,
        with back-off, up to ``max_attempts`` in all. Later GETs carry ``IfMatch`` on the first response's ETag,
        so a changed object is never mixed in (:class:`S3PreconditionFailedError` if it changed meanwhile)."""
        etag: str | None = None
        attempts = self.config.max_attempts
        for attempt in range(1, attempts + 1):
            condition = {"IfMatch": _quoted(etag)} if etag else {}
            with self._translated("GetObject", bucket, key):
                response = self._s3.get_object(Bucket=bucket, Key=key, **condition)
            etag = etag or _etag(response.get("ETag"))
            body = response["Body"]
            try:
                return cast(bytes, body.read()), etag
            except BODY_READ_ERRORS as exc:
                if attempt == attempts:
                    raise S3TransferError(
                        hint=f"the body broke part-way {attempts} times ({type(exc).__name__}); run the command again",
                        code=type(exc).__name__,
                        bucket=bucket,
                        key=key,
                        operation="GetObject",
                        attempts=attempts,
                    ) from exc
                delay = min(BODY_RETRY_CAP_S, BODY_RETRY_BASE_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning(
                    "GetObject s3://%s/%s: body broke part-way (%s), reading again in %.2fs (attempt %d of %d)",
                    *(bucket, key, type(exc).__name__, delay, attempt + 1, attempts),
                )
                time.sleep(delay)
            finally:
                body.close()
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def download_file(self, bucket: str, key: str, path: str | Path) -> Path:
        """Download to ``path`` (written to a temporary name, then renamed); return the path.

        Above the multipart threshold the object is fetched in ranges; a range whose body breaks part-way is
        fetched again by s3transfer (``num_download_attempts``, 5), and when one never arrives whole nothing is
        left at ``path``."""
        validate_key(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with create_transfer_manager(self._s3, self._transfer_config) as manager:
                manager.download(bucket, key, str(path)).result()
        except TransferRetriesExceeded as exc:  # a body (of a range, above the threshold) broke on every attempt
            attempts = self._transfer_config.num_download_attempts
            cause = type(exc.last_exception).__name__
            raise S3TransferError(
                hint=f"the download did not complete: its body broke part-way {attempts} times ({cause}); "
                "run the command again",
                code=cause,
                bucket=bucket,
                key=key,
                operation="GetObject",
                attempts=attempts,
            ) from exc
        except _TRANSFER_FAILURES as exc:
            err = translate_client_error(exc, operation="GetObject", bucket=bucket, key=key)
            raise self._as_transfer_error(err, "the download did not complete") from exc
        return path

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` in key order, fetched lazily page by page (1,000 keys per request)."""
        validate_prefix(prefix)  # here, not in the generator: a bad prefix fails at the call
        return self._iter_objects(bucket, prefix)

    def _iter_objects(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._s3.get_paginator("list_objects_v2")
        with self._translated("ListObjectsV2", bucket, prefix or None):
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item.get("Size", 0)),
                        last_modified=item["LastModified"].astimezone(UTC),
                        etag=_etag(item.get("ETag")),
                        storage_class=item.get("StorageClass") or "STANDARD",
                    )

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        """The object's HEAD response (size, type, metadata, encryption), without the response metadata."""
        validate_key(key)
        with self._translated("HeadObject", bucket, key):
            response = dict(self._s3.head_object(Bucket=bucket, Key=key))
        response.pop("ResponseMetadata", None)
        if "ETag" in response:
            response["ETag"] = _etag(response["ETag"])
        return response

    def exists(self, bucket: str, key: str) -> bool:
        """Whether an object is at ``key``.

        Asked with a one-key listing rather than a HEAD: under IAM policies that scope ``s3:ListBucket`` to
        prefixes (as the stack's grants do), S3 answers a HEAD of a missing key with 403, not 404.
        """
        validate_key(key)
        with self._translated("ListObjectsV2", bucket, key):
            page = self._s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(item.get("Key") == key for item in page.get("Contents", []))

    # -- deletes

    def delete(self, bucket: str, key: str) -> None:
        """Delete one object; a missing object is not an error."""
        validate_key(key)
        with self._translated("DeleteObject", bucket, key):
            self._s3.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, bucket: str, prefix: str, *, allow_whole_bucket: bool = False) -> int:
        """Delete every object under ``prefix`` (1,000 per request); return how many were deleted.

        An empty prefix means the whole bucket and needs ``allow_whole_bucket=True``.
        """
        validate_prefix(prefix)
        if not prefix and not allow_whole_bucket:
            raise InputError(f"refusing to delete everything in s3://{bucket}: pass a prefix")
        batch: list[str] = []
        deleted = 0
        for info in self.list_objects(bucket, prefix):
            batch.append(info.key)
            if len(batch) == DELETE_BATCH:
                deleted += self._delete_batch(bucket, batch)
                batch = []
        if batch:
            deleted += self._delete_batch(bucket, batch)
        return deleted

    def _delete_batch(self, bucket: str, keys: list[str]) -> int:
        with self._translated("DeleteObjects", bucket, keys[0]):
            response = self._s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            fake = ClientError(
                {
                    "Error": {"Code": first.get("Code"), "Message": first.get("Message")},
                    "ResponseMetadata": response.get("ResponseMetadata", {}),
                },
                "DeleteObjects",
            )
            raise translate_client_error(fake, operation="DeleteObjects", bucket=bucket, key=first.get("Key"))
        return len(keys)

    # -- doctor

    def check_access(self, bucket: str, *, probe_prefix: str = "_doctor/", check_identity: bool = True) -> AccessReport:
        """For ``doctor``: credentials, identity (STS), bucket, list, and write/read/delete of a probe object.

        Expected failures never raise: each check is a line saying what is wrong and what to do. A check that
        cannot run because an earlier one failed is reported as skipped.
        """
        prefix = validate_prefix(probe_prefix.rstrip("/") + "/" if probe_prefix.strip("/") else "")
        probe_key = f"{prefix}_cf-doctor-probe-{uuid.uuid4().hex}.txt"
        steps: list[tuple[str, Callable[[], str]]] = [("credentials", self._check_credentials)]
        if check_identity:
            steps.append(("identity", self._check_identity))
        steps += [
            ("bucket", lambda: self._check_bucket(bucket)),
            ("list", lambda: self._check_list(bucket, prefix)),
            ("write", lambda: self._check_write(bucket, probe_key)),
            ("read", lambda: self._check_read(bucket, probe_key)),
            ("delete", lambda: self._check_delete(bucket, probe_key)),
        ]
        checks: list[AccessCheck] = []
        blocked: str | None = None
        for name, step in steps:
            if blocked and not (name == "delete" and _passed(checks, "write")):
                checks.append(AccessCheck(name, False, f"skipped: the {blocked} check failed"))
                continue
            try:
                checks.append(AccessCheck(name, True, step()))
            except StorageError as exc:
                checks.append(AccessCheck(name, False, str(exc)))
                if name in ("credentials", "bucket", "write") or isinstance(exc, S3CredentialsError):
                    blocked = blocked or name
        return AccessReport(bucket, tuple(checks))

    def _check_credentials(self) -> str:
        try:
            credentials = self._session.get_credentials()
        except _TRANSLATABLE as exc:
            raise translate_client_error(exc, operation="ResolveCredentials") from exc
        if credentials is None:
            raise S3CredentialsError(
                "no AWS credentials found", hint="set AWS_PROFILE, run `aws configure` or `aws sso login`"
            )
        return f"found (source: {credentials.method})"

    def _check_identity(self) -> str:
        with self._translated("CreateClient", ""):
            sts = self._session.client(
                "sts",
                region_name=self.config.region,
                endpoint_url=self.config.endpoint_url,
                config=self._botocore_config(),
            )
        try:
            with self._translated("GetCallerIdentity", ""):
                identity = sts.get_caller_identity()
        finally:
            sts.close()
        return f"account {identity.get('Account')}, {identity.get('Arn')}"

    def _check_bucket(self, bucket: str) -> str:
        validate_bucket_name(bucket)
        with self._translated("HeadBucket", bucket):
            response = self._s3.head_bucket(Bucket=bucket)
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = response.get("BucketRegion") or headers.get("x-amz-bucket-region")
        return f"s3://{bucket} exists" + (f" (region {region})" if region else "")

    def _check_list(self, bucket: str, prefix: str) -> str:
        with self._translated("ListObjectsV2", bucket, prefix):
            self._s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return f"can list s3://{bucket}/{prefix}"

    def _check_write(self, bucket: str, key: str) -> str:
        uri = self.put_bytes(bucket, key, b"capacity-forecaster access probe\n", source="doctor")
        return f"can write {uri} (SSE {self.config.sse})"

    def _check_read(self, bucket: str, key: str) -> str:
        self.get_bytes(bucket, key)
        return f"can read s3://{bucket}/{key}"

    def _check_delete(self, bucket: str, key: str) -> str:
        try:
            self.delete(bucket, key)
        except StorageError as exc:
            exc.hint = f"{exc.hint}; then delete the probe object by hand".lstrip("; ")
            raise
        return f"can delete s3://{bucket}/{key}"


def _passed(checks: list[AccessCheck], name: str) -> bool:
    return any(check.name == name and check.ok for check in checks)
