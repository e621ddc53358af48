"""The training launcher invoked with a real Scheduled Event against the moto server on loopback.

moto records the ``create_training_job`` request (botocore has checked its shape on the way out), and
``describe_training_job`` returns what it recorded: the test compares that with the request the contract in
``capacity_forecaster.forecasting.job`` expects.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from capacity_forecaster.forecasting import job
from capacity_forecaster.storage.s3_client import S3Config
from tests.lambda_modules import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[2]
EVENT = json.loads((ROOT / "tests" / "events" / "scheduled_event.json").read_text())
JOB_NAME = "capacity-forecaster-20261123-53dc4d37"  # the event's day and the start of its id
IMAGE = "capacity-forecaster-training:test"
ROLE = "arn:aws:iam::123456789012:role/capacity-forecaster-training"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


CONTEXT = LambdaContext("capacity-forecaster-launch-training", 256, "0f2b3c4d-5e6f-4a1b-8c9d-0e1f2a3b4c5d")


def load_launcher() -> ModuleType:
    return load_handler("launch_training")


@pytest.fixture
def launcher_env(monkeypatch: pytest.MonkeyPatch, moto_server: str) -> Iterator[dict[str, str]]:
    env = {
        "AWS_ENDPOINT_URL_SAGEMAKER": moto_server,
        "CF_LAKE": "s3://capacity-forecaster-lake-123456789012-us-east-1",
        "CF_S3_KMS_KEY_ID": KEY,
        "CF_TRAINING_IMAGE_URI": IMAGE,
        "CF_TRAINING_ROLE_ARN": ROLE,
        "CF_TRAINING_INSTANCE_TYPE": "ml.m5.xlarge",
        "CF_TRAINING_INSTANCE_COUNT": "2",
        "CF_TRAINING_VOLUME_GB": "30",
        "CF_TRAINING_SPOT": "true",
        "CF_TRAINING_MAX_RUNTIME_SECONDS": "3600",
        "CF_TRAINING_MAX_WAIT_SECONDS": "7200",
        "CF_TRAINING_HYPERPARAMETERS": json.dumps({"horizon_days": "120", "training.models": "seasonal_naive"}),
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster-launch-training",
        "POWERTOOLS_METRICS_NAMESPACE": "CapacityForecaster",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


@pytest.fixture
def sagemaker(launcher_env: dict[str, str]) -> Any:
    import boto3

    return boto3.client("sagemaker")


def test_scheduled_event_launches_the_contracted_training_job(sagemaker: Any) -> None:
    launcher = load_launcher()
    # the recorded event, with an id of this test's own: other tests launch jobs on the same moto server
    event = {**EVENT, "id": f"{uuid.uuid4().hex[:8]}-{EVENT['id']}"}
    name = launcher.job_name(date(2026, 11, 23), event["id"])
    assert name.startswith("capacity-forecaster-20261123-") and len(name) == len(JOB_NAME)
    result = launcher.handler(event, CONTEXT)
    assert result["status"] == "launched" and result["training_job_name"] == name

    recorded = sagemaker.describe_training_job(TrainingJobName=name)
    lake = "s3://capacity-forecaster-lake-123456789012-us-east-1"
    assert recorded["TrainingJobArn"] == result["training_job_arn"]
    assert recorded["HyperParameters"] == {
        "run_date": "2026-11-23",
        "run_id": name,
        "lake_uri": lake,
        "horizon_days": "120",
        "training.models": "seasonal_naive",
    }
    # moto adds a canned MetricDefinitions list to the algorithm specification it returns; the request's own
    # fields are compared.
    algorithm = recorded["AlgorithmSpecification"]
    assert {k: algorithm[k] for k in ("TrainingImage", "TrainingInputMode")} == {
        "TrainingImage": IMAGE,
        "TrainingInputMode": "File",
    }
    assert set(algorithm) <= {"TrainingImage", "TrainingInputMode", "MetricDefinitions"}
    assert recorded["RoleArn"] == ROLE
    assert recorded["InputDataConfig"] == [
        {
            "ChannelName": "curated",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"{lake}/curated/metrics_daily/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "ContentType": "application/vnd.apache.parquet",
            "InputMode": "File",
        }
    ]
    assert recorded["OutputDataConfig"] == {"S3OutputPath": f"{lake}/training/output/", "KmsKeyId": KEY}
    assert recorded["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30}
    assert recorded["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert recorded["EnableManagedSpotTraining"] is True
    assert recorded["CheckpointConfig"] == {"S3Uri": f"{lake}/training/checkpoints/{name}/"}


def test_the_request_honours_the_training_container_contract(launcher_env: dict[str, str]) -> None:
    launcher = load_launcher()
    config = launcher.LaunchConfig.from_env(os.environ)
    request = launcher.training_request(config, name=JOB_NAME, run_date=date(2026, 11, 23))
    params = job.parse_hyperparameters(request["HyperParameters"])  # the container's own validation
    assert (params.run_id, params.run_date, params.horizon_days) == (JOB_NAME, date(2026, 11, 23), 120)
    assert params.models == ("seasonal_naive",)
    assert all(isinstance(v, str) for v in request["HyperParameters"].values())
    [channel] = request["InputDataConfig"]
    assert channel["ChannelName"] == job.CHANNEL
    assert channel["DataSource"]["S3DataSource"]["S3Uri"].endswith(f"/{job.CHANNEL_TABLES['daily'].prefix}/")


def test_the_hourly_grain_points_the_channel_at_its_table(
    launcher_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CF_TRAINING_CHANNEL_PREFIX", f"{job.CHANNEL_TABLES['hourly'].prefix}/")
    launcher = load_launcher()
    request = launcher.training_request(
        launcher.LaunchConfig.from_env(os.environ), name=JOB_NAME, run_date=date(2026, 11, 23)
    )
    [channel] = request["InputDataConfig"]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"].endswith("/curated/metrics_hourly/")
    assert request["TrainingJobName"].startswith(launcher.JOB_PREFIX)
    # the keys the launcher adds are the job's own required ones, none of them a setting
    assert set(launcher.RUN_KEYS) == {k for k, v in job.JOB_HYPERPARAMETERS.items() if v.startswith("required")}
    # the container's S3 client writes its staged outputs with the lake's key (moto does not keep Environment)
    s3 = S3Config.from_env(request["Environment"])
    assert (s3.sse, s3.kms_key_id) == ("aws:kms", KEY)


def test_a_redelivered_event_launches_nothing_more(sagemaker: Any) -> None:
    # moto keeps jobs for the session: this test's event has its own id, so its own job name.
    event = {**EVENT, "id": "7f0e2c9a-0b1d-4c8e-9f2a-3d4b5c6d7e8f", "time": "2026-11-30T05:00:00Z"}
    name = "capacity-forecaster-20261130-7f0e2c9a"
    launcher = load_launcher()
    assert launcher.handler(event, CONTEXT)["status"] == "launched"
    assert launcher.handler(event, CONTEXT) == {"status": "already-launched", "training_job_name": name}
    names = [j["TrainingJobName"] for j in sagemaker.list_training_jobs()["TrainingJobSummaries"]]
    assert names.count(name) == 1


def test_on_demand_jobs_have_no_spot_settings(launcher_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_TRAINING_SPOT", "false")
    launcher = load_launcher()
    request = launcher.training_request(
        launcher.LaunchConfig.from_env(os.environ), name=JOB_NAME, run_date=date(2026, 11, 23)
    )
    assert request["EnableManagedSpotTraining"] is False
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert "CheckpointConfig" not in request


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("CF_TRAINING_ROLE_ARN", "", "needs CF_TRAINING_ROLE_ARN"),
        ("CF_TRAINING_INSTANCE_COUNT", "0", "CF_TRAINING_INSTANCE_COUNT='0' must be an integer of at least 1"),
        ("CF_TRAINING_HYPERPARAMETERS", "[1]", "CF_TRAINING_HYPERPARAMETERS must be a JSON object of strings"),
        ("CF_TRAINING_HYPERPARAMETERS", '{"horizon_days": 90}', "must be a JSON object of strings"),
        ("CF_TRAINING_HYPERPARAMETERS", '{"run_id": "x"}', "must not set run_id: the launcher sets them"),
        ("CF_TRAINING_CHANNEL_PREFIX", "curated/metrics_daily", "must be a lake prefix ending in /"),
        ("CF_TRAINING_SPOT", "yes", "must be true or false"),
        ("CF_TRAINING_MAX_WAIT_SECONDS", "600", "must be at least CF_TRAINING_MAX_RUNTIME_SECONDS"),
        ("CF_LAKE", "s3://bucket/capacity", "must be the lake bucket's root"),
        ("CF_LAKE", "/tmp/lake", "CF_LAKE"),
        ("CF_TRAINING_INSTANCE_TYPE", "m5.xlarge", "is not an ml.* instance type"),
    ],
)
def test_bad_settings_are_rejected_in_one_line(
    launcher_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = load_launcher().handler(EVENT, CONTEXT)
    assert result["status"] == "rejected"
    assert reason in result["reason"] and "\n" not in result["reason"]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("not an event", "expected an EventBridge event object"),
        ({**EVENT, "detail-type": "Object Created", "source": "aws.s3"}, "expected a Scheduled Event"),
        ({**EVENT, "time": "yesterday"}, "is not an ISO 8601 date-time"),
        ({**EVENT, "id": "--"}, "has no letters or digits"),
    ],
)
def test_foreign_events_are_rejected(launcher_env: dict[str, str], event: Any, reason: str) -> None:
    result = load_launcher().handler(event, CONTEXT)
    assert result["status"] == "rejected" and reason in result["reason"]


def test_launcher_logs_and_emits_metrics_with_powertools(
    sagemaker: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Powertools' structured log lines (with the Lambda context) and its CloudWatch embedded metrics."""
    launcher = load_launcher()
    event = {**EVENT, "id": "9c0ffee1-0000-4000-8000-000000000001"}  # a job of its own on the shared server
    name = launcher.job_name(date(2026, 11, 23), event["id"])
    with caplog.at_level("INFO"):
        assert launcher.handler(event, CONTEXT)["status"] == "launched"
        assert launcher.handler(event, CONTEXT)["status"] == "already-launched"
    formatter = launcher.logger.registered_formatter
    logs = [json.loads(formatter.format(r)) for r in caplog.records if r.name == launcher.logger.name]
    launched = next(line for line in logs if line["message"] == "training job launched")
    assert launched["service"] == "capacity-forecaster-launch-training"
    assert launched["function_request_id"] == CONTEXT.aws_request_id
    assert (launched["training_job_name"], launched["hosts"]) == (name, 2)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    names = [m["Name"] for line in emitted for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    assert names == ["TrainingJobsLaunched", "TrainingJobsAlreadyLaunched"]
    assert {d["Namespace"] for line in emitted for d in line["_aws"]["CloudWatchMetrics"]} == {"CapacityForecaster"}


def test_the_job_stages_its_outputs_with_the_lake_key(
    launcher_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, s3_bucket: str, s3_boto_client: Any, tmp_path: Path
) -> None:
    """The training container, given the environment the launcher asks SageMaker for, writes every staged object
    SSE-KMS with the lake's key (moto server: the S3 requests carry the encryption headers, moto records them)."""
    from capacity_forecaster.settings import load_settings
    from capacity_forecaster.stages import run_etl, run_generate
    from capacity_forecaster.storage.lake import open_lake

    lake_uri = f"s3://{s3_bucket}"
    monkeypatch.setenv("CF_LAKE", lake_uri)
    monkeypatch.setenv("CF_S3_ENDPOINT_URL", s3_boto_client.meta.endpoint_url)
    settings = load_settings(environ={}, overrides={"lake": lake_uri, "fleet.servers": 3, "fleet.days": 60})
    lake = open_lake(lake_uri, settings.s3_config())  # the lake as the pipeline writes it (AES256 here)
    run_generate(lake, settings, run_date=date(2026, 11, 23))
    run_etl(lake, settings)

    launcher = load_launcher()
    request = launcher.training_request(
        launcher.LaunchConfig.from_env(os.environ), name=JOB_NAME, run_date=date(2026, 11, 23)
    )
    assert request["Environment"] == {"CF_S3_SSE": "aws:kms", "CF_S3_KMS_KEY_ID": KEY}
    for name, value in request["Environment"].items():  # what SageMaker sets in the container
        monkeypatch.setenv(name, value)
    paths = job.ContractPaths(tmp_path / "opt-ml")
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text(
        json.dumps({**request["HyperParameters"], "training.n_jobs": "1", "horizon_days": "14"})
    )
    paths.resource_config.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    for info in lake.store.list(job.METRICS_DAILY.prefix + "/"):
        lake.store.download_file(info.key, paths.channel / info.key[len(job.METRICS_DAILY.prefix) + 1 :])
    paths.model_dir.mkdir()
    assert job.run_training_job(paths.root) == 0  # no lake given: the job opens lake_uri with S3Config.from_env()

    staged = [
        o["Key"]
        for o in s3_boto_client.list_objects_v2(Bucket=s3_bucket, Prefix=job.staging_prefix(JOB_NAME))["Contents"]
    ]
    assert len(staged) == 3  # the host's forecasts, model metrics and manifest
    for key in staged:
        head = s3_boto_client.head_object(Bucket=s3_bucket, Key=key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KEY), key
