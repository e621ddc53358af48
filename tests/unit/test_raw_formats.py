"""Reading monitoring exports: format detection, long/wide/CloudWatch parsing, timestamps, metric aliases."""

from __future__ import annotations

import gzip
import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capacity_forecaster import etl, limits, raw_formats
from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.settings import load_settings

NOW = pd.Timestamp("2026-03-01T00:00:00Z")


def _validate(frame: pd.DataFrame, aliases: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = frame.assign(source="f", row_number=range(len(frame)))
    return etl.validate_samples(raw, now=NOW, aliases=aliases)


def test_long_csv_keeps_extra_columns_as_attributes() -> None:
    data = b"timestamp,server_id,metric,value,region,team\n2026-01-01T00:00:00Z,srv-1,cpu,50,eu-west-1,web\n"
    frame = raw_formats.read_monitoring_export("a.csv", data)
    assert frame.columns.tolist() == list(raw_formats.RAW_FRAME_COLUMNS)
    assert json.loads(frame.loc[0, "attributes"]) == {"region": "eu-west-1", "team": "web"}
    plain = raw_formats.read_monitoring_export("b.csv", b"timestamp,server_id,metric,value\nt,s,cpu,1\n")
    assert plain.loc[0, "attributes"] == ""


def test_gzip_is_detected_from_content_not_name() -> None:
    data = gzip.compress(b"timestamp,server_id,metric,value\n2026-01-01T00:00:00Z,srv-1,cpu,50\n")
    for name in ("a.csv.gz", "a.csv", "export"):
        assert raw_formats.read_monitoring_export(name, data)["value"].tolist() == ["50"]


def test_wide_csv_melts_one_row_per_metric_with_aliases_and_attributes() -> None:
    data = (
        b"Timestamp,Server_ID,CPUUtilization,mem_used_percent,disk,rack\n"
        b"2026-01-01T00:00:00Z,srv-1,10,20,30,r1\n"
        b"2026-01-01T00:05:00Z,srv-1,11,21,,r1\n"
    )
    frame = raw_formats.read_monitoring_export("wide.csv", data)
    assert frame["metric"].tolist() == ["cpuutilization", "mem_used_percent", "disk"] * 2
    assert frame["value"].tolist() == ["10", "20", "30", "11", "21", ""]
    assert set(frame["attributes"]) == {json.dumps({"rack": "r1"})}
    valid, rejected = _validate(frame)
    assert sorted(set(valid["metric"])) == ["cpu", "disk", "mem"]
    assert rejected["reason"].tolist() == ["non_numeric_value"]  # the empty disk cell, not silently dropped


def test_wide_parquet_and_long_parquet() -> None:
    stamps = pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"], utc=True)
    wide = pa.table(
        {
            "timestamp": pa.array(stamps.as_unit("ns").asi8, pa.timestamp("ns", tz="UTC")),
            "server_id": ["a", "b"],
            "cpu": [1.0, 2.0],
            "net": [3.0, 4.0],
        }
    )
    buf = io.BytesIO()
    pq.write_table(wide, buf)
    frame = raw_formats.read_monitoring_export("w.parquet", buf.getvalue())
    valid, rejected = _validate(frame)
    assert rejected.empty
    assert valid[["server_id", "metric", "value"]].values.tolist() == [
        ["a", "cpu", 1.0],
        ["a", "net", 3.0],
        ["b", "cpu", 2.0],
        ["b", "net", 4.0],
    ]
    assert valid["timestamp"].tolist() == [stamps[0], stamps[0], stamps[1], stamps[1]]


def test_key_column_spellings() -> None:
    data = b"time,host,metric,value\n2026-01-01T00:00:00Z,web-1,CPU,5\n"
    frame = raw_formats.read_monitoring_export("a.csv", data)
    assert frame.loc[0, "server_id"] == "web-1"
    assert frame.loc[0, "timestamp"] == "2026-01-01T00:00:00Z"


def _cloudwatch(label: str, stamps: list[object], values: list[float]) -> dict[str, object]:
    return {
        "MetricDataResults": [
            {"Id": "m0", "Label": label, "Timestamps": stamps, "Values": values, "StatusCode": "Complete"}
        ],
        "Messages": [],
    }


def test_cloudwatch_get_metric_data_json_single_and_paginated() -> None:
    page1 = _cloudwatch("i-0abc CPUUtilization", ["2026-01-01T00:05:00+00:00", "2026-01-01T00:00:00+00:00"], [7, 5])
    page2 = _cloudwatch("i-0abc mem_used_percent", [1767225600], [40.5])
    frame = raw_formats.read_monitoring_export("cw.json", json.dumps([page1, page2]).encode())
    valid, rejected = _validate(frame)
    assert rejected.empty
    assert valid[["server_id", "metric", "value"]].values.tolist() == [
        ["i-0abc", "cpu", 7.0],
        ["i-0abc", "cpu", 5.0],
        ["i-0abc", "mem", 40.5],
    ]
    assert valid.loc[2, "timestamp"] == pd.Timestamp("2026-01-01T00:00:00Z")
    assert json.loads(frame.loc[0, "attributes"]) == {"cloudwatch_id": "m0"}
    single = raw_formats.read_monitoring_export("x", json.dumps(page1).encode())
    assert len(single) == 2


def test_cloudwatch_label_without_server_is_quarantined_not_lost() -> None:
    frame = raw_formats.read_monitoring_export("cw.json", json.dumps(_cloudwatch("CPUUtilization", [0], [1])).encode())
    _, rejected = _validate(frame)
    assert rejected["reason"].tolist() == ["missing_server_id"]


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T01:00:00+01:00",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01 00:00:00",
        "2025-12-31T19:00:00-05:00",
        "1767225600",
        "1767225600000",
        "1767225600.0",
    ],
)
def test_timestamp_forms_all_normalise_to_utc(text: str) -> None:
    parsed = etl._parse_timestamps(pd.Series([text]))
    assert parsed.iloc[0] == pd.Timestamp("2026-01-01T00:00:00Z")


