"""The streaming ETL: large files read in chunks as a whole read would, days re-aggregated from the day store."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster import etl_stream, raw_formats
from capacity_forecaster.access import ETL_SAMPLES_PREFIX
from capacity_forecaster.errors import InputError
from capacity_forecaster.ingest import ingest_files
from capacity_forecaster.schema import METRICS_DAILY, QUARANTINE
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import run_etl
from capacity_forecaster.storage.lake import open_lake

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ALIASES = raw_formats.metric_aliases()


def long_csv(rows: int) -> bytes:
    lines = ["timestamp,server_id,metric,value,rack"]
    lines += [
        f"2026-11-0{1 + i % 3}T00:{i % 60:02d}:00Z, s{i % 7},CPUUtilization,{i % 97}.5,r{i % 2}" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def wide_csv(rows: int) -> bytes:
    lines = ["time,host,cpu,mem"] + [
        f"2026-11-01T{i % 24:02d}:00:00Z,h{i % 5},{i % 90},{(i * 7) % 100}" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def chunks(tmp_path: Path, name: str, data: bytes, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    monkeypatch.setattr(etl_stream, "STREAM_FROM_BYTES", 0)
    path = tmp_path / name
    path.write_bytes(data)
    parts = list(etl_stream.iter_raw_chunks(name, path, ALIASES, max_bytes=None, chunk_rows=7))
    assert len(parts) > 1  # it streamed
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("long.csv", long_csv(50)),
        ("wide.csv", wide_csv(40)),
        ("long.csv.gz", gzip.compress(long_csv(50))),
    ],
)
def test_chunked_reading_gives_the_whole_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, data: bytes
) -> None:
    whole = raw_formats.read_monitoring_export(name, data, ALIASES)
    pd.testing.assert_frame_equal(chunks(tmp_path, name, data, monkeypatch), whole)


def test_chunked_parquet_gives_the_whole_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pd.read_csv(io.BytesIO(long_csv(60)), dtype=str)
    data = frame.to_parquet(index=False, row_group_size=7)
    whole = raw_formats.read_monitoring_export("x.parquet", data, ALIASES)
    pd.testing.assert_frame_equal(chunks(tmp_path, "x.parquet", data, monkeypatch), whole)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (long_csv(40) + b"2026-11-01T00:00:00Z,s1,cpu,\xff\xfe\n", "not UTF-8 text"),
        (long_csv(40) + b"2026-11-01T00:00:00Z,s1,cpu,1\x00\n", "binary, not CSV"),
        (long_csv(40) + b"2026-11-01T00:00:00Z,s1,cpu,1,r1,extra,more\n", "cannot be read as csv"),
    ],
)
def test_a_bad_line_late_in_a_streamed_file_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        chunks(tmp_path, "bad.csv", data, monkeypatch)


def export(folder: Path, name: str, server: str, values: list[float], start: int = 0) -> Path:
    lines = ["timestamp,server_id,metric,value"]
    lines += [
        f"2026-11-20T{(start + i) // 12:02d}:{5 * ((start + i) % 12):02d}:00Z,{server},cpu,{v}"
        for i, v in enumerate(values)
    ]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_later_file_of_a_day_is_aggregated_with_the_earlier_ones_without_reading_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etl_stream, "STREAM_FROM_BYTES", 0)  # the streamed path, in chunks of 250,000 rows
    lake = open_lake(tmp_path / "lake")
    settings = load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")})
    first = [float(v) for v in range(10, 70)]
    ingest_files(lake, [export(tmp_path, "a.csv", "s1", first)], now=NOW)
    run_etl(lake, settings, now=NOW)
    a_key = next(o.key for o in lake.store.list("raw/uploads/") if o.key.endswith("a.csv"))
    assert [o.key for o in lake.store.list(ETL_SAMPLES_PREFIX)] == [
        f"{ETL_SAMPLES_PREFIX}dt=2026-11-20/{etl_stream.file_id(a_key)}.parquet"
    ]
    # The earlier file's raw object is gone: its samples come from the day store.
    lake.store.delete(a_key)
    # samples 60..119, plus an exact repeat of sample 0 and a changed sample 1
    second = [float(v) for v in range(30, 90)]
    path = export(tmp_path, "b.csv", "s1", second, start=60)
    with path.open("a") as f:
        f.write(f"2026-11-20T00:00:00Z,s1,cpu,{first[0]}\n2026-11-20T00:05:00Z,s1,cpu,99\n")
    ingest_files(lake, [path], now=NOW)
    result = run_etl(lake, settings, now=NOW)
    assert result.counts["rows_in"] == 62
    assert result.counts["quarantine_reasons"] == {"conflicting_duplicate": 1, "duplicate": 1}
    quarantine = lake.read_table(QUARANTINE)
    assert sorted(quarantine["value"]) == ["10.0", "99"]
    daily = lake.read_table(METRICS_DAILY, where={"dt": datetime(2026, 11, 20).date()})
    assert daily["n_samples"].tolist() == [120]
    assert daily["p95"].iloc[0] == pytest.approx(np.percentile(first + second, 95))
    assert daily["expected_samples"].tolist() == [288]


def test_a_large_json_export_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etl_stream, "WHOLE_READ_MAX_BYTES", 100)
    path = tmp_path / "pull.json"
    path.write_text('{"MetricDataResults": [' + " " * 200 + "]}")
    with pytest.raises(InputError, match=r"^pull.json: a JSON .* read whole, so at most 0 MB .*; split it") as err:
        list(etl_stream.iter_raw_chunks("pull.json", path, ALIASES, max_bytes=None))
    assert "\n" not in str(err.value)


def test_a_work_folder_left_by_a_killed_run_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale, recent = tmp_path / "cf-etl-old", tmp_path / "cf-etl-new"
    for folder in (stale, recent):
        (folder / "download").mkdir(parents=True)
    old = datetime(2026, 1, 1).timestamp()
    os.utime(stale, (old, old))
    with etl_stream.work_folder() as work:
        assert work.parent == tmp_path and work.is_dir()
    assert not stale.exists() and recent.exists() and not work.exists()


def test_a_split_day_part_is_concatenated_in_order(tmp_path: Path) -> None:
    """DuckDB may write one file and day as several Parquet files: their rows become one object, all of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames = [
        pa.table({"timestamp": pa.array([i, i + 1], pa.int64()), "value": pa.array([i / 2, i / 3])}) for i in range(3)
    ]
    files = []
    for i, frame in enumerate(frames):
        files.append(tmp_path / f"data_{i}.parquet")
        pq.write_table(frame, files[-1], row_group_size=1)
    etl_stream._concatenate(files, tmp_path / "merged.parquet")
    assert pq.read_table(tmp_path / "merged.parquet").equals(pa.concat_tables(frames))


