"""The processing launcher (``scale.engine: sagemaker``) invoked with recorded events against the moto server.

botocore validates each ``create_processing_job`` request against SageMaker's API model on the way out; moto
records it and ``describe_processing_job`` returns what it recorded. A malformed event is rejected before any
AWS call: those tests point the SageMaker endpoint at a closed port, so a call would fail instead.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from capacity_forecaster.access import PROCESSING_SUMMARY_PREFIX
from capacity_forecaster.processing import DEFAULT_ROOT, ProcessingPaths
from tests.lambda_modules import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
SCHEDULED = json.loads((EVENTS / "scheduled_event.json").read_text())
OBJECT_CREATED = json.loads((EVENTS / "s3_object_created.json").read_text())
TRAINING = json.loads((EVENTS / "sagemaker_training_job_state_change.json").read_text())
LAKE = "s3://capacity-forecaster-lake-123456789012-us-east-1"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-assets:data"
ETL_ROLE = "arn:aws:iam::123456789012:role/capacity-forecaster-etl-job"
OUTPUTS_ROLE = "arn:aws:iam::123456789012:role/capacity-forecaster-outputs-job"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CONTEXT = LambdaContext("capacity-forecaster-launch-processing", 256, "0f2b3c4d-5e6f-4a1b-8c9d-0e1f2a3b4c5d")


def _env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_SAGEMAKER": endpoint,
        "CF_LAKE": LAKE,
        "CF_S3_KMS_KEY_ID": KEY,
        "CF_PROCESSING_IMAGE_URI": IMAGE,
        "CF_PROCESSING_ETL_ROLE_ARN": ETL_ROLE,
        "CF_PROCESSING_OUTPUTS_ROLE_ARN": OUTPUTS_ROLE,
        "CF_PROCESSING_INSTANCE_TYPE": "ml.r5.8xlarge",
        "CF_PROCESSING_MAX_RUNTIME_SECONDS": "3600",
        "CF_PROCESSING_ENVIRONMENT": json.dumps({"CF_FLEET_SERVERS": "100000", "CF_SCALE_ENGINE": "sagemaker"}),
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster-launch-processing",
        "POWERTOOLS_METRICS_NAMESPACE": "CapacityForecaster",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


@pytest.fixture
def sagemaker(monkeypatch: pytest.MonkeyPatch, moto_server: str) -> Iterator[Any]:
    import boto3

    for key, value in _env(moto_server).items():
        monkeypatch.setenv(key, value)
    yield boto3.client("sagemaker")


def _launcher() -> ModuleType:
    return load_handler("launch_processing")


def _recorded(sagemaker: Any, result: dict[str, Any]) -> dict[str, Any]:
    assert result["status"] == "launched", result
    job: dict[str, Any] = sagemaker.describe_processing_job(ProcessingJobName=result["processing_job_name"])
    assert job["ProcessingJobArn"] == result["processing_job_arn"]
    return job


def _common(job: dict[str, Any], role: str) -> None:
    """moto records the role, the app, the outputs and the stopping condition; the environment and the cluster
    it drops are checked on the request the launcher builds for the same event (botocore validated it as sent)."""
    launcher = _launcher()
    name = job["ProcessingJobName"]
    arguments = tuple(job["AppSpecification"]["ContainerArguments"])
    request = launcher.job_request(
        launcher.ProcessingConfig.from_env(_env("http://unused")), launcher.Launch(name, arguments)
    )
    for field in ("RoleArn", "AppSpecification", "ProcessingOutputConfig", "StoppingCondition"):
        assert job[field] == request[field], field
    job = {**job, **request}
    assert job["RoleArn"] == role
    assert job["AppSpecification"]["ImageUri"] == IMAGE
    assert job["AppSpecification"]["ContainerEntrypoint"] == ["python3", "-m", "capacity_forecaster.processing"]
    assert job["Environment"] == {
        "CF_FLEET_SERVERS": "100000",
        "CF_SCALE_ENGINE": "sagemaker",
        "CF_LAKE": LAKE,
        "CF_S3_SSE": "aws:kms",
        "CF_S3_KMS_KEY_ID": KEY,
    }
    cluster = job["ProcessingResources"]["ClusterConfig"]
    assert (cluster["InstanceCount"], cluster["InstanceType"], cluster["VolumeKmsKeyId"]) == (1, "ml.r5.8xlarge", KEY)
    [output] = job["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["S3Uri"] == f"{LAKE}/{PROCESSING_SUMMARY_PREFIX}{name}"
    assert output["S3Output"]["LocalPath"] == str(ProcessingPaths(DEFAULT_ROOT).summary)
    assert job["ProcessingOutputConfig"]["KmsKeyId"] == KEY


@pytest.mark.parametrize("recorded", [SCHEDULED, OBJECT_CREATED], ids=["schedule", "raw-object"])
def test_the_schedule_and_a_raw_object_start_an_etl_job(sagemaker: Any, recorded: dict[str, Any]) -> None:
    event = {**recorded, "id": f"{uuid.uuid4().hex[:8]}-{recorded['id']}"}  # names of this test's own
    result = _launcher().handler(event, CONTEXT)
    job = _recorded(sagemaker, result)
    assert job["ProcessingJobName"].startswith("capacity-forecaster-etl-")
    assert job["AppSpecification"]["ContainerArguments"] == ["etl"]
    _common(job, ETL_ROLE)


def test_a_completed_training_job_starts_the_outputs_job_of_its_run(sagemaker: Any) -> None:
    run_id = f"capacity-forecaster-20261123-{uuid.uuid4().hex[:8]}"
    detail = {**TRAINING["detail"], "HyperParameters": {**TRAINING["detail"]["HyperParameters"], "run_id": run_id}}
    result = _launcher().handler({**TRAINING, "detail": detail}, CONTEXT)
    job = _recorded(sagemaker, result)
    assert job["ProcessingJobName"] == f"capacity-forecaster-outputs-{run_id.removeprefix('capacity-forecaster-')}"
    assert job["AppSpecification"]["ContainerArguments"] == [
        "outputs",
        "--run-id",
        run_id,
        "--run-date",
        "2026-11-23",
    ]
    _common(job, OUTPUTS_ROLE)


def test_the_outputs_arguments_are_what_the_container_reads(sagemaker: Any, tmp_path: Path) -> None:
    from capacity_forecaster.processing import read_request

    launcher = _launcher()
    launch = launcher.launch_for(TRAINING)
    request = launcher.job_request(launcher.ProcessingConfig.from_env(_env("http://unused")), launch)
    paths = ProcessingPaths(tmp_path)
    paths.job_config.parent.mkdir(parents=True)
    paths.job_config.write_text(json.dumps(request), encoding="utf-8")
    parsed = read_request(paths, environ={})
    assert (parsed.stage, parsed.run_id, str(parsed.run_date)) == ("outputs", "RUN_ID", "2026-11-23")
    assert parsed.settings.fleet.servers == 100_000 and parsed.settings.lake == LAKE


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ([], "expected an EventBridge event object, got list"),
        ({**SCHEDULED, "detail": None}, "event 'detail' must be an object, not NoneType"),
        ({**SCHEDULED, "source": "aws.ec2"}, "expected a schedule, raw object or training job event"),
        ({**SCHEDULED, "time": "yesterday"}, "event time 'yesterday' is not an ISO 8601 date-time"),
        ({**SCHEDULED, "id": "--"}, "event id '--' has no letters or digits"),
        ({**TRAINING, "detail": {"TrainingJobStatus": "Completed"}}, "HyperParameters must be an object"),
        (
            {**TRAINING, "detail": {"TrainingJobStatus": "Completed", "HyperParameters": {"run_id": "a b"}}},
            "hyperparameter run_id='a b' is not a run id",
        ),
        (
            {
                **TRAINING,
                "detail": {"TrainingJobStatus": "Completed", "HyperParameters": {"run_id": "r", "run_date": "11/23"}},
            },
            "hyperparameter run_date='11/23' is not YYYY-MM-DD",
        ),
    ],
)
def test_a_malformed_event_is_rejected_in_one_line_before_any_aws_call(
    monkeypatch: pytest.MonkeyPatch, event: Any, reason: str
) -> None:
    for key, value in _env("http://127.0.0.1:9").items():  # nothing listens there: a call would raise
        monkeypatch.setenv(key, value)
    result = _launcher().handler(event, CONTEXT)
    assert result["status"] == "rejected" and reason in result["reason"] and "\n" not in result["reason"]


def test_a_training_job_in_another_state_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _env("http://127.0.0.1:9").items():
        monkeypatch.setenv(key, value)
    failed = {**TRAINING, "detail": {**TRAINING["detail"], "TrainingJobStatus": "Failed"}}
    assert _launcher().handler(failed, CONTEXT)["status"] == "ignored"


def test_a_launcher_without_its_roles_is_rejected_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _env("http://127.0.0.1:9").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CF_PROCESSING_OUTPUTS_ROLE_ARN")
    result = _launcher().handler(SCHEDULED, CONTEXT)
    assert result == {
        "status": "rejected",
        "reason": "the launcher needs CF_PROCESSING_OUTPUTS_ROLE_ARN in its environment",
    }