def test_numeric_epoch_columns_and_mixed_forms() -> None:
    assert (
        etl._parse_timestamps(pd.Series([1767225600, 1767225600000])).tolist()
        == [pd.Timestamp("2026-01-01T00:00:00Z")] * 2
    )
    mixed = etl._parse_timestamps(pd.Series(["1767225600", "2026-01-01T00:00:00Z", "soon", "99999999999999999999"]))
    assert mixed.iloc[0] == mixed.iloc[1]
    assert mixed.iloc[2:].isna().all()


def test_metric_alias_table_defaults_and_config_extension(tmp_path: object) -> None:
    table = raw_formats.metric_aliases()
    assert table["cpuutilization"] == "cpu"
    assert table["mem_used_percent"] == "mem"
    assert table["disk_used_percent"] == "disk"
    assert table["cpu"] == "cpu"
    settings = load_settings(overrides={"ingest.metric_aliases": {"ProcessorTime": "cpu", "SWAP": "mem"}})
    aliases = settings.ingest.aliases()
    assert aliases["processortime"] == "cpu"
    assert aliases["cpuutilization"] == "cpu"
    frame = pd.DataFrame(
        {"timestamp": ["2026-01-01T00:00:00Z"] * 2, "server_id": ["a", "a"], "metric": ["ProcessorTime", "gpu"]}
    ).assign(value="1")
    valid, rejected = _validate(frame, aliases)
    assert valid["metric"].tolist() == ["cpu"]
    assert rejected["reason"].tolist() == ["unknown_metric"]
    with pytest.raises(ConfigError, match="targets are cpu"):
        load_settings(overrides={"ingest.metric_aliases": {"gpu_util": "gpu"}})
    with pytest.raises(ConfigError, match="must map"):
        load_settings(overrides={"ingest.metric_aliases": "cpu"})


