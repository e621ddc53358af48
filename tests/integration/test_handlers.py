"""The data Lambdas invoked with real AWS event payloads against the moto S3 server on loopback."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from capacity_forecaster.forecasting.job import ContractPaths, run_training_job
from capacity_forecaster.outputs import new_critical
from capacity_forecaster.schema import (
    CONSOLIDATION,
    ETL_RUNS,
    FORECASTS,
    FORECASTS_HOURLY,
    METRICS_DAILY,
    METRICS_HOURLY,
    QUARANTINE,
    RISK_REGISTER,
)
from capacity_forecaster.storage.lake import Lake, open_lake
from tests.lambda_modules import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
RUN_DATE = date(2026, 11, 23)


def load_event(name: str, **replace: str) -> dict[str, Any]:
    text = (EVENTS / name).read_text()
    for placeholder, value in replace.items():
        text = text.replace(placeholder, value)
    event: dict[str, Any] = json.loads(text)
    return event


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, s3_bucket: str, moto_server: str) -> Iterator[str]:
    lake_uri = f"s3://{s3_bucket}"
    for key, value in {
        "CF_LAKE": lake_uri,
        "CF_S3_ENDPOINT_URL": moto_server,
        "CF_FLEET_SERVERS": "6",
        "CF_FLEET_DAYS": "90",
        "CF_HORIZON_DAYS": "30",
        "CF_TRAINING_N_JOBS": "1",
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster",
        "POWERTOOLS_METRICS_NAMESPACE": "CapacityForecaster",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    yield lake_uri


@pytest.fixture
def lake(lambda_env: str) -> Lake:
    from capacity_forecaster.settings import load_settings

    return open_lake(lambda_env, load_settings().s3_config())


Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]


@pytest.fixture
def invoke(lambda_env: str) -> Invoke:
    modules: dict[str, ModuleType] = {}

    def call(name: str, event: dict[str, Any]) -> dict[str, Any]:
        module = modules.setdefault(name, load_handler(name))
        result: dict[str, Any] = module.handler(event, LambdaContext())
        return result

    return call


def stage_training_run(
    lake: Lake, tmp_path: Path, run_id: str, run_date: date = RUN_DATE, **hyperparameters: str
) -> None:
    """What a completed SageMaker job leaves behind: its host's staged parts and manifest (not yet published)."""
    paths = ContractPaths(tmp_path / f"opt-ml-{run_id}")
    paths.hyperparameters.parent.mkdir(parents=True)
    params = {"run_date": run_date.isoformat(), "run_id": run_id, "horizon_days": "30", "training.n_jobs": "1"}
    paths.hyperparameters.write_text(json.dumps({**params, "lake_uri": lake.uri, **hyperparameters}))
    paths.resource_config.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    channel = METRICS_HOURLY if hyperparameters.get("training.grain") == "hourly" else METRICS_DAILY
    for info in lake.store.list(channel.prefix + "/"):
        lake.store.download_file(info.key, paths.channel / info.key[len(channel.prefix) + 1 :])
    paths.model_dir.mkdir()
    assert run_training_job(paths.root, lake=lake) == 0


def test_scheduled_generate_then_object_created_etl_then_training_completed_risk(
    invoke: Invoke, lake: Lake, s3_bucket: str, tmp_path: Path, s3_boto_client: Any
) -> None:
    generated = invoke("generate", load_event("scheduled_event.json"))
    assert generated["status"] == "succeeded" and generated["servers"] == 6
    assert generated["last_day"] == "2026-11-22"
    raw_keys = [o.key for o in lake.store.list("raw/raw_samples/")]
    assert len(raw_keys) == generated["days"]

    created = load_event("s3_object_created.json", BUCKET=s3_bucket, KEY=raw_keys[-1])
    etl = invoke("etl", created)
    assert etl["status"] == "succeeded" and etl["trigger"] == raw_keys[-1]
    assert etl["rows_in"] == etl["rows_written"] + etl["rows_quarantined"] == generated["raw_rows"]
    assert len(lake.list_partitions(METRICS_DAILY)) == generated["days"]
    # The same event delivered again (EventBridge is at-least-once) finds nothing new.
    again = invoke("etl", created)
    assert again["files_read"] == 0 and again["rows_in"] == 0
    assert len(lake.read_table(ETL_RUNS)) == 2

    stage_training_run(lake, tmp_path, "capacity-forecaster-20261123")
    completed = load_event("sagemaker_training_job_state_change.json", RUN_ID="capacity-forecaster-20261123")
    risk = invoke("risk", completed)
    assert risk["status"] == "succeeded" and risk["series"] == 24
    assert lake.list_partitions(FORECASTS) == [{"run_date": "2026-11-23"}]
    assert len(lake.read_table(RISK_REGISTER)) == 24
    assert not [o.key for o in lake.store.list("staging/") if not o.key.endswith("published.json")]
    # ... then the consolidation plan and the report with its exports, each object with its content type
    plan = lake.read_table(CONSOLIDATION)
    assert set(plan["run_date"].astype(str)) == {"2026-11-23"} and len(plan) == 6
    assert risk["servers_freed"] == int((plan["action"] == "consolidate").sum())
    assert risk["monthly_savings"] == round(float(plan["monthly_savings"].sum()), 2)
    assert_report(lake, s3_boto_client, risk["report"], register_rows=24, plan_rows=6)
    # A re-delivered Completed event publishes nothing twice and rebuilds the same register, plan and report.
    assert invoke("risk", completed)["series"] == 24
    assert len(lake.read_table(RISK_REGISTER)) == 24 and len(lake.read_table(CONSOLIDATION)) == 6
    assert len(list(lake.store.list("reports/"))) == 4


