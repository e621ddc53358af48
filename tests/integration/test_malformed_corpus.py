"""A corpus of malformed monitoring exports: each kind lands in quarantine with its reason, nothing is lost.

Row-level cases are files with one good row plus the bad row(s): the bad rows go to the quarantine table with the
expected reason, the good row reaches metrics_daily. File-level cases cannot be read at all: they are moved aside
to ``quarantine/files/dt=<run day>/<key>`` with a ``.reason.json``, get one quarantine row, and the run goes on.
Poison files (:data:`POISON_CASES`) are the file-level cases that once crashed a reader with a traceback (binary
Parquet columns, truncated Parquet, a gzip that is not gzip, a late NUL byte, deep JSON): ``ingest`` refuses each in
one line, and one put straight into the raw zone is set aside without blocking the run or the next.
"""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.schema import ETL_FILES, ETL_RUNS, METRICS_DAILY, QUARANTINE
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import quarantined_file_key, run_etl
from capacity_forecaster.storage.lake import Lake, open_lake

if TYPE_CHECKING:
    from capacity_forecaster.storage.s3_client import S3Config

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
HEADER = "timestamp,server_id,metric,value\n"
T = "2026-11-20T10:00:00Z"


def _cloudwatch(label: str, stamps: list[object], values: list[object]) -> bytes:
    result = {"Id": "m0", "Label": label, "Timestamps": stamps, "Values": values, "StatusCode": "Complete"}
    return json.dumps({"MetricDataResults": [result], "Messages": []}).encode()


def _parquet(**columns: object) -> bytes:
    """A long-format Parquet file of one good row, with ``columns`` replacing or adding columns."""
    base: dict[str, object] = {"timestamp": [T], "server_id": ["pq-1"], "metric": ["cpu"], "value": [40.0]}
    out = io.BytesIO()
    pq.write_table(pa.table({**base, **columns}), out)
    return out.getvalue()


_GOOD_PARQUET = _parquet()
_NOT_UTF8 = pa.array([b"\xff\xfe\x00bin"], pa.binary())