def test_parquet_detected_from_magic_bytes_whatever_the_name() -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table({"timestamp": ["t"], "server_id": ["s"], "metric": ["cpu"], "value": [1.0]}), buf)
    assert raw_formats.detect_format("upload.csv", buf.getvalue()) == "parquet"
    assert raw_formats.detect_format("x.csv", b'  {"a": 1}') == "json"
    assert raw_formats.detect_format("x.parquet", b"a,b\n") == "parquet"
    with pytest.raises(InputError, match="cannot be read as parquet"):
        raw_formats.read_monitoring_export("x.parquet", b"a,b\n1,2\n")


def test_server_attributes_latest_value_per_server_and_attribute() -> None:
    samples = pd.DataFrame(
        {
            "server_id": ["a", "a", "a", "b"],
            "timestamp": pd.to_datetime(
                ["2026-01-02T00:00Z", "2026-01-01T00:00Z", "2026-01-03T00:00Z", "2026-01-01T00:00Z"], utc=True
            ),
            "source": ["f2", "f1", "f3", "f1"],
            "attributes": [
                json.dumps({"team": "web", "rack": "r1"}),
                json.dumps({"team": "old"}),
                "",
                json.dumps({"team": "db"}),
            ],
        }
    )
    out = etl.server_attributes(samples)
    assert out[["server_id", "attribute", "value", "source"]].values.tolist() == [
        ["a", "rack", "r1", "f2"],
        ["a", "team", "web", "f2"],
        ["b", "team", "db", "f1"],
    ]
    assert etl.server_attributes(samples.assign(attributes="")).empty


ROW = st.tuples(
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00", "1767225600", "1767225900000", "bad", ""]),
    st.sampled_from(["srv-1", "srv-2", "", "bad id"]),
    st.sampled_from(["CPUUtilization", "mem", "gpu", "disk_used_percent"]),
    st.sampled_from(["0", "50", "100.5", "-3", "x", "", "1e2"]),
)


def _render(fmt: str, rows: list[tuple[str, str, str, str]]) -> tuple[bytes, int]:
    """One file of ``rows`` in ``fmt``, and the number of samples it holds."""
    if fmt in ("long", "long_gz"):
        text = pd.DataFrame(rows, columns=list(etl.REQUIRED_COLUMNS)).to_csv(index=False).encode()
        return (gzip.compress(text) if fmt == "long_gz" else text), len(rows)
    if fmt == "wide":
        wide = pd.DataFrame(
            [(t, s, v, v[::-1]) for t, s, _, v in rows], columns=["timestamp", "server_id", "CPUUtilization", "mem"]
        )
        return wide.to_csv(index=False).encode(), 2 * len(rows)
    results = [
        {"Id": f"m{i}", "Label": f"{s} {m}".strip(), "Timestamps": [t], "Values": [float(len(v)) * 30]}
        for i, (t, s, m, v) in enumerate(rows)
    ]
    return json.dumps({"MetricDataResults": results}).encode(), len(rows)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["long", "long_gz", "wide", "cloudwatch"]), st.lists(ROW, max_size=15))))
def test_reconciliation_holds_for_mixes_of_formats(files: list[tuple[str, list[tuple[str, str, str, str]]]]) -> None:
    frames, expected = [], 0
    for i, (fmt, rows) in enumerate(files):
        data, samples = _render(fmt, rows)
        try:
            frame = raw_formats.read_monitoring_export(f"f{i}", data)
        except InputError:
            assert samples == 0  # only an empty export is refused as a whole
            continue
        assert len(frame) == samples
        frames.append(frame.assign(source=f"f{i}", row_number=range(len(frame))))
        expected += samples
    if not frames:
        return
    raw = pd.concat(frames, ignore_index=True)
    valid, rejected = etl.validate_samples(raw, now=NOW)
    assert len(valid) + len(rejected) == expected
    assert set(valid["metric"]) <= {"cpu", "mem", "disk", "net"}
    assert not valid.duplicated(subset=etl.SAMPLE_KEY).any()