def s3_bucket_of(lake: Lake) -> str:
    return lake.uri.removeprefix("s3://").split("/")[0]


REPORT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def assert_report(
    lake: Lake, s3: Any, report_uri: str, *, day: str = "2026-11-23", register_rows: int, plan_rows: int
) -> None:
    """The run's report, CSV exports and workbook under reports/run_date=<day>/, readable, with content types."""
    import io

    import pandas as pd

    bucket = s3_bucket_of(lake)
    prefix = f"reports/run_date={day}/"
    assert report_uri == f"s3://{bucket}/{prefix}capacity-report-{day}.html"
    keys = sorted(o.key for o in lake.store.list(prefix))
    names = [f"capacity-report-{day}.html", f"capacity-report-{day}.xlsx", f"consolidation-{day}.csv"]
    assert keys == sorted(prefix + n for n in [*names, f"risk-register-{day}.csv"])
    for key in keys:
        suffix = "." + key.rsplit(".", 1)[1]
        assert s3.head_object(Bucket=bucket, Key=key)["ContentType"] == REPORT_TYPES[suffix]
    html = lake.store.get_bytes(prefix + names[0]).decode()
    assert html.startswith("<!DOCTYPE html>") and f"run {day}" in html
    assert len(pd.read_csv(io.BytesIO(lake.store.get_bytes(f"{prefix}risk-register-{day}.csv")))) == register_rows
    sheets = pd.read_excel(io.BytesIO(lake.store.get_bytes(prefix + names[1])), sheet_name=None, engine="openpyxl")
    assert (len(sheets["risk_register"]), len(sheets["consolidation"])) == (register_rows, plan_rows)


def test_etl_quarantines_a_bad_upload_and_reconciles(invoke: Invoke, lake: Lake, s3_bucket: str) -> None:
    key = "raw/uploads/tenants/acme/2026/11/23/20261123T060000Z_export.csv"
    lake.store.put_bytes(
        key,
        b"timestamp,server_id,metric,value\n"
        b"2026-11-22T10:00:00Z,srv-1,cpu,40\n"
        b"2026-11-22T10:05:00Z,srv-1,cpu,140\n"
        b"2026-11-22T10:10:00Z,,cpu,40\n"
        b"not-a-time,srv-1,cpu,40\n",
    )
    result = invoke("etl", load_event("s3_object_created.json", BUCKET=s3_bucket, KEY=key))
    assert (result["rows_in"], result["rows_written"], result["rows_quarantined"]) == (4, 1, 3)
    quarantine = lake.read_table(QUARANTINE)
    assert sorted(quarantine["reason"]) == [
        "missing_server_id",
        "unparseable_timestamp",
        "value_out_of_range",
    ]
    assert set(quarantine["source"]) == {key}


