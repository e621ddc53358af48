"""pull-cloudwatch against moto as a server on loopback: tagged EC2 instances and their CloudWatch metrics in,
CloudWatch JSON in the raw zone out, and the ETL's daily P95 equal to what was put."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
from botocore.stub import Stubber

from capacity_forecaster.cli import main
from capacity_forecaster.cloudwatch_pull import AwsClients, CloudWatchPullError, TagFilter, pull_cloudwatch
from capacity_forecaster.errors import InputError
from capacity_forecaster.schema import METRICS_DAILY, QUARANTINE
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import run_etl
from capacity_forecaster.storage.lake import open_lake
from capacity_forecaster.storage.s3_client import S3Config

DAY = timedelta(days=1)


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Send EC2 and CloudWatch requests (botocore's service endpoint variables) to the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", moto_server)
    return moto_server


@dataclass
class Fleet:
    tag: str
    instances: dict[str, str]  # role -> instance id
    expected: dict[tuple[str, str, str], float]  # (instance, metric, day) -> P95 of the values put


def _instances(ec2: Any, count: int, tags: dict[str, str] | None) -> list[str]:
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
    response = ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count, TagSpecifications=spec)
    return [i["InstanceId"] for i in response["Instances"]]


def _put(cw: Any, namespace: str, name: str, dims: dict[str, str], day: datetime, values: list[float]) -> None:
    data = [
        {
            "MetricName": name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
            "Timestamp": day + timedelta(minutes=5 * i),
            "Value": value,
        }
        for i, value in enumerate(values)
    ]
    cw.put_metric_data(Namespace=namespace, MetricData=data)


@pytest.fixture
def fleet(aws_env: str) -> Fleet:
    """Tagged instances A (cpu, agent mem and disk, and a squashfs disk at 100%), B (cpu only) and a stopped D
    (cpu); an untagged C and a terminated tagged E with cpu data. Two days of 5-minute points, 2 and 3 days ago."""
    ec2, cw = boto3.client("ec2"), boto3.client("cloudwatch")
    value = f"capacity-{uuid.uuid4().hex[:8]}"
    a, b, d, e = _instances(ec2, 4, {"Team": value, "Env": "prod"})
    [c] = _instances(ec2, 1, {"Team": "other"})
    ec2.stop_instances(InstanceIds=[d])
    ec2.terminate_instances(InstanceIds=[e])
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rng = np.random.default_rng(7)
    expected: dict[tuple[str, str, str], float] = {}
    for day in (today - 3 * DAY, today - 2 * DAY):
        for instance, namespace, name, metric, dims in [
            (a, "AWS/EC2", "CPUUtilization", "cpu", {"InstanceId": a}),
            (b, "AWS/EC2", "CPUUtilization", "cpu", {"InstanceId": b}),
            (d, "AWS/EC2", "CPUUtilization", "cpu", {"InstanceId": d}),
            (c, "AWS/EC2", "CPUUtilization", "cpu", {"InstanceId": c}),
            (e, "AWS/EC2", "CPUUtilization", "cpu", {"InstanceId": e}),
            (a, "CWAgent", "mem_used_percent", "mem", {"InstanceId": a, "ImageId": "ami-12c6146b"}),
            (a, "CWAgent", "disk_used_percent", "disk", {"InstanceId": a, "path": "/", "fstype": "xfs"}),
            (c, "CWAgent", "mem_used_percent", "mem", {"InstanceId": c}),
            # A snap package's read-only filesystem, always full: left out.
            (a, "CWAgent", "disk_used_percent", "", {"InstanceId": a, "path": "/snap/core/1", "fstype": "squashfs"}),
        ]:
            values = [round(float(v), 2) for v in rng.uniform(5, 95, size=36)] if metric else [100.0] * 36
            _put(cw, namespace, name, dims, day, values)
            if metric:
                expected[(instance, metric, day.date().isoformat())] = float(np.percentile(values, 95))
    tagged = {k: v for k, v in expected.items() if k[0] in (a, b, d)}
    return Fleet(value, {"a": a, "b": b, "c": c, "d": d, "e": e}, tagged)


def _daily(lake: Any) -> dict[tuple[str, str, str], float]:
    daily = lake.read_table(METRICS_DAILY)
    observed = daily[~daily["imputed"]]
    return {(r.server_id, r.metric, r.dt.date().isoformat()): float(r.p95) for r in observed.itertuples(index=False)}


def test_pull_then_etl_on_s3_gives_the_daily_p95_that_was_put(
    fleet: Fleet, s3_bucket: str, s3_endpoint_env: str, s3_boto_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    lake_uri = f"s3://{s3_bucket}/capacity"
    argv = ["pull-cloudwatch", "--tag", f"Team={fleet.tag}", "--tag", "Env=prod", "--days", "4", "--lake", lake_uri]
    assert main([*argv, "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    assert "instances=3, CPUUtilization=3, mem_used_percent=1, disk_used_percent=1, period=300s" in out
    assert "points=360" in out  # 5 series x 2 days x 36 points
    [uri] = [line.split()[-1] for line in out.splitlines() if line.strip().startswith("wrote ")]
    key = uri.removeprefix(f"s3://{s3_bucket}/")
    assert key.startswith("capacity/raw/uploads/tenants/acme/")
    assert key.endswith(f"Z_cloudwatch-Team_{fleet.tag}-Env_prod.json")
    head = s3_boto_client.head_object(Bucket=s3_bucket, Key=key)
    assert head["Metadata"]["source"] == "pull-cloudwatch"
    assert head["ContentType"] == "application/json"
    assert head["ServerSideEncryption"] == "AES256"
    pages = json.loads(s3_boto_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    labels = {r["Label"] for page in pages for r in page["MetricDataResults"]}
    a = fleet.instances["a"]
    assert f"{a} disk_used_percent" in labels and f"{fleet.instances['b']} CPUUtilization" in labels

    assert main(["etl", "--lake", lake_uri]) == 0
    capsys.readouterr()
    settings = load_settings(environ={}, overrides={"lake": lake_uri})
    lake = open_lake(lake_uri, settings.s3_config())
    daily = _daily(lake)
    assert daily.keys() == fleet.expected.keys()  # untagged C and terminated E are absent
    for key_, p95 in fleet.expected.items():
        assert daily[key_] == pytest.approx(p95, abs=1e-9), key_

    # Pulling the same days again writes a new object; the ETL quarantines its rows as duplicates.
    again = pull_cloudwatch(
        lake,
        AwsClients.create(settings.s3_config()),
        tags=[TagFilter("Team", fleet.tag)],
        days=4,
        tenant="acme",
        now=datetime.now(UTC) + timedelta(seconds=2),
    )
    assert len(again.written) == 1 and again.written != [uri]
    result = run_etl(lake, settings)
    assert result.counts["rows_in"] == 360 and result.counts["rows_written"] == 0
    assert result.counts["quarantine_reasons"] == {"duplicate": 360}
    assert _daily(lake) == daily
    assert set(lake.read_table(QUARANTINE)["reason"]) == {"duplicate"}


def test_a_pull_needing_several_calls_writes_one_object_per_call(fleet: Fleet, tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    now = datetime.now(UTC)
    result = pull_cloudwatch(
        lake,
        AwsClients.create(S3Config.from_env()),
        tags=[TagFilter("Team", fleet.tag)],
        days=4,
        now=now,
        max_queries=2,
    )
    assert result.instances == sorted(fleet.instances[r] for r in "abd")
    assert result.calls == 3 and result.points == 360
    names = sorted(uri.rsplit("_", 1)[-1] for uri in result.written)
    assert names == [f"{fleet.tag}-{i}of3.json" for i in (1, 2, 3)]
    assert all(f"/raw/uploads/tenants/default/{now:%Y/%m/%d}/" in uri for uri in result.written)
    counts = run_etl(lake, load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")})).counts
    assert counts["files_read"] == 3 and counts["rows_written"] == 360 and counts["rows_quarantined"] == 0
    assert _daily(lake) == pytest.approx(fleet.expected)


def test_pull_user_errors_are_one_line(aws_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake = str(tmp_path / "lake")
    cases = [
        (["--tag", f"Team=nobody-{uuid.uuid4().hex}", "--days", "3"], "no running or stopped EC2 instance"),
        (["--tag", "Team", "--days", "3"], "is not Key=Value"),
        (["--tag", "Team=web", "--days", "455"], "ask for at most 454"),
        (["--tag", "Team=web", "--days", "3", "--tenant", "../other"], "invalid tenant id"),
        (["--tag", "Team=web", "--days", "3", "--region", "mars-1"], "--region 'mars-1' is not an AWS region"),
    ]
    for args, message in cases:
        assert main(["pull-cloudwatch", *args, "--lake", lake]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "lake").exists()


def test_no_credentials_is_one_line(
    aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main(["pull-cloudwatch", "--tag", "Team=web", "--days", "1", "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: ec2:DescribeInstances: no AWS credentials found; set AWS_PROFILE, run `aws configure` or "
        "`aws sso login`\n"
    )


@pytest.fixture
def stubbed(moto_server: str) -> Iterator[tuple[AwsClients, Stubber, Stubber]]:
    clients = AwsClients.create(S3Config(region="eu-west-1"))
    with Stubber(clients.ec2) as ec2, Stubber(clients.cloudwatch) as cw:
        yield clients, ec2, cw


def test_access_denied_names_the_permissions(stubbed: tuple[AwsClients, Stubber, Stubber], tmp_path: Path) -> None:
    clients, ec2, cw = stubbed
    lake = open_lake(tmp_path / "lake")
    tags = [TagFilter("Team", "web")]
    ec2.add_client_error("describe_instances", "UnauthorizedOperation", "You are not authorized", 403)
    with pytest.raises(CloudWatchPullError) as info:
        pull_cloudwatch(lake, clients, tags=tags, days=1)
    assert str(info.value) == (
        "ec2:DescribeInstances (UnauthorizedOperation): access denied; the IAM policy must allow "
        "ec2:DescribeInstances, cloudwatch:ListMetrics and cloudwatch:GetMetricData"
    )
    reservation = {"ReservationId": "r-1", "Instances": [{"InstanceId": "i-0abc"}]}
    ec2.add_response("describe_instances", {"Reservations": [reservation]})
    cw.add_client_error("list_metrics", "AccessDenied", "User is not authorized", 403)
    with pytest.raises(CloudWatchPullError, match=r"^cloudwatch:ListMetrics \(AccessDenied\): access denied"):
        pull_cloudwatch(lake, clients, tags=tags, days=1)
    ec2.add_response("describe_instances", {"Reservations": [reservation]})
    cw.add_client_error("list_metrics", "AuthFailure", "bad token", 401)
    with pytest.raises(CloudWatchPullError, match="AWS did not accept the credentials"):
        pull_cloudwatch(lake, clients, tags=tags, days=1)
    ec2.assert_no_pending_responses()
    assert list(lake.store.list("")) == []


def test_clients_take_the_retry_settings(aws_env: str, tmp_path: Path) -> None:
    clients = AwsClients.create(S3Config(region="eu-west-1", retry_mode="adaptive", max_attempts=7), "us-west-2")
    for client in (clients.ec2, clients.cloudwatch):
        assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
        assert client.meta.region_name == "us-west-2"
    with pytest.raises(InputError, match="at least one --tag"):
        pull_cloudwatch(open_lake(tmp_path / "lake"), clients, tags=[], days=1)


def test_scheduled_puller_lambda_fills_raw_uploads_that_the_etl_reads(
    fleet: Fleet, s3_bucket: str, moto_server: str, s3_boto_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.lambda_modules import LambdaContext, load_handler

    lake_uri = f"s3://{s3_bucket}"
    for name, value in {
        "CF_LAKE": lake_uri,
        "CF_S3_ENDPOINT_URL": moto_server,
        "CF_CLOUDWATCH_TAGS": f"Team={fleet.tag},Env=prod",
        "CF_CLOUDWATCH_DAYS": "4",
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster-pull_cloudwatch",
        "POWERTOOLS_METRICS_NAMESPACE": "CapacityForecaster",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    puller = load_handler("pull_cloudwatch")
    now = datetime.now(UTC).replace(microsecond=0)
    event = json.loads((Path(__file__).parents[1] / "events" / "scheduled_event.json").read_text())
    event["time"] = now.isoformat().replace("+00:00", "Z")

    result = puller.handler(event, LambdaContext())
    assert result["status"] == "succeeded"
    assert (result["instances"], result["points"], result["period"]) == (3, 360, 300)
    assert result["series_CPUUtilization"] == 3 and result["series_mem_used_percent"] == 1
    [uri] = result["written"]
    key = uri.removeprefix(f"s3://{s3_bucket}/")
    assert key.startswith(f"raw/uploads/tenants/default/{now:%Y/%m/%d}/")
    assert s3_boto_client.head_object(Bucket=s3_bucket, Key=key)["Metadata"]["source"] == "pull-cloudwatch"
    # A retried event (the same time) writes the same object again, not a second one.
    assert puller.handler(event, LambdaContext())["written"] == [uri]
    assert [o.key for o in open_lake(lake_uri, S3Config.from_env()).store.list("raw/")] == [key]

    settings = load_settings(environ={}, overrides={"lake": lake_uri})
    lake = open_lake(lake_uri, settings.s3_config())
    counts = run_etl(lake, settings).counts
    assert (counts["files_read"], counts["rows_in"], counts["rows_written"]) == (1, 360, 360)
    daily = _daily(lake)
    assert daily.keys() == fleet.expected.keys()
    for key_, p95 in fleet.expected.items():
        assert daily[key_] == pytest.approx(p95, abs=1e-9), key_


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"CF_CLOUDWATCH_TAGS": ""}, "CF_CLOUDWATCH_TAGS names no tag"),
        ({"CF_CLOUDWATCH_TAGS": "Team"}, "is not Key=Value"),
        ({"CF_CLOUDWATCH_DAYS": "500"}, "reaches back further than CloudWatch keeps data"),
        ({"CF_CLOUDWATCH_TAGS": "Team=nobody-has-this"}, "no running or stopped EC2 instance carries the tag"),
    ],
)
def test_puller_lambda_rejects_bad_settings_in_one_line(
    aws_env: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], reason: str
) -> None:
    from tests.lambda_modules import LambdaContext, load_handler

    monkeypatch.setenv("CF_LAKE", f"s3://{s3_bucket}")
    monkeypatch.setenv("CF_S3_ENDPOINT_URL", aws_env)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CapacityForecaster")
    monkeypatch.setenv("CF_CLOUDWATCH_TAGS", "Team=web")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    event = json.loads((Path(__file__).parents[1] / "events" / "scheduled_event.json").read_text())
    result = load_handler("pull_cloudwatch").handler(event, LambdaContext())
    assert result["status"] == "rejected" and reason in result["reason"] and "\n" not in result["reason"]


def test_pull_fills_the_inventory_with_instance_types_zones_and_tags(
    aws_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from capacity_forecaster.inventory import tags_of
    from capacity_forecaster.schema import SERVERS

    ec2 = boto3.client("ec2")
    value = f"inv-{uuid.uuid4().hex[:8]}"
    tags = [{"Key": "Team", "Value": value}, {"Key": "Environment", "Value": "prod"}, {"Key": "App", "Value": "shop"}]
    response = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=2,
        MaxCount=2,
        InstanceType="m6i.large",
        Placement={"AvailabilityZone": "us-east-1b"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    first, second = sorted(i["InstanceId"] for i in response["Instances"])
    lake_dir = tmp_path / "lake"
    own = tmp_path / "inventory.csv"
    own.write_text(f"instance,application,cost\n{first},ledger,55\nonprem-1,files,10\n", encoding="utf-8")
    assert main(["inventory", str(own), "--lake", str(lake_dir)]) == 0
    assert main(["pull-cloudwatch", "--tag", f"Team={value}", "--days", "1", "--lake", str(lake_dir)]) == 0
    out = capsys.readouterr().out
    assert "inventory (instance types, zones, tags of 2 instances)" in out
    servers = open_lake(lake_dir).read_table(SERVERS).set_index("server_id")
    assert sorted(servers.index) == sorted([first, second, "onprem-1"])
    for sid in (first, second):
        row = servers.loc[sid]
        assert (row["instance_type"], row["availability_zone"], row["datacenter"]) == (
            "m6i.large",
            "us-east-1b",
            "us-east-1",
        )
        assert tags_of(row["tags"]) == {"App": "shop", "Environment": "prod", "Team": value}
        assert row["environment"] == "prod" and (row["cores"], row["memory_gib"]) == (2, 8.0)
    assert servers.loc[first, "application"] == "ledger" and servers.loc[second, "application"] == "shop"
    assert servers.loc[first, "monthly_cost"] == 55.0 and servers.loc[first, "cost_source"] == "inventory"
    assert servers.loc[second, "monthly_cost"] == pytest.approx(0.096 * 730)
    assert servers.loc[second, "cost_source"] == "price table 2025-01-01"
    assert servers.loc["onprem-1", "application"] == "files"  # servers outside EC2 are kept
    # a second pull changes nothing
    before = open_lake(lake_dir).read_table(SERVERS)
    assert main(["pull-cloudwatch", "--tag", f"Team={value}", "--days", "1", "--lake", str(lake_dir)]) == 0
    pd.testing.assert_frame_equal(open_lake(lake_dir).read_table(SERVERS), before)