def _parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def test_parquet_binary_columns_are_text_when_utf8_and_nested_columns_json_text() -> None:
    base = {"timestamp": ["2026-01-01T00:00:00Z"], "metric": ["cpu"], "value": [50.0]}
    table = pa.table(
        {
            **base,
            "server_id": pa.array([b"srv-1"], pa.binary()).dictionary_encode(),
            "tags": pa.array([{"team": "web", "n": 2}]),
            "zones": pa.array([["a", "b"]]),
            "raw": pa.array([b"caf\xc3\xa9"], pa.large_binary()),
        }
    )
    frame = raw_formats.read_monitoring_export("a.parquet", _parquet_bytes(table))
    assert frame.loc[0, "server_id"] == "srv-1"
    attributes = json.loads(frame.loc[0, "attributes"])
    assert attributes["raw"] == "café" and json.loads(attributes["zones"]) == ["a", "b"]
    assert json.loads(attributes["tags"]) == {"team": "web", "n": 2}
    valid, rejected = _validate(frame)
    assert len(valid) == 1 and rejected.empty


@pytest.mark.parametrize("column", ["server_id", "value", "extra"])
def test_parquet_binary_column_that_is_not_utf8_is_refused(column: str) -> None:
    base = {"timestamp": ["2026-01-01T00:00:00Z"], "server_id": ["s"], "metric": ["cpu"], "value": [1.0]}
    table = pa.table({**base, column: pa.array([b"\xff\xfe"], pa.binary())})
    with pytest.raises(InputError, match=f"a.parquet: column '{column}' holds binary data that is not UTF-8 text"):
        raw_formats.read_monitoring_export("a.parquet", _parquet_bytes(table))


def test_size_limit_applies_to_the_bytes_and_to_what_gzip_expands_to() -> None:
    data = b"timestamp,server_id,metric,value\n" + b"2026-01-01T00:00:00Z,srv-1,cpu,50\n" * 1000
    assert len(raw_formats.read_monitoring_export("a.csv", data, max_bytes=len(data))) == 1000
    with pytest.raises(InputError, match=r"a.csv: the file \(0.0 MB\) is over the .* MB limit \(ingest.max_file_mb"):
        raw_formats.read_monitoring_export("a.csv", data, max_bytes=len(data) - 1)
    packed = gzip.compress(data)
    assert len(packed) < 1000
    with pytest.raises(
        InputError, match=r"once decompressed is over the .* limit.*split the file, e\.g\. one file per day"
    ):
        raw_formats.read_monitoring_export("a.csv.gz", packed, max_bytes=1000)


def test_max_file_mb_setting_and_its_variable() -> None:
    assert load_settings(environ={}).ingest.max_file_bytes == 1024 * 1024 * 1024
    assert load_settings(environ={"CF_INGEST_MAX_FILE_MB": "5"}).ingest.max_file_bytes == 5 * 1024 * 1024
    largest = limits.max_file_mb()
    assert load_settings(environ={"CF_INGEST_MAX_FILE_MB": str(largest)}).ingest.max_file_mb == largest
    for bad in ("0", str(largest + 1)):
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={"CF_INGEST_MAX_FILE_MB": bad})
        message = str(caught.value)
        assert "\n" not in message and f"ingest.max_file_mb={bad} must be between 1 and {largest}" in message
        assert "limits.MAX_FILE_MB" in message and "split larger exports" in message


def test_the_largest_file_follows_the_etl_lambdas_memory_tmp_and_timeout() -> None:
    """Within each of the three budgets with headroom; less memory, /tmp or time lowers it."""
    configured = limits.max_file_mb()
    assert 1024 <= configured == limits.MAX_FILE_MB  # the default ingest.max_file_mb fits
    peak = limits.ETL_FILE_BASE_MB + configured * limits.ETL_FILE_MB_PER_MB
    assert peak * limits.HEADROOM <= limits.LAMBDA_CONFIGURED_MB
    assert configured * limits.ETL_FILE_TMP_PER_MB * limits.HEADROOM <= limits.LAMBDA_TMP_MB
    assert configured * limits.ETL_FILE_CPU_S_PER_MB * limits.HEADROOM <= limits.LAMBDA_TIMEOUT_S
    assert limits.max_file_mb(memory_mb=1024) < configured
    assert limits.max_file_mb(tmp_mb=512) < configured
    assert limits.max_file_mb(timeout_s=60) < configured
