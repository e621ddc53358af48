"""Object stores: the one place that knows whether the lake is a local folder or an S3 prefix.

Both implement :class:`ObjectStore`. Keys are relative, ``/``-separated lake keys such as
``curated/metrics_daily/dt=2026-01-01/data.parquet``; every write replaces the whole object atomically.

The conditional operations (``create_exclusive``, ``get_with_etag``, ``replace_if``, ``delete_if``) are what a
lease (:mod:`capacity_forecaster.storage.lease`) needs: on S3 they are conditional requests (``If-None-Match: *``,
``If-Match: <ETag>``); locally an exclusive hard link of a complete temporary file, and compare-and-swap steps
under an advisory lock of the folder (``fcntl.flock``, where the platform has it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, runtime_checkable

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: the compare-and-swap steps run unguarded there
    fcntl = None  # type: ignore[assignment]

from capacity_forecaster.errors import CapacityForecasterError
from capacity_forecaster.storage.keys import validate_key

STALE_TEMP_AGE = timedelta(minutes=30)
"""A local ``.tmp-*.part`` file older than this is the leftover of a killed write (a live write renames its
file within seconds): listings delete it."""
TEMP_PREFIX = ".tmp-"

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing says of one object."""

    key: str
    size: int
    last_modified: datetime
    etag: str = ""
    storage_class: str = "STANDARD"


@runtime_checkable
class ObjectStore(Protocol):
    """Atomic whole-object storage addressed by relative keys."""

    @property
    def uri(self) -> str:
        """The root URI of the store (``/abs/path`` or ``s3://bucket/prefix``)."""
        ...

    def uri_for(self, key: str) -> str:
        """The URI of one key (a local path or an ``s3://`` URI)."""
        ...

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Write (or replace) one object atomically; return its URI."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read one object; raise ``FileNotFoundError``-like :class:`ObjectNotFound` when missing."""
        ...

    def upload_file(self, path: Path, key: str, *, metadata: Mapping[str, str] | None = None) -> str:
        """Copy a local file to ``key`` atomically (multipart above a threshold on S3); return its URI."""
        ...

    def download_file(self, key: str, path: Path) -> Path:
        """Copy the object at ``key`` to a local file."""
        ...

    def copy(self, key: str, target: str) -> str:
        """Copy one object to ``target`` without holding it in memory (server-side on S3); return its URI."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects whose key starts with ``prefix``, in key order."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        ...

    def create_exclusive(self, key: str, data: bytes, *, content_type: str | None = None) -> str:
        """Write ``key`` only if no object is there; return its ETag. :class:`PreconditionFailed` if one is."""
        ...

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and ETag; :class:`ObjectNotFound` when missing."""
        ...

    def replace_if(self, key: str, data: bytes, etag: str, *, content_type: str | None = None) -> str:
        """Replace ``key`` only if its ETag is still ``etag``; return the new ETag. :class:`PreconditionFailed`
        if it changed or is gone."""
        ...

    def delete_if(self, key: str, etag: str) -> None:
        """Delete ``key`` only if its ETag is still ``etag`` (gone already: not an error).
        :class:`PreconditionFailed` if it changed."""
        ...


class ObjectNotFound(FileNotFoundError):
    """The object does not exist in the store."""


class PreconditionFailed(Exception):
    """A conditional write or delete found the object other than expected (there already, changed, or gone)."""


class LocalStoreError(CapacityForecasterError, OSError):
    """The local lake folder cannot be read or written (a file in the way, no permission, a full disk). Also an
    OSError, for callers that catch the file system's own errors."""


