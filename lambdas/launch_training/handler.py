"""Training launcher Lambda: on its weekly schedule, start the SageMaker training job of the day.

A zip function on the light domain layer (``layers/core``, stdlib-only modules) and AWS's Powertools layer
(logger, metrics, tracer): it needs boto3, which the Lambda runtime has, and nothing that imports pandas. The
job follows the contract of ``capacity_forecaster.forecasting.job``: string hyperparameters, one ``curated``
channel holding every partition of the grain's metrics table on every host (FullyReplicated: each host picks
its own series), outputs staged in the lake for the risk Lambda to publish when the job completes.

The settings reach the job as the stack wrote them at synth: ``CF_TRAINING_HYPERPARAMETERS`` (a JSON object of
the settings hyperparameters, ``capacity_forecaster.settings.settings_hyperparameters``), the host count
(``training.hosts``) and the channel's lake prefix (``training.grain``'s table). The launcher adds the run's
own keys (run_date, run_id, lake_uri) and checks nothing the job checks itself.

Launching is idempotent: the job name is derived from the event (its day and id), so a re-delivered event
finds its job already there (or, delivered twice at once, SageMaker refuses the second name) and starts
nothing; no reserved concurrency is needed. The job gets ``CF_S3_SSE``/``CF_S3_KMS_KEY_ID`` in its environment,
so what it stages under ``staging/training/`` is encrypted with the lake's KMS key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from capacity_forecaster import launcher_env
from capacity_forecaster.errors import CapacityForecasterError, ConfigError, InputError
from capacity_forecaster.launcher_env import JOB_NAME, one_line, shown
from capacity_forecaster.redact import redacting_formatter

CHANNEL = "curated"
"""The data channel the training container reads (forecasting.job.CHANNEL)."""
METRICS_DAILY_PREFIX = "curated/metrics_daily/"
"""The channel's prefix when the stack names none (training.grain daily)."""
RUN_KEYS = ("run_date", "run_id", "lake_uri")
"""The hyperparameters the launcher adds for each run; the stack's settings hyperparameters must not hold them."""
OUTPUT_PREFIX = "training/output/"
"""Where SageMaker puts each job's model.tar.gz (the forecasts themselves go to staging/, then curated/)."""
CHECKPOINT_PREFIX = "training/checkpoints/"
SCHEDULED = ("aws.events", "Scheduled Event")
JOB_PREFIX = "capacity-forecaster-"
_CHANNEL_PREFIX = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+)*/$")

