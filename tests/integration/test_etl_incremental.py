"""The ETL touches only what its new raw files cover, processes a file once, and re-runs change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from capacity_forecaster.ingest import ingest_files
from capacity_forecaster.schema import METRICS_DAILY, QUARANTINE
from capacity_forecaster.settings import Settings, load_settings
from capacity_forecaster.stages import run_etl
from capacity_forecaster.storage.lake import Lake, open_lake
from capacity_forecaster.storage.object_store import ObjectInfo

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DAILY_PREFIX = "curated/metrics_daily/"


def export(folder: Path, name: str, day: str, server: str, values: list[float], hour: int = 10) -> Path:
    """5-minute cpu samples of one server from ``hour`` on ``day``."""
    lines = ["timestamp,server_id,metric,value"]
    lines += [f"{day}T{hour + i // 12:02d}:{5 * (i % 12):02d}:00Z,{server},cpu,{v}" for i, v in enumerate(values)]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(lake: Lake) -> dict[str, tuple[bytes, datetime]]:
    """Every metrics_daily object: its bytes and last modification time."""
    return {o.key: (lake.store.get_bytes(o.key), o.last_modified) for o in lake.store.list(DAILY_PREFIX)}


@pytest.fixture
def lake_and_settings(tmp_path: Path) -> tuple[Lake, Settings]:
    return open_lake(tmp_path / "lake"), load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")})


def test_a_run_touches_only_the_partitions_its_new_files_cover(
    lake_and_settings: tuple[Lake, Settings], tmp_path: Path
) -> None:
    lake, settings = lake_and_settings
    ingest_files(lake, [export(tmp_path, "oct.csv", "2026-10-01", "s1", [10, 20, 30])], now=NOW)
    run_etl(lake, settings, now=NOW)
    october = snapshot(lake)
    assert list(october) == [f"{DAILY_PREFIX}dt=2026-10-01/data.parquet"]

    # A new file 50 days later (beyond the gap-filling window) writes its own day and leaves October alone.
    later = NOW + timedelta(seconds=1)
    ingest_files(lake, [export(tmp_path, "nov.csv", "2026-11-20", "s1", [40, 50])], now=later)
    second = run_etl(lake, settings, now=later)
    assert second.counts["partitions_written"] == 1
    assert [uri for uri in second.written if DAILY_PREFIX in uri] == [
        lake.store.uri_for(f"{DAILY_PREFIX}dt=2026-11-20/data.parquet")
    ]
    after = snapshot(lake)
    assert after[f"{DAILY_PREFIX}dt=2026-10-01/data.parquet"] == october[f"{DAILY_PREFIX}dt=2026-10-01/data.parquet"]

    # A late file for October rewrites that day only, with the earlier samples of the day and the new ones.
    latest = later + timedelta(seconds=1)
    ingest_files(lake, [export(tmp_path, "late.csv", "2026-10-01", "s1", [0] * 12 + [90], hour=14)], now=latest)
    third = run_etl(lake, settings, now=latest)
    assert [uri for uri in third.written if DAILY_PREFIX in uri] == [
        lake.store.uri_for(f"{DAILY_PREFIX}dt=2026-10-01/data.parquet")
    ]
    assert (
        snapshot(lake)[f"{DAILY_PREFIX}dt=2026-11-20/data.parquet"]
        == after[f"{DAILY_PREFIX}dt=2026-11-20/data.parquet"]
    )
    day = lake.read_table(METRICS_DAILY, where={"dt": datetime(2026, 10, 1).date()})
    assert day["n_samples"].tolist() == [16]  # 3 earlier samples (10:00..10:10) and 13 new ones (14:00..15:00)
    assert third.counts["rows_quarantined"] == 0


def test_a_file_is_processed_once_even_if_listed_twice_or_uploaded_again(
    lake_and_settings: tuple[Lake, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, settings = lake_and_settings
    path = export(tmp_path, "cpu.csv", "2026-11-20", "s1", [10, 20, 30, 40])
    ingest_files(lake, [path], now=NOW)
    listing = lake.store.list

    def listed_twice(prefix: str = "") -> Iterator[ObjectInfo]:
        objects = list(listing(prefix))
        return iter(objects + objects)

    monkeypatch.setattr(lake.store, "list", listed_twice)
    first = run_etl(lake, settings, now=NOW)
    assert (first.counts["files_read"], first.counts["rows_in"], first.counts["rows_written"]) == (1, 4, 4)
    # The same objects again (a re-delivered upload event, a second scheduled run): nothing to do.
    again = run_etl(lake, settings, now=NOW)
    assert (again.counts["files_read"], again.counts["rows_in"], again.counts["partitions_written"]) == (0, 0, 0)
    monkeypatch.undo()
    daily = lake.read_table(METRICS_DAILY)
    assert daily["n_samples"].tolist() == [4]

    # The same export uploaded a second time under a new key: its rows are duplicates, the daily value stays.
    ingest_files(lake, [path], now=NOW + timedelta(minutes=1))
    copy = run_etl(lake, settings, now=NOW)
    assert copy.counts["quarantine_reasons"] == {"duplicate": 4} and copy.counts["rows_written"] == 0
    pd.testing.assert_frame_equal(lake.read_table(METRICS_DAILY), daily)

    # Reprocessing every raw file gives the same partitions and quarantine, with no duplicate rows.
    quarantine = lake.read_table(QUARANTINE)
    full = run_etl(lake, settings, now=NOW, full=True)
    assert full.counts["files_read"] == 2 and full.counts["quarantine_reasons"] == {"duplicate": 4}
    pd.testing.assert_frame_equal(lake.read_table(METRICS_DAILY), daily)
    pd.testing.assert_frame_equal(
        lake.read_table(QUARANTINE).drop(columns="etl_run_id"), quarantine.drop(columns="etl_run_id")
    )
