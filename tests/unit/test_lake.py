"""The lake adapter on a local folder: partition keys, schema validation, atomic replace, reads."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from capacity_forecaster.errors import ConfigError, SchemaError
from capacity_forecaster.schema import FORECASTS, METRICS_DAILY, SERVERS
from capacity_forecaster.storage.lake import (
    Lake,
    open_lake,
    parse_partition_key,
    partition_key,
    read_partitioned_dir,
)
from capacity_forecaster.storage.object_store import STALE_TEMP_AGE, LocalObjectStore, LocalStoreError, ObjectNotFound


def daily(days: list[str], servers: tuple[str, ...] = ("srv-1", "srv-2")) -> pd.DataFrame:
    rows = [
        {
            "server_id": s,
            "metric": "cpu",
            "dt": pd.Timestamp(d),
            "p95": 50.0 + i,
            "n_samples": 288,
            "imputed": False,
        }
        for i, d in enumerate(days)
        for s in servers
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return open_lake(tmp_path / "lake")


def test_partition_key_is_deterministic_and_hive_style() -> None:
    key = partition_key(METRICS_DAILY, {"dt": date(2026, 1, 2)})
    assert key == "curated/metrics_daily/dt=2026-01-02/data.parquet"
    assert parse_partition_key(METRICS_DAILY, key) == {"dt": "2026-01-02"}
    assert parse_partition_key(METRICS_DAILY, "curated/metrics_daily/dt=2026-01-02/other.parquet") is None
    assert partition_key(SERVERS, None) == "curated/servers/data.parquet"


def test_partition_key_rejects_wrong_partition_names() -> None:
    with pytest.raises(SchemaError, match="partitioned by"):
        partition_key(METRICS_DAILY, {"run_date": date(2026, 1, 2)})


def test_write_table_writes_one_object_per_partition_and_reads_back(lake: Lake) -> None:
    df = daily(["2026-01-01", "2026-01-02", "2026-01-03"])
    uris = lake.write_table(METRICS_DAILY, df)
    assert len(uris) == 3
    keys = [o.key for o in lake.store.list("curated/metrics_daily/")]
    assert keys == [f"curated/metrics_daily/dt=2026-01-0{i}/data.parquet" for i in (1, 2, 3)]
    back = lake.read_table(METRICS_DAILY).sort_values(["dt", "server_id"], ignore_index=True)
    pd.testing.assert_frame_equal(
        back[df.columns.tolist()], df.sort_values(["dt", "server_id"], ignore_index=True), check_dtype=False
    )
    assert str(back["dt"].dtype) == "datetime64[ns]"


def test_rewriting_a_partition_replaces_it_without_duplicates(lake: Lake) -> None:
    df = daily(["2026-01-01"])
    lake.write_table(METRICS_DAILY, df)
    lake.write_table(METRICS_DAILY, df)
    assert len(lake.read_table(METRICS_DAILY)) == len(df)


def test_partition_filter(lake: Lake) -> None:
    lake.write_table(METRICS_DAILY, daily(["2026-01-01", "2026-01-02", "2026-01-03"]))
    got = lake.read_table(METRICS_DAILY, where={"dt": [date(2026, 1, 1), date(2026, 1, 3)]})
    assert sorted(got["dt"].dt.day.unique()) == [1, 3]
    assert lake.latest_partition(METRICS_DAILY) == {"dt": "2026-01-03"}


def test_empty_table_reads_with_its_columns(lake: Lake) -> None:
    empty = lake.read_table(FORECASTS)
    assert empty.empty
    assert set([*FORECASTS.column_names, "run_date"]) == set(empty.columns)
    assert lake.latest_partition(FORECASTS) is None


def test_schema_violations_are_one_line_errors(lake: Lake) -> None:
    df = daily(["2026-01-01"])
    with pytest.raises(SchemaError, match="missing columns p95"):
        lake.write_table(METRICS_DAILY, df.drop(columns="p95"))
    with pytest.raises(SchemaError, match="unexpected columns extra"):
        lake.write_table(METRICS_DAILY, df.assign(extra=1))
    with pytest.raises(SchemaError, match="column p95 cannot be stored"):
        lake.write_table(METRICS_DAILY, df.assign(p95="high"))
    with pytest.raises(SchemaError, match="column server_id has 1 empty values"):
        lake.write_table(METRICS_DAILY, df.assign(server_id=[None, "srv-2"]))
    assert lake.read_table(METRICS_DAILY).empty


def test_crash_mid_write_leaves_the_old_partition_visible(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    lake.write_table(METRICS_DAILY, daily(["2026-01-01"]))
    store = lake.store
    assert isinstance(store, LocalObjectStore)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("capacity_forecaster.storage.object_store.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        lake.write_table(METRICS_DAILY, daily(["2026-01-01"], servers=("srv-9",)))
    monkeypatch.undo()
    back = lake.read_table(METRICS_DAILY)
    assert set(back["server_id"]) == {"srv-1", "srv-2"}
    leftovers = [p for p in store.root.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_temporary_files_are_invisible_to_listings(lake: Lake) -> None:
    lake.write_table(METRICS_DAILY, daily(["2026-01-01"]))
    folder = Path(lake.store.uri_for("curated/metrics_daily/dt=2026-01-01/data.parquet")).parent
    (folder / ".tmp-abc.part").write_bytes(b"half")
    assert [o.key for o in lake.store.list("curated/")] == ["curated/metrics_daily/dt=2026-01-01/data.parquet"]


def test_a_killed_write_leaves_a_temporary_file_that_a_later_listing_removes(tmp_path: Path) -> None:
    lake = Lake(LocalObjectStore(tmp_path / "lake"))
    lake.store.put_bytes("curated/x/dt=2026-01-01/data.parquet", b"whole")
    folder = tmp_path / "lake" / "curated" / "x" / "dt=2026-01-01"
    stale, live = folder / ".tmp-killed.part", folder / ".tmp-writing.part"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    old = time.time() - STALE_TEMP_AGE.total_seconds() - 60
    os.utime(stale, (old, old))
    assert [o.key for o in lake.store.list("curated/")] == ["curated/x/dt=2026-01-01/data.parquet"]
    assert not stale.exists() and live.exists()  # a write in flight is left alone, and never listed


def test_missing_object_and_bad_uri(lake: Lake) -> None:
    with pytest.raises(ObjectNotFound):
        lake.store.get_bytes("curated/nothing/data.parquet")
    with pytest.raises(ConfigError, match="neither a local folder"):
        open_lake("ftp://host/lake")


def test_read_partitioned_dir_reads_a_channel_folder(lake: Lake, tmp_path: Path) -> None:
    lake.write_table(METRICS_DAILY, daily(["2026-01-01", "2026-01-02"]))
    channel = Path(lake.store.uri_for("curated/metrics_daily"))
    got = read_partitioned_dir(channel, METRICS_DAILY)
    assert len(got) == 4
    assert set(got["dt"].dt.day) == {1, 2}


def test_delete_prefix_and_partition(lake: Lake) -> None:
    lake.write_table(METRICS_DAILY, daily(["2026-01-01", "2026-01-02"]))
    lake.delete_partition(METRICS_DAILY, {"dt": date(2026, 1, 1)})
    assert lake.list_partitions(METRICS_DAILY) == [{"dt": "2026-01-02"}]
    assert lake.delete_prefix("curated/metrics_daily") == 1
    assert lake.list_partitions(METRICS_DAILY) == []


def test_optional_columns_are_null_when_left_out_or_missing_from_older_objects(tmp_path: Path) -> None:
    import io as _io

    import pyarrow as _pa
    import pyarrow.parquet as _pq

    from capacity_forecaster.storage.lake import open_lake, partition_key

    lake = open_lake(tmp_path / "lake")
    row = {"server_id": "a", "metric": "cpu", "p95": 5.0, "n_samples": 3, "imputed": False}
    lake.write_partition(METRICS_DAILY, pd.DataFrame([row]), {"dt": date(2026, 1, 1)})
    old = _pa.table({k: [v] for k, v in row.items()})  # an object written before the columns existed
    buf = _io.BytesIO()
    _pq.write_table(old, buf)
    lake.store.put_bytes(partition_key(METRICS_DAILY, {"dt": date(2026, 1, 2)}), buf.getvalue())
    back = lake.read_table(METRICS_DAILY)
    assert len(back) == 2
    assert back["expected_samples"].isna().all() and back["low_coverage"].isna().all()


def test_a_local_lake_must_be_a_folder_that_can_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=rf"lake {blocker} is a file, not a folder"):
        open_lake(blocker)
    with pytest.raises(ConfigError, match=rf"lake {blocker}/lake cannot be created: {blocker} is a file"):
        open_lake(blocker / "lake")
    assert open_lake(tmp_path / "new" / "lake").uri == str(tmp_path / "new" / "lake")  # made by the first write
    assert not (tmp_path / "new").exists()


def test_file_system_errors_of_the_local_store_are_one_line(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    lake.store.put_bytes("raw/a.csv", b"x")
    (tmp_path / "lake" / "curated").write_text("in the way")
    with pytest.raises(LocalStoreError, match=r"cannot write curated/x/data.parquet .*: (File exists|Not a directory)"):
        lake.store.put_bytes("curated/x/data.parquet", b"x")
    with pytest.raises(ObjectNotFound):  # a missing object stays what callers catch
        lake.store.get_bytes("raw/b.csv")
