"""S3Client against a moto server over real HTTP, with a fault-injecting proxy for throttling and auth errors.

Retry back-off sleeps are recorded instead of slept (``no_backoff``): botocore's retry logic still runs, only
its ``time.sleep`` is replaced, so the tests stay fast and deterministic.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.endpoint
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError
from fault_proxy import FaultProxy, SeenRequest

from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.storage.errors import (
    InvalidKeyError,
    S3AccessDeniedError,
    S3BucketNotFoundError,
    S3ConnectionError,
    S3CredentialsError,
    S3ObjectNotFoundError,
    S3PreconditionFailedError,
    S3ThrottledError,
    S3TransferError,
    StorageError,
    translate_client_error,
)
from capacity_forecaster.storage.object_store import ObjectNotFound
from capacity_forecaster.storage.s3_client import MiB, S3Client, S3Config, guess_content_type

SMALL_PARTS: dict[str, Any] = {"multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB}
# One part at a time where a test counts requests after a failure: with concurrent parts, s3transfer interrupts
# the parts still in flight (its InterruptReader raises mid-body), and botocore retries those once more.
SERIAL_SMALL_PARTS: dict[str, Any] = {**SMALL_PARTS, "max_concurrency": 1}
BIG_SIZE = 11 * MiB  # three parts of 5, 5 and 1 MiB


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record botocore's retry back-off delays instead of sleeping them; returns the list of delays."""
    delays: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=delays.append))
    return delays


@pytest.fixture
def fault_proxy(moto_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server) as proxy:
        yield proxy


