"""Every resource name, lake prefix and fixed constant of the CDK stack, in one place.

Lake prefixes come from the table definitions in ``capacity_forecaster.schema`` where one exists, so the
lifecycle rules and the grants follow the tables when a table moves.
"""

from __future__ import annotations

from typing import Final

# the lake prefixes the stages touch are declared once, beside the stages (re-exported here for the stack)
from capacity_forecaster import limits
from capacity_forecaster.access import NOTIFY_TOPIC_ENV as NOTIFY_TOPIC_ENV
from capacity_forecaster.access import RAW_PREFIX as RAW_PREFIX
from capacity_forecaster.access import STAGING_TRAINING_PREFIX as STAGING_TRAINING_PREFIX
from capacity_forecaster.access import TRAINING_CHECKPOINT_PREFIX as TRAINING_CHECKPOINT_PREFIX
from capacity_forecaster.access import TRAINING_OUTPUT_PREFIX as TRAINING_OUTPUT_PREFIX
from capacity_forecaster.access import UPLOADS_PREFIX, table_prefix
from capacity_forecaster.schema import METRICS_DAILY, QUARANTINE
from capacity_forecaster.settings import MODEL_NAMES

PROJECT: Final = "capacity-forecaster"
STACK_ID: Final = "CapacityForecaster"
STACK_DESCRIPTION: Final = (
    "AWS Capacity Forecaster: data lake, Glue catalog and Athena, scheduled pipeline Lambdas, SageMaker training, "
    "alerts and optional QuickSight dashboards."
)
TAGS: Final[dict[str, str]] = {"project": PROJECT}

# Context keys of the project itself (cdk.json "context", or `cdk synth -c key=value`).
CONTEXT_NAMESPACE: Final = "capacity-forecaster"

# --- lake layout (keys in the lake bucket) ------------------------------------------------------------
QUARANTINE_PREFIX: Final = f"{QUARANTINE.prefix}/"
"""Rejected input rows (the quarantine table's own prefix)."""
ATHENA_RESULTS_PREFIX: Final = "athena-results/"
"""Where the Athena workgroup writes query results, encrypted with the lake key."""
ACCESS_LOGS_PREFIX: Final = "s3/lake/"
"""Prefix of the lake bucket's server access logs in the log bucket."""

# --- construct ids and resource names -----------------------------------------------------------------
KMS_ALIAS: Final = f"alias/{PROJECT}/lake"
LOG_BUCKET_SUFFIX: Final = "logs"
"""The log bucket is named ``<lake bucket prefix>-logs-<account>-<region>``."""
ABORT_INCOMPLETE_MULTIPART_DAYS: Final = 7

# --- Glue / Athena --------------------------------------------------------------------------------------
PARQUET_INPUT_FORMAT: Final = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT_FORMAT: Final = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
PARQUET_SERDE: Final = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PROJECTION_DATE_FORMAT: Final = "yyyy-MM-dd"
"""Java date format of the Hive partition values (dt=2024-05-31, run_date=2024-05-31)."""
ATHENA_ENGINE_VERSION: Final = "AUTO"
GLUE_COMMENT_MAX: Final = 255
"""Glue's limit on a column comment."""

# --- stack outputs --------------------------------------------------------------------------------------
OUTPUT_LAKE_BUCKET: Final = "LakeBucketName"
OUTPUT_LAKE_KEY_ARN: Final = "LakeKeyArn"
OUTPUT_GLUE_DATABASE: Final = "GlueDatabaseName"
OUTPUT_ATHENA_WORKGROUP: Final = "AthenaWorkgroupName"

