"""Every resource name, lake prefix and fixed constant of the CDK stack, in one place.

Lake prefixes come from the table definitions in ``capacity_forecaster.schema`` where one exists, so the
lifecycle rules and the grants follow the tables when a table moves.
"""

from __future__ import annotations

from typing import Final

from capacity_forecaster.schema import QUARANTINE, RAW_SAMPLES

PROJECT: Final = "capacity-forecaster"
STACK_ID: Final = "CapacityForecaster"
STACK_DESCRIPTION: Final = "AWS Capacity Forecaster: data lake, Glue catalog and Athena workgroup."
TAGS: Final[dict[str, str]] = {"project": PROJECT}

# Context keys of the project itself (cdk.json "context", or `cdk synth -c key=value`).
CONTEXT_NAMESPACE: Final = "capacity-forecaster"

# --- lake layout (keys in the lake bucket) ------------------------------------------------------------
RAW_PREFIX: Final = f"{RAW_SAMPLES.zone}/"
"""Everything generated or ingested, before validation."""
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