logger = Logger(logger_formatter=redacting_formatter())
metrics = Metrics()
tracer = Tracer()


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    """What the stack tells the launcher through its environment."""

    image_uri: str
    role_arn: str
    lake_uri: str
    kms_key_arn: str
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_gb: int = 30
    spot: bool = True
    max_runtime_seconds: int = 3600
    max_wait_seconds: int = 7200
    channel_prefix: str = METRICS_DAILY_PREFIX
    hyperparameters: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LaunchConfig:
        """From ``CF_TRAINING_*``, ``CF_LAKE`` and ``CF_S3_KMS_KEY_ID``; ConfigError if wrong."""
        values: dict[str, Any] = launcher_env.require(
            env,
            {
                "image_uri": "CF_TRAINING_IMAGE_URI",
                "role_arn": "CF_TRAINING_ROLE_ARN",
                "lake_uri": "CF_LAKE",
                "kms_key_arn": "CF_S3_KMS_KEY_ID",
            },
        )
        values |= launcher_env.bounded_ints(  # the host count's limits are training.hosts', checked at synth
            env,
            {
                "instance_count": ("CF_TRAINING_INSTANCE_COUNT", 1, None),
                "volume_gb": ("CF_TRAINING_VOLUME_GB", 1, 16384),
                "max_runtime_seconds": ("CF_TRAINING_MAX_RUNTIME_SECONDS", 60, 432000),
                "max_wait_seconds": ("CF_TRAINING_MAX_WAIT_SECONDS", 60, 432000),
            },
        )
        if "CF_TRAINING_INSTANCE_TYPE" in env:
            values["instance_type"] = env["CF_TRAINING_INSTANCE_TYPE"]
        if "CF_TRAINING_SPOT" in env:
            spot = env["CF_TRAINING_SPOT"].strip().lower()
            if spot not in ("true", "false"):
                raise ConfigError(f"CF_TRAINING_SPOT={env['CF_TRAINING_SPOT']!r} must be true or false")
            values["spot"] = spot == "true"
        if "CF_TRAINING_CHANNEL_PREFIX" in env:
            values["channel_prefix"] = env["CF_TRAINING_CHANNEL_PREFIX"]
        if "CF_TRAINING_HYPERPARAMETERS" in env:
            values["hyperparameters"] = _hyperparameters(env["CF_TRAINING_HYPERPARAMETERS"])
        return cls(**values)

    def __post_init__(self) -> None:
        launcher_env.lake_bucket(self.lake_uri)
        launcher_env.instance_type("CF_TRAINING_INSTANCE_TYPE", self.instance_type)
        if not _CHANNEL_PREFIX.match(self.channel_prefix):
            raise ConfigError(f"CF_TRAINING_CHANNEL_PREFIX={self.channel_prefix!r} must be a lake prefix ending in /")
        if self.spot and self.max_wait_seconds < self.max_runtime_seconds:
            raise ConfigError("CF_TRAINING_MAX_WAIT_SECONDS must be at least CF_TRAINING_MAX_RUNTIME_SECONDS")

    @property
    def bucket(self) -> str:
        return launcher_env.lake_bucket(self.lake_uri)


def _hyperparameters(text: str) -> dict[str, str]:
    """The settings hyperparameters the stack wrote: a JSON object of strings, without the run's own keys."""
    values = launcher_env.string_object("CF_TRAINING_HYPERPARAMETERS", text)
    clash = sorted(set(values) & set(RUN_KEYS))
    if clash:
        raise ConfigError(f"CF_TRAINING_HYPERPARAMETERS must not set {', '.join(clash)}: the launcher sets them")
    return values


def job_name(run_date: date, event_id: str) -> str:
    """``capacity-forecaster-YYYYMMDD-<first 8 characters of the event id>``: one job per event."""
    suffix = re.sub(r"[^a-zA-Z0-9]", "", event_id)[:8]
    if not suffix:
        raise InputError(f"event id {shown(event_id)} has no letters or digits to name the training job by")
    name = f"{JOB_PREFIX}{run_date:%Y%m%d}-{suffix}"
    if not JOB_NAME.match(name):
        raise InputError(f"training job name {name!r} is not valid for SageMaker")
    return name


def job_environment(config: LaunchConfig) -> dict[str, str]:
    """The training container's environment: the S3 client (``S3Config.from_env``) encrypts what the job stages
    with SSE-KMS under the lake's key, as the Lambdas do."""
    return {"CF_S3_SSE": "aws:kms", "CF_S3_KMS_KEY_ID": config.kms_key_arn}


