"""S3Client and S3ObjectStore against a REAL bucket: run with ``CF_TEST_BUCKET=<bucket or s3://bucket/prefix>``.

Skipped unless CF_TEST_BUCKET is set and boto3 finds credentials. Everything is written under a fresh
``<prefix>cf-tests/<run id>/`` prefix, which is deleted at the end. The settings come from the usual variables
(AWS_PROFILE, CF_S3_REGION, CF_S3_SSE, CF_S3_KMS_KEY_ID...), as they were before any moto fixture ran.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pytest

from capacity_forecaster.storage.errors import S3ObjectNotFoundError
from capacity_forecaster.storage.keys import parse_s3_uri
from capacity_forecaster.storage.s3_client import MiB, S3Client, S3Config
from capacity_forecaster.storage.s3_store import S3ObjectStore

_TARGET = os.environ.get("CF_TEST_BUCKET", "").strip()


def _credentials_found() -> bool:
    try:
        return boto3.Session().get_credentials() is not None
    except Exception:  # a broken profile counts as no credentials here
        return False


pytestmark = [
    pytest.mark.aws,
    pytest.mark.skipif(not _TARGET, reason="set CF_TEST_BUCKET to run the tests against a real bucket"),
    pytest.mark.skipif(bool(_TARGET) and not _credentials_found(), reason="boto3 finds no AWS credentials"),
]


def _bucket_and_prefix() -> tuple[str, str]:
    if _TARGET.startswith("s3://"):
        bucket, prefix = parse_s3_uri(_TARGET)
        return bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/"
    return _TARGET, ""


@pytest.fixture(scope="module")
def real_env(aws_environ_before_moto: dict[str, str]) -> Iterator[None]:
    """Undo the fake credentials of the moto fixture (if it ran) for this module."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("AWS_", "CF_S3_")) and name not in aws_environ_before_moto:
                mp.delenv(name)
        for name, value in aws_environ_before_moto.items():
            if name.startswith(("AWS_", "CF_S3_")):
                mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def client(real_env: None) -> Iterator[S3Client]:
    with S3Client(S3Config.from_env()) as s3:
        yield s3


@pytest.fixture(scope="module")
def run_prefix(client: S3Client) -> Iterator[str]:
    """``<prefix>cf-tests/<run id>/``, removed (and checked empty) after the module."""
    bucket, base = _bucket_and_prefix()
    prefix = f"{base}cf-tests/{uuid.uuid4().hex[:12]}/"
    yield prefix
    client.delete_prefix(bucket, prefix)
    assert list(client.list_objects(bucket, prefix)) == []


@pytest.fixture(scope="module")
def bucket() -> str:
    return _bucket_and_prefix()[0]


def test_check_access(client: S3Client, bucket: str, run_prefix: str) -> None:
    report = client.check_access(bucket, probe_prefix=run_prefix)
    assert report.ok, "\n".join(report.lines())


def test_round_trip_with_encryption_and_metadata(
    client: S3Client, bucket: str, run_prefix: str, tmp_path: Path
) -> None:
    src = tmp_path / "metrics.csv"
    src.write_text("host,ts,cpu\na,2026-01-01,0.5\n")
    key = f"{run_prefix}raw/metrics.csv"
    assert client.upload_file(src, bucket, key, source="test") == f"s3://{bucket}/{key}"
    head = client.head(bucket, key)
    assert head["ServerSideEncryption"] == client.config.sse
    if client.config.kms_key_id:
        assert client.config.kms_key_id.split("/")[-1] in head.get("SSEKMSKeyId", "")
    assert head["ContentType"] == "text/csv"
    assert head["Metadata"]["original_filename"] == "metrics.csv" and head["Metadata"]["source"] == "test"
    assert client.download_file(bucket, key, tmp_path / "copy.csv").read_bytes() == src.read_bytes()
    assert client.get_bytes(bucket, key) == src.read_bytes()
    with pytest.raises(S3ObjectNotFoundError):
        client.get_bytes(bucket, f"{run_prefix}missing.csv")


def test_multipart_upload(client: S3Client, bucket: str, run_prefix: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(hashlib.sha256(b"big").digest() * (11 * MiB // 32))
    key = f"{run_prefix}big/big.bin"
    cfg = replace(client.config, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    with S3Client(cfg) as small_parts:
        small_parts.upload_file(src, bucket, key)
        head = small_parts.head(bucket, key)
        assert head["ETag"].endswith("-3") and head["ContentLength"] == 11 * MiB
        copy = small_parts.download_file(bucket, key, tmp_path / "copy.bin")
    assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    uploads = client.boto_client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    assert uploads == []


def test_listing_and_store(client: S3Client, bucket: str, run_prefix: str) -> None:
    store = S3ObjectStore(client, bucket, f"{run_prefix}lake", source="test")
    for key in ("b.csv", "a/2.csv", "a/1.csv"):
        store.put_bytes(key, key.encode())
    assert [o.key for o in store.list()] == ["a/1.csv", "a/2.csv", "b.csv"]
    assert [o.key for o in store.list("a/")] == ["a/1.csv", "a/2.csv"]
    store.delete("b.csv")
    assert not store.exists("b.csv")
    assert client.delete_prefix(bucket, f"{run_prefix}lake/") == 2
