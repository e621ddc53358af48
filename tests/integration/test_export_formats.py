"""Real-shaped exports (tests/samples/formats/): each ingests, and the ETL reads from the lake the rows ingest
checked; batches copy the good files and list the bad ones; files of which no row would survive are refused with
the fix, and the fix works."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from capacity_forecaster import etl
from capacity_forecaster.cli import main
from capacity_forecaster.formats.options import ReadOptions
from capacity_forecaster.ingest import check_file, ingest_batch
from capacity_forecaster.schema import METRICS_DAILY
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import _read_raw, run_etl
from capacity_forecaster.storage.lake import open_lake

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples" / "formats"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PROM_CPU = '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))'

# sample -> (ingest options, shape read, the (server, metric) series it maps to)
SAMPLES: dict[str, tuple[dict[str, Any], str, set[tuple[str, str]]]] = {
    "cloudwatch_console.csv": (
        {},
        "cloudwatch-console-csv",
        {("i-0a1b2c3d4e5f60001", "cpu"), ("i-0a1b2c3d4e5f60001", "mem"), ("i-0a1b2c3d4e5f60002", "cpu")},
    ),
    "get-metric-statistics_i-0a1b2c3d4e5f60003_cpu.json": (
        {},
        "cloudwatch-get-metric-statistics",
        {("i-0a1b2c3d4e5f60003", "cpu")},
    ),
    "get-metric-data_custom_labels.json": (
        {"label_format": "{metric}-{server}"},
        "cloudwatch-get-metric-data",
        {("i-0a1b2c3d4e5f60004", "cpu"), ("i-0a1b2c3d4e5f60004", "mem")},
    ),
    "get-metric-data_default_labels.json": (
        {"server": "i-0a1b2c3d4e5f60005"},
        "cloudwatch-get-metric-data",
        {("i-0a1b2c3d4e5f60005", "cpu"), ("i-0a1b2c3d4e5f60005", "mem")},
    ),
    "prometheus_query_range_cpu.json": (
        {"metric": PROM_CPU},
        "prometheus-query-range",
        {("web-01", "cpu"), ("web-02", "cpu")},
    ),
    "prometheus_query_range_node_memory.json": (
        {"fraction": True},
        "prometheus-query-range",
        {("web-01", "mem"), ("web-02", "mem")},
    ),
    "grafana_series_joined.csv": ({"metric": "cpu"}, "grafana-csv", {("db-01", "cpu"), ("db-02", "cpu")}),
    "grafana_series_rows.csv": ({}, "grafana-series-rows", {("cache-01", "mem"), ("cache-02", "mem")}),
    "datadog_timeseries.csv": ({"fraction": True}, "datadog-csv", {("batch-01", "disk"), ("batch-02", "disk")}),
    "semicolon_decimal_comma.csv": ({}, "csv-table", {("app-01", "cpu"), ("app-01", "mem")}),
    "semicolon_dot_decimal.csv": ({}, "csv-table", {("app-02", "disk")}),
    "dd_mm_yyyy.csv": ({"date_format": "%d.%m.%Y %H:%M"}, "csv-table", {("app-03", "cpu"), ("app-03", "mem")}),
    "workbook.xlsx": ({}, "xlsx-table", {("erp-01", "cpu"), ("erp-01", "mem")}),
    "utf16_unicode_text.txt": ({}, "csv-table", {("muc-01", "net")}),
}
SAMPLE_KEY = ["timestamp", "server_id", "metric", "value"]


def _settings(lake: Path, **overrides: Any) -> Any:
    return load_settings(environ={}, overrides={"lake": str(lake), **overrides})


def _valid(raw: pd.DataFrame) -> pd.DataFrame:
    valid, _ = etl.validate_samples(raw.assign(source="s", row_number=range(len(raw))), now=pd.Timestamp(NOW))
    return valid[SAMPLE_KEY].sort_values(SAMPLE_KEY, ignore_index=True)


def test_every_sample_is_in_the_table() -> None:
    assert {p.name for p in SAMPLES_DIR.iterdir()} == set(SAMPLES)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_each_sample_ingests_and_the_etl_reads_the_same_rows(tmp_path: Path, sample: str) -> None:
    options, shape, series = SAMPLES[sample]
    path = SAMPLES_DIR / sample
    lake_dir = tmp_path / "lake"
    lake = open_lake(lake_dir)
    settings = _settings(lake_dir)
    report = ingest_batch(lake, [path], now=NOW, aliases=settings.ingest.aliases(), options=ReadOptions(**options))
    assert report.refused == [] and len(report.uploaded) == 1
    checked = etl.read_raw_object(
        str(path), path.read_bytes(), settings.ingest.aliases(), options=ReadOptions(**options)
    )
    assert checked.attrs["shape"] == shape
    [stored] = [o.key for o in lake.store.list("raw/uploads/")]
    assert stored.endswith("_normalised.csv") == bool(options)  # options -> the long CSV they give, else the bytes
    from_lake = _read_raw(lake, stored, settings)  # what the ETL reads from the raw zone
    pd.testing.assert_frame_equal(_valid(from_lake), _valid(checked))
    assert set(zip(_valid(checked)["server_id"], _valid(checked)["metric"], strict=True)) == series
    assert _valid(checked)["value"].between(1, 100).all()  # percent, fractions scaled


def test_a_lake_of_every_sample_through_the_etl(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    lake = open_lake(lake_dir)
    settings = _settings(lake_dir)
    expected_rows = 0
    for sample, (options, _, _) in SAMPLES.items():
        checked = check_file(SAMPLES_DIR / sample, settings.ingest.aliases(), options=ReadOptions(**options), now=NOW)
        expected_rows += checked.valid_rows
        assert ingest_batch(lake, [SAMPLES_DIR / sample], now=NOW, options=ReadOptions(**options)).refused == []
    result = run_etl(lake, settings, now=NOW)
    assert result.counts["files_read"] == len(SAMPLES)
    assert result.counts["rows_written"] == expected_rows and result.counts["rows_quarantined"] == 0
    daily = lake.read_table(METRICS_DAILY)
    assert set(zip(daily["server_id"], daily["metric"], strict=True)) == set().union(
        *(s for _, _, s in SAMPLES.values())
    )
    assert set(daily["dt"].dt.date.astype(str)) == {"2026-11-29", "2026-11-30"}


def _copy(tmp_path: Path, sample: str, name: str | None = None, folder: str = "exports") -> Path:
    target = tmp_path / folder / (name or sample)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLES_DIR / sample, target)
    return target


def test_a_batch_copies_the_good_files_and_lists_each_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [_copy(tmp_path, s) for s in ("semicolon_dot_decimal.csv", "workbook.xlsx", "cloudwatch_console.csv")]
    empty = tmp_path / "exports" / "empty.csv"
    empty.write_bytes(b"")
    days = _copy(tmp_path, "dd_mm_yyyy.csv")
    lake_dir = tmp_path / "lake"
    assert (
        main(["ingest", str(good[0]), str(empty), str(good[1]), str(days), str(good[2]), "--lake", str(lake_dir)]) == 2
    )
    out, err = capsys.readouterr()
    assert out.count("raw/uploads/tenants/default/") == 3
    assert err.splitlines() == [
        f"error: {empty}: the file is empty",
        err.splitlines()[1],
        "error: 2 of 5 files refused (listed above); 3 ingested",
    ]
    assert err.splitlines()[1].startswith(f"error: {days}: no row would survive the ETL: 24 of 24 rows unparseable")
    keys = sorted(o.key.rsplit("_", 1)[-1] for o in open_lake(lake_dir).store.list("raw/uploads/"))
    assert keys == ["console.csv", "decimal.csv", "workbook.xlsx"]


def test_one_bad_file_alone_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert main(["ingest", str(empty), "--lake", str(tmp_path / "lake")]) == 2
    assert capsys.readouterr().err == f"error: {empty}: the file is empty\n"


def test_duplicate_names_and_contents_in_one_batch_and_one_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _copy(tmp_path, "semicolon_dot_decimal.csv", "export.csv", "a")
    b = _copy(tmp_path, "semicolon_decimal_comma.csv", "export.csv", "b")  # same name, other content
    same = _copy(tmp_path, "semicolon_dot_decimal.csv", "copy of export.csv", "c")  # other name, same content
    lake = open_lake(tmp_path / "lake")
    report = ingest_batch(lake, [a, b, same, a], now=NOW)
    assert len(report.uploaded) == len(set(report.uploaded)) == 2
    assert report.skipped == [(same, a), (a, a)] and report.refused == []
    again = ingest_batch(lake, [_copy(tmp_path, "utf16_unicode_text.txt", "export.csv", "d")], now=NOW)  # same second
    assert again.uploaded[0] not in report.uploaded
    names = [o.key.rsplit("/", 1)[1] for o in lake.store.list("raw/uploads/")]
    assert len(names) == 3 and all(n.startswith("20261201T120000Z_") and n.endswith("_export.csv") for n in names)
    result = run_etl(lake, _settings(tmp_path / "lake"), now=NOW)
    assert result.counts["rows_written"] == 12 + 24 + 12 and result.counts["rows_quarantined"] == 0
    assert main(["ingest", str(a), str(same), "--lake", str(tmp_path / "cli")]) == 0
    assert f"skipped {same}: the same content as {a}" in capsys.readouterr().out


def test_dd_mm_yyyy_suggests_the_date_format_and_works_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _copy(tmp_path, "dd_mm_yyyy.csv")
    lake_dir = str(tmp_path / "lake")
    assert main(["ingest", str(path), "--lake", lake_dir]) == 2
    err = capsys.readouterr().err
    assert "24 of 24 rows unparseable_timestamp (e.g. '29.11.2026 00:00')" in err
    assert "fix: --date-format '%d.%m.%Y %H:%M'" in err and err.count("\n") == 1
    assert main(["ingest", str(path), "--lake", lake_dir, "--date-format", "%d.%m.%Y %H:%M"]) == 0
    capsys.readouterr()
    assert main(["etl", "--lake", lake_dir]) == 0
    daily = open_lake(lake_dir).read_table(METRICS_DAILY)
    assert daily["n_samples"].sum() == 24 and set(daily["dt"].dt.day) == {29, 30}


def test_get_metric_data_default_labels_suggest_the_label_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _copy(tmp_path, "get-metric-data_default_labels.json")
    lake_dir = str(tmp_path / "lake")
    assert main(["ingest", str(path), "--lake", lake_dir]) == 2
    err = capsys.readouterr().err
    assert "24 of 24 rows missing_server_id (e.g. 'CPUUtilization')" in err
    assert "the labels ('CPUUtilization', 'mem_used_percent') hold no server id: --label-format" in err
    assert "--server ID" in err
    custom = _copy(tmp_path, "get-metric-data_custom_labels.json")
    assert main(["ingest", str(custom), "--lake", lake_dir]) == 2  # labels hold the server, the pattern is unknown
    err = capsys.readouterr().err
    assert "missing_server_id (e.g. 'CPUUtilization-i-0a1b2c3d4e5f60004')" in err and "--label-format" in err
    assert main(["ingest", str(custom), "--lake", lake_dir, "--label-format", "{metric}-{server}"]) == 0


def test_unmapped_metric_names_suggest_the_aliases_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gpu.csv"
    path.write_text("timestamp,server_id,metric,value\n2026-11-30T10:00:00Z,gpu-1,GPUBusy,40\n")
    lake_dir = str(tmp_path / "lake")
    assert main(["ingest", str(path), "--lake", lake_dir]) == 2
    err = capsys.readouterr().err
    assert "1 of 1 rows unknown_metric (e.g. 'GPUBusy')" in err
    assert "map 'GPUBusy' with the ingest.metric_aliases setting" in err
    config = tmp_path / "config.yaml"
    config.write_text("ingest:\n  metric_aliases: {GPUBusy: cpu}\n")
    assert main(["ingest", str(path), "--lake", lake_dir, "--config", str(config)]) == 0


def test_prometheus_series_without_a_name_suggest_the_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _copy(tmp_path, "prometheus_query_range_cpu.json")
    assert main(["ingest", str(path), "--lake", str(tmp_path / "lake")]) == 2
    assert "the series have no metric name: --metric cpu|mem|disk|net" in capsys.readouterr().err


def test_fractions_are_refused_unless_fraction_or_percent_says_what_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _copy(tmp_path, "datadog_timeseries.csv")
    lake_dir = tmp_path / "lake"
    assert main(["ingest", str(path), "--lake", str(lake_dir)]) == 2
    err = capsys.readouterr().err
    assert "every value of disk (max 0.732) lies between 0 and 1" in err and "fix: --fraction" in err
    assert main(["ingest", str(path), "--lake", str(lake_dir), "--fraction"]) == 0
    capsys.readouterr()
    run_etl(open_lake(lake_dir), _settings(lake_dir), now=NOW)
    daily = open_lake(lake_dir).read_table(METRICS_DAILY).set_index(["server_id", "dt"])
    assert daily["p95"].between(40, 80).all()
    assert main(["ingest", str(path), "--lake", str(tmp_path / "other"), "--percent"]) == 0
    with pytest.raises(SystemExit) as info:
        main(["ingest", str(path), "--lake", str(tmp_path / "x"), "--percent", "--fraction"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_unknown_shape_error_lists_the_shapes_and_aliases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("when,who,what\n1,2,3\n")
    assert main(["ingest", str(odd), "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    for shape in ("Prometheus /api/v1/query_range", "get-metric-statistics", "Grafana or Datadog CSV", "console"):
        assert shape in err
    assert "column aliases: time -> timestamp" in err and "host -> server_id" in err
    weird = tmp_path / "weird.json"
    weird.write_text(json.dumps({"series": []}))
    assert main(["ingest", str(weird), "--lake", str(tmp_path / "lake")]) == 2
    assert "JSON of an unknown shape; known JSON: CloudWatch GetMetricData" in capsys.readouterr().err


def test_the_normalised_object_keeps_where_it_came_from(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    path = _copy(tmp_path, "dd_mm_yyyy.csv")
    [uri] = ingest_batch(lake, [path], now=NOW, options=ReadOptions(date_format="%d.%m.%Y %H:%M")).uploaded
    [key] = [o.key for o in lake.store.list("raw/uploads/")]
    text = lake.store.get_bytes(key).decode()
    assert text.splitlines()[:2] == ["timestamp,server_id,metric,value", "2026-11-29T00:00:00+00:00,app-03,cpu,27.0"]
    assert key.endswith("_dd_mm_yyyy_normalised.csv") and uri.endswith(key)
