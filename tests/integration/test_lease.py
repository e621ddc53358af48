"""The lease on a local lake and on S3 (moto server, real HTTP: conditional PutObject and DeleteObject)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from capacity_forecaster.access import LOCKS_PREFIX
from capacity_forecaster.storage.lease import Lease, LeaseHeld, LeaseLost, LeaseRecord, lease_key
from capacity_forecaster.storage.object_store import LocalObjectStore, ObjectStore, PreconditionFailed
from capacity_forecaster.storage.s3_client import S3Client, S3Config
from capacity_forecaster.storage.s3_store import S3ObjectStore

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "lake")
        return
    config: S3Config = request.getfixturevalue("s3_config")
    bucket: str = request.getfixturevalue("s3_bucket")
    with S3Client(config) as client:
        yield S3ObjectStore(client, bucket, "lake")


def clock_at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def read_record(store: ObjectStore, name: str) -> LeaseRecord:
    record = LeaseRecord.from_bytes(store.get_bytes(lease_key(name)))
    assert record is not None
    return record


def test_conditional_operations_of_the_store(store: ObjectStore) -> None:
    key = f"{LOCKS_PREFIX}probe.json"
    etag = store.create_exclusive(key, b"one")
    with pytest.raises(PreconditionFailed):
        store.create_exclusive(key, b"two")
    assert store.get_with_etag(key) == (b"one", etag)
    with pytest.raises(PreconditionFailed):
        store.replace_if(key, b"three", "0" * 32)
    newer = store.replace_if(key, b"four", etag)
    assert newer != etag and store.get_bytes(key) == b"four"
    with pytest.raises(PreconditionFailed):
        store.delete_if(key, etag)
    assert store.exists(key)
    store.delete_if(key, newer)
    assert not store.exists(key)
    store.delete_if(key, newer)  # already gone: not an error
    with pytest.raises(PreconditionFailed):
        store.replace_if(key, b"five", newer)  # gone: nothing to replace
    assert [o.key for o in store.list(LOCKS_PREFIX)] == []  # the local guard files are never listed


def test_acquire_refuse_release(store: ObjectStore) -> None:
    first = Lease(store, "etl", owner="ops@laptop pid 1", clock=clock_at(T0), renew=False).acquire()
    body = json.loads(store.get_bytes(lease_key("etl")))
    assert body["owner"] == "ops@laptop pid 1"
    assert (body["acquired_at"], body["expires_at"]) == ("2026-11-23T10:00:00.000Z", "2026-11-23T10:10:00.000Z")

    second = Lease(store, "etl", owner="lambda etl", clock=clock_at(T0 + timedelta(minutes=5)), renew=False)
    with pytest.raises(LeaseHeld) as refused:
        second.acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert message == (
        f"another etl run holds the lease at {store.uri_for('state/locks/etl.json')}: ops@laptop pid 1 since "
        "2026-11-23T10:00:00Z until 2026-11-23T10:10:00Z; try again when it ends (a lease past its expiry is "
        "taken over)"
    )
    assert not second.held
    assert Lease(store, "risk", clock=clock_at(T0), renew=False).acquire().held  # another name: another lease

    first.release()
    assert not store.exists(lease_key("etl"))
    second.acquire()
    assert read_record(store, "etl").owner == "lambda etl"


def test_released_when_the_block_raises(store: ObjectStore) -> None:
    with pytest.raises(RuntimeError, match="stage failed"), Lease(store, "etl"):
        assert store.exists(lease_key("etl"))
        raise RuntimeError("stage failed")
    assert not store.exists(lease_key("etl"))


def test_a_stale_lease_is_taken_over_and_its_holder_cannot_delete_the_new_one(store: ObjectStore) -> None:
    killed = Lease(store, "etl", owner="killed run", clock=clock_at(T0), renew=False).acquire()
    later = clock_at(T0 + timedelta(minutes=11))  # past the 10 minutes of the killed run's lease
    new = Lease(store, "etl", owner="next run", clock=later, renew=False).acquire()
    assert read_record(store, "etl").owner == "next run"
    with pytest.raises(LeaseLost, match="taken over"):
        killed.release()
    assert read_record(store, "etl").owner == "next run"
    new.release()
    assert not store.exists(lease_key("etl"))


def test_an_unreadable_lease_object_is_taken_over(store: ObjectStore) -> None:
    store.put_bytes(lease_key("etl"), b"not json")
    with Lease(store, "etl", owner="repair", renew=False):
        assert read_record(store, "etl").owner == "repair"


def test_the_holder_renews_its_lease(store: ObjectStore) -> None:
    with Lease(store, "etl", ttl=timedelta(seconds=1.5)) as lease:
        first = read_record(store, "etl").expires_at
        time.sleep(2.0)  # renewals every 0.5 s: three or four of them, past the first expiry
        assert read_record(store, "etl").expires_at > first
        with pytest.raises(LeaseHeld):
            Lease(store, "etl", renew=False).acquire()
        assert lease.held
    assert not store.exists(lease_key("etl"))


def test_of_contenders_starting_together_exactly_one_wins(store: ObjectStore) -> None:
    contenders = 8
    barrier = threading.Barrier(contenders)
    outcomes: list[str] = []

    def contend(index: int) -> None:
        lease = Lease(store, "etl", owner=f"contender {index}", renew=False)
        barrier.wait()
        try:
            lease.acquire()
        except LeaseHeld:
            outcomes.append("refused")
        else:
            outcomes.append("won")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * (contenders - 1) + ["won"]