@pytest.fixture
def proxied(s3_config: S3Config, fault_proxy: FaultProxy, no_backoff: list[float]) -> Iterator[S3Client]:
    """An S3Client whose requests go through the fault proxy (3 attempts per request)."""
    with S3Client(replace(s3_config, endpoint_url=fault_proxy.endpoint_url, max_attempts=3)) as client:
        yield client


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    block = hashlib.sha256(b"capacity").digest() * 32  # 1 KiB, not all one byte
    path.write_bytes(block * (BIG_SIZE // len(block)))
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _open_uploads(s3_boto_client: Any, bucket: str) -> list[dict[str, Any]]:
    return list(s3_boto_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _put_key(key: str) -> Any:
    return lambda r: r.is_put_object and r.path.endswith("/" + key)


# --- S3Config ----------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = S3Config.from_env({})
    assert cfg == S3Config()
    assert (cfg.region, cfg.retry_mode, cfg.max_attempts, cfg.sse) == ("us-east-1", "standard", 5, "AES256")
    assert (cfg.multipart_threshold, cfg.multipart_chunksize, cfg.max_concurrency) == (5 * MiB, 8 * MiB, 4)


def test_config_from_env_reads_every_variable() -> None:
    env = {
        "CF_S3_REGION": "eu-west-3",
        "AWS_REGION": "us-west-2",
        "CF_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ENDPOINT_URL": "http://ignored:1",
        "AWS_PROFILE": "lake",
        "CF_S3_RETRY_MODE": "ADAPTIVE",
        "CF_S3_MAX_ATTEMPTS": "8",
        "CF_S3_SSE": "aws:kms",
        "CF_S3_KMS_KEY_ID": "alias/lake",
    }
    cfg = S3Config.from_env(env)
    assert cfg == S3Config(
        region="eu-west-3",
        endpoint_url="http://127.0.0.1:9000",
        profile="lake",
        retry_mode="adaptive",
        max_attempts=8,
        sse="aws:kms",
        kms_key_id="alias/lake",
    )


@pytest.mark.parametrize(
    ("env", "region", "endpoint"),
    [
        ({"AWS_DEFAULT_REGION": "eu-north-1"}, "eu-north-1", None),
        ({"AWS_DEFAULT_REGION": "eu-north-1", "AWS_REGION": "ap-south-1"}, "ap-south-1", None),
        ({"AWS_REGION": "", "AWS_DEFAULT_REGION": "us-gov-west-1"}, "us-gov-west-1", None),
        ({"AWS_ENDPOINT_URL": "http://a:1"}, "us-east-1", "http://a:1"),
        ({"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "https://b"}, "us-east-1", "https://b"),
    ],
)
def test_config_from_env_precedence(env: dict[str, str], region: str, endpoint: str | None) -> None:
    cfg = S3Config.from_env(env)
    assert (cfg.region, cfg.endpoint_url) == (region, endpoint)


def test_config_kms_key_alone_means_sse_kms() -> None:
    assert S3Config.from_env({"CF_S3_KMS_KEY_ID": "1234abcd"}).sse == "aws:kms"


def test_config_overrides_win_and_none_is_ignored() -> None:
    cfg = S3Config.from_env({"CF_S3_REGION": "eu-west-1"}, region=None, max_attempts=2)
    assert (cfg.region, cfg.max_attempts) == ("eu-west-1", 2)
    assert S3Config.from_env({"CF_S3_REGION": "eu-west-1"}, region="eu-west-2").region == "eu-west-2"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CF_S3_REGION": "Europe"}, "CF_S3_REGION must be an AWS region"),
        ({"AWS_DEFAULT_REGION": "eu_west_1"}, "AWS_DEFAULT_REGION must be an AWS region"),
        ({"CF_S3_ENDPOINT_URL": "localhost:9000"}, "CF_S3_ENDPOINT_URL must be an http:// or https:// URL"),
        ({"AWS_ENDPOINT_URL_S3": "ftp://x"}, "AWS_ENDPOINT_URL_S3 must be an http:// or https:// URL"),
        ({"CF_S3_RETRY_MODE": "legacy"}, "CF_S3_RETRY_MODE must be 'standard' or 'adaptive'"),
        ({"CF_S3_MAX_ATTEMPTS": "many"}, "CF_S3_MAX_ATTEMPTS must be an integer from 1 to 20, got 'many'"),
        ({"CF_S3_MAX_ATTEMPTS": "0"}, "CF_S3_MAX_ATTEMPTS must be an integer from 1 to 20, got 0"),
        ({"CF_S3_MAX_ATTEMPTS": "21"}, "CF_S3_MAX_ATTEMPTS must be an integer from 1 to 20"),
        ({"CF_S3_SSE": "none"}, "CF_S3_SSE must be 'AES256' or 'aws:kms'"),
        ({"CF_S3_SSE": "AES256", "CF_S3_KMS_KEY_ID": "k"}, "kms_key_id is set but sse is 'AES256'"),
        ({"CF_S3_KMS_KEY_ID": "two words"}, "kms_key_id must be a KMS key id"),
    ],
)
def test_config_from_env_rejects_bad_values(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        S3Config.from_env(env)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_attempts": True},
        {"max_attempts": 0},
        {"multipart_chunksize": 1024},
        {"multipart_threshold": 6 * 1024**3},
        {"max_concurrency": 0},
        {"connect_timeout": 0},
        {"read_timeout": "60"},
        {"retry_mode": "legacy"},
        {"sse": "SSE-C"},
        {"profile": " "},
        {"endpoint_url": "s3.amazonaws.com"},
    ],
)
def test_config_validates_fields(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        S3Config(**changes)


def test_config_rejects_unknown_overrides() -> None:
    with pytest.raises(ConfigError, match="unknown S3 setting 'bucket'"):
        S3Config.from_env({}, bucket="x")


def test_client_builds_botocore_config_from_settings(s3_config: S3Config) -> None:
    cfg = replace(s3_config, retry_mode="adaptive", max_attempts=7, connect_timeout=2, read_timeout=9)
    with S3Client(cfg) as client:
        meta = client.boto_client.meta
        assert meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
        assert (meta.config.connect_timeout, meta.config.read_timeout) == (2, 9)
        assert meta.config.s3 == {"addressing_style": "path"}
        assert meta.endpoint_url == s3_config.endpoint_url
    with S3Client(S3Config(region="eu-west-1")) as aws:
        assert aws.boto_client.meta.config.s3 is None  # virtual-hosted style on AWS itself
        assert aws.boto_client.meta.region_name == "eu-west-1"


def test_client_reports_a_missing_profile_as_config_error(moto_server: str) -> None:
    with pytest.raises(ConfigError, match="AWS profile 'nope' not found"):
        S3Client(S3Config(profile="nope"))


# --- translate_client_error --------------------------------------------------------------------------------


def _client_error(code: str, status: int, operation: str = "PutObject", **meta: Any) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} message"},
        "ResponseMetadata": {"RequestId": "REQ123", "HostId": "host", "HTTPStatusCode": status, **meta},
    }
    return ClientError(response, operation)


def test_translate_access_denied_message() -> None:
    err = translate_client_error(
        _client_error("AccessDenied", 403), operation="PutObject", bucket="b", key="raw/2026/x.csv"
    )
    assert isinstance(err, S3AccessDeniedError)
    assert (err.code, err.bucket, err.key, err.request_id, err.operation) == (
        "AccessDenied",
        "b",
        "raw/2026/x.csv",
        "REQ123",
        "PutObject",
    )
    assert str(err) == (
        "access denied to s3://b/raw/2026/x.csv (AccessDenied, request id REQ123): "
        "check the IAM policy allows s3:PutObject on arn:aws:s3:::b/raw/2026/*"
    )


@pytest.mark.parametrize(
    ("code", "status", "operation", "key", "cls", "needle"),
    [
        ("InvalidAccessKeyId", 403, "PutObject", "k", S3CredentialsError, "AWS_ACCESS_KEY_ID"),
        ("SignatureDoesNotMatch", 403, "PutObject", "k", S3CredentialsError, "AWS_SECRET_ACCESS_KEY"),
        ("ExpiredToken", 400, "GetObject", "k", S3CredentialsError, "aws sso login"),
        ("RequestTimeTooSkewed", 403, "GetObject", "k", S3CredentialsError, "clock"),
        ("AccessDenied", 403, "ListObjectsV2", None, S3AccessDeniedError, "s3:ListBucket on arn:aws:s3:::b"),
        ("403", 403, "HeadObject", "k", S3AccessDeniedError, "missing object"),
        ("NoSuchBucket", 404, "GetObject", "k", S3BucketNotFoundError, "check the bucket name"),
        ("404", 404, "HeadBucket", None, S3BucketNotFoundError, "s3://b "),
        ("404", 404, "HeadObject", "k", S3ObjectNotFoundError, "s3://b/k"),
        ("NoSuchKey", 404, "GetObject", "k", S3ObjectNotFoundError, "list the prefix"),
        ("SlowDown", 503, "PutObject", "k", S3ThrottledError, "CF_S3_RETRY_MODE=adaptive"),
        ("503", 503, "HeadObject", "k", S3ThrottledError, "throttled"),
        ("NoSuchUpload", 404, "UploadPart", "k", S3TransferError, "run the command again"),
        ("PermanentRedirect", 301, "GetObject", "k", StorageError, "set CF_S3_REGION"),
        ("KMS.NotFoundException", 400, "PutObject", "k", StorageError, "CF_S3_KMS_KEY_ID"),
        ("InternalError", 500, "PutObject", "k", StorageError, "retry later"),
        ("BucketAlreadyExists", 409, "CreateBucket", None, StorageError, "choose another bucket name"),
        ("WeirdNewCode", 400, "PutObject", "k", StorageError, "WeirdNewCode message"),
    ],
)
def test_translate_maps_codes(
    code: str, status: int, operation: str, key: str | None, cls: type[StorageError], needle: str
) -> None:
    err = translate_client_error(_client_error(code, status, operation), operation=operation, bucket="b", key=key)
    assert type(err) is cls
    text = str(err)
    assert needle in text and code in text and "request id REQ123" in text
    assert "\n" not in text


def test_translate_not_found_is_an_object_store_not_found() -> None:
    err = translate_client_error(_client_error("NoSuchKey", 404, "GetObject"), operation="x", bucket="b", key="k")
    assert isinstance(err, ObjectNotFound) and isinstance(err, FileNotFoundError)
    assert str(err).startswith("no object at s3://b/k (NoSuchKey, request id REQ123)")


def test_translate_counts_attempts_and_reads_the_region() -> None:
    throttled = translate_client_error(
        _client_error("SlowDown", 503, RetryAttempts=4, MaxAttemptsReached=True), operation="PutObject"
    )
    assert throttled.attempts == 5 and "after 5 attempts" in str(throttled)
    moved = _client_error("PermanentRedirect", 301, "HeadBucket")
    error: Any = moved.response["Error"]
    error["Region"] = "eu-central-1"
    assert "the bucket is in region eu-central-1" in str(translate_client_error(moved, operation="HeadBucket"))


def test_translate_kms_access_denied_mentions_the_key_policy() -> None:
    exc = _client_error("AccessDenied", 403, "PutObject")
    error: Any = exc.response["Error"]
    error["Message"] = "User is not authorized to perform: kms:GenerateDataKey"
    assert "kms:GenerateDataKey/kms:Decrypt" in str(translate_client_error(exc, operation="PutObject", bucket="b"))


def test_translate_botocore_exceptions() -> None:
    creds = translate_client_error(NoCredentialsError(), operation="PutObject", bucket="b", key="k")
    assert isinstance(creds, S3CredentialsError) and "no AWS credentials found" in str(creds)
    conn = translate_client_error(
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b"), operation="GetObject", bucket="b"
    )
    assert isinstance(conn, S3ConnectionError) and "endpoint http://127.0.0.1:1/b" in str(conn)
    timeout = translate_client_error(ReadTimeoutError(endpoint_url="http://x"), operation="GetObject", bucket="b")
    assert isinstance(timeout, S3ConnectionError)
    other = translate_client_error(RuntimeError("boom"), operation="GetObject", bucket="b", key="k")
    assert type(other) is StorageError and str(other) == "GetObject failed for s3://b/k (RuntimeError): boom"
    assert translate_client_error(other, operation="ignored") is other


def test_storage_errors_survive_pickling() -> None:
    err = translate_client_error(_client_error("SlowDown", 503), operation="PutObject", bucket="b", key="k")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is S3ThrottledError and str(copy) == str(err) and copy.request_id == "REQ123"
    missing = pickle.loads(pickle.dumps(S3ObjectNotFoundError(bucket="b", key="k")))
    assert isinstance(missing, ObjectNotFound) and str(missing).startswith("no object at s3://b/k")


# --- buckets -----------------------------------------------------------------------------------------------


def test_ensure_bucket_is_idempotent(s3_client: S3Client, s3_boto_client: Any) -> None:
    name = f"cf-ensure-{datetime.now(UTC):%H%M%S%f}"
    try:
        assert s3_client.ensure_bucket(name) is True
        assert s3_client.ensure_bucket(name) is False
        s3_boto_client.head_bucket(Bucket=name)
    finally:
        s3_boto_client.delete_bucket(Bucket=name)


def test_ensure_bucket_outside_us_east_1_sets_the_location(s3_config: S3Config, s3_boto_client: Any) -> None:
    name = f"cf-ensure-eu-{datetime.now(UTC):%H%M%S%f}"
    with S3Client(replace(s3_config, region="eu-west-1")) as client:
        try:
            assert client.ensure_bucket(name) is True
            assert client.ensure_bucket(name) is False
            location = s3_boto_client.get_bucket_location(Bucket=name)["LocationConstraint"]
            assert location == "eu-west-1"
        finally:
            s3_boto_client.delete_bucket(Bucket=name)


def test_ensure_bucket_does_not_create_when_head_is_denied(
    proxied: S3Client, fault_proxy: FaultProxy, no_backoff: list[float]
) -> None:
    fault_proxy.add_rule(lambda r: r.method == "HEAD", status=403, code="AccessDenied")
    with pytest.raises(S3AccessDeniedError, match=r"access denied to s3://cf-denied \(403, request id FAULT"):
        proxied.ensure_bucket("cf-denied")
    assert [r.method for r in fault_proxy.requests] == ["HEAD"]  # no retry, no CreateBucket
    assert no_backoff == []


# --- round trips -------------------------------------------------------------------------------------------


def test_upload_download_round_trip_with_metadata_and_encryption(
    s3_client: S3Client, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "cpu export.csv"
    src.write_text("host,ts,cpu\na,2026-01-01,0.5\n")
    before = datetime.now(UTC).replace(microsecond=0)
    uri = s3_client.upload_file(src, s3_bucket, "raw/cpu.csv", extra_metadata={"tenant": "acme"})
    assert uri == f"s3://{s3_bucket}/raw/cpu.csv"

    head = s3_client.head(s3_bucket, "raw/cpu.csv")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "text/csv"
    meta = head["Metadata"]
    assert meta["original_filename"] == "cpu export.csv"
    assert meta["source"] == "cli" and meta["tenant"] == "acme"
    uploaded_at = datetime.fromisoformat(meta["uploaded_at"])
    assert uploaded_at.tzinfo is not None and before <= uploaded_at <= datetime.now(UTC)
    assert '"' not in head["ETag"]

    out = s3_client.download_file(s3_bucket, "raw/cpu.csv", tmp_path / "nested" / "dir" / "copy.csv")
    assert out.read_bytes() == src.read_bytes()


def test_put_and_get_bytes(s3_client: S3Client, s3_bucket: str) -> None:
    data = bytes(range(256)) * 10
    assert s3_client.put_bytes(s3_bucket, "a/b.bin", data, metadata={"run-id": "r1"}) == f"s3://{s3_bucket}/a/b.bin"
    assert s3_client.get_bytes(s3_bucket, "a/b.bin") == data
    head = s3_client.head(s3_bucket, "a/b.bin")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["run-id"] == "r1" and head["Metadata"]["source"] == "cli"
    assert "original_filename" not in head["Metadata"]


def test_missing_objects_and_buckets(s3_client: S3Client, s3_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(S3ObjectNotFoundError) as info:
        s3_client.get_bytes(s3_bucket, "nope.csv")
    assert isinstance(info.value, ObjectNotFound)
    assert info.value.code == "NoSuchKey" and info.value.request_id
    assert f"s3://{s3_bucket}/nope.csv (NoSuchKey, request id " in str(info.value)

    with pytest.raises(S3ObjectNotFoundError):
        s3_client.download_file(s3_bucket, "nope.csv", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(S3ObjectNotFoundError):
        s3_client.head(s3_bucket, "nope.csv")
    with pytest.raises(S3BucketNotFoundError, match="bucket not found: s3://cf-no-such-bucket "):
        s3_client.get_bytes("cf-no-such-bucket", "x")
    with pytest.raises(S3BucketNotFoundError):
        list(s3_client.list_objects("cf-no-such-bucket"))


def test_keys_are_validated_before_any_request(s3_client: S3Client, s3_bucket: str, tmp_path: Path) -> None:
    for call in (
        lambda: s3_client.put_bytes(s3_bucket, "../x", b""),
        lambda: s3_client.get_bytes(s3_bucket, "/abs"),
        lambda: s3_client.upload_file(tmp_path, s3_bucket, "a//b"),
        lambda: s3_client.list_objects(s3_bucket, "../"),  # raises at the call, before any iteration
        lambda: s3_client.ensure_bucket("Not_A_Bucket"),
    ):
        with pytest.raises(InvalidKeyError):
            call()


def test_upload_checks_its_inputs(s3_client: S3Client, s3_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        s3_client.upload_file(tmp_path / "missing.csv", s3_bucket, "x.csv")
    src = tmp_path / "x.csv"
    src.write_text("a\n")
    for extra, needle in [
        ({"uploaded_at": "2020-01-01"}, "set by the uploader"),
        ({"Bad Key": "x"}, "lower-case letters"),
        ({"big": "x" * 3000}, "S3 allows 2048"),
    ]:
        with pytest.raises(InputError, match=needle):
            s3_client.upload_file(src, s3_bucket, "x.csv", extra_metadata=extra)


def test_non_ascii_metadata_is_percent_encoded(s3_client: S3Client, s3_bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "données.csv"
    src.write_text("a\n")
    s3_client.upload_file(src, s3_bucket, "x.csv", source="lambda")
    meta = s3_client.head(s3_bucket, "x.csv")["Metadata"]
    assert meta["original_filename"] == "donn%C3%A9es.csv" and meta["source"] == "lambda"


def test_metadata_may_name_the_source_and_original_file(s3_client: S3Client, s3_bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "tmp123.csv"
    src.write_text("a\n")
    s3_client.upload_file(src, s3_bucket, "x.csv", extra_metadata={"source": "ingest", "original_filename": "cpu.csv"})
    meta = s3_client.head(s3_bucket, "x.csv")["Metadata"]
    assert (meta["source"], meta["original_filename"]) == ("ingest", "cpu.csv")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("curated/x.parquet", "application/vnd.apache.parquet"),
        ("raw/x.csv", "text/csv"),
        ("raw/X.CSV", "text/csv"),
        ("meta/x.json", "application/json"),
        ("raw/x.csv.gz", "application/gzip"),
        ("notes/x.txt", "text/plain"),
        ("report/x.html", "text/html"),
        ("blob/x.unknownext", "application/octet-stream"),
        ("blob/noextension", "application/octet-stream"),
    ],
)
def test_content_type_from_extension(s3_client: S3Client, s3_bucket: str, name: str, expected: str) -> None:
    assert guess_content_type(name) == expected
    s3_client.put_bytes(s3_bucket, name, b"x")
    assert s3_client.head(s3_bucket, name)["ContentType"] == expected


def test_explicit_content_type_wins(s3_client: S3Client, s3_bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "data.parquet"
    src.write_bytes(b"PAR1")
    s3_client.upload_file(src, s3_bucket, "a/data.parquet")
    assert s3_client.head(s3_bucket, "a/data.parquet")["ContentType"] == "application/vnd.apache.parquet"
    s3_client.upload_file(src, s3_bucket, "a/other", content_type="application/x-custom")
    assert s3_client.head(s3_bucket, "a/other")["ContentType"] == "application/x-custom"


# --- multipart ---------------------------------------------------------------------------------------------


def test_multipart_upload_above_the_threshold(
    s3_config: S3Config, s3_bucket: str, big_file: Path, tmp_path: Path, s3_boto_client: Any
) -> None:
    with S3Client(replace(s3_config, **SMALL_PARTS)) as client:
        client.upload_file(big_file, s3_bucket, "big/data.bin")
        head = client.head(s3_bucket, "big/data.bin")
        assert head["ETag"].endswith("-3")  # three parts: 5 + 5 + 1 MiB
        assert head["ContentLength"] == BIG_SIZE
        assert head["ServerSideEncryption"] == "AES256"
        assert head["Metadata"]["original_filename"] == "big.bin"
        out = client.download_file(s3_bucket, "big/data.bin", tmp_path / "copy.bin")
    assert _sha(out.read_bytes()) == _sha(big_file.read_bytes())
    assert _open_uploads(s3_boto_client, s3_bucket) == []


def test_failed_part_aborts_the_multipart_upload(
    s3_config: S3Config,
    s3_bucket: str,
    big_file: Path,
    fault_proxy: FaultProxy,
    no_backoff: list[float],
    s3_boto_client: Any,
) -> None:
    fault_proxy.add_rule(
        lambda r: r.is_upload_part and r.query["partNumber"] == ["2"], status=500, code="InternalError"
    )
    cfg = replace(s3_config, endpoint_url=fault_proxy.endpoint_url, max_attempts=2, **SERIAL_SMALL_PARTS)
    with S3Client(cfg) as client, pytest.raises(S3TransferError) as info:
        client.upload_file(big_file, s3_bucket, "big/fails.bin")
    err = info.value
    assert (err.code, err.bucket, err.key, err.attempts) == ("InternalError", s3_bucket, "big/fails.bin", 2)
    assert err.request_id and err.request_id.startswith("FAULT")
    assert "the multipart upload was aborted" in str(err)
    part2 = fault_proxy.seen(lambda r: r.is_upload_part and r.query["partNumber"] == ["2"])
    assert [r.fault for r in part2] == [
        "InternalError",
        "InternalError",
    ]  # botocore retried once, then gave up
    assert len(fault_proxy.seen(lambda r: r.is_abort_multipart)) == 1  # s3transfer aborted it
    assert _open_uploads(s3_boto_client, s3_bucket) == []
    assert "Contents" not in s3_boto_client.list_objects_v2(Bucket=s3_bucket)


def test_client_aborts_the_upload_itself_when_the_transfer_manager_could_not(
    s3_config: S3Config,
    s3_bucket: str,
    big_file: Path,
    fault_proxy: FaultProxy,
    no_backoff: list[float],
    s3_boto_client: Any,
) -> None:
    fault_proxy.add_rule(lambda r: r.is_upload_part, status=500, code="InternalError")
    # s3transfer's own AbortMultipartUpload fails on both of its attempts; the client's check must abort it.
    fault_proxy.add_rule(lambda r: r.is_abort_multipart, status=500, code="InternalError", times=2)
    cfg = replace(s3_config, endpoint_url=fault_proxy.endpoint_url, max_attempts=2, **SERIAL_SMALL_PARTS)
    with S3Client(cfg) as client, pytest.raises(S3TransferError):
        client.upload_file(big_file, s3_bucket, "big/orphan.bin")
    aborts = fault_proxy.seen(lambda r: r.is_abort_multipart)
    assert [r.fault for r in aborts] == ["InternalError", "InternalError", None]
    assert _open_uploads(s3_boto_client, s3_bucket) == []


def test_throttled_part_is_retried_and_the_upload_completes(
    s3_config: S3Config, s3_bucket: str, big_file: Path, fault_proxy: FaultProxy, no_backoff: list[float]
) -> None:
    fault_proxy.add_rule(lambda r: r.is_upload_part, status=503, code="SlowDown", times=2)
    cfg = replace(s3_config, endpoint_url=fault_proxy.endpoint_url, **SMALL_PARTS)
    with S3Client(cfg) as client:
        client.upload_file(big_file, s3_bucket, "big/throttled.bin")
        assert client.head(s3_bucket, "big/throttled.bin")["ETag"].endswith("-3")
    assert len(no_backoff) == 2


# --- connections dropped mid-part ------------------------------------------------------------------------

MIDBODY_RUNS = 5


def _part(number: int) -> Any:
    return lambda r: r.is_upload_part and r.query["partNumber"] == [str(number)]


def _ranged_gets(key: str) -> Any:
    return lambda r: r.is_get_object and r.path.endswith("/" + key) and "range" in r.headers


def test_uploads_and_ranged_downloads_survive_connections_dropped_mid_part(
    s3_config: S3Config,
    s3_bucket: str,
    big_file: Path,
    fault_proxy: FaultProxy,
    no_backoff: list[float],
    s3_boto_client: Any,
    tmp_path: Path,
) -> None:
    """Above the multipart threshold, each run: a part whose request body is cut by a reset (retried by
    botocore), a part applied upstream whose response is cut (sent again), and two ranged GETs of the download cut
    part-way (s3transfer fetches the range again); both copies equal the source, byte for byte, in every run."""
    expected = _sha(big_file.read_bytes())
    cfg = replace(s3_config, endpoint_url=fault_proxy.endpoint_url, **SMALL_PARTS)
    finished, compared = 0, 0
    for run in range(MIDBODY_RUNS):
        key = f"big/run-{run}.bin"
        fault_proxy.add_request_cut(_part(2), share=0.3 + 0.1 * run, times=1)
        fault_proxy.add_response_cut(_part(3), times=1)
        fault_proxy.add_body_cut(_ranged_gets(key), share=0.2 + 0.15 * run, times=2)
        with S3Client(cfg) as client:
            client.upload_file(big_file, s3_bucket, key)
            out = client.download_file(s3_bucket, key, tmp_path / f"copy-{run}.bin")
        stored = s3_boto_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert _sha(stored) == expected and _sha(out.read_bytes()) == expected, run
        assert s3_boto_client.head_object(Bucket=s3_bucket, Key=key)["ETag"].endswith('-3"'), run
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"copy-{i}.bin" for i in range(run + 1)]
        finished += 1
        compared += len(stored) + out.stat().st_size
    faults = fault_proxy.faults()
    assert faults == {"RequestCut": MIDBODY_RUNS, "ResponseCut": MIDBODY_RUNS, "BodyCut": 2 * MIDBODY_RUNS}
    assert finished == MIDBODY_RUNS and compared == 2 * MIDBODY_RUNS * BIG_SIZE
    assert _open_uploads(s3_boto_client, s3_bucket) == []
    print(f"mid-part faults: {faults}, runs finished {finished}/{MIDBODY_RUNS}, bytes compared {compared}")


def test_a_part_reset_on_every_attempt_aborts_the_upload(
    s3_config: S3Config,
    s3_bucket: str,
    big_file: Path,
    fault_proxy: FaultProxy,
    no_backoff: list[float],
    s3_boto_client: Any,
) -> None:
    fault_proxy.add_request_cut(_part(2))
    cfg = replace(s3_config, endpoint_url=fault_proxy.endpoint_url, max_attempts=3, **SERIAL_SMALL_PARTS)
    with S3Client(cfg) as client, pytest.raises(S3TransferError) as info:
        client.upload_file(big_file, s3_bucket, "big/reset.bin")
    message = str(info.value)
    assert "\n" not in message and "big/reset.bin" in message and "the multipart upload was aborted" in message
    assert [r.fault for r in fault_proxy.seen(_part(2))] == ["RequestCut"] * 3  # max_attempts, then given up
    assert len(fault_proxy.seen(lambda r: r.is_abort_multipart)) >= 1
    assert _open_uploads(s3_boto_client, s3_bucket) == []
    assert "Contents" not in s3_boto_client.list_objects_v2(Bucket=s3_bucket, Prefix="big/reset.bin")


def test_a_ranged_download_cut_on_every_attempt_leaves_no_file(
    s3_config: S3Config, s3_bucket: str, big_file: Path, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    cfg = replace(s3_config, endpoint_url=fault_proxy.endpoint_url, **SERIAL_SMALL_PARTS)
    folder = tmp_path / "out"
    with S3Client(cfg) as client:
        client.upload_file(big_file, s3_bucket, "big/cut.bin")
        fault_proxy.add_body_cut(_ranged_gets("big/cut.bin"))
        with pytest.raises(S3TransferError) as info:
            client.download_file(s3_bucket, "big/cut.bin", folder / "copy.bin")
    message = str(info.value)
    assert "\n" not in message and "big/cut.bin" in message and "the download did not complete" in message
    assert "broke part-way 5 times" in message and info.value.attempts == 5
    assert list(folder.iterdir()) == []  # no partial file, no temporary file
    assert len(fault_proxy.seen(_ranged_gets("big/cut.bin"))) >= 5  # s3transfer tried the range again


# --- encryption --------------------------------------------------------------------------------------------


def test_sse_kms_with_a_key_id(s3_config: S3Config, s3_bucket: str, moto_server: str, tmp_path: Path) -> None:
    kms = boto3.client("kms", region_name="us-east-1", endpoint_url=moto_server)
    key_id = kms.create_key(Description="lake key")["KeyMetadata"]["KeyId"]
    src = tmp_path / "m.json"
    src.write_text("{}")
    with S3Client(replace(s3_config, sse="aws:kms", kms_key_id=key_id)) as client:
        client.upload_file(src, s3_bucket, "enc/m.json")
        client.put_bytes(s3_bucket, "enc/b.bin", b"secret")
        for key in ("enc/m.json", "enc/b.bin"):
            head = client.head(s3_bucket, key)
            assert head["ServerSideEncryption"] == "aws:kms"
            assert key_id in head["SSEKMSKeyId"]
        assert client.get_bytes(s3_bucket, "enc/b.bin") == b"secret"
        assert client.head(s3_bucket, "enc/m.json")["Metadata"]["original_filename"] == "m.json"


def test_sse_kms_without_a_key_id_uses_the_default_key(s3_config: S3Config, s3_bucket: str) -> None:
    with S3Client(replace(s3_config, sse="aws:kms")) as client:
        client.put_bytes(s3_bucket, "enc/c.bin", b"x")
        assert client.head(s3_bucket, "enc/c.bin")["ServerSideEncryption"] == "aws:kms"


# --- listing and deleting ----------------------------------------------------------------------------------


def test_listing_paginates_and_delete_prefix_batches(
    s3_config: S3Config, s3_bucket: str, s3_boto_client: Any, fault_proxy: FaultProxy
) -> None:
    keys = [f"many/{i:05d}.csv" for i in range(1005)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: s3_boto_client.put_object(Bucket=s3_bucket, Key=k, Body=b"x"), keys))
    s3_boto_client.put_object(Bucket=s3_bucket, Key="other/keep.csv", Body=b"keep")

    with S3Client(replace(s3_config, endpoint_url=fault_proxy.endpoint_url)) as client:
        listed = list(client.list_objects(s3_bucket, "many/"))
        assert [o.key for o in listed] == keys
        assert all(o.size == 1 and o.etag and '"' not in o.etag for o in listed)
        assert all(o.storage_class == "STANDARD" and o.last_modified.tzinfo is not None for o in listed)
        assert len(fault_proxy.seen(lambda r: r.is_list_objects)) == 2  # 1,000 + 5

        assert client.delete_prefix(s3_bucket, "many/") == 1005
        assert len(fault_proxy.seen(lambda r: r.is_delete_objects)) == 2  # 1,000 per request
        assert list(client.list_objects(s3_bucket, "many/")) == []
        assert [o.key for o in client.list_objects(s3_bucket)] == ["other/keep.csv"]


def test_exists_delete_and_delete_prefix(s3_client: S3Client, s3_bucket: str) -> None:
    for key in ("p/a.csv", "p/sub/b.csv", "pp/c.csv", "q.csv"):
        s3_client.put_bytes(s3_bucket, key, b"1")
    assert s3_client.exists(s3_bucket, "p/a.csv")
    s3_client.delete(s3_bucket, "p/a.csv")
    assert not s3_client.exists(s3_bucket, "p/a.csv")
    s3_client.delete(s3_bucket, "p/a.csv")  # deleting a missing object is not an error

    assert s3_client.delete_prefix(s3_bucket, "p/") == 1
    assert [o.key for o in s3_client.list_objects(s3_bucket)] == ["pp/c.csv", "q.csv"]
    assert s3_client.delete_prefix(s3_bucket, "nothing/") == 0
    with pytest.raises(InputError, match="refusing to delete everything"):
        s3_client.delete_prefix(s3_bucket, "")
    assert s3_client.delete_prefix(s3_bucket, "", allow_whole_bucket=True) == 2


# --- retries and fail-fast ---------------------------------------------------------------------------------


def test_slowdown_is_absorbed_by_the_retry_mode(
    proxied: S3Client, s3_bucket: str, fault_proxy: FaultProxy, no_backoff: list[float]
) -> None:
    fault_proxy.add_rule(_put_key("t.csv"), status=503, code="SlowDown", message="Reduce your rate", times=2)
    proxied.put_bytes(s3_bucket, "t.csv", b"ok")
    puts = fault_proxy.seen(lambda r: r.is_put_object)
    assert [r.fault for r in puts] == ["SlowDown", "SlowDown", None]
    assert len(no_backoff) == 2 and all(d >= 0 for d in no_backoff)
    assert proxied.get_bytes(s3_bucket, "t.csv") == b"ok"


def test_slowdown_is_absorbed_in_adaptive_mode(
    s3_config: S3Config, s3_bucket: str, fault_proxy: FaultProxy, no_backoff: list[float]
) -> None:
    fault_proxy.add_rule(_put_key("a.csv"), status=503, code="SlowDown", times=1)
    cfg = replace(s3_config, endpoint_url=fault_proxy.endpoint_url, retry_mode="adaptive")
    with S3Client(cfg) as client:
        client.put_bytes(s3_bucket, "a.csv", b"ok")
    assert [r.fault for r in fault_proxy.seen(lambda r: r.is_put_object)] == ["SlowDown", None]


def test_throttling_past_max_attempts_raises_throttled(
    proxied: S3Client, s3_bucket: str, fault_proxy: FaultProxy, no_backoff: list[float]
) -> None:
    fault_proxy.add_rule(_put_key("t.csv"), status=503, code="SlowDown")
    with pytest.raises(S3ThrottledError) as info:
        proxied.put_bytes(s3_bucket, "t.csv", b"x")
    assert len(fault_proxy.seen(lambda r: r.is_put_object)) == 3
    err = info.value
    assert (err.code, err.attempts, err.request_id) == ("SlowDown", 3, "FAULT000000000003")
    assert str(err).startswith(
        f"S3 throttled requests to s3://{s3_bucket}/t.csv (SlowDown, request id FAULT000000000003, after 3 attempts)"
    )


def test_access_denied_fails_fast(
    proxied: S3Client, s3_bucket: str, fault_proxy: FaultProxy, no_backoff: list[float]
) -> None:
    fault_proxy.add_rule(lambda r: r.is_put_object, status=403, code="AccessDenied", message="Access Denied")
    with pytest.raises(S3AccessDeniedError) as info:
        proxied.put_bytes(s3_bucket, "raw/x.csv", b"x")
    assert len(fault_proxy.seen(lambda r: r.is_put_object)) == 1  # the first attempt only
    assert no_backoff == []
    assert str(info.value) == (
        f"access denied to s3://{s3_bucket}/raw/x.csv (AccessDenied, request id FAULT000000000001): "
        f"check the IAM policy allows s3:PutObject on arn:aws:s3:::{s3_bucket}/raw/*"
    )


def test_access_denied_on_a_multipart_part_fails_fast_and_aborts(
    s3_config: S3Config,
    s3_bucket: str,
    big_file: Path,
    fault_proxy: FaultProxy,
    no_backoff: list[float],
    s3_boto_client: Any,
) -> None:
    fault_proxy.add_rule(lambda r: r.is_upload_part, status=403, code="AccessDenied")
    cfg = replace(s3_config, endpoint_url=fault_proxy.endpoint_url, **SERIAL_SMALL_PARTS)
    with S3Client(cfg) as client, pytest.raises(S3AccessDeniedError, match="s3:PutObject"):
        client.upload_file(big_file, s3_bucket, "big/denied.bin")
    assert no_backoff == []
    assert [r.fault for r in fault_proxy.seen(lambda r: r.is_upload_part)] == ["AccessDenied"]  # once, no retry
    assert _open_uploads(s3_boto_client, s3_bucket) == []


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"])
def test_rejected_credentials_fail_fast(
    proxied: S3Client, s3_bucket: str, fault_proxy: FaultProxy, no_backoff: list[float], code: str
) -> None:
    fault_proxy.add_rule(lambda r: r.method == "GET", status=403 if code != "ExpiredToken" else 400, code=code)
    with pytest.raises(S3CredentialsError) as info:
        proxied.get_bytes(s3_bucket, "x.csv")
    assert len(fault_proxy.requests) == 1 and no_backoff == []
    assert code in str(info.value) and "FAULT000000000001" in str(info.value)


def test_no_credentials_at_all(s3_config: S3Config, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with S3Client(s3_config) as client:
        with pytest.raises(S3CredentialsError, match="no AWS credentials found"):
            client.put_bytes(s3_bucket, "x.csv", b"x")
        report = client.check_access(s3_bucket)
    assert not report.ok
    assert report.checks[0].name == "credentials" and "no AWS credentials found" in report.checks[0].message
    assert all(c.message.startswith("skipped") for c in report.checks[1:])


def test_unreachable_endpoint_is_a_connection_error(s3_config: S3Config) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = replace(s3_config, endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1, connect_timeout=1)
    with S3Client(cfg) as client, pytest.raises(S3ConnectionError, match="cannot reach S3") as info:
        client.get_bytes("some-bucket", "k")
    assert f"127.0.0.1:{port}" in str(info.value)


def test_credentials_are_never_logged(
    s3_client: S3Client, s3_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "x.csv"
    src.write_text("a\n")
    secret = boto3.Session().get_credentials().secret_key  # type: ignore[union-attr]
    with caplog.at_level(logging.DEBUG, logger="capacity_forecaster"):
        s3_client.upload_file(src, s3_bucket, "x.csv")
        with pytest.raises(S3ObjectNotFoundError):
            s3_client.get_bytes(s3_bucket, "missing")
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)


# --- doctor ------------------------------------------------------------------------------------------------


def test_check_access_all_ok(s3_client: S3Client, s3_bucket: str, s3_boto_client: Any) -> None:
    report = s3_client.check_access(s3_bucket, probe_prefix="lake")
    assert report.ok, report.lines()
    assert [c.name for c in report.checks] == [
        "credentials",
        "identity",
        "bucket",
        "list",
        "write",
        "read",
        "delete",
    ]
    assert "source: env" in report.checks[0].message
    assert "account 123456789012" in report.checks[1].message
    assert report.lines()[0].startswith("[ok] credentials: ")
    assert "Contents" not in s3_boto_client.list_objects_v2(Bucket=s3_bucket)  # the probe was removed


def test_check_access_missing_bucket(s3_client: S3Client) -> None:
    report = s3_client.check_access("cf-no-such-bucket", check_identity=False)
    assert not report.ok
    assert [c.name for c in report.failures] == ["bucket", "list", "write", "read", "delete"]
    assert "bucket not found: s3://cf-no-such-bucket" in report.checks[1].message
    assert report.lines()[1].startswith("[FAIL] bucket: ")


def test_check_access_reports_denied_writes(
    proxied: S3Client, s3_bucket: str, fault_proxy: FaultProxy, s3_boto_client: Any
) -> None:
    fault_proxy.add_rule(lambda r: r.is_put_object, status=403, code="AccessDenied")
    report = proxied.check_access(s3_bucket, probe_prefix="lake/", check_identity=False)
    status = {c.name: c.ok for c in report.checks}
    assert status == {
        "credentials": True,
        "bucket": True,
        "list": True,
        "write": False,
        "read": False,
        "delete": False,
    }
    write = report.checks[3].message
    assert "access denied" in write and f"s3:PutObject on arn:aws:s3:::{s3_bucket}/lake/*" in write


def test_check_access_reports_a_failed_delete(
    proxied: S3Client, s3_bucket: str, fault_proxy: FaultProxy, s3_boto_client: Any
) -> None:
    fault_proxy.add_rule(lambda r: r.method == "DELETE", status=403, code="AccessDenied")
    report = proxied.check_access(s3_bucket, check_identity=False)
    delete = report.checks[-1]
    assert (delete.name, delete.ok) == ("delete", False)
    assert "s3:DeleteObject" in delete.message and "delete the probe object by hand" in delete.message
    s3_boto_client.delete_objects(  # what the user would do by hand
        Bucket=s3_bucket,
        Delete={"Objects": [{"Key": o["Key"]} for o in s3_boto_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]},
    )


def test_recent_listing_timestamps_are_utc(s3_client: S3Client, s3_bucket: str) -> None:
    s3_client.put_bytes(s3_bucket, "t.csv", b"x")
    (info,) = list(s3_client.list_objects(s3_bucket))
    assert info.last_modified.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - info.last_modified) < timedelta(minutes=5)


def test_seen_request_helpers() -> None:
    part = SeenRequest("PUT", "/b/k", {"partNumber": ["1"], "uploadId": ["u"]}, {})
    assert part.is_upload_part and not part.is_put_object
    assert SeenRequest("PUT", "/b/k/x", {}, {}).is_put_object
    assert not SeenRequest("PUT", "/b", {}, {}).is_put_object  # CreateBucket
    assert SeenRequest("GET", "/b/k", {}, {}).is_get_object
    assert not SeenRequest("GET", "/b", {"list-type": ["2"]}, {}).is_get_object


# --- bodies that break part-way ----------------------------------------------------------------------------


@pytest.fixture
def no_body_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's own body-retry delays instead of sleeping them."""
    from capacity_forecaster.storage import s3_client as module

    delays: list[float] = []
    monkeypatch.setattr(module, "time", SimpleNamespace(sleep=delays.append))
    return delays


def _gets_of(key: str) -> Any:
    return lambda r: r.is_get_object and r.path.endswith("/" + key)


def test_a_body_cut_part_way_is_read_again_pinned_to_the_first_etag(
    proxied: S3Client, s3_bucket: str, fault_proxy: FaultProxy, no_body_backoff: list[float]
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    etag = proxied.put_bytes(s3_bucket, "raw/big.bin", data) and proxied.head(s3_bucket, "raw/big.bin")["ETag"]
    fault_proxy.add_body_cut(_gets_of("raw/big.bin"), share=0.4, times=2)
    assert proxied.get_bytes(s3_bucket, "raw/big.bin") == data
    gets = fault_proxy.seen(_gets_of("raw/big.bin"))
    assert [g.fault for g in gets] == ["BodyCut", "BodyCut", None]
    assert "if-match" not in gets[0].headers
    assert [g.headers.get("if-match") for g in gets[1:]] == [f'"{etag}"'] * 2
    assert len(no_body_backoff) == 2 and 0 < no_body_backoff[0] <= no_body_backoff[1] * 2
    fault_proxy.add_body_cut(_gets_of("raw/big.bin"), share=0.9, times=1)
    assert proxied.get_with_etag(s3_bucket, "raw/big.bin") == (data, etag)


def test_a_body_cut_on_every_attempt_is_a_one_line_transfer_error(
    proxied: S3Client, s3_bucket: str, fault_proxy: FaultProxy, no_body_backoff: list[float]
) -> None:
    proxied.put_bytes(s3_bucket, "raw/b.csv", b"x" * 100_000)
    fault_proxy.add_body_cut(_gets_of("raw/b.csv"))
    with pytest.raises(S3TransferError) as info:
        proxied.get_bytes(s3_bucket, "raw/b.csv")
    message = str(info.value)
    assert "\n" not in message and "raw/b.csv" in message and "broke part-way 3 times" in message
    assert len(fault_proxy.seen(_gets_of("raw/b.csv"))) == 3  # max_attempts in all, no more


def test_an_object_changed_between_attempts_is_not_mixed(
    proxied: S3Client, s3_bucket: str, fault_proxy: FaultProxy, s3_boto_client: Any, no_body_backoff: list[float]
) -> None:
    proxied.put_bytes(s3_bucket, "raw/c.csv", b"old" * 50_000)
    fault_proxy.add_body_cut(_gets_of("raw/c.csv"), times=1)

    def replaced_before_the_second_get(request: SeenRequest) -> bool:
        if _gets_of("raw/c.csv")(request) and "if-match" in request.headers:
            s3_boto_client.put_object(Bucket=s3_bucket, Key="raw/c.csv", Body=b"new" * 50_000)
        return False

    fault_proxy.add_rule(replaced_before_the_second_get, status=500, code="Never")
    with pytest.raises(S3PreconditionFailedError):
        proxied.get_bytes(s3_bucket, "raw/c.csv")
    assert proxied.get_bytes(s3_bucket, "raw/c.csv") == b"new" * 50_000


ETL_ROUNDS = 6
CUT_EVERY = 20  # 5% of GetObject bodies
FILES_PER_ROUND = 16


def _day_export(day: int, part: int) -> bytes:
    rows = [
        f"2026-11-{day:02d}T{h:02d}:{q * 15:02d}:00Z,srv-{s},{metric},{(s * 7 + h * 3 + q + day) % 90 + 1}"
        for s in (part,)
        for h in range(24)
        for q in range(4)
        for metric in ("cpu", "mem", "disk")
    ]
    return ("timestamp,server_id,metric,value\n" + "\n".join(rows) + "\n").encode()


def test_etl_runs_finish_with_five_percent_of_get_bodies_cut(
    s3_config: S3Config,
    s3_bucket: str,
    s3_boto_client: Any,
    fault_proxy: FaultProxy,
    no_backoff: list[float],
    no_body_backoff: list[float],
) -> None:
    """The same uploads, ETL'd round by round into a clean lake and into one whose GetObject bodies are cut part-way
    5% of the time: every faulty run finishes and the two lakes end up with the same tables."""
    import itertools
    import random

    import pandas as pd

    from capacity_forecaster.schema import ETL_RUNS, METRICS_DAILY
    from capacity_forecaster.settings import load_settings
    from capacity_forecaster.stages import run_etl
    from capacity_forecaster.storage.lake import Lake
    from capacity_forecaster.storage.s3_store import S3ObjectStore

    nth_get = itertools.count(1)
    shares = random.Random(17)  # where in the body the connection drops

    def every_twentieth(request: SeenRequest) -> bool:
        return request.is_get_object and next(nth_get) % CUT_EVERY == 0

    rule = fault_proxy.add_body_cut(every_twentieth, share=0.5)
    direct = S3Client(s3_config)
    lakes = {
        "clean": Lake(S3ObjectStore(direct, s3_bucket, "clean")),
        "faulty": Lake(
            S3ObjectStore(S3Client(replace(s3_config, endpoint_url=fault_proxy.endpoint_url)), s3_bucket, "faulty")
        ),
    }
    settings = load_settings(environ={}, overrides={"lake": f"s3://{s3_bucket}/clean"})
    finished = 0
    for day in range(1, ETL_ROUNDS + 1):
        for prefix in lakes:
            for part in range(FILES_PER_ROUND):
                key = f"{prefix}/raw/uploads/tenants/t/2026/11/{day:02d}/export-{day}-{part}.csv"
                s3_boto_client.put_object(Bucket=s3_bucket, Key=key, Body=_day_export(day, part))
        rule.cut_at = shares.uniform(0.05, 0.95)
        now = datetime(2026, 11, day + 1, 6, tzinfo=UTC)
        run_etl(lakes["clean"], settings, now=now)
        run_etl(lakes["faulty"], settings, now=now)
        finished += 1

    cuts = fault_proxy.seen(lambda r: r.fault == "BodyCut")
    gets = fault_proxy.seen(lambda r: r.is_get_object)
    assert finished == ETL_ROUNDS and len(cuts) == len(gets) // CUT_EVERY >= ETL_ROUNDS
    # Each cut body was read again: raw files by s3transfer's own attempts (the ETL downloads them to its work
    # folder), every other object by the client's read-again, once.
    downloaded = [c for c in cuts if "/raw/uploads/" in c.path]
    assert len(no_body_backoff) == len(cuts) - len(downloaded)
    for cut in downloaded:
        assert len(fault_proxy.seen(_gets_of(cut.path.split("/", 2)[2]))) >= 2, cut.path
    # Compare what the two lakes hold, read without faults.
    read_back = {p: Lake(S3ObjectStore(direct, s3_bucket, p)) for p in lakes}
    daily = {
        p: lake.read_table(METRICS_DAILY).sort_values(["server_id", "metric", "dt"], ignore_index=True)
        for p, lake in read_back.items()
    }
    assert len(daily["clean"]) == FILES_PER_ROUND * 3 * ETL_ROUNDS
    pd.testing.assert_frame_equal(daily["faulty"], daily["clean"])
    counts = ["files_read", "files_rejected", "rows_in", "rows_written", "rows_quarantined", "partitions_written"]
    runs = {
        p: lake.read_table(ETL_RUNS).sort_values("started_at", ignore_index=True)[counts]
        for p, lake in read_back.items()
    }
    pd.testing.assert_frame_equal(runs["faulty"], runs["clean"])
    print(f"{finished} of {ETL_ROUNDS} ETL runs finished; {len(cuts)} of {len(gets)} GetObject bodies cut")


def test_copy_object_is_server_side_and_keeps_encryption_and_metadata(
    s3_config: S3Config, s3_bucket: str, big_file: Path, fault_proxy: FaultProxy
) -> None:
    with S3Client(replace(s3_config, endpoint_url=fault_proxy.endpoint_url, **SMALL_PARTS)) as client:
        client.upload_file(big_file, s3_bucket, "raw/big.bin", extra_metadata={"original_filename": "big.bin"})
        before = len(fault_proxy.seen())
        assert (
            client.copy_object(s3_bucket, "raw/big.bin", "quarantine/big.bin") == f"s3://{s3_bucket}/quarantine/big.bin"
        )
        copying = fault_proxy.seen()[before:]
        assert not any(r.is_get_object for r in copying)  # the bytes never came through this process
        assert any("x-amz-copy-source" in r.headers for r in copying)
        head = client.head(s3_bucket, "quarantine/big.bin")
        assert head["ContentLength"] == BIG_SIZE and head["ServerSideEncryption"] == "AES256"
        assert head["Metadata"]["original_filename"] == "big.bin"
        with pytest.raises(S3ObjectNotFoundError):
            client.copy_object(s3_bucket, "raw/none.bin", "quarantine/none.bin")
