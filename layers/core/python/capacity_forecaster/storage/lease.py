"""Leases: one run at a time of the stages that write the same tables, on a local lake and on S3 alike.

A lease is a small JSON object at ``state/locks/<name>.json`` holding its owner, a token, when it was taken and
when it expires. It is created with an exclusive write (S3: ``PutObject`` with ``If-None-Match: *``; locally a
hard link of a complete file), so of two runs starting together exactly one gets it; the other fails at once
with :class:`LeaseHeld`, a one-line error naming the holder, since when and until when. The holder renews the
lease every third of its time to live (``If-Match`` on the ETag it wrote) and deletes it at the end, on error
too (``If-Match`` again, so a lease taken over by someone else is never deleted). A run killed without a chance
to clean up holds the lease until it expires; the next run then takes it over, conditionally on the stale
lease's ETag, so two runs that find the same stale lease cannot both win.

A run may wait for a held lease instead (:func:`waiting_for_leases`, the CLI's ``--wait [SECONDS]``): it polls
with back-off (0.2 s doubling to 5 s) until the lease is free or the time is up, then raises :class:`LeaseHeld`.

Expiry is judged by the clock of the run that reads the lease: clocks of the machines sharing a lake should be
within a small part of the time to live (NTP keeps them within a second).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Final

from capacity_forecaster.access import LOCKS_PREFIX
from capacity_forecaster.errors import CapacityForecasterError, single_line
from capacity_forecaster.storage.object_store import ObjectNotFound, ObjectStore, PreconditionFailed

__all__ = [
    "LEASE_TTL",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "LeaseRecord",
    "default_owner",
    "lease_key",
    "waiting_for_leases",
]

log = logging.getLogger(__name__)

LEASE_TTL: Final = timedelta(minutes=10)
"""How long a lease lives without renewal; its holder renews it every third of that."""
_JSON: Final = "application/json"
_ATTEMPTS: Final = 3
"""Rounds of create / read / take over before giving up on a lease that keeps changing hands."""

WAIT_FIRST_S: Final = 0.2
WAIT_CAP_S: Final = 5.0
"""Polling back-off of a run waiting for a held lease: the first pause, doubling up to this one."""
_WAIT: ContextVar[float] = ContextVar("lease_wait_s", default=0.0)

Clock = Callable[[], datetime]


@contextmanager
def waiting_for_leases(seconds: float) -> Iterator[None]:
    """Within the block, a :class:`Lease` held by another run is waited for up to ``seconds`` (0: refused at
    once, the default) before :class:`LeaseHeld` is raised."""
    if seconds < 0:
        raise ValueError(f"a lease wait cannot be negative, got {seconds}")
    token = _WAIT.set(seconds)
    try:
        yield
    finally:
        _WAIT.reset(token)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime, timespec: str = "seconds") -> str:
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def lease_key(name: str) -> str:
    """The lake key of the lease ``name``: ``state/locks/<name>.json``."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"lease name {name!r} must be letters, digits, '-' and '_'")
    return f"{LOCKS_PREFIX}{name}.json"


