"""Crash trials: an ETL run killed at each of its writes in turn, then rerun, ends as a clean run does.

The kill is injected in the store: the N-th write (``put_bytes``, ``upload_file``, ``delete``) raises an exception
that no ``except Exception`` catches, and every write after it fails the same way (the process is dead: nothing
it would still write reaches the lake). The rerun must leave the curated tables of a clean run, every raw file
once in ``etl_files``, every raw row counted once in ``etl_runs``, no run left ``started`` and nothing partial.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from capacity_forecaster import stages
from capacity_forecaster.access import QUARANTINED_FILES_PREFIX, UPLOADS_PREFIX
from capacity_forecaster.ingest import ingest_files
from capacity_forecaster.schema import ETL_FILES, ETL_RUNS, METRICS_DAILY, QUARANTINE
from capacity_forecaster.settings import Settings, load_settings
from capacity_forecaster.stages import ETL_LEASE, run_etl
from capacity_forecaster.storage.lake import Lake, open_lake
from capacity_forecaster.storage.lease import LEASE_TTL, Lease, LeaseHeld, lease_key
from capacity_forecaster.storage.object_store import LocalObjectStore

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
WRITES = ("put_bytes", "upload_file", "delete")
BAD_FILE = UPLOADS_PREFIX + "default/broken.parquet"


class Killed(BaseException):
    """The process dies here (like SIGKILL, no ``except Exception`` runs)."""


def samples(folder: Path, name: str, rows: list[str]) -> Path:
    path = folder / name
    path.write_text("timestamp,server_id,metric,value\n" + "\n".join(rows) + "\n")
    return path


def five_minutes(day: str, server: str, values: list[object], hour: int = 10) -> list[str]:
    return [f"{day}T{hour:02d}:{5 * i:02d}:00Z,{server},cpu,{v}" for i, v in enumerate(values)]


def prepare(lake: Lake, settings: Settings, folder: Path) -> int:
    """A lake with one processed file, then new files: one touching the processed day again, one with bad rows,
    one unreadable. Returns the raw rows of all readable files."""
    folder.mkdir(parents=True, exist_ok=True)
    old = samples(folder, "old.csv", five_minutes("2026-11-18", "s1", [10, 20, 30, 40]))
    ingest_files(lake, [old], now=NOW - timedelta(days=1))
    run_etl(lake, settings, now=NOW - timedelta(days=1))
    late = samples(folder, "late.csv", five_minutes("2026-11-18", "s1", [50, 60], hour=14))
    mixed = samples(
        folder,
        "mixed.csv",
        five_minutes("2026-11-19", "s1", [11, 12, 13])
        + five_minutes("2026-11-20", "s2", [70, "abc", 90, 250])
        + ["2026-11-20T11:00:00Z,,cpu,5"],
    )
    ingest_files(lake, [late, mixed], now=NOW)
    lake.store.put_bytes(BAD_FILE, b"not parquet at all")
    return 4 + 2 + 8


def inject(
    monkeypatch: pytest.MonkeyPatch, lake: Lake, at: int, error: Callable[[str], BaseException], *, once: bool = False
) -> list[str]:
    """Count the store's writes; from the ``at``-th on (never with 0), each raises ``error(call)`` (only the
    ``at``-th with ``once``)."""
    calls: list[str] = []
    for name in WRITES:
        real = getattr(lake.store, name)

        def write(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            call = f"{_name} {args[0] if _name != 'upload_file' else args[1]}"
            calls.append(call)
            if at and (len(calls) == at or (len(calls) > at and not once)):
                raise error(call)
            return _real(*args, **kwargs)

        monkeypatch.setattr(lake.store, name, write)
    return calls


LakeMaker = Callable[[str], tuple[Lake, Settings]]


@pytest.fixture(params=["local", "s3"])
def make_lake(request: pytest.FixtureRequest, tmp_path: Path) -> LakeMaker:
    """A fresh lake per name: a folder, or a prefix of a bucket on the moto server."""
    if request.param == "local":

        def local(name: str) -> tuple[Lake, Settings]:
            uri = str(tmp_path / name / "lake")
            return open_lake(uri), load_settings(environ={}, overrides={"lake": uri})

        return local
    bucket: str = request.getfixturevalue("s3_bucket")
    request.getfixturevalue("s3_endpoint_env")  # CF_S3_ENDPOINT_URL: the moto server

    def on_s3(name: str) -> tuple[Lake, Settings]:
        settings = load_settings(environ={}, overrides={"lake": f"s3://{bucket}/{name}"})
        return open_lake(settings.lake, settings.s3_config()), settings

    return on_s3


def outcome(lake: Lake) -> dict[str, Any]:
    """What a run leaves that must not depend on kills: curated rows, the manifest, the run log's sums."""
    daily = lake.read_table(METRICS_DAILY).sort_values(["dt", "server_id", "metric"], ignore_index=True)
    quarantine = lake.read_table(QUARANTINE).drop(columns=["etl_run_id", "dt"])
    manifest = lake.read_table(ETL_FILES)
    runs = lake.read_table(ETL_RUNS)
    keys = [o.key for o in lake.store.list("")]
    return {
        "daily": daily,
        "quarantine": sorted(map(tuple, quarantine.astype(str).to_numpy().tolist())),
        "manifest": sorted(zip(manifest["key"], manifest["status"], manifest["rows"], strict=True)),
        "sums": runs[["files_read", "files_rejected", "rows_in", "rows_written", "rows_quarantined"]].sum().to_dict(),
        "statuses": set(runs["status"]),
        "raw": [k for k in keys if k.startswith("raw/")],
        "set_aside": [k for k in keys if k.startswith(QUARANTINED_FILES_PREFIX)],
        "temporary": [k for k in keys if ".tmp-" in k] + _local_temporary_files(lake),
        "lease": lake.store.exists(lease_key(ETL_LEASE)),
    }


