"""The lake on S3: an :class:`~capacity_forecaster.storage.object_store.ObjectStore` under ``s3://bucket/prefix``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from capacity_forecaster.storage.keys import parse_s3_uri, validate_bucket_name, validate_key, validate_prefix
from capacity_forecaster.storage.object_store import ObjectInfo
from capacity_forecaster.storage.s3_client import S3Client

__all__ = ["S3ObjectStore"]


class S3ObjectStore:
    """Objects under ``prefix`` in ``bucket``, addressed by keys relative to that prefix.

    A single PUT replaces an object atomically; uploads above the multipart threshold become visible only when
    the multipart upload completes, so readers never see a partial object either way.
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str = "", *, source: str = "lake") -> None:
        self.client = client
        self.bucket = validate_bucket_name(bucket)
        prefix = validate_prefix(prefix)
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.source = source

    @classmethod
    def from_uri(cls, client: S3Client, uri: str, *, source: str = "lake") -> S3ObjectStore:
        """A store rooted at ``s3://bucket/prefix``."""
        bucket, prefix = parse_s3_uri(uri)
        return cls(client, bucket, prefix, source=source)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.rstrip('/')}" if self.prefix else f"s3://{self.bucket}"

    def _full(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        return self.client.put_bytes(
            self.bucket,
            self._full(key),
            data,
            content_type=content_type,
            metadata=metadata,
            source=self.source,
        )

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; a missing key raises ``S3ObjectNotFoundError`` (an ``ObjectNotFound``)."""
        return self.client.get_bytes(self.bucket, self._full(key))

    def upload_file(self, path: Path, key: str, *, metadata: Mapping[str, str] | None = None) -> str:
        return self.client.upload_file(path, self.bucket, self._full(key), source=self.source, extra_metadata=metadata)

    def copy(self, key: str, target: str) -> str:
        return self.client.copy_object(self.bucket, self._full(key), self._full(target))

    def download_file(self, key: str, path: Path) -> Path:
        return self.client.download_file(self.bucket, self._full(key), path)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose relative key starts with ``prefix``, in key order (S3 lists in UTF-8 binary order,
        which is Python's string order). Folder markers (keys ending in ``/``) are skipped."""
        listing = self.client.list_objects(self.bucket, self.prefix + validate_prefix(prefix))
        cut = len(self.prefix)
        return (replace(info, key=info.key[cut:]) for info in listing if not info.key.endswith("/"))

    def exists(self, key: str) -> bool:
        return self.client.exists(self.bucket, self._full(key))

    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        self.client.delete(self.bucket, self._full(key))

    # -- conditional operations (leases): S3 conditional requests

    def create_exclusive(self, key: str, data: bytes, *, content_type: str | None = None) -> str:
        """``PutObject`` with ``If-None-Match: *``: S3 refuses it (412) when an object is at the key."""
        return self.client.put_conditional(
            self.bucket, self._full(key), data, content_type=content_type, source=self.source
        )

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return self.client.get_with_etag(self.bucket, self._full(key))

    def replace_if(self, key: str, data: bytes, etag: str, *, content_type: str | None = None) -> str:
        """``PutObject`` with ``If-Match: <etag>``."""
        return self.client.put_conditional(
            self.bucket, self._full(key), data, if_match=etag, content_type=content_type, source=self.source
        )

    def delete_if(self, key: str, etag: str) -> None:
        """``DeleteObject`` with ``If-Match: <etag>``."""
        self.client.delete_if_match(self.bucket, self._full(key), etag)

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.uri!r})"
