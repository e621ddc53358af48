"""Ingest: user exports land in the raw zone under the key scheme, with metadata, and the ETL picks them up."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.errors import InputError
from capacity_forecaster.ingest import ingest_files, upload_key
from capacity_forecaster.schema import METRICS_DAILY, QUARANTINE
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


def test_bad_files_are_refused_before_anything_is_uploaded(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    good = write_export(tmp_path)
    bad = write_export(tmp_path, "bad.csv", "time,host,cpu\n1,2,3\n")
    with pytest.raises(InputError, match="missing columns timestamp, server_id, metric, value"):
        ingest_files(lake, [good, bad], now=NOW)
    with pytest.raises(InputError, match="no such file"):
        ingest_files(lake, [tmp_path / "nope.csv"], now=NOW)
    with pytest.raises(InputError, match="unsupported file type"):
        ingest_files(lake, [write_export(tmp_path, "x.txt")], now=NOW)
    assert list(lake.store.list("")) == []


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