def _memory_limit(con: object) -> str:
    return str(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])  # type: ignore[attr-defined]


def test_duckdb_memory_follows_the_rows_of_a_compressed_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Parquet file holds far more rows than its bytes say: the limit counts them at a CSV row's bytes."""
    import duckdb

    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    monkeypatch.setenv("CF_ETL_DUCKDB_MEMORY_MB", "900")

    def expected(mb: int) -> str:
        con = duckdb.connect(":memory:")
        con.execute(f"SET memory_limit = '{mb}MB'")
        return _memory_limit(con)

    one_mb = 2**20
    by_bytes = etl_stream.connect(tmp_path, input_bytes=300 * one_mb)
    assert _memory_limit(by_bytes) == expected(300)
    few_bytes_many_rows = etl_stream.connect(tmp_path, input_bytes=one_mb, rows=5_000_000)
    assert _memory_limit(few_bytes_many_rows) == expected(5_000_000 * etl_stream.ROW_BYTES // one_mb)
    assert _memory_limit(etl_stream.connect(tmp_path, input_bytes=one_mb)) == expected(etl_stream.MIN_DUCKDB_MEMORY_MB)
    capped = etl_stream.connect(tmp_path, input_bytes=one_mb, rows=100_000_000)
    assert _memory_limit(capped) == expected(900)


def day_export(
    folder: Path, name: str, server: str, day: int, values: list[float], start: int = 0, bad: bool = False
) -> Path:
    lines = ["timestamp,server_id,metric,value"]
    lines += [
        f"2026-11-{day:02d}T{(start + i) // 12:02d}:{5 * ((start + i) % 12):02d}:00Z,{server},cpu,{v}"
        for i, v in enumerate(values)
    ]
    if bad:
        lines.append(f"2026-11-{day:02d}T23:55:00Z,{server},cpu,not-a-number")
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("budget", ["MAX_PASS_ROWS", "MAX_PASS_SERIES_DAYS"])
def test_a_backlog_is_processed_in_passes_of_bounded_rows_with_the_one_pass_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: str
) -> None:
    """Files beyond a pass's row budget go to the next pass of the same run; days split between passes are
    aggregated from the day store, so the curated tables, the quarantine and the counts are one pass's."""
    from capacity_forecaster import stages
    from capacity_forecaster.schema import ETL_FILES, ETL_RUNS
    from capacity_forecaster.stages import StageResult
    from capacity_forecaster.storage.lake import Lake

    rng = np.random.default_rng(3)
    # (server, day, first sample): 100 samples a file; s0's 17th and 18th and s1's 17th are split over two files
    # that land in different passes (3 files a pass: the budget is crossed by the third).
    plan = [("s0", 17, 0), ("s1", 17, 0), ("s0", 18, 0), ("s0", 17, 100), ("s1", 18, 0), ("s1", 17, 100)]
    plan += [("s0", 18, 100), ("s0", 19, 0)]
    files = [
        day_export(tmp_path, f"f{k}.csv", server, day, list(rng.uniform(5, 95, 100)), start=start, bad=k == 4)
        for k, (server, day, start) in enumerate(plan)
    ]

    def etl(limit: int, name: str) -> tuple[StageResult, pd.DataFrame, Lake]:
        monkeypatch.setattr(stages, budget, limit)
        lake = open_lake(tmp_path / name)
        ingest_files(lake, files, now=NOW)
        result = run_etl(lake, load_settings(environ={}, overrides={"lake": str(tmp_path / name)}), now=NOW)
        return result, lake.read_table(METRICS_DAILY), lake

    one, one_daily, one_lake = etl(10**9, "one")
    split, split_daily, split_lake = etl(250 if budget == "MAX_PASS_ROWS" else 3, "split")  # a file: 100 rows, 1 day

    assert "passes" not in one.counts
    assert split.counts["passes"] == 3  # the budget is crossed by a pass's third file: 3 + 3 + 2
    for key in ("files_read", "rows_in", "rows_written", "rows_quarantined", "quarantine_reasons"):
        assert split.counts[key] == one.counts[key], key
    assert split.counts["rows_in"] == 801
    columns = ["server_id", "metric", "dt", "p95", "n_samples", "imputed"]
    pd.testing.assert_frame_equal(
        split_daily.sort_values(["server_id", "dt"], ignore_index=True)[columns],
        one_daily.sort_values(["server_id", "dt"], ignore_index=True)[columns],
    )
    runs = split_lake.read_table(ETL_RUNS)
    assert sorted(runs["status"]) == ["succeeded"] * 3
    assert len(split_lake.read_table(ETL_FILES)) == 8
    assert split_daily.set_index(["server_id", "dt"])["n_samples"].max() == 200
    keys = ["source", "row_number", "value", "reason"]

    def quarantine(lake: Lake) -> pd.DataFrame:
        q = lake.read_table(QUARANTINE)
        q["source"] = q["source"].str.replace(r".*/", "", regex=True)  # the upload keys carry a time stamp
        return q.sort_values(keys, ignore_index=True)[keys]

    pd.testing.assert_frame_equal(quarantine(split_lake), quarantine(one_lake))
    assert quarantine(split_lake)["value"].tolist() == ["not-a-number"]
    again = run_etl(split_lake, load_settings(environ={}, overrides={"lake": str(tmp_path / "split")}), now=NOW)
    assert again.counts["files_read"] == 0


