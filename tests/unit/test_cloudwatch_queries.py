"""The pure parts of the CloudWatch puller: tag syntax, window and period, query batches, the JSON written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from capacity_forecaster.cloudwatch_pull import (
    MAX_QUERIES_PER_CALL,
    MetricSeries,
    TagFilter,
    agent_series,
    build_queries,
    choose_period,
    count_points,
    file_name,
    pull_window,
    responses_json,
)
from capacity_forecaster.errors import InputError
from capacity_forecaster.raw_formats import read_monitoring_export


def disk(instance: str, path: str) -> MetricSeries:
    dims = (("InstanceId", instance), ("device", "nvme0n1p1"), ("fstype", "xfs"), ("path", path))
    return MetricSeries(instance, "CWAgent", "disk_used_percent", dims)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("Team=web", "Team", "web"),
        (" Env = prod ", "Env", "prod"),
        ("k=a=b", "k", "a=b"),
        ("Name=web-*", "Name", "web-*"),
    ],
)
def test_tag_filter_parses_key_value(text: str, key: str, value: str) -> None:
    tag = TagFilter.parse(text)
    assert (tag.key, tag.value) == (key, value)
    assert tag.ec2_filter() == {"Name": f"tag:{key}", "Values": [value]}


@pytest.mark.parametrize("text", ["Team", "=web", "Team=", "", "  =  ", "k" * 129 + "=v", "Team=" + "v" * 257])
def test_tag_filter_refuses_bad_syntax_in_one_line(text: str) -> None:
    with pytest.raises(InputError, match="is not Key=Value") as info:
        TagFilter.parse(text)
    assert "\n" not in str(info.value)


def test_period_follows_cloudwatch_retention() -> None:
    # A window starts up to days + 1 days ago: 5-minute points are kept 63 days, hourly ones 455.
    assert [choose_period(d) for d in (1, 14, 62, 63, 454)] == [300, 300, 300, 3600, 3600]
    with pytest.raises(InputError, match="ask for at most 454"):
        choose_period(455)
    with pytest.raises(InputError, match="at least 1"):
        choose_period(0)


def test_window_is_the_last_complete_utc_days() -> None:
    now = datetime(2026, 11, 23, 1, 30, tzinfo=timezone(timedelta(hours=3)))  # 2026-11-22 22:30 UTC
    assert pull_window(2, now) == (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        pull_window(1, datetime(2026, 11, 23))


def test_queries_label_each_instance_and_metric() -> None:
    series = [MetricSeries.cpu("i-2"), MetricSeries.cpu("i-1"), disk("i-1", "/")]
    [batch] = build_queries(series, period=300, days=7)
    assert [q["Label"] for q in batch] == ["i-1 CPUUtilization", "i-1 disk_used_percent", "i-2 CPUUtilization"]
    assert [q["Id"] for q in batch] == ["q0", "q1", "q2"]
    cpu = batch[0]["MetricStat"]
    assert cpu == {
        "Metric": {
            "Namespace": "AWS/EC2",
            "MetricName": "CPUUtilization",
            "Dimensions": [{"Name": "InstanceId", "Value": "i-1"}],
        },
        "Period": 300,
        "Stat": "Average",
    }
    assert batch[1]["MetricStat"]["Metric"]["Dimensions"][3] == {"Name": "path", "Value": "/"}
    assert all(q["ReturnData"] for q in batch)


def test_several_filesystems_return_the_fullest_through_one_expression() -> None:
    series = [disk("i-1", "/data"), disk("i-1", "/"), MetricSeries.cpu("i-1")]
    [batch] = build_queries(series, period=300, days=1)
    by_id = {q["Id"]: q for q in batch}
    assert by_id["q1"] == {
        "Id": "q1",
        "Expression": "MAX([q1_0,q1_1])",
        "Label": "i-1 disk_used_percent",
        "ReturnData": True,
    }
    inputs = [by_id["q1_0"], by_id["q1_1"]]
    assert [q["ReturnData"] for q in inputs] == [False, False]
    assert all("Label" not in q for q in inputs)
    assert [q["MetricStat"]["Metric"]["Dimensions"][3]["Value"] for q in inputs] == ["/", "/data"]
    assert [q["Label"] for q in batch if q["ReturnData"]] == ["i-1 CPUUtilization", "i-1 disk_used_percent"]


def test_batches_respect_the_query_limit_and_keep_expressions_with_their_inputs() -> None:
    series = [MetricSeries.cpu(f"i-{n:03d}") for n in range(1_203)]
    batches = build_queries(series, period=3600, days=1)
    assert [len(b) for b in batches] == [500, 500, 203]
    assert len({q["Id"] for b in batches for q in b}) == 1_203
    grouped = [disk("i-1", "/"), disk("i-1", "/a"), disk("i-2", "/"), disk("i-2", "/a")]
    small = build_queries(grouped, period=300, days=1, max_queries=4)
    assert [[q["Id"] for q in b] for b in small] == [["q0_0", "q0_1", "q0"], ["q1_0", "q1_1", "q1"]]
    with pytest.raises(ValueError, match="max_queries"):
        build_queries(series, period=300, days=1, max_queries=MAX_QUERIES_PER_CALL + 1)


def test_batches_hold_what_one_response_can_carry() -> None:
    series = [MetricSeries.cpu(f"i-{n}") for n in range(30)]
    # 62 days of 5-minute points are 17,856 a series: 5 series fill the 100,800 points of a response.
    assert [len(b) for b in build_queries(series, period=300, days=62)] == [5] * 6
    assert [len(b) for b in build_queries(series, period=300, days=1)] == [30]


def test_agent_series_keeps_the_wanted_instances() -> None:
    listed = [
        {
            "Namespace": "CWAgent",
            "MetricName": "mem_used_percent",
            "Dimensions": [{"Name": "InstanceId", "Value": "i-1"}, {"Name": "ImageId", "Value": "ami-1"}],
        },
        {
            "Namespace": "CWAgent",
            "MetricName": "mem_used_percent",
            "Dimensions": [{"Name": "InstanceId", "Value": "i-9"}],
        },
        {"Namespace": "CWAgent", "MetricName": "mem_used_percent", "Dimensions": [{"Name": "host", "Value": "i-1"}]},
    ]
    assert agent_series(listed, ["i-1", "i-2"]) == [
        MetricSeries("i-1", "CWAgent", "mem_used_percent", (("InstanceId", "i-1"), ("ImageId", "ami-1")))
    ]


def test_agent_series_leaves_out_read_only_and_memory_filesystems() -> None:
    def entry(path: str, fstype: str) -> dict[str, object]:
        dims = {"InstanceId": "i-1", "path": path, "fstype": fstype}
        return {
            "Namespace": "CWAgent",
            "MetricName": "disk_used_percent",
            "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
        }

    listed = [entry("/", "xfs"), entry("/snap/core/1", "squashfs"), entry("/dev/shm", "tmpfs"), entry("/data", "ext4")]
    assert [dict(s.dimensions)["path"] for s in agent_series(listed, ["i-1"])] == ["/", "/data"]


def test_responses_json_is_what_the_etl_reader_reads() -> None:
    tz = timezone(timedelta(hours=1))
    pages = [
        {
            "MetricDataResults": [
                {
                    "Id": "q0",
                    "Label": "i-1 CPUUtilization",
                    "Timestamps": [datetime(2026, 11, 20, 11, 0, tzinfo=tz), datetime(2026, 11, 20, 11, 5, tzinfo=tz)],
                    "Values": [10.0, 20.5],
                    "StatusCode": "PartialData",
                }
            ],
            "NextToken": "abc",
            "Messages": [],
            "ResponseMetadata": {"RequestId": "r-1"},
        },
        {"MetricDataResults": [{"Id": "q0", "Label": "i-1 CPUUtilization", "Timestamps": [], "Values": []}]},
    ]
    data = responses_json(pages)
    doc = json.loads(data)
    assert [sorted(page) for page in doc] == [["Messages", "MetricDataResults"], ["MetricDataResults"]]
    assert doc[0]["MetricDataResults"][0]["Timestamps"] == ["2026-11-20T10:00:00Z", "2026-11-20T10:05:00Z"]
    assert count_points(pages) == 2
    frame = read_monitoring_export("pull.json", data)
    assert frame[["timestamp", "server_id", "metric", "value"]].values.tolist() == [
        ["2026-11-20T10:00:00Z", "i-1", "CPUUtilization", "10.0"],
        ["2026-11-20T10:05:00Z", "i-1", "CPUUtilization", "20.5"],
    ]


def test_file_names() -> None:
    tags = [TagFilter("Team", "web"), TagFilter("Env", "prod")]
    assert file_name(tags[:1], 1, 1) == "cloudwatch-Team=web.json"
    assert file_name(tags, 2, 3) == "cloudwatch-Team=web-Env=prod-2of3.json"