def training_request(config: LaunchConfig, *, name: str, run_date: date) -> dict[str, Any]:
    """The ``create_training_job`` request for one run (the run id is the job name)."""
    lake = f"s3://{config.bucket}"
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": config.max_runtime_seconds}
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "HyperParameters": {
            **config.hyperparameters,
            "run_date": run_date.isoformat(),
            "run_id": name,
            "lake_uri": lake,
        },
        "AlgorithmSpecification": {"TrainingImage": config.image_uri, "TrainingInputMode": "File"},
        "RoleArn": config.role_arn,
        "InputDataConfig": [
            {
                "ChannelName": CHANNEL,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"{lake}/{config.channel_prefix}",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "application/vnd.apache.parquet",
                "InputMode": "File",
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"{lake}/{OUTPUT_PREFIX}", "KmsKeyId": config.kms_key_arn},
        "ResourceConfig": {
            "InstanceType": config.instance_type,
            "InstanceCount": config.instance_count,
            "VolumeSizeInGB": config.volume_gb,
        },
        "StoppingCondition": stopping,
        # the job stages its outputs through the domain package's S3 client: SSE-KMS with the lake's key
        "Environment": job_environment(config),
        "EnableManagedSpotTraining": config.spot,
        "Tags": [{"Key": "project", "Value": "capacity-forecaster"}, {"Key": "run_date", "Value": str(run_date)}],
    }
    if config.spot:
        stopping["MaxWaitTimeInSeconds"] = config.max_wait_seconds
        request["CheckpointConfig"] = {"S3Uri": f"{lake}/{CHECKPOINT_PREFIX}{name}/"}
    return request


def scheduled_run_date(event: Any) -> tuple[date, str]:
    """(UTC day, event id) of a Scheduled Event; InputError for anything else, of any shape."""
    if not isinstance(event, dict):
        raise InputError(f"expected an EventBridge event object, got {type(event).__name__}")
    source, kind = event.get("source"), event.get("detail-type")
    if not (isinstance(source, str) and isinstance(kind, str) and (source, kind) == SCHEDULED):
        raise InputError(f"expected a Scheduled Event, got {shown(kind)} from {shown(source)}")
    if not isinstance(event.get("detail"), dict):
        raise InputError(f"Scheduled Event 'detail' must be an object, not {type(event.get('detail')).__name__}")
    text = event.get("time")
    try:
        if not isinstance(text, str):
            raise ValueError(text)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"event time {shown(text)} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        raise InputError(f"event time {shown(text)} has no time zone")
    event_id = event.get("id")
    if not isinstance(event_id, str):
        raise InputError(f"event id {shown(event_id)} is not a string")
    resources = event.get("resources", [])
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise InputError(f"EventBridge event 'resources' must be a list of ARNs, not {shown(resources)}")
    return when.astimezone(UTC).date(), event_id


def _exists(client: Any, name: str) -> bool:
    try:
        client.describe_training_job(TrainingJobName=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationException":  # SageMaker's "not found"
            return False
        raise
    return True


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        run_date, event_id = scheduled_run_date(event)
        name = job_name(run_date, event_id)
        config = LaunchConfig.from_env(os.environ)
    except CapacityForecasterError as exc:
        reason = one_line(str(exc))
        logger.warning("event rejected", extra={"reason": reason})
        metrics.add_metric(name="RejectedEvents", unit=MetricUnit.Count, value=1)
        return {"status": "rejected", "reason": reason}
    client = boto3.client("sagemaker")
    if _exists(client, name):
        logger.info("training job already launched", extra={"training_job_name": name})
        metrics.add_metric(name="TrainingJobsAlreadyLaunched", unit=MetricUnit.Count, value=1)
        return {"status": "already-launched", "training_job_name": name}
    try:
        response = client.create_training_job(**training_request(config, name=name, run_date=run_date))
    except ClientError as exc:
        # Two deliveries of one event at once (nothing reserves the launcher's concurrency): the name is taken.
        if exc.response.get("Error", {}).get("Code") != "ResourceInUse":
            raise
        logger.info("training job launched concurrently", extra={"training_job_name": name})
        metrics.add_metric(name="TrainingJobsAlreadyLaunched", unit=MetricUnit.Count, value=1)
        return {"status": "already-launched", "training_job_name": name}
    logger.info(
        "training job launched",
        extra={"training_job_name": name, "run_date": str(run_date), "hosts": config.instance_count},
    )
    metrics.add_metric(name="TrainingJobsLaunched", unit=MetricUnit.Count, value=1)
    return {
        "status": "launched",
        "training_job_name": name,
        "training_job_arn": response["TrainingJobArn"],
        "run_date": run_date.isoformat(),
    }
