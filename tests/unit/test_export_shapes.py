"""The pieces of the export readers: series labels, delimiters and decimal commas, encodings, options."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from capacity_forecaster.errors import InputError
from capacity_forecaster.formats import labels, text
from capacity_forecaster.formats.options import ReadOptions, apply_options
from capacity_forecaster.raw_formats import metric_aliases, read_monitoring_export

ALIASES = metric_aliases()


@pytest.mark.parametrize(
    ("label", "single", "expected"),
    [
        ('{instance="web-01:9100", job="node"}', "server", ("web-01", "")),
        ('node_load1{instance="10.0.0.5:9100"}', "server", ("10.0.0.5", "node_load1")),
        ('{instance="[::1]:9100", metric="cpu"}', "server", ("::1", "cpu")),
        ('{__name__="instance:node_memory_utilisation:ratio", instance="db:9100"}', "server", ("db", "mem")),
        ("avg:system.disk.in_use{host:batch-01}", "server", ("batch-01", "system.disk.in_use")),
        ("i-0a1b2c3d4e5f60001 CPUUtilization", "metric", ("i-0a1b2c3d4e5f60001", "CPUUtilization")),
        ("CPUUtilization i-0a1b2c3d4e5f60001 (Average)", "metric", ("i-0a1b2c3d4e5f60001", "CPUUtilization")),
        ("web-01 cpu", "metric", ("web-01", "cpu")),
        ("cpu web-01:9100", "metric", ("web-01", "cpu")),
        ("CPUUtilization", "metric", ("", "CPUUtilization")),
        ("GPUBusy", "metric", ("", "GPUBusy")),
        ("web-07:9100", "server", ("web-07", "")),
    ],
)
def test_series_labels(label: str, single: str, expected: tuple[str, str]) -> None:
    server, metric, _ = labels.parse_label(label, ALIASES, single=single)
    assert (server, metric) == expected


def test_label_format_patterns() -> None:
    pattern = labels.compile_label_format("{_}/{server}/{metric}")
    assert labels.parse_label("prod/app-1/cpu", ALIASES, pattern=pattern)[:2] == ("app-1", "cpu")
    assert labels.parse_label("no slashes", ALIASES, pattern=pattern)[:2] == ("", "")
    with pytest.raises(InputError, match="neither"):
        labels.compile_label_format("plain")


def test_node_exporter_expressions_name_their_metric() -> None:
    cases = {
        '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))': "cpu",
        "1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes": "mem",
        '1 - node_filesystem_avail_bytes{mountpoint="/"} / node_filesystem_size_bytes': "disk",
        "rate(node_network_receive_bytes_total[5m])": "net",
    }
    assert {e: labels.metric_from_name(e, ALIASES) for e in cases} == cases
    assert labels.metric_from_name("node_load1", ALIASES) == "node_load1"


def test_delimiters_and_decimal_commas() -> None:
    assert text.sniff_delimiter("a;b;c\n1;2;3\n")[0] == ";"
    assert text.sniff_delimiter('"a,b";c;d\n')[0] == ";"
    assert text.sniff_delimiter("a\tb\n")[0] == "\t"
    assert text.sniff_delimiter("sep=;\na,b;c\n") == (";", "a,b;c\n")
    frame = text.read_delimited("x.csv", "timestamp;server_id;cpu\n2026-11-20T10:00:00Z;s-1;41,5\n")
    assert frame["cpu"].tolist() == ["41.5"]
    commas = text.read_delimited("x.csv", 'timestamp,server_id,cpu\n2026-11-20T10:00:00Z,s-1,"41,5"\n')
    assert commas["cpu"].tolist() == ["41,5"]  # with commas between fields, a quoted "41,5" stays text


def test_encodings() -> None:
    body = "timestamp,server_id,metric,value\n2026-11-20T10:00:00Z,s-1,cpu,4\n"
    for encoding in ("utf-16", "utf-8-sig"):
        frame = read_monitoring_export("x.csv", body.encode(encoding))
        assert frame["server_id"].tolist() == ["s-1"]
    with pytest.raises(InputError, match="UTF-16 without a byte-order mark"):
        read_monitoring_export("x.csv", body.encode("utf-16-le"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_monitoring_export("x.csv", body.replace("s-1", "hôte").encode("latin-1"))


def test_options_fill_parse_and_scale_only_what_they_name() -> None:
    raw = pd.DataFrame(
        {
            "timestamp": ["29.11.2026 10:00", "2026-11-29T10:00:00Z"],
            "server_id": ["", "s-2"],
            "metric": ["", "mem"],
            "value": ["0.5", "n/a"],
            "attributes": ["", ""],
        }
    )
    options = ReadOptions(date_format="%d.%m.%Y %H:%M", server="s-1", metric="cpu", fraction=True)
    out = apply_options(raw, options, ALIASES)
    assert out.values.tolist() == [
        ["2026-11-29T10:00:00+00:00", "s-1", "cpu", "50", ""],
        ["2026-11-29T10:00:00Z", "s-2", "mem", "n/a", ""],  # left as read: the ETL's rules judge it
    ]
    assert not ReadOptions() and options.describe().startswith("date_format=%d.%m.%Y %H:%M; server=s-1")


def test_a_wide_table_keyed_by_instance_is_not_taken_for_series_columns() -> None:
    frame = read_monitoring_export("x.csv", b"Time,instance,cpu\n2026-11-20T10:00:00Z,web-01:9100,41\n")
    assert frame.attrs["shape"] == "csv-table"
    assert frame[["server_id", "metric", "value"]].values.tolist() == [["web-01:9100", "cpu", "41"]]


def test_a_workbook_that_expands_past_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["timestamp", "server_id", "metric", "value"])
    for i in range(2000):
        book.active.append(["2026-11-20T10:00:00Z", f"s-{i}", "cpu", "x" * 200])
    path = tmp_path / "big.xlsx"
    book.save(path)
    data = path.read_bytes()
    limit = 2 * len(data)  # the file itself is under the limit, its parts expanded are not
    with pytest.raises(InputError, match=r"the workbook once decompressed is over the [\d.]+ MB limit"):
        read_monitoring_export("big.xlsx", data, max_bytes=limit)
    assert len(read_monitoring_export("big.xlsx", data, max_bytes=100 * limit)) == 2000
