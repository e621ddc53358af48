"""Ingest: user exports land in the raw zone under the key scheme, with metadata, and the ETL picks them up."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.ingest import ingest_files, upload_key
from capacity_forecaster.schema import METRICS_DAILY, METRICS_HOURLY, QUARANTINE, SERVER_ATTRIBUTES
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import run_etl
from capacity_forecaster.storage.errors import InvalidKeyError
from capacity_forecaster.storage.lake import open_lake

NOW = datetime(2026, 11, 23, 10, 15, 0, tzinfo=UTC)
EXPORT = (
    "timestamp,server_id,metric,value,hostname\n"
    "2026-11-20T10:00:00Z,web-1,cpu,41.5,web-1.example\n"
    "2026-11-20T10:05:00Z,web-1,cpu,55.0,web-1.example\n"
    "2026-11-20T10:05:00Z,web-1,mem,70,web-1.example\n"
    "2026-11-21T00:00:00+02:00,web-2,disk,12,web-2.example\n"
    "2026-11-21T00:00:00Z,web-2,disk,250,web-2.example\n"
)


def write_export(folder: Path, name: str = "export.csv", text: str = EXPORT) -> Path:
    path = folder / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_upload_key_scheme() -> None:
    key = upload_key("acme", "My Export (1).csv", NOW)
    assert key == "raw/uploads/tenants/acme/2026/11/23/20261123T101500Z_My_Export_1_.csv" or key.startswith(
        "raw/uploads/tenants/acme/2026/11/23/20261123T101500Z_"
    )
    with pytest.raises(InvalidKeyError):
        upload_key("../other", "a.csv", NOW)


def test_ingest_then_etl_on_a_local_lake(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    csv = write_export(tmp_path)
    gz = write_export(tmp_path, "more.csv.gz", "timestamp,server_id,metric,value\n2026-11-22T00:00:00Z,web-3,net,5\n")
    uris = ingest_files(lake, [csv, gz], tenant="acme", now=NOW)
    assert len(uris) == 2
    keys = [o.key for o in lake.store.list("raw/uploads/")]
    assert all(k.startswith("raw/uploads/tenants/acme/2026/11/23/20261123T101500Z_") for k in keys)

    settings = load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")})
    result = run_etl(lake, settings, now=NOW)
    assert result.counts["rows_in"] == 6
    assert result.counts["rows_quarantined"] == 1
    assert result.counts["quarantine_reasons"] == {"value_out_of_range": 1}
    daily = lake.read_table(METRICS_DAILY)
    web1 = daily[(daily["server_id"] == "web-1") & (daily["metric"] == "cpu")]
    assert web1["n_samples"].tolist() == [2]
    # The +02:00 sample is 2026-11-20 22:00 UTC.
    assert daily.loc[daily["server_id"] == "web-2", "dt"].dt.day.tolist() == [20]
    assert lake.read_table(QUARANTINE)["value"].tolist() == ["250"]
    # The extra hostname column is kept per server in server_attributes (rows of valid samples only).
    attrs = lake.read_table(SERVER_ATTRIBUTES)
    assert attrs[["server_id", "attribute", "value"]].values.tolist() == [
        ["web-1", "hostname", "web-1.example"],
        ["web-2", "hostname", "web-2.example"],
    ]
    assert attrs["last_seen"].tolist() == [
        pd.Timestamp("2026-11-20T10:05:00Z"),
        pd.Timestamp("2026-11-20T22:00:00Z"),
    ]


def test_bad_files_are_refused_and_the_good_ones_copied(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    good = write_export(tmp_path)
    bad = write_export(tmp_path, "bad.csv", "when,who,cpu\n1,2,3\n")
    with pytest.raises(InputError, match=r"bad\.csv: missing required columns timestamp, server_id"):
        ingest_files(lake, [good, bad], now=NOW)
    assert [o.key.rsplit("_", 1)[-1] for o in lake.store.list("")] == ["export.csv"]
    with pytest.raises(InputError, match="no such file"):
        ingest_files(lake, [tmp_path / "nope.csv"], now=NOW)
    with pytest.raises(InputError, match="unsupported file type"):
        ingest_files(lake, [write_export(tmp_path, "x.pdf")], now=NOW)
    assert len(list(lake.store.list(""))) == 1


def test_cli_ingest_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_export(tmp_path, "bad.csv", "time,host\n1,2\n")
    assert main(["ingest", str(bad), "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.usefixtures("s3_endpoint_env")
def test_ingest_to_s3_sets_metadata_and_encryption(tmp_path: Path, s3_bucket: str, s3_boto_client: Any) -> None:
    settings = load_settings(overrides={"lake": f"s3://{s3_bucket}/capacity"})
    lake = open_lake(settings.lake, settings.s3_config())
    [uri] = ingest_files(lake, [write_export(tmp_path)], tenant="acme", now=NOW)
    assert uri.startswith(f"s3://{s3_bucket}/capacity/raw/uploads/tenants/acme/2026/11/23/")
    head = s3_boto_client.head_object(Bucket=s3_bucket, Key=uri.split("/", 3)[3])
    assert head["Metadata"]["original_filename"] == "export.csv"
    assert head["Metadata"]["source"] == "ingest"
    assert "uploaded_at" in head["Metadata"]
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "text/csv"
    result = run_etl(lake, settings, now=NOW)
    assert result.counts["rows_written"] == 4


def test_doctor_on_local_and_s3_lakes(
    tmp_path: Path, s3_bucket: str, s3_endpoint_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--lake", str(tmp_path / "lake")]) == 0
    assert "[ok  ] write access" in capsys.readouterr().out
    assert main(["doctor", "--lake", f"s3://{s3_bucket}/capacity"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert main(["doctor", "--lake", "s3://no-such-bucket-cf-test/capacity"]) == 2
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and captured.err.startswith("error: ")


WIDE = (
    "Timestamp,InstanceId,CPUUtilization,mem_used_percent,GPUBusy,az\n"
    "1795168800,i-0aaa,40,60,7,eu-west-1a\n"
    "1795169100000,i-0aaa,50,61,8,eu-west-1a\n"
)
CLOUDWATCH = {
    "MetricDataResults": [
        {
            "Id": "cpu_0",
            "Label": "i-0bbb CPUUtilization",
            "Timestamps": ["2026-11-20T10:05:00+00:00", "2026-11-20T10:00:00+00:00"],
            "Values": [12.5, 10.0],
            "StatusCode": "Complete",
        },
        {
            "Id": "disk_0",
            "Label": "i-0bbb disk_used_percent",
            "Timestamps": ["2026-11-20T10:00:00+00:00"],
            "Values": [81.0],
            "StatusCode": "Complete",
        },
    ],
    "Messages": [],
}


@pytest.mark.usefixtures("s3_endpoint_env")
def test_wide_and_cloudwatch_exports_round_trip_on_s3(tmp_path: Path, s3_bucket: str, s3_boto_client: Any) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"lake: s3://{s3_bucket}/capacity\ningest:\n  metric_aliases:\n    GPUBusy: cpu\n")
    settings = load_settings(config, environ={})
    lake = open_lake(settings.lake, settings.s3_config())
    wide = write_export(tmp_path, "wide.csv.gz", WIDE)
    cw = tmp_path / "cloudwatch.json"
    cw.write_text(json.dumps(CLOUDWATCH))
    ingest_files(lake, [wide, cw], tenant="acme", now=NOW, aliases=settings.ingest.aliases())
    # A file that slipped past ingest (written straight to the raw zone) is moved aside by the ETL.
    lake.store.put_bytes("raw/uploads/tenants/acme/2026/11/23/broken.csv", b"\xff\xfebroken")

    result = run_etl(lake, settings, now=NOW)
    counts = result.counts
    assert counts["rows_in"] == 9 and counts["files_rejected"] == 1
    assert counts["rows_in"] == counts["rows_written"] + counts["rows_quarantined"]
    # GPUBusy maps to cpu through the config: same server, metric and time as CPUUtilization, other value.
    assert counts["quarantine_reasons"] == {"conflicting_duplicate": 4}
    daily = lake.read_table(METRICS_DAILY).set_index(["server_id", "metric"])
    assert daily.loc[("i-0aaa", "mem"), "n_samples"] == 2
    assert daily.loc[("i-0bbb", "cpu"), "n_samples"] == 2
    assert daily.loc[("i-0bbb", "disk"), "p95"] == 81.0
    assert set(daily.reset_index()["dt"].dt.date.astype(str)) == {"2026-11-20"}
    keys = [o.key for o in lake.store.list("")]
    assert "capacity/raw/uploads/tenants/acme/2026/11/23/broken.csv" not in keys
    assert any(
        k.endswith("quarantine/files/dt=2026-11-23/raw/uploads/tenants/acme/2026/11/23/broken.csv") for k in keys
    )


def test_cli_ingest_accepts_wide_and_refuses_unknown_layouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    assert main(["ingest", str(write_export(tmp_path, "wide.csv", WIDE)), "--lake", str(lake)]) == 0
    assert "raw/uploads/tenants/default/" in capsys.readouterr().out
    odd = write_export(tmp_path, "odd.csv", "when,who,what\n1,2,3\n")
    assert main(["ingest", str(odd), "--lake", str(lake)]) == 2
    assert "missing required columns" in capsys.readouterr().err


def test_etl_hourly_grain_writes_metrics_hourly_by_day(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["timestamp,server_id,metric,value"]
    for minute in range(0, 120, 5):  # two full hours on 2026-11-20 ...
        lines.append(f"2026-11-20T{10 + minute // 60:02d}:{minute % 60:02d}:00Z,web-1,cpu,{minute / 2}")
    lines.append("2026-11-21T00:30:00Z,web-1,cpu,20")  # ... and one sample in the first hour of the 21st
    export = write_export(tmp_path, "hourly.csv", "\n".join(lines) + "\n")
    lake_dir = str(tmp_path / "lake")
    assert main(["ingest", str(export), "--lake", lake_dir]) == 0
    assert main(["etl", "--lake", lake_dir, "--grain", "hourly"]) == 0
    capsys.readouterr()
    lake = open_lake(lake_dir)
    keys = sorted(o.key for o in lake.store.list("curated/metrics_hourly/"))
    assert keys == [
        "curated/metrics_hourly/day=2026-11-20/data.parquet",
        "curated/metrics_hourly/day=2026-11-21/data.parquet",
    ]
    hourly = lake.read_table(METRICS_HOURLY)
    assert hourly["n_samples"].tolist() == [12, 12, 1]
    assert hourly["low_coverage"].tolist() == [False, False, True]
    assert hourly["expected_samples"].tolist() == [12, 12, 12]
    # The daily values carry the same coverage: 24 and 1 of the 288 samples a 5-minute day holds.
    daily = lake.read_table(METRICS_DAILY)
    assert daily[["n_samples", "expected_samples", "low_coverage"]].values.tolist() == [[24, 288, True], [1, 288, True]]
    # Re-running everything gives the same partitions, no duplicates.
    assert main(["etl", "--lake", lake_dir, "--grain", "hourly", "--full"]) == 0
    pd.testing.assert_frame_equal(lake.read_table(METRICS_HOURLY), hourly)
    with pytest.raises(SystemExit):
        main(["etl", "--lake", lake_dir, "--grain", "weekly"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"etl\.grain='weekly' must be daily or hourly"):
        load_settings(environ={}, overrides={"etl.grain": "weekly"})
    with pytest.raises(ConfigError, match=r"etl\.min_coverage"):
        load_settings(environ={}, overrides={"etl.min_coverage": 1.5})


def test_etl_knn_imputation_setting(tmp_path: Path) -> None:
    lines = ["timestamp,server_id,metric,value"]
    for day in range(1, 11):
        for server, offset in (("a", 0), ("b", 2), ("c", -2), ("z", 40)):
            if (server, day) != ("a", 5):
                lines.append(f"2026-11-{day:02d}T12:00:00Z,{server},cpu,{30 + offset + day}")
    lake = open_lake(tmp_path / "lake")
    lake.store.put_bytes("raw/uploads/tenants/t/2026/11/23/knn.csv", ("\n".join(lines) + "\n").encode())
    overrides = {"lake": str(tmp_path / "lake"), "etl.imputation": "knn", "etl.knn_neighbors": 2}
    run_etl(lake, load_settings(environ={}, overrides=overrides), now=NOW)
    daily = lake.read_table(METRICS_DAILY)
    filled = daily[daily["imputed"]]
    assert filled[["server_id", "p95", "n_samples"]].values.tolist() == [["a", 35.0, 0]]  # mean of b (37), c (33)
    with pytest.raises(ConfigError, match="seasonal or knn"):
        load_settings(environ={}, overrides={"etl.imputation": "mean"})


TRICKY_NAMES = [
    "my export 2026.csv",
    "données café.CSV",
    "日本語.csv",
    "..csv",
    ".hidden.csv",
    " -leading.csv",
    "tab\tand\x01control\x7f.csv",
    "100%25 done%.csv",
    "back\\slash.csv",
    "Report.csv",
    "report.csv",
    "..CSV.GZ",
    "x" * 240 + ".csv.gz",
    "é" * 120 + ".parquet",
]


def _export_for(folder: Path, name: str, server: str) -> Path:
    text = (
        "timestamp,server_id,metric,value\n"
        f"2026-11-20T10:00:00Z,{server},cpu,41.5\n2026-11-21T10:00:00Z,{server},mem,7\n"
    )
    path = folder / name
    if name.lower().endswith(".parquet"):
        from io import StringIO

        pd.read_csv(StringIO(text)).to_parquet(path)
    elif name.lower().endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_tricky_names_become_valid_keys_the_etl_reads(tmp_path: Path) -> None:
    from capacity_forecaster.stages import is_raw_input
    from capacity_forecaster.storage.keys import MAX_KEY_BYTES, validate_key

    folder = tmp_path / "exports"
    folder.mkdir()
    paths = [_export_for(folder, name, f"srv-{i}") for i, name in enumerate(TRICKY_NAMES)]
    lake = open_lake(tmp_path / "lake")
    uris = ingest_files(lake, paths, tenant="acme", now=NOW)
    keys = [o.key for o in lake.store.list("raw/uploads/")]
    assert len(uris) == len(keys) == len(TRICKY_NAMES)  # none overwrote another (Report.csv / report.csv too)
    for key in keys:
        name = key.rsplit("/", 1)[1]
        assert validate_key(key) == key and len(key.encode()) <= MAX_KEY_BYTES
        assert is_raw_input(key), key
        assert re.fullmatch(r"20261123T101500Z_[0-9a-f]{8}_[A-Za-z0-9][A-Za-z0-9._-]*", name), name
        assert not name.split("_", 2)[2].startswith("."), name
    assert {k.rsplit("_", 1)[-1] for k in keys} >= {"upload.csv", "upload.csv.gz", "e" * 120 + ".parquet"}

    result = run_etl(lake, load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")}), now=NOW)
    assert result.counts["files_read"] == len(TRICKY_NAMES)
    assert result.counts["rows_written"] > 0
    daily = lake.read_table(METRICS_DAILY)
    assert set(daily["server_id"]) == {f"srv-{i}" for i in range(len(TRICKY_NAMES))}


def test_same_names_in_one_batch_do_not_overwrite(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    first, second = (
        _export_for(tmp_path / "a", "export.csv", "srv-a"),
        _export_for(tmp_path / "b", "export.csv", "srv-b"),
    )
    spaced, underscored = _export_for(tmp_path, "x y.csv", "srv-c"), _export_for(tmp_path, "x_y.csv", "srv-d")
    lake = open_lake(tmp_path / "lake")
    uris = ingest_files(lake, [first, second, first, spaced, underscored], tenant="acme", now=NOW)
    assert len(uris) == len(set(uris)) == 4  # the same file given twice is one object, not two copies of its rows
    assert len(list(lake.store.list("raw/uploads/"))) == 4
    # Ingest again in the same second: the same bytes land on the same keys (nothing new), other bytes do not.
    again = ingest_files(lake, [first, _export_for(tmp_path / "c", "export.csv", "srv-e")], tenant="acme", now=NOW)
    assert again[0] == uris[0] and again[1] not in uris
    run_etl(lake, load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")}), now=NOW)
    daily = lake.read_table(METRICS_DAILY)
    assert set(daily["server_id"]) == {"srv-a", "srv-b", "srv-c", "srv-d", "srv-e"}
    assert len(daily[daily["server_id"] == "srv-a"]) == 2  # ingested twice, counted once


@pytest.mark.parametrize("tenant", ["", "Acme", "../other", "a/b", "x" * 64, "tenant\n", "é"])
def test_invalid_tenants_are_refused_before_any_file_is_read(tmp_path: Path, tenant: str) -> None:
    lake = open_lake(tmp_path / "lake")
    with pytest.raises(InvalidKeyError, match="invalid tenant id"):
        ingest_files(lake, [tmp_path / "not-even-there.csv"], tenant=tenant, now=NOW)
    assert list(lake.store.list("")) == []