def default_owner() -> str:
    """Who is running: the Lambda function and its log stream, or user@host and the process id."""
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    if function:
        return f"lambda {function} ({os.environ.get('AWS_LAMBDA_LOG_STREAM_NAME', 'unknown stream')})"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease object holds."""

    name: str
    owner: str
    token: str
    acquired_at: datetime
    expires_at: datetime

    def to_bytes(self) -> bytes:
        body = {
            "name": self.name,
            "owner": self.owner,
            "token": self.token,
            "acquired_at": _iso(self.acquired_at, "milliseconds"),
            "expires_at": _iso(self.expires_at, "milliseconds"),
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord | None:
        """The record, or None for an object that is not one (unreadable: treated as stale)."""
        try:
            body = json.loads(data)
            return cls(
                name=str(body["name"]),
                owner=str(body["owner"]),
                token=str(body["token"]),
                acquired_at=datetime.fromisoformat(str(body["acquired_at"]).replace("Z", "+00:00")),
                expires_at=datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00")),
            )
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            return None

    def live(self, now: datetime) -> bool:
        return self.expires_at.astimezone(UTC) > now


class LeaseHeld(CapacityForecasterError):
    """Another run holds the lease: this one does not start."""

    def __init__(self, name: str, uri: str, record: LeaseRecord | None, waited_s: float = 0) -> None:
        self.name, self.uri, self.record, self.waited_s = name, uri, record, waited_s
        if record is None:
            text = f"the {name} lease at {uri} keeps changing hands: another {name} run is starting; try again later"
        else:
            text = (
                f"another {name} run holds the lease at {uri}: {record.owner} since {_iso(record.acquired_at)} "
                f"until {_iso(record.expires_at)}; try again when it ends (a lease past its expiry is taken over)"
            )
        if waited_s > 0:
            text += f"; waited {waited_s:g}s for it (--wait)"
        super().__init__(text)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.name, self.uri, self.record, self.waited_s))


class LeaseLost(CapacityForecasterError):
    """The lease expired under its holder and another run took it over: the two runs overlapped."""


class Lease:
    """An exclusive lease on ``state/locks/<name>.json`` of ``store``; use it as a context manager.

    ``with Lease(lake.store, "etl"):`` acquires (or raises :class:`LeaseHeld`), renews in a background thread
    while the block runs, and releases at the end, also when the block raises.
    """

    def __init__(
        self,
        store: ObjectStore,
        name: str,
        *,
        owner: str | None = None,
        ttl: timedelta = LEASE_TTL,
        clock: Clock = _utc_now,
        renew: bool = True,
        wait_s: float | None = None,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError(f"a lease needs a positive time to live, got {ttl}")
        self.store = store
        self.name = name
        self.key = lease_key(name)
        self.owner = owner or default_owner()
        self.ttl = ttl
        self.token = uuid.uuid4().hex
        self._clock = clock
        self._renew_in_background = renew
        self.wait_s = wait_s  # None: the wait set by :func:`waiting_for_leases` (none by default)
        self._etag: str | None = None
        self.record: LeaseRecord | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self.store.uri_for(self.key)

    @property
    def held(self) -> bool:
        return self._etag is not None and not self.lost

    def _new_record(self, acquired_at: datetime | None = None) -> LeaseRecord:
        now = self._clock()
        return LeaseRecord(self.name, self.owner, self.token, acquired_at or now, now + self.ttl)

    # -- acquire, renew, release

    def acquire(self) -> Lease:
        """Take the lease: create it, or take over an expired one; :class:`LeaseHeld` if another run holds it
        (after waiting for it to be free up to ``wait_s`` seconds, polling with back-off)."""
        wait = _WAIT.get() if self.wait_s is None else self.wait_s
        started = time.monotonic()
        pause = WAIT_FIRST_S
        while True:
            try:
                return self._acquire_once()
            except LeaseHeld as held:
                left = wait - (time.monotonic() - started)
                if left <= 0:
                    if wait > 0:
                        raise LeaseHeld(held.name, held.uri, held.record, wait) from None
                    raise
                if pause == WAIT_FIRST_S:
                    log.warning("%s; waiting up to %gs for it", held, wait)
                time.sleep(min(left, pause * random.uniform(0.8, 1.0)))
                pause = min(pause * 2, WAIT_CAP_S)

    def _acquire_once(self) -> Lease:
        if self._etag is not None:
            raise RuntimeError(f"lease {self.name} is already held by this object")
        last: LeaseRecord | None = None
        for _ in range(_ATTEMPTS):
            record = self._new_record()
            try:
                self._etag = self.store.create_exclusive(self.key, record.to_bytes(), content_type=_JSON)
                self.record = record
                break
            except PreconditionFailed:
                pass
            try:
                data, etag = self.store.get_with_etag(self.key)
            except ObjectNotFound:
                continue  # released between our create and our read: create again
            current = LeaseRecord.from_bytes(data)
            if current is not None and current.token == self.token:
                self._etag, self.record = etag, current  # our own create, retried by the client after a timeout
                break
            if current is not None and current.live(self._clock()):
                raise LeaseHeld(self.name, self.uri, current)
            last = current
            try:
                self._etag = self.store.replace_if(self.key, record.to_bytes(), etag, content_type=_JSON)
                self.record = record
                stale = f"{current.owner} until {_iso(current.expires_at)}" if current else "an unreadable lease"
                log.warning("took over the expired %s lease at %s (held by %s)", self.name, self.uri, stale)
                break
            except PreconditionFailed:
                continue  # another run took it over (or it was released) first: look again
        else:
            raise LeaseHeld(self.name, self.uri, last)
        if self._renew_in_background:
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.name}", daemon=True)
            self._thread.start()
        return self

    def renew(self) -> None:
        """Push the expiry one time to live further; marks the lease lost (and raises :class:`LeaseLost`) if
        another run took it over meanwhile."""
        with self._lock:
            if self._etag is None or self.lost:
                return
            record = self._new_record(self.record.acquired_at if self.record else None)
            try:
                self._etag = self.store.replace_if(self.key, record.to_bytes(), self._etag, content_type=_JSON)
                self.record = record
            except PreconditionFailed:
                self.lost = True
                raise LeaseLost(
                    f"the {self.name} lease at {self.uri} expired and was taken over by another run: "
                    "the two runs overlapped; run this stage again once the other has finished"
                ) from None

    def _renew_loop(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLost as exc:  # release() raises it to the run: logged here only at info, so it is told once
                log.info("%s", exc)
                return
            except Exception as exc:  # a failed renewal is retried at the next interval
                log.warning("could not renew the %s lease at %s: %s", self.name, self.uri, single_line(str(exc)))

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours; :class:`LeaseLost` if it was taken over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            etag, self._etag = self._etag, None
            if etag is None:
                return
            if self.lost:
                raise LeaseLost(
                    f"the {self.name} lease at {self.uri} expired and was taken over by another run while this one "
                    "ran: the two runs overlapped; run this stage again once the other has finished"
                )
            try:
                self.store.delete_if(self.key, etag)
            except PreconditionFailed:
                self.lost = True
                raise LeaseLost(
                    f"the {self.name} lease at {self.uri} was taken over by another run before this one released it"
                ) from None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.release()
        except Exception as release_error:
            if exc is None:
                raise
            # the block's own error is what the user must see; the release failure is logged
            log.error("could not release the %s lease: %s", self.name, single_line(str(release_error)))