def _local_temporary_files(lake: Lake) -> list[str]:
    store = lake.store
    return [str(p) for p in store.root.rglob(".tmp-*")] if isinstance(store, LocalObjectStore) else []


def assert_converged(lake: Lake, clean: dict[str, Any], rows: int) -> None:
    got = outcome(lake)
    pd.testing.assert_frame_equal(got["daily"], clean["daily"])
    assert got["quarantine"] == clean["quarantine"]
    assert got["manifest"] == clean["manifest"]  # each file once, with its rows
    assert got["sums"] == clean["sums"]
    assert got["sums"]["rows_in"] == rows == got["sums"]["rows_written"] + got["sums"]["rows_quarantined"]
    assert got["statuses"] <= {"succeeded", "interrupted"}
    assert got["raw"] == clean["raw"] and BAD_FILE not in got["raw"]
    assert [k.endswith(BAD_FILE) for k in got["set_aside"]].count(True) == 1  # one copy, and its reason
    assert got["temporary"] == [] and not got["lease"]


def test_a_kill_at_any_write_is_settled_by_the_rerun(
    make_lake: LakeMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_lake, settings = make_lake("clean")
    rows = prepare(clean_lake, settings, tmp_path / "files")
    with monkeypatch.context() as patch:
        writes = inject(patch, clean_lake, 0, Killed)
        run_etl(clean_lake, settings, now=NOW)
    clean = outcome(clean_lake)
    assert clean["sums"]["rows_in"] == rows and clean["sums"]["files_rejected"] == 1
    assert len(writes) >= 8, writes  # started row, 3 daily partitions, quarantine, the copy and its note, ...

    settled: dict[str, list[int]] = {}
    for at in range(1, len(writes) + 1):
        lake, settings = make_lake(f"kill-{at}")
        prepare(lake, settings, tmp_path / "files")
        with monkeypatch.context() as patch:
            inject(patch, lake, at, lambda call: Killed(call))
            with pytest.raises(Killed):
                run_etl(lake, settings, now=NOW)
        lake.store.delete(lease_key(ETL_LEASE))  # a killed run's lease: expired by the time of the rerun
        # Odd trials rerun the next day: the interrupted run's rows and copies are under another day.
        rerun = NOW + (timedelta(days=1) if at % 2 else timedelta(hours=1))
        run_etl(lake, settings, now=rerun)
        assert_converged(lake, clean, rows)
        reasons = lake.read_table(ETL_RUNS)["reason"].dropna()
        for reason in reasons[reasons != ""]:
            settled.setdefault(reason, []).append(at)
    # Both kinds of kill were tried: before the commit (interrupted) and after it (succeeded, counts kept).
    assert set(settled) == {"killed before its files were recorded", "killed after its files were recorded"}
    print(f"{len(writes)} crash points, {len(writes)} reruns converged: {settled}")


def test_a_failing_run_records_failed_with_its_reason_and_the_rerun_converges(
    make_lake: LakeMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_lake, settings = make_lake("clean")
    rows = prepare(clean_lake, settings, tmp_path / "files")
    run_etl(clean_lake, settings, now=NOW)
    clean = outcome(clean_lake)

    lake, settings = make_lake("failing")
    prepare(lake, settings, tmp_path / "files")
    with monkeypatch.context() as patch:
        # The second write is the first daily partition: the store refuses it (the failed row is written).
        writes = inject(patch, lake, 2, lambda call: OSError(f"disk full\nwriting {call}"), once=True)
        with pytest.raises(OSError, match="disk full"):
            run_etl(lake, settings, now=NOW)
    runs = lake.read_table(ETL_RUNS)
    failed = runs[runs["status"] == "failed"]
    assert len(failed) == 1, writes
    assert failed["reason"].tolist() == ["OSError: disk full"]
    assert failed[["rows_in", "rows_written", "rows_quarantined", "files_read"]].sum().sum() == 0
    run_etl(lake, settings, now=NOW + timedelta(hours=1))
    got = outcome(lake)
    pd.testing.assert_frame_equal(got["daily"], clean["daily"])
    assert got["manifest"] == clean["manifest"] and got["sums"] == clean["sums"] and got["sums"]["rows_in"] == rows
    assert got["statuses"] == {"succeeded", "failed"} and got["raw"] == clean["raw"]


KILL_AT_MANIFEST = """
import os, sys
from datetime import datetime
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import run_etl
from capacity_forecaster.storage.lake import open_lake

uri, now, after = sys.argv[1], datetime.fromisoformat(sys.argv[2]), sys.argv[3] == "after"
lake = open_lake(uri)
real_put = lake.store.put_bytes

def put_bytes(key, *args, **kwargs):
    if key == "state/etl_files/data.parquet" and not after:
        os._exit(137)
    uri = real_put(key, *args, **kwargs)
    if key == "state/etl_files/data.parquet":
        os._exit(137)
    return uri

lake.store.put_bytes = put_bytes
run_etl(lake, load_settings(environ={}, overrides={"lake": uri}), now=now)
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_process_killed_at_the_commit_holds_the_lease_until_it_expires_then_the_rerun_settles_it(
    when: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_lake, settings = open_lake(tmp_path / "clean"), load_settings(environ={}, overrides={"lake": "x"})
    rows = prepare(clean_lake, settings, tmp_path / "files")
    run_etl(clean_lake, settings, now=NOW)
    clean = outcome(clean_lake)

    uri = str(tmp_path / "killed")
    lake, settings = open_lake(uri), load_settings(environ={}, overrides={"lake": uri})
    prepare(lake, settings, tmp_path / "files")
    code = [sys.executable, "-c", KILL_AT_MANIFEST, uri, NOW.isoformat(), when]
    done = subprocess.run(code, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert done.returncode == 137, done.stderr
    assert lake.store.exists("state/etl_files/data.parquet") and lake.store.exists(lease_key(ETL_LEASE))
    with pytest.raises(LeaseHeld):
        run_etl(lake, settings, now=NOW)
    later = datetime.now(UTC) + LEASE_TTL + timedelta(minutes=1)  # the killed run's lease has expired
    monkeypatch.setattr(stages, "Lease", functools.partial(Lease, clock=lambda: later, renew=False))
    run_etl(lake, settings, now=NOW + timedelta(hours=1))
    assert_converged(lake, clean, rows)
    runs = lake.read_table(ETL_RUNS)
    expected = "killed after its files were recorded" if when == "after" else "killed before its files were recorded"
    assert expected in set(runs["reason"])
