"""Processing launcher Lambda (``scale.engine: sagemaker``): start the SageMaker Processing job an event asks for.

A zip function on the light domain layer (``layers/core``: ``capacity_forecaster.processing_request`` and
``launcher_env``, stdlib only) and AWS's Powertools layer, like ``lambdas/launch_training``. The stack points the
ETL schedule and the raw-object rule (an ``etl`` job) and the training-completed rule (an ``outputs`` job:
publish, risk, consolidation, report and run summary of that run) here instead of the ETL and risk Lambdas. The
job runs the data Lambdas' image with ``capacity_forecaster.processing`` as its entry point and the Lambdas'
``CF_*`` settings as its environment, under the job role of its stage (the grants of
``capacity_forecaster.access``), its volume and summary encrypted with the lake's key; the summary goes to
``state/processing/<job name>/``.

A malformed event is rejected in one line before any AWS call. The job name comes from the event (its time and
id, or the training run), so a re-delivered event finds the name taken (ResourceInUse) and starts nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from capacity_forecaster import launcher_env
from capacity_forecaster.errors import CapacityForecasterError, InputError
from capacity_forecaster.launcher_env import JOB_NAME, one_line, shown
from capacity_forecaster.processing_request import processing_job_request
from capacity_forecaster.redact import redacting_formatter

SCHEDULED = ("aws.events", "Scheduled Event")
OBJECT_CREATED = ("aws.s3", "Object Created")
TRAINING_STATE_CHANGE = ("aws.sagemaker", "SageMaker Training Job State Change")
JOB_PREFIX = "capacity-forecaster-"
SUMMARY_PREFIX = "state/processing/"
"""The lake prefix of the jobs' summaries (capacity_forecaster.access.PROCESSING_SUMMARY_PREFIX)."""
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

logger = Logger(logger_formatter=redacting_formatter())
metrics = Metrics()
tracer = Tracer()


@dataclass(frozen=True, kw_only=True)
class ProcessingConfig:
    """What the stack tells the launcher through its environment."""

    image_uri: str
    lake_uri: str
    kms_key_arn: str
    role_arns: Mapping[str, str]
    """Stage (etl, outputs) -> the job role holding that stage's grants."""
    instance_type: str = "ml.m5.xlarge"
    volume_gb: int = 30
    max_runtime_seconds: int = 3600
    environment: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProcessingConfig:
        """From ``CF_PROCESSING_*``, ``CF_LAKE`` and ``CF_S3_KMS_KEY_ID``; ConfigError if wrong."""
        found = launcher_env.require(
            env,
            {
                "image_uri": "CF_PROCESSING_IMAGE_URI",
                "etl": "CF_PROCESSING_ETL_ROLE_ARN",
                "outputs": "CF_PROCESSING_OUTPUTS_ROLE_ARN",
                "lake_uri": "CF_LAKE",
                "kms_key_arn": "CF_S3_KMS_KEY_ID",
            },
        )
        values: dict[str, Any] = {
            "image_uri": found["image_uri"],
            "lake_uri": found["lake_uri"],
            "kms_key_arn": found["kms_key_arn"],
            "role_arns": {"etl": found["etl"], "outputs": found["outputs"]},
        }
        values |= launcher_env.bounded_ints(
            env,
            {
                "volume_gb": ("CF_PROCESSING_VOLUME_GB", 1, 16384),
                "max_runtime_seconds": ("CF_PROCESSING_MAX_RUNTIME_SECONDS", 1, 432000),
            },
        )
        if "CF_PROCESSING_INSTANCE_TYPE" in env:
            values["instance_type"] = env["CF_PROCESSING_INSTANCE_TYPE"]
        if "CF_PROCESSING_ENVIRONMENT" in env:
            values["environment"] = launcher_env.string_object(
                "CF_PROCESSING_ENVIRONMENT", env["CF_PROCESSING_ENVIRONMENT"]
            )
        return cls(**values)

    def __post_init__(self) -> None:
        launcher_env.lake_bucket(self.lake_uri)
        launcher_env.instance_type("CF_PROCESSING_INSTANCE_TYPE", self.instance_type)

    @property
    def bucket(self) -> str:
        return launcher_env.lake_bucket(self.lake_uri)


@dataclass(frozen=True)
class Launch:
    """The job an event asks for: its name and the container's arguments."""

    name: str
    arguments: tuple[str, ...]

    @property
    def stage(self) -> str:
        return self.arguments[0]


def _name(name: str) -> str:
    if not JOB_NAME.match(name):
        raise InputError(f"processing job name {name!r} is not valid for SageMaker")
    return name


