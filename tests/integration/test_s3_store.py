"""S3ObjectStore on the moto server: the ObjectStore contract, with keys relative to the store's prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capacity_forecaster.storage.errors import InvalidKeyError, S3ObjectNotFoundError
from capacity_forecaster.storage.object_store import ObjectNotFound, ObjectStore
from capacity_forecaster.storage.s3_client import S3Client
from capacity_forecaster.storage.s3_store import S3ObjectStore


@pytest.fixture
def store(s3_client: S3Client, s3_bucket: str) -> S3ObjectStore:
    return S3ObjectStore(s3_client, s3_bucket, "lake")


def test_store_implements_the_protocol(store: S3ObjectStore, s3_bucket: str) -> None:
    assert isinstance(store, ObjectStore)
    assert store.prefix == "lake/"
    assert store.uri == f"s3://{s3_bucket}/lake"
    assert store.uri_for("curated/a.parquet") == f"s3://{s3_bucket}/lake/curated/a.parquet"
    assert repr(store) == f"S3ObjectStore('s3://{s3_bucket}/lake')"


def test_store_without_prefix(s3_client: S3Client, s3_bucket: str) -> None:
    store = S3ObjectStore(s3_client, s3_bucket)
    assert store.uri == f"s3://{s3_bucket}"
    store.put_bytes("a.csv", b"1")
    assert [o.key for o in store.list()] == ["a.csv"]


def test_from_uri(s3_client: S3Client, s3_bucket: str) -> None:
    store = S3ObjectStore.from_uri(s3_client, f"s3://{s3_bucket}/lake/zone/")
    assert (store.bucket, store.prefix) == (s3_bucket, "lake/zone/")
    with pytest.raises(InvalidKeyError):
        S3ObjectStore.from_uri(s3_client, "/local/path")


def test_put_get_exists_delete(store: S3ObjectStore, s3_client: S3Client, s3_bucket: str) -> None:
    uri = store.put_bytes("curated/t/dt=2026-01-01/data.parquet", b"PAR1", metadata={"rows": "10"})
    assert uri == f"s3://{s3_bucket}/lake/curated/t/dt=2026-01-01/data.parquet"
    assert store.get_bytes("curated/t/dt=2026-01-01/data.parquet") == b"PAR1"
    assert store.exists("curated/t/dt=2026-01-01/data.parquet")
    head = s3_client.head(s3_bucket, "lake/curated/t/dt=2026-01-01/data.parquet")
    assert head["ContentType"] == "application/vnd.apache.parquet"
    assert head["Metadata"]["rows"] == "10" and head["Metadata"]["source"] == "lake"
    assert head["ServerSideEncryption"] == "AES256"

    store.put_bytes("curated/t/dt=2026-01-01/data.parquet", b"PAR2")  # replaces the whole object
    assert store.get_bytes("curated/t/dt=2026-01-01/data.parquet") == b"PAR2"

    store.delete("curated/t/dt=2026-01-01/data.parquet")
    assert not store.exists("curated/t/dt=2026-01-01/data.parquet")
    store.delete("curated/t/dt=2026-01-01/data.parquet")  # missing: not an error


def test_missing_object_is_object_not_found(store: S3ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.get_bytes("nope/data.parquet")
    assert isinstance(info.value, S3ObjectNotFoundError | FileNotFoundError)
    assert "lake/nope/data.parquet" in str(info.value)
    with pytest.raises(ObjectNotFound):
        store.download_file("nope/data.parquet", tmp_path / "x")


def test_list_is_relative_sorted_and_scoped(store: S3ObjectStore, s3_boto_client: Any, s3_bucket: str) -> None:
    for key in ("b/2.csv", "a/1.csv", "b/1.csv", "a/sub/3.csv", "ab.csv"):
        store.put_bytes(key, key.encode())
    s3_boto_client.put_object(Bucket=s3_bucket, Key="other/x.csv", Body=b"outside the store")
    s3_boto_client.put_object(Bucket=s3_bucket, Key="lakehouse/y.csv", Body=b"shares the prefix text")
    s3_boto_client.put_object(Bucket=s3_bucket, Key="lake/a/folder/", Body=b"")  # a console folder marker

    assert [o.key for o in store.list()] == ["a/1.csv", "a/sub/3.csv", "ab.csv", "b/1.csv", "b/2.csv"]
    assert [o.key for o in store.list("a/")] == ["a/1.csv", "a/sub/3.csv"]
    assert [o.key for o in store.list("a")] == ["a/1.csv", "a/sub/3.csv", "ab.csv"]
    assert list(store.list("zzz/")) == []
    (info,) = store.list("b/1")
    assert info.size == len(b"b/1.csv") and info.etag and '"' not in info.etag


def test_upload_and_download_files(store: S3ObjectStore, tmp_path: Path, s3_client: S3Client) -> None:
    src = tmp_path / "export.csv"
    src.write_text("host,cpu\na,1\n")
    uri = store.upload_file(src, "raw/export.csv", metadata={"tenant": "acme"})
    assert uri == f"{store.uri}/raw/export.csv"
    meta = s3_client.head(store.bucket, "lake/raw/export.csv")["Metadata"]
    assert (meta["tenant"], meta["original_filename"], meta["source"]) == ("acme", "export.csv", "lake")
    out = store.download_file("raw/export.csv", tmp_path / "out" / "copy.csv")
    assert out.read_text() == src.read_text()


@pytest.mark.parametrize("key", ["", "/abs", "../escape", "a//b", "a/../../b", "a\\b"])
def test_keys_are_validated(store: S3ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.get_bytes(key)
    if key:  # "" is a valid listing prefix: the whole store
        with pytest.raises(InvalidKeyError):
            store.list(key + "/")


def test_prefix_and_bucket_are_validated(s3_client: S3Client) -> None:
    with pytest.raises(InvalidKeyError):
        S3ObjectStore(s3_client, "bucket", "../up")
    with pytest.raises(InvalidKeyError):
        S3ObjectStore(s3_client, "Bad_Bucket")