def _local_errors(
    action: str,
) -> Callable[[Callable[Concatenate[Any, str, _P], _R]], Callable[Concatenate[Any, str, _P], _R]]:
    """File system errors of a :class:`LocalObjectStore` method on one key as a one-line :class:`LocalStoreError`;
    a missing object stays :class:`ObjectNotFound`."""

    def decorate(method: Callable[Concatenate[Any, str, _P], _R]) -> Callable[Concatenate[Any, str, _P], _R]:
        @wraps(method)
        def wrapper(self: Any, key: str, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return method(self, key, *args, **kwargs)
            except (ObjectNotFound, LocalStoreError):
                raise
            except OSError as exc:
                where = f" ({exc.filename})" if exc.filename else ""
                raise LocalStoreError(
                    f"lake {self.root}: cannot {action} {key}{where}: {exc.strerror or exc}; "
                    "the lake must be a folder this user can read and write"
                ) from None

        return wrapper

    return decorate


def content_etag(data: bytes) -> str:
    """The ETag of a local object: the MD5 of its bytes in hex (what S3 gives a single-part upload)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _written_temp(path: Path, data: bytes) -> Path:
    """``data`` in a complete, synced temporary file beside ``path`` (its folder created), never visible as an
    object (listings skip the ``.tmp-`` prefix); the caller renames or links it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


class LocalObjectStore:
    """A lake on the local file system. Writes go to a temporary file in the same folder, then ``os.replace``.

    Temporary files (``.tmp-*.part``) are never listed; one that a killed process left (older than
    :data:`STALE_TEMP_AGE`) is deleted by the listing that comes across it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def uri_for(self, key: str) -> str:
        return str(self._path(key))

    @_local_errors("write")
    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        path = self._path(key)
        tmp = _written_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return str(path)

    @_local_errors("read")
    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object at {path}") from None

    def upload_file(self, path: Path, key: str, *, metadata: Mapping[str, str] | None = None) -> str:
        return self._upload(key, path)

    @_local_errors("write")
    def _upload(self, key: str, path: Path) -> str:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=TEMP_PREFIX, suffix=".part")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(dest)

    @_local_errors("write")
    def copy(self, key: str, target: str) -> str:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"no object at {src}")
        return self.upload_file(src, target)

    @_local_errors("read")
    def download_file(self, key: str, path: Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"no object at {src}")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        # Walk only the deepest folder the prefix names, then filter by the full prefix.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not base.is_dir():
            return
        found: list[ObjectInfo] = []
        stale_before = datetime.now(UTC).timestamp() - STALE_TEMP_AGE.total_seconds()
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                full = Path(dirpath, name)
                if name.startswith(TEMP_PREFIX):  # an atomic write in flight, never visible, or a killed one's
                    _remove_if_older(full, stale_before)
                    continue
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        yield from sorted(found, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    # -- conditional operations (leases)

    @_local_errors("write")
    def create_exclusive(self, key: str, data: bytes, *, content_type: str | None = None) -> str:
        """A complete temporary file hard-linked to the key: the link fails if the key exists, so two creators
        never both succeed and no reader sees a partial object. Without hard links, an ``O_EXCL`` create."""
        path = self._path(key)
        tmp = _written_temp(path, data)
        try:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise PreconditionFailed(f"an object is already at {path}") from None
            except OSError:  # no hard links on this file system
                self._create_excl(path, data)
        finally:
            tmp.unlink(missing_ok=True)
        return content_etag(data)

    @staticmethod
    def _create_excl(path: Path, data: bytes) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise PreconditionFailed(f"an object is already at {path}") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, content_etag(data)

    @contextlib.contextmanager
    def _guard(self, key: str) -> Iterator[Path]:
        """Hold an exclusive advisory lock for a compare-and-swap on ``key`` (a file in a hidden ``.guards``
        folder beside it, never listed); yields the key's path."""
        path = self._path(key)
        folder = path.parent / ".guards"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / path.name, "a+b") as guard:
            if fcntl is not None:
                fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
            yield path

    @_local_errors("write")
    def replace_if(self, key: str, data: bytes, etag: str, *, content_type: str | None = None) -> str:
        with self._guard(key) as path:
            try:
                current = content_etag(path.read_bytes())
            except FileNotFoundError:
                raise PreconditionFailed(f"no object at {path} any more") from None
            if current != etag:
                raise PreconditionFailed(f"the object at {path} has changed")
            self.put_bytes(key, data, content_type=content_type)
        return content_etag(data)

    @_local_errors("delete")
    def delete_if(self, key: str, etag: str) -> None:
        with self._guard(key) as path:
            try:
                current = content_etag(path.read_bytes())
            except FileNotFoundError:
                return
            if current != etag:
                raise PreconditionFailed(f"the object at {path} has changed")
            path.unlink()

    @_local_errors("delete")
    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Tidy empty partition folders so listings and DuckDB globs stay clean.
        parent = path.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def _remove_if_older(path: Path, before: float) -> None:
    """Delete ``path`` if it was last modified before the ``before`` timestamp."""
    with contextlib.suppress(FileNotFoundError):  # renamed or removed meanwhile
        if path.stat().st_mtime < before:
            path.unlink()