def test_the_aggregate_in_batches_of_days_is_the_aggregate_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quantiles by batch of days (bounded per-group state in DuckDB) give the one-query result, row for row."""
    rng = np.random.default_rng(11)
    stamps = pd.date_range("2026-11-01", "2026-11-10 23:55", freq="5min", tz="UTC")
    samples = pd.concat(
        [
            pd.DataFrame(
                {"timestamp": stamps, "server_id": f"s{k}", "metric": metric, "value": rng.uniform(0, 100, stamps.size)}
            )
            for k in range(3)
            for metric in ("cpu", "mem")
        ],
        ignore_index=True,
    )
    samples = samples.drop(index=rng.choice(len(samples), 500, replace=False))  # uneven counts, some gaps
    days = sorted({str(d) for d in samples["timestamp"].dt.date})

    def aggregate(batched: bool, grain: str) -> pd.DataFrame:
        con = etl_stream.connect(tmp_path)
        con.register("samples", samples)
        period = 86_400 if grain == "day" else 3600
        batches = etl_stream.sample_batches(con, days) if batched else []
        assert len(batches) == (5 if batched else 0)  # 2 days a batch
        out = etl_stream.aggregate(con, grain, period_seconds=period, min_coverage=0.8, batches=batches)
        con.close()
        return out

    monkeypatch.setattr(etl_stream, "AGGREGATE_BATCH_ROWS", len(samples) // 4)
    assert len(etl_stream.day_batches(days, len(samples))) == 5  # 2 days a batch
    for grain in ("day", "hour"):
        pd.testing.assert_frame_equal(aggregate(True, grain), aggregate(False, grain))
    assert etl_stream.day_batches(["2026-11-01"], 10**9) == [["2026-11-01"]]
    assert etl_stream.day_batches([], 0) == []


def test_a_run_with_a_deadline_leaves_the_passes_it_has_no_time_for_to_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass is not started that would end after the deadline (the Lambda's end): its files stay new, counted
    as left, and the next run processes them; nothing is lost or counted twice."""
    import time

    from capacity_forecaster import stages
    from capacity_forecaster.schema import ETL_RUNS

    monkeypatch.setattr(stages, "MAX_PASS_ROWS", 250)
    rng = np.random.default_rng(5)
    files = [day_export(tmp_path, f"f{k}.csv", f"s{k}", 17 + k % 2, list(rng.uniform(5, 95, 100))) for k in range(7)]
    lake = open_lake(tmp_path / "lake")
    settings = load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")})
    ingest_files(lake, files, now=NOW)

    first = run_etl(lake, settings, now=NOW, deadline=time.monotonic())  # no time for a second pass
    assert (first.counts["files_read"], first.counts["files_left"]) == (3, 4)
    assert "passes" not in first.counts
    second = run_etl(lake, settings, now=NOW, deadline=time.monotonic() + 3600)
    assert (second.counts["files_read"], second.counts["passes"]) == (4, 2)
    assert "files_left" not in second.counts
    assert first.counts["rows_in"] + second.counts["rows_in"] == 700
    assert int(lake.read_table(METRICS_DAILY)["n_samples"].sum()) == 700
    assert sorted(lake.read_table(ETL_RUNS)["status"]) == ["succeeded"] * 3