# kind -> (file name, whole content, substring of the rejection reason): files that used to crash a reader.
POISON_CASES: dict[str, tuple[str, bytes, str]] = {
    "parquet_binary_server_id": ("a.parquet", _parquet(server_id=_NOT_UTF8), "'server_id' holds binary data"),
    "parquet_binary_extra_column": ("a.parquet", _parquet(blob=_NOT_UTF8), "'blob' holds binary data"),
    "parquet_binary_dictionary": (
        "a.parquet",
        _parquet(server_id=_NOT_UTF8.dictionary_encode()),
        "'server_id' holds binary data",
    ),
    "parquet_truncated": ("a.parquet", _GOOD_PARQUET[: len(_GOOD_PARQUET) // 2], "cannot be read as parquet"),
    "parquet_footer_cut": ("a.parquet", _GOOD_PARQUET[:-12], "cannot be read as parquet"),
    "gzip_that_is_not_gzip": ("a.csv.gz", b"\x1f\x8b" + b"not really compressed" * 10, "corrupt gzip"),
    "gzip_of_latin1": ("a.csv.gz", gzip.compress((HEADER + f"{T},h\xf4te,cpu,1\n").encode("latin-1")), "not UTF-8"),
    "utf16_json_without_bom": ("a.json", _cloudwatch("i-1 cpu", [T], [1]).decode().encode("utf-16-le"), "not UTF-8"),
    "late_nul_byte": ("a.csv", (HEADER + f"{T},a,cpu,1\n" * 400 + "x\x00y\n").encode(), "binary, not CSV"),
    "deeply_nested_json": ("a.json", b"[" * 200_000, "cannot be read as json"),
    "json_not_utf8": ("a.json", b'{"MetricDataResults": ["\xff"]}', "not UTF-8"),
}

# kind -> (file name, bad rows as CSV lines after the header, expected reasons of the bad rows in order)
ROW_CASES: dict[str, tuple[str, str, list[str]]] = {
    "empty_server_id": ("a.csv", f"{T},,cpu,40\n", ["missing_server_id"]),
    "blank_server_id": ("a.csv", f'{T},"   ",cpu,40\n', ["missing_server_id"]),
    "slash_in_server_id": ("a.csv", f"{T},web/1,cpu,40\n", ["invalid_server_id"]),
    "unknown_metric": ("a.csv", f"{T},web-1,gpu,40\n", ["unknown_metric"]),
    "word_timestamp": ("a.csv", "yesterday,web-1,cpu,40\n", ["unparseable_timestamp"]),
    "impossible_date": ("a.csv", "2026-02-30T00:00:00Z,web-1,cpu,40\n", ["unparseable_timestamp"]),
    "future_iso": ("a.csv", "2030-01-01T00:00:00Z,web-1,cpu,40\n", ["future_timestamp"]),
    "future_epoch_ms": ("a.csv", "1893456000000,web-1,cpu,40\n", ["future_timestamp"]),
    "text_value": ("a.csv", f"{T},web-1,cpu,n/a\n", ["non_numeric_value"]),
    "infinite_value": ("a.csv", f"{T},web-1,cpu,inf\n", ["non_numeric_value"]),
    "empty_value": ("a.csv", f"{T},web-1,cpu,\n", ["non_numeric_value"]),
    "decimal_comma": ("a.csv", f'{T},web-1,cpu,"40,5"\n', ["non_numeric_value"]),
    "over_100": ("a.csv", f"{T},web-1,cpu,101\n", ["value_out_of_range"]),
    "negative": ("a.csv", f"{T},web-1,cpu,-0.5\n", ["value_out_of_range"]),
    "short_row": ("a.csv", f"{T},web-1\n", ["unknown_metric"]),
    "exact_duplicate": ("a.csv", f"{T},dup-1,cpu,40\n{T},dup-1,cpu,40\n", ["duplicate"]),
    "conflicting_duplicate": (
        "a.csv",
        f"{T},dup-2,cpu,40\n2026-11-20T11:00:00+01:00,dup-2,cpu,41\n",
        ["conflicting_duplicate", "conflicting_duplicate"],
    ),
}

# kind -> (file name, whole content, substring of the rejection reason)
FILE_CASES: dict[str, tuple[str, bytes, str]] = {
    "empty_file": ("a.csv", b"", "the file is empty"),
    "blank_lines_only": ("a.csv", b"\n\n  \n", "the file is empty"),
    "header_only": ("a.csv", HEADER.encode(), "header but no rows"),
    "binary_garbage": ("a.csv", b"\x00\x01\x02\x03garbage", "binary, not CSV"),
    "latin1_encoding": ("a.csv", (HEADER + f"{T},serveur-é,cpu,4\n").encode("latin-1"), "not UTF-8"),
    "utf16_without_bom": ("a.csv", (HEADER + f"{T},s,cpu,4\n").encode("utf-16-le"), "UTF-16 without a byte-order mark"),
    "missing_columns": ("a.csv", b"timestamp,server_id,metric\n2026-11-20T10:00:00Z,a,cpu\n", "missing required"),
    "no_metric_columns": ("a.csv", b"timestamp,server_id,colour\n2026-11-20T10:00:00Z,a,red\n", "missing required"),
    "ragged_rows": ("a.csv", (HEADER + f"{T},a,cpu,1\n{T},b,cpu,1,extra\n").encode(), "cannot be read as csv"),
    "all_rows_too_long": ("a.csv", (HEADER + f"{T},a,cpu,1,extra,more\n").encode(), "more fields than the header"),
    "invalid_json": ("a.json", b'{"MetricDataResults": [', "not valid JSON"),
    "json_unknown_shape": ("a.json", b'{"Points": []}', "JSON of an unknown shape"),
    "statistics_no_points": ("a.json", b'{"Label": "CPUUtilization", "Datapoints": []}', "has no Datapoints"),
    "cloudwatch_lengths": ("a.json", _cloudwatch("i-1 cpu", [T, T], [1]), "different lengths"),
    "cloudwatch_no_points": ("a.json", _cloudwatch("i-1 cpu", [], []), "no data points"),
    "truncated_gzip": ("a.csv.gz", gzip.compress((HEADER + f"{T},a,cpu,1\n").encode())[:20], "corrupt gzip"),
    "empty_gzip": ("a.csv.gz", gzip.compress(b""), "empty once decompressed"),
    "corrupt_parquet": ("a.parquet", b"PAR1 this is not really parquet PAR1", "cannot be read as parquet"),
    "broken_workbook": ("a.csv", b"PK\x03\x04\x14\x00\x06\x00rest-of-zip", "not a readable Excel workbook"),
    **POISON_CASES,
}

WIDE_CASES: dict[str, tuple[str, bytes, list[str]]] = {
    "wide_empty_cell": (
        "a.csv",
        f"timestamp,server_id,cpu,mem\n{T},wide-1,5,\n".encode(),
        ["non_numeric_value"],
    ),
    "wide_out_of_range": (
        "a.csv",
        f"timestamp,server_id,CPUUtilization,mem_used_percent\n{T},wide-2,5,140\n".encode(),
        ["value_out_of_range"],
    ),
    "cloudwatch_label_without_server": (
        "a.json",
        _cloudwatch("CPUUtilization", [T], [3.5]),
        ["missing_server_id"],
    ),
}


def _key(kind: str, name: str) -> str:
    return f"raw/uploads/tenants/corpus/2026/11/23/{kind}_{name}"


def _load_corpus(lake: Lake) -> dict[str, int]:
    """Write every case into the raw zone; return the number of good rows written per case."""
    good: dict[str, int] = {}
    for i, (kind, (name, bad, _)) in enumerate(ROW_CASES.items()):
        text = HEADER + f"{T},ok-{i},cpu,40\n" + bad
        lake.store.put_bytes(_key(kind, name), text.encode())
        good[kind] = 1
    for kind, (name, data, _) in {**FILE_CASES, **WIDE_CASES}.items():
        lake.store.put_bytes(_key(kind, name), data)
    return good


def test_corpus_has_at_least_twenty_kinds() -> None:
    assert len(ROW_CASES) + len(FILE_CASES) + len(WIDE_CASES) >= 20


def test_every_malformed_kind_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    _load_corpus(lake)
    settings = load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")})
    result = run_etl(lake, settings, now=NOW)
    counts = result.counts

    # Reconciliation, in the result and in the run log.
    assert counts["rows_in"] == counts["rows_written"] + counts["rows_quarantined"]
    runs = lake.read_table(ETL_RUNS)
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["rows_in"] == row["rows_written"] + row["rows_quarantined"]
    assert sum(json.loads(row["quarantine_reasons"]).values()) == row["rows_quarantined"]

    quarantine = lake.read_table(QUARANTINE)
    by_source = quarantine.groupby("source")["reason"].apply(list).to_dict()
    for kind, (name, _, reasons) in {**ROW_CASES, **WIDE_CASES}.items():
        assert by_source.get(_key(kind, name)) == reasons, kind
    # Each row case kept its one good row; every wide/CloudWatch case kept its valid metric values.
    daily = lake.read_table(METRICS_DAILY)
    assert {f"ok-{i}" for i in range(len(ROW_CASES))} <= set(daily["server_id"])
    assert {"dup-1", "wide-1", "wide-2"} <= set(daily["server_id"])
    assert "dup-2" not in set(daily["server_id"])

    # Whole files: moved aside with a reason object, one quarantine row each, and the run went on.
    assert counts["files_rejected"] == len(FILE_CASES)
    run_day = NOW.date()
    for kind, (name, data, message) in FILE_CASES.items():
        key = _key(kind, name)
        assert not lake.store.exists(key), kind
        moved = quarantined_file_key(key, run_day)
        assert lake.store.get_bytes(moved) == data, kind
        note = json.loads(lake.store.get_bytes(moved + ".reason.json"))
        assert message in note["reason"] and note["source"] == key, kind
        (reason,) = by_source[key]
        assert reason.startswith("unreadable_file: ") and message in reason, kind
    file_rows = quarantine["row_number"] == -1
    assert file_rows.sum() == len(FILE_CASES)
    assert counts["rows_quarantined"] == (~file_rows).sum()


def test_rerun_changes_nothing_and_does_not_pick_up_moved_files(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    _load_corpus(lake)
    settings = load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")})
    run_etl(lake, settings, now=NOW)
    daily, quarantine = lake.read_table(METRICS_DAILY), lake.read_table(QUARANTINE)
    second = run_etl(lake, settings, now=NOW)
    assert second.counts["files_read"] == 0 and second.counts["rows_in"] == 0
    pd.testing.assert_frame_equal(lake.read_table(METRICS_DAILY), daily)
    pd.testing.assert_frame_equal(lake.read_table(QUARANTINE), quarantine)


@pytest.mark.parametrize("kind", sorted(FILE_CASES))
def test_ingest_refuses_each_unreadable_file_in_one_line(tmp_path: Path, kind: str) -> None:
    from capacity_forecaster.errors import InputError
    from capacity_forecaster.ingest import check_header

    name, data, message = FILE_CASES[kind]
    path = tmp_path / f"{kind}_{name}"
    path.write_bytes(data)
    with pytest.raises(InputError, match=message) as info:
        check_header(path)
    assert "\n" not in str(info.value)


def test_poison_files_are_refused_by_the_cli_ingest_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = 0
    for kind, (name, data, message) in POISON_CASES.items():
        path = tmp_path / f"{kind}_{name}"
        path.write_bytes(data)
        assert main(["ingest", str(path), "--lake", str(tmp_path / "lake")]) == 2, kind
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, (kind, err)
        assert message in err and "Traceback" not in err, (kind, err)
        refused += 1
    assert refused == len(POISON_CASES) >= 10
    assert not (tmp_path / "lake" / "raw").exists()  # nothing was uploaded


def test_ingest_refuses_exactly_the_files_the_etl_sets_aside_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Derived from the ETL, not from the corpus' labels: every file the ETL moves aside whole is refused by the CLI
    ``ingest`` with one line naming the file and the ETL's reason (exit 2); every other file is accepted. And
    ``ingest`` parses each file with the ETL's reader, with the settings' aliases and size limit."""
    from capacity_forecaster import etl

    lake = open_lake(tmp_path / "lake")
    _load_corpus(lake)
    settings = load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")})
    run_etl(lake, settings, now=NOW)
    quarantine = lake.read_table(QUARANTINE)
    whole = quarantine[quarantine["row_number"] == -1]
    set_aside = {
        str(source): str(reason).removeprefix("unreadable_file: ").removeprefix(f"{source}: ")
        for source, reason in zip(whole["source"], whole["reason"], strict=True)
    }
    assert len(set_aside) == len(FILE_CASES)
    files = lake.read_table(ETL_FILES)
    nothing_kept = set(files.loc[(files["status"] == "processed") & files["first_day"].isna(), "key"])
    assert nothing_kept == {_key("cloudwatch_label_without_server", "a.json")}

    reads: list[tuple[str, object, object]] = []
    real_read = etl.read_raw_object

    def spy(name: str, data: bytes, aliases: Any = None, *, max_bytes: int | None = None) -> pd.DataFrame:
        reads.append((name, aliases, max_bytes))
        return real_read(name, data, aliases, max_bytes=max_bytes)

    monkeypatch.setattr(etl, "read_raw_object", spy)
    good_rows = {kind: HEADER + f"{T},ok-{i},cpu,40\n" + bad for i, (kind, (_, bad, _)) in enumerate(ROW_CASES.items())}
    cases = {
        **{kind: (name, good_rows[kind].encode()) for kind, (name, _, _) in ROW_CASES.items()},
        **{kind: (name, data) for kind, (name, data, _) in {**FILE_CASES, **WIDE_CASES}.items()},
    }
    refused = accepted = 0
    for kind, (name, data) in cases.items():
        path = tmp_path / "exports" / f"{kind}_{name}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        status = main(["ingest", str(path), "--lake", str(tmp_path / "ingested")])
        err = capsys.readouterr().err
        reason = set_aside.get(_key(kind, name))
        if _key(kind, name) in nothing_kept:  # readable, but the ETL keeps no row of it: refused, with the fix
            assert status == 2 and err.startswith(f"error: {path}: no row would survive the ETL: "), (kind, err)
            refused += 1
        elif reason is None:
            assert status == 0 and err == "", (kind, err)
            accepted += 1
        else:
            assert status == 2 and err == f"error: {path}: {reason}\n", (kind, err, reason)
            refused += 1
        assert reads[-1] == (str(path), settings.ingest.aliases(), settings.ingest.max_file_bytes), kind
    assert (refused, accepted) == (len(FILE_CASES) + 1, len(ROW_CASES) + len(WIDE_CASES) - 1)
    print(f"ingest vs ETL: {refused} refused = {len(set_aside)} set aside by the ETL, {accepted} accepted")

    # A refused file does not stop the batch: the good files named with it are copied, the bad one is listed.
    good, poison = tmp_path / "exports" / "batch_ok.csv", tmp_path / "exports" / "parquet_binary_extra_column.parquet"
    good.write_text(HEADER + f"{T},batch-1,cpu,40\n")
    poison.write_bytes(POISON_CASES["parquet_binary_extra_column"][1])
    assert main(["ingest", str(good), str(poison), "--lake", str(tmp_path / "batch")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith(f"error: {poison}: ") and err.count("\n") == 2
    assert err.splitlines()[1] == "error: 1 of 2 files refused (listed above); 1 ingested"
    assert [o.key.rsplit("_", 1)[-1] for o in open_lake(tmp_path / "batch").store.list("raw/")] == ["ok.csv"]


def test_poison_files_in_the_raw_zone_never_block_the_etl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake_dir = tmp_path / "lake"
    lake = open_lake(lake_dir)
    for kind, (name, data, _) in POISON_CASES.items():
        lake.store.put_bytes(_key(kind, name), data)
    lake.store.put_bytes(_key("good", "a.parquet"), _GOOD_PARQUET)
    lake.store.put_bytes(_key("good", "b.csv"), (HEADER + f"{T},csv-1,mem,30\n").encode())

    assert main(["etl", "--lake", str(lake_dir)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    run_day = lake.read_table(ETL_RUNS)["started_at"].iloc[0].date()
    for kind, (name, _, message) in POISON_CASES.items():
        key = _key(kind, name)
        assert not lake.store.exists(key), kind
        note = json.loads(lake.store.get_bytes(quarantined_file_key(key, run_day) + ".reason.json"))
        assert message in note["reason"], kind
    assert {"pq-1", "csv-1"} <= set(lake.read_table(METRICS_DAILY)["server_id"])  # the good files went through

    assert main(["etl", "--lake", str(lake_dir)]) == 0  # the next run is clean: nothing left to trip on
    runs = lake.read_table(ETL_RUNS).sort_values("started_at")
    assert runs["files_rejected"].tolist() == [len(POISON_CASES), 0]
    assert runs["files_read"].tolist() == [len(POISON_CASES) + 2, 0]


def test_a_file_over_the_size_limit_is_refused_at_ingest_and_set_aside_unread_by_the_etl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("ingest: {max_file_mb: 1}\n")
    rows = "".join(
        f"2026-11-20T{h:02d}:{m:02d}:00Z,big-{s},cpu,40\n"
        for s in range(120)
        for h in range(24)
        for m in range(0, 60, 5)
    )
    big = tmp_path / "big.csv"
    big.write_text(HEADER + rows)
    assert big.stat().st_size > 1024 * 1024
    lake_dir = tmp_path / "lake"
    base = ["--lake", str(lake_dir), "--config", str(config)]

    assert main(["ingest", str(big), *base]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "over the 1 MB limit (ingest.max_file_mb" in err and "one file per day" in err
    bomb = tmp_path / "small.csv.gz"  # small on disk, over the limit once decompressed
    bomb.write_bytes(gzip.compress(big.read_bytes()))
    assert bomb.stat().st_size < 1024 * 1024
    assert main(["ingest", str(bomb), *base]) == 2
    assert "once decompressed is over the 1 MB limit" in capsys.readouterr().err

    lake = open_lake(lake_dir)
    lake.store.put_bytes(_key("big", "big.csv"), big.read_bytes())  # it got there some other way
    lake.store.put_bytes(_key("bomb", "small.csv.gz"), bomb.read_bytes())
    lake.store.put_bytes(_key("good", "b.csv"), (HEADER + f"{T},csv-1,mem,30\n").encode())
    assert main(["etl", *base]) == 0
    capsys.readouterr()
    run_day = lake.read_table(ETL_RUNS)["started_at"].iloc[0].date()
    for kind, name in (("big", "big.csv"), ("bomb", "small.csv.gz")):
        note = json.loads(lake.store.get_bytes(quarantined_file_key(_key(kind, name), run_day) + ".reason.json"))
        assert "over the 1 MB limit" in note["reason"] and "split the file" in note["reason"], kind
    assert set(lake.read_table(METRICS_DAILY)["server_id"]) == {"csv-1"}
    assert main(["etl", *base]) == 0
    assert lake.read_table(ETL_RUNS)["files_read"].sort_values().tolist() == [0, 3]


def test_poison_and_oversized_objects_on_an_s3_lake_are_set_aside_server_side(
    s3_config: S3Config, s3_bucket: str
) -> None:
    from capacity_forecaster.storage.s3_client import S3Client
    from capacity_forecaster.storage.s3_store import S3ObjectStore

    lake = Lake(S3ObjectStore(S3Client(s3_config), s3_bucket, "lake"))
    big = (HEADER + f"{T},big-1,cpu,40\n" * 40_000).encode()  # 1.4 MB, over a 1 MB limit
    poison = {**POISON_CASES, "oversized": ("a.csv", big, "over the 1 MB limit")}
    for kind, (name, data, _) in poison.items():
        lake.store.put_bytes(_key(kind, name), data)
    lake.store.put_bytes(_key("good", "a.parquet"), _GOOD_PARQUET)
    settings = load_settings(environ={}, overrides={"lake": f"s3://{s3_bucket}/lake", "ingest.max_file_mb": 1})

    counts = run_etl(lake, settings, now=NOW).counts
    assert counts["files_rejected"] == len(poison) and counts["rows_written"] == 1
    for kind, (name, data, message) in poison.items():
        moved = quarantined_file_key(_key(kind, name), NOW.date())
        assert lake.store.get_bytes(moved) == data and not lake.store.exists(_key(kind, name)), kind
        assert message in json.loads(lake.store.get_bytes(moved + ".reason.json"))["reason"], kind
    assert run_etl(lake, settings, now=NOW).counts["files_read"] == 0