def test_the_etl_function_starts_no_pass_it_has_no_time_for(
    lambda_env: str, lake: Lake, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog beyond one pass, with less time left than the function's end margin: the first pass runs, the
    other files are left (counted) for the next invocation, which processes them."""
    from capacity_forecaster import stages

    monkeypatch.setattr(stages, "MAX_PASS_ROWS", 2)
    keys = [f"raw/uploads/tenants/acme/2026/11/23/20261123T06000{k}Z_export.csv" for k in range(3)]
    for k, key in enumerate(keys):
        rows = f"2026-11-22T10:0{k}:00Z,srv-{k},cpu,4{k}\n2026-11-22T11:0{k}:00Z,srv-{k},cpu,5{k}\n"
        lake.store.put_bytes(key, ("timestamp,server_id,metric,value\n" + rows).encode())
    module = load_handler("etl")
    event = load_event("scheduled_event.json")
    ending = module.handler(event, LambdaContext(timeout_s=module.END_MARGIN_S))  # the deadline is now
    assert ending["status"] == "succeeded"
    assert (ending["files_read"], ending["files_left"]) == (1, 2)
    rest = module.handler(event, LambdaContext())
    assert (rest["files_read"], rest["passes"], rest.get("files_left")) == (2, 2, None)
    assert ending["rows_in"] + rest["rows_in"] == 6


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("not an event", "expected an EventBridge event object"),
        ({"source": "aws.events"}, "missing detail-type, detail, time"),
        (
            {
                "source": "aws.ec2",
                "detail-type": "EC2 Instance State-change Notification",
                "detail": {},
                "time": "x",
            },
            "expected a Scheduled Event",
        ),
    ],
)
def test_generate_rejects_bad_payloads_in_one_line(invoke: Invoke, event: Any, reason: str) -> None:
    result = invoke("generate", event)
    assert result["status"] == "rejected"
    assert reason in result["reason"] and "\n" not in result["reason"]


def test_etl_rejects_objects_outside_the_raw_zone(invoke: Invoke, s3_bucket: str) -> None:
    outside = invoke("etl", load_event("s3_object_created.json", BUCKET=s3_bucket, KEY="curated/x.parquet"))
    assert outside["status"] == "rejected" and "not under the lake's raw zone" in outside["reason"]
    other = invoke("etl", load_event("s3_object_created.json", BUCKET="someone-else", KEY="raw/a.csv"))
    assert other["status"] == "rejected"
    escape = invoke("etl", load_event("s3_object_created.json", BUCKET=s3_bucket, KEY="raw/../curated/a.csv"))
    assert escape["status"] == "rejected"


def test_risk_skips_failed_jobs_and_rejects_missing_hyperparameters(invoke: Invoke) -> None:
    failed = load_event("sagemaker_training_job_state_change.json", RUN_ID="r1")
    failed["detail"]["TrainingJobStatus"] = "Failed"
    assert invoke("risk", failed) == {"status": "skipped", "training_job_status": "Failed"}
    bare = copy.deepcopy(load_event("sagemaker_training_job_state_change.json", RUN_ID="r1"))
    del bare["detail"]["HyperParameters"]
    result = invoke("risk", bare)
    assert result["status"] == "rejected" and "no run_id/run_date" in result["reason"]


def test_risk_publishes_the_run_summary_with_new_critical_risks_and_the_report(
    invoke: Invoke, lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_server: str
) -> None:
    import uuid

    import boto3

    sns, sqs = boto3.client("sns", endpoint_url=moto_server), boto3.client("sqs", endpoint_url=moto_server)
    topic = sns.create_topic(Name=f"alerts-{uuid.uuid4().hex[:8]}")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"inbox-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
    monkeypatch.setenv("CF_NOTIFY_TOPIC_ARN", topic)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", moto_server)

    assert invoke("generate", load_event("scheduled_event.json"))["status"] == "succeeded"
    assert invoke("etl", load_event("scheduled_event.json"))["trigger"] == "schedule"
    stage_training_run(lake, tmp_path, "run-notify")
    risk = invoke("risk", load_event("sagemaker_training_job_state_change.json", RUN_ID="run-notify"))

    register = lake.read_table(RISK_REGISTER)
    critical = register[register["severity"] == "critical"]
    assert risk["notified"] == risk["severity_critical"] == len(critical) > 0  # no earlier run: all are new
    [message] = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10)["Messages"]
    # Read: deleted, or it shows again once its visibility timeout (30 s) passes, before the next run's message.
    sqs.delete_message(QueueUrl=inbox, ReceiptHandle=message["ReceiptHandle"])
    notification = json.loads(message["Body"])
    assert notification["Subject"] == f"Capacity Forecaster 2026-11-23: {len(critical)} new critical risk(s)"
    body = notification["Message"]
    assert body.startswith(f"Run run-notify (2026-11-23): {len(critical)} critical series, {len(critical)} new")
    listed = [line for line in body.splitlines() if line.startswith("- ")]
    assert len(listed) == min(len(critical), 10)
    listed_series = {tuple(line[2:].split(":")[0].split(" ")) for line in listed}
    assert listed_series <= set(zip(critical["server_id"], critical["metric"], strict=True))
    assert f"Report: {risk['report']}" in body.splitlines()
    assert f"Consolidation: {risk['servers_freed']} server(s) to consolidate" in body

    # The next run finds the same critical series: nothing new, and the run summary is still sent.
    stage_training_run(lake, tmp_path, "run-next", run_date=date(2026, 11, 24))
    event = load_event("sagemaker_training_job_state_change.json", RUN_ID="run-next")
    event["detail"]["HyperParameters"]["run_date"] = "2026-11-24"
    again = invoke("risk", event)
    assert again["status"] == "succeeded" and again["notified"] == again["new_critical"] == 0
    [message] = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    notification = json.loads(message["Body"])
    assert notification["Subject"] == "Capacity Forecaster 2026-11-24: 0 new critical risk(s)"
    assert "Report: s3://" in notification["Message"] and "reports/run_date=2026-11-24/" in again["report"]
    assert not [line for line in notification["Message"].splitlines() if line.startswith("- ")]


def test_hourly_run_builds_the_register_plan_and_report_from_forecasts_hourly(
    invoke: Invoke, lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_boto_client: Any
) -> None:
    """An upload of 5-minute samples, the ETL at the hourly grain, a training run at the hourly grain: the risk
    Lambda reads the grain the run trained at from what it publishes (its own training.grain is left daily)."""
    from tests.e2e.test_forecast_grains import five_minute_trace

    five_minute_trace(tmp_path / "trace.csv")
    key = "raw/uploads/tenants/default/2026/11/22/20261122T060000Z_trace.csv"
    lake.store.put_bytes(key, (tmp_path / "trace.csv").read_bytes())
    config = tmp_path / "hourly.yaml"
    config.write_text("etl: {grain: hourly}\n")
    monkeypatch.setenv("CF_CONFIG", str(config))
    assert invoke("etl", load_event("scheduled_event.json"))["rows_written"] > 60_000
    assert lake.list_partitions(METRICS_HOURLY)

    monkeypatch.delenv("CF_CONFIG")
    params = {
        "training.grain": "hourly",
        "training.models": "seasonal_naive,linear_trend",
        "training.horizon_hours": "168",
    }
    stage_training_run(lake, tmp_path, "run-hourly", run_date=date(2026, 11, 22), **params)
    event = load_event("sagemaker_training_job_state_change.json", RUN_ID="run-hourly")
    event["detail"]["HyperParameters"] |= {"run_date": "2026-11-22", **params}
    risk = invoke("risk", event)
    assert risk["status"] == "succeeded" and risk["series"] == 12 and risk["run_date"] == "2026-11-22"
    assert lake.list_partitions(FORECASTS_HOURLY) == [{"run_date": "2026-11-22"}]
    assert not lake.list_partitions(FORECASTS)
    register = lake.read_table(RISK_REGISTER)
    assert len(register) == 12 and set(register["run_date"].astype(str)) == {"2026-11-22"}
    assert lake.list_partitions(CONSOLIDATION) == [{"run_date": "2026-11-22"}]
    # no inventory: the plan keeps each of the 3 servers, unsized
    assert_report(lake, s3_boto_client, risk["report"], day="2026-11-22", register_rows=12, plan_rows=3)
    plan = lake.read_table(CONSOLIDATION)
    assert set(plan["action"]) == {"keep"} and plan["reason"].str.startswith("not sized").all()


def test_only_series_newly_critical_since_the_previous_run_are_new() -> None:
    import pandas as pd

    now = pd.DataFrame(
        {
            "server_id": ["a", "a", "b", "c"],
            "metric": ["cpu", "mem", "cpu", "disk"],
            "severity": ["critical", "critical", "high", "critical"],
            "days_to_breach_p50": [12, 0, 40, 3],
        }
    )
    before = pd.DataFrame({"server_id": ["a", "c"], "metric": ["cpu", "disk"], "severity": ["critical", "high"]})
    new = new_critical(now, before)
    assert list(zip(new["server_id"], new["metric"], strict=True)) == [("a", "mem"), ("c", "disk")]
    assert len(new_critical(now, None)) == 3