def _event_time(event: dict[str, Any]) -> datetime:
    text = event.get("time")
    try:
        if not isinstance(text, str):
            raise ValueError(text)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"event time {shown(text)} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        raise InputError(f"event time {shown(text)} has no time zone")
    return when.astimezone(UTC)


def launch_for(event: Any) -> Launch | None:
    """The job of an EventBridge event: ``etl`` for the schedule or a raw object, ``outputs`` for a Completed
    training job; None for a training job in another state; InputError for anything malformed."""
    if not isinstance(event, dict):
        raise InputError(f"expected an EventBridge event object, got {type(event).__name__}")
    source, kind = event.get("source"), event.get("detail-type")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise InputError(f"event 'detail' must be an object, not {type(detail).__name__}")
    if (source, kind) in (SCHEDULED, OBJECT_CREATED):
        event_id = event.get("id")
        suffix = re.sub(r"[^a-zA-Z0-9]", "", event_id)[:8] if isinstance(event_id, str) else ""
        if not suffix:
            raise InputError(f"event id {shown(event_id)} has no letters or digits to name the job by")
        return Launch(_name(f"{JOB_PREFIX}etl-{_event_time(event):%Y%m%d%H%M}-{suffix}"), ("etl",))
    if (source, kind) != TRAINING_STATE_CHANGE:
        got = f"got {shown(kind)} from {shown(source)}"
        raise InputError(f"expected a schedule, raw object or training job event, {got}")
    status = detail.get("TrainingJobStatus")
    if not isinstance(status, str) or not status:
        raise InputError(f"training job state change without a TrainingJobStatus string (got {shown(status)})")
    if status != "Completed":
        return None
    params = detail.get("HyperParameters")
    if not isinstance(params, dict):
        raise InputError(f"training job HyperParameters must be an object, not {type(params).__name__}")
    run_id, run_date = params.get("run_id"), params.get("run_date")
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InputError(f"hyperparameter run_id={shown(run_id)} is not a run id (1 to 128 of A-Z, a-z, 0-9, - and _)")
    if not isinstance(run_date, str) or not _ISO_DAY.match(run_date):
        raise InputError(f"hyperparameter run_date={shown(run_date)} is not YYYY-MM-DD")
    run = run_id.removeprefix(JOB_PREFIX).replace("_", "-")[:32].strip("-")
    return Launch(_name(f"{JOB_PREFIX}outputs-{run}"), ("outputs", "--run-id", run_id, "--run-date", run_date))


def job_request(config: ProcessingConfig, launch: Launch) -> dict[str, Any]:
    """The ``CreateProcessingJob`` request of ``launch``: the data image, the stage's role, the lake's key."""
    lake = f"s3://{config.bucket}"
    environment = {
        **config.environment,
        "CF_LAKE": lake,
        "CF_S3_SSE": "aws:kms",
        "CF_S3_KMS_KEY_ID": config.kms_key_arn,
    }
    return processing_job_request(
        job_name=launch.name,
        stage_arguments=launch.arguments,
        image_uri=config.image_uri,
        role_arn=config.role_arns[launch.stage],
        instance_type=config.instance_type,
        environment=environment,
        summary_uri=f"{lake}/{SUMMARY_PREFIX}{launch.name}",
        kms_key_arn=config.kms_key_arn,
        volume_gb=config.volume_gb,
        max_runtime_seconds=config.max_runtime_seconds,
    )


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        launch = launch_for(event)
        config = ProcessingConfig.from_env(os.environ)
    except CapacityForecasterError as exc:
        reason = one_line(str(exc))
        logger.warning("event rejected", extra={"reason": reason})
        metrics.add_metric(name="RejectedEvents", unit=MetricUnit.Count, value=1)
        return {"status": "rejected", "reason": reason}
    if launch is None:
        return {"status": "ignored", "reason": "the training job did not complete"}
    client = boto3.client("sagemaker")
    try:
        response = client.create_processing_job(**job_request(config, launch))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUse":
            raise
        logger.info("processing job already launched", extra={"processing_job_name": launch.name})
        metrics.add_metric(name="ProcessingJobsAlreadyLaunched", unit=MetricUnit.Count, value=1)
        return {"status": "already-launched", "processing_job_name": launch.name}
    logger.info("processing job launched", extra={"processing_job_name": launch.name, "stage": launch.stage})
    metrics.add_metric(name="ProcessingJobsLaunched", unit=MetricUnit.Count, value=1)
    return {
        "status": "launched",
        "processing_job_name": launch.name,
        "processing_job_arn": response["ProcessingJobArn"],
        "stage": launch.stage,
    }