# --- pipeline (container-image Lambdas, schedules, rules) --------------------------------------------------
POWERTOOLS_NAMESPACE: Final = "CapacityForecaster"
"""CloudWatch metrics namespace of every Lambda (Powertools ``POWERTOOLS_METRICS_NAMESPACE``)."""
LAMBDA_DOCKERFILE: Final = "lambdas/Dockerfile"
"""The one image of the data Lambdas, built from the repository root; each function overrides the command."""
HANDLER_COMMANDS: Final[dict[str, str]] = {
    "generate": "generate.handler.handler",
    "etl": "etl.handler.handler",
    "risk": "risk.handler.handler",
    "pull_cloudwatch": "pull_cloudwatch.handler.handler",
}
"""Function -> the image command naming its handler (``<package>.handler.handler`` under LAMBDA_TASK_ROOT)."""
OPTIONAL_FUNCTIONS: Final = frozenset({"pull_cloudwatch"})
"""Functions the stack creates only when configured (pull_cloudwatch: with a cloudwatchTagFilter)."""
ETL_TRIGGER_PREFIX: Final = UPLOADS_PREFIX
"""Objects created under this prefix start the ETL at once. The generator's own raw exports (one object per
day of history) are left to the daily ETL schedule, so a generation run does not start hundreds of ETL runs."""
TRAINING_JOB_PREFIX: Final = f"{PROJECT}-"
"""Training jobs of this stack are named ``capacity-forecaster-<run date>...``; the state-change rule matches it."""
EPHEMERAL_STORAGE_MB: Final[dict[str, int]] = {"etl": limits.LAMBDA_TMP_MB}
"""``/tmp`` of the functions that need more than Lambda's 512 MB: the ETL downloads each raw file, stages a pass's
valid rows as Parquet and lets DuckDB spill there (docs/etl.md); 10,240 MB is Lambda's maximum."""
LAMBDA_RETRY_ATTEMPTS: Final = 2
"""Asynchronous retries of a failed invocation before it goes to the dead-letter queue."""
LAMBDA_MAX_EVENT_AGE_HOURS: Final = 6
"""An event older than this (throttled, say) goes to the dead-letter queue."""
DLQ_RETENTION_DAYS: Final = 14
ALARM_PERIOD_MINUTES: Final = 5
OPS_KEY_ALIAS: Final = f"alias/{PROJECT}/ops"

# --- training (SageMaker jobs and their launcher) -----------------------------------------------------------
TRAINING_DOCKERFILE: Final = "sagemaker_jobs/Dockerfile"
LAUNCHER_CODE: Final = "lambdas/launch_training"
PROCESSING_LAUNCHER_CODE: Final = "lambdas/launch_processing"
"""The zip function that starts the ETL and outputs Processing jobs (scale.engine sagemaker)."""
VIEWS_HANDLER_CODE: Final = "lambdas/create_views"
"""The ``Custom::AthenaViews`` resource's zip function (boto3 only) that runs the view statements at deploy time."""
LAYER_ROOT: Final = "layers/core"
"""The domain layer's folder (Lambda layer layout: python/capacity_forecaster/...)."""
LAYER_MODULES: Final = (
    "__init__.py",
    "py.typed",
    "errors.py",
    "redact.py",
    "storage/__init__.py",
    "storage/keys.py",
    "storage/errors.py",
    "storage/object_store.py",
    "processing_request.py",
    "launcher_env.py",
)
"""The domain package's modules in the zip launcher's layer: standard library, boto3 and botocore only (the
Lambda runtime's own), so the layer stays a few kilobytes and nothing pulls in pandas."""
POWERTOOLS_LAYER_PARAMETER: Final = "/aws/service/powertools/python/x86_64/python3.13/{version}"
"""AWS's public SSM parameter holding the ARN of its Powertools for AWS Lambda (Python) layer of a version (with
the tracer's X-Ray SDK); the launcher uses the version pinned in lambdas/requirements.txt, like the images."""
TRAINING_MODEL_NAMES: Final = MODEL_NAMES
"""The forecasting models the training image registers (capacity_forecaster.forecasting.baselines)."""
TRAINING_METRICS_PREFIX: Final = table_prefix(METRICS_DAILY)
"""The training channel: every metrics_daily partition, FullyReplicated to each host."""
SAGEMAKER_LOG_GROUP: Final = "/aws/sagemaker/TrainingJobs"

# --- notifications ------------------------------------------------------------------------------------------
ALERTS_KEY_ALIAS: Final = f"alias/{PROJECT}/alerts"
OUTPUT_ALERTS_TOPIC: Final = "AlertsTopicArn"

# --- dashboards ---------------------------------------------------------------------------------------------
OUTPUT_DASHBOARD_ID: Final = "QuickSightDashboardId"

# --- running the pipeline by hand (stack outputs) -------------------------------------------------------------
OUTPUT_FUNCTION_NAMES: Final[dict[str, str]] = {
    "generate": "GenerateFunctionName",
    "etl": "EtlFunctionName",
    "risk": "RiskFunctionName",
    "launch_training": "LaunchTrainingFunctionName",
}
"""Function -> the stack output naming it, for ``aws lambda invoke`` (README, Deploy to AWS)."""
