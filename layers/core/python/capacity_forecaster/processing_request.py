"""The ``CreateProcessingJob`` request of the fleet-wide stages (standard library only: the zip launcher's layer).

:mod:`capacity_forecaster.processing` is the container side of the contract (it imports the stages);
this module is what a caller needs to start a job: the entry point, the summary output and the request's shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

ENTRYPOINT: Final = ("python3", "-m", "capacity_forecaster.processing")
"""The container's entry point in the data Lambdas' image."""
SUMMARY_OUTPUT: Final = "summary"
"""The processing output (``processing/output/summary/``) that holds the stage's counts."""
SUMMARY_LOCAL_PATH: Final = "/opt/ml/processing/output/summary"
"""Where the container writes the summary (``ProcessingPaths(/opt/ml).summary``)."""


def processing_job_request(
    *,
    job_name: str,
    stage_arguments: Sequence[str],
    image_uri: str,
    role_arn: str,
    instance_type: str,
    environment: Mapping[str, str],
    summary_uri: str,
    kms_key_arn: str | None = None,
    volume_gb: int = 30,
    max_runtime_seconds: int = 3600,
) -> dict[str, Any]:
    """The ``CreateProcessingJob`` request that runs ``stage_arguments`` under the processing contract: the data
    Lambdas' image with :data:`ENTRYPOINT`, one instance, the settings and lake in ``environment`` (``CF_*``),
    the summary output uploaded to ``summary_uri`` at the end (encrypted with ``kms_key_arn`` when given)."""
    output: dict[str, Any] = {
        "OutputName": SUMMARY_OUTPUT,
        "S3Output": {"S3Uri": summary_uri, "LocalPath": SUMMARY_LOCAL_PATH, "S3UploadMode": "EndOfJob"},
    }
    cluster: dict[str, Any] = {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": volume_gb}
    request: dict[str, Any] = {
        "ProcessingJobName": job_name,
        "RoleArn": role_arn,
        "AppSpecification": {
            "ImageUri": image_uri,
            "ContainerEntrypoint": list(ENTRYPOINT),
            "ContainerArguments": list(stage_arguments),
        },
        "Environment": dict(environment),
        "ProcessingResources": {"ClusterConfig": cluster},
        "ProcessingOutputConfig": {"Outputs": [output]},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_seconds},
    }
    if kms_key_arn:
        cluster["VolumeKmsKeyId"] = kms_key_arn
        request["ProcessingOutputConfig"]["KmsKeyId"] = kms_key_arn
    return request
