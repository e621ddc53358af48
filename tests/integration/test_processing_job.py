"""The SageMaker Processing entry point under its container contract, in a subprocess with a temporary /opt/ml.

The job is run as the container runs it (``python -m capacity_forecaster.processing``, ``SM_CONTRACT_ROOT`` for
``/opt/ml``) against a lake on the moto S3 server, as in the cloud: the ETL stage, then the outputs stage of a
staged training run (publish, risk, consolidation, report), and the failures a user can cause.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from capacity_forecaster.forecasting.job import run_training_job
from capacity_forecaster.processing import MAX_MESSAGE_BYTES, ProcessingPaths
from capacity_forecaster.processing_request import processing_job_request
from capacity_forecaster.scale import processing_instance
from capacity_forecaster.schema import CONSOLIDATION, FORECASTS, METRICS_DAILY, RISK_REGISTER
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import report_prefix, run_generate, training_hyperparameters
from capacity_forecaster.storage.lake import Lake, open_lake
from capacity_forecaster.storage.s3_client import S3Config

RUN_DATE = date(2026, 11, 23)
REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"fleet.servers": "4", "fleet.days": "90", "horizon_days": "30", "training.models": "seasonal_naive"}


def contract(root: Path, arguments: list[str], environment: dict[str, str], hosts: int = 1) -> Path:
    """A processing job's /opt/ml as SageMaker lays it out: the job config and the resource config."""
    paths = ProcessingPaths(root)
    paths.job_config.parent.mkdir(parents=True, exist_ok=True)
    names = [f"algo-{k}" for k in range(1, hosts + 1)]
    config = {
        "ProcessingJobName": "cf-test-job",
        "AppSpecification": {
            "ImageUri": "local",
            "ContainerEntrypoint": ["python3", "-m", "capacity_forecaster.processing"],
            "ContainerArguments": arguments,
        },
        "Environment": environment,
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": hosts, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
        },
        "ProcessingOutputConfig": {
            "Outputs": [
                {"OutputName": "summary", "S3Output": {"LocalPath": str(paths.summary), "S3UploadMode": "EndOfJob"}}
            ]
        },
    }
    paths.job_config.write_text(json.dumps(config), encoding="utf-8")
    paths.resource_config.write_text(json.dumps({"current_host": names[0], "hosts": names}), encoding="utf-8")
    paths.summary.mkdir(parents=True, exist_ok=True)
    return root


def run_job(root: Path, s3_config: S3Config) -> subprocess.CompletedProcess[str]:
    """The container's command, with the contract at ``root`` and S3 at the moto server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CF_")}
    env.update({"SM_CONTRACT_ROOT": str(root), "CF_S3_ENDPOINT_URL": str(s3_config.endpoint_url)})
    return subprocess.run(
        [sys.executable, "-m", "capacity_forecaster.processing"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def environment(lake_uri: str) -> dict[str, str]:
    return {"CF_LAKE": lake_uri, **{"CF_" + k.replace(".", "_").upper(): v for k, v in SETTINGS.items()}}


def summary(root: Path, stage: str) -> dict[str, Any]:
    return dict(json.loads((ProcessingPaths(root).summary / f"{stage}.json").read_text(encoding="utf-8")))


@pytest.fixture
def s3_lake(s3_bucket: str, s3_config: S3Config) -> tuple[str, Lake]:
    uri = f"s3://{s3_bucket}/lake"
    return uri, open_lake(uri, s3_config)


@pytest.mark.slow
def test_etl_then_outputs_run_under_the_processing_contract(
    s3_lake: tuple[str, Lake], s3_config: S3Config, tmp_path: Path
) -> None:
    uri, lake = s3_lake
    settings = load_settings(environ={}, overrides={"lake": uri, **SETTINGS})
    run_generate(lake, settings, run_date=RUN_DATE)

    etl_root = contract(tmp_path / "etl", ["etl"], environment(uri))
    done = run_job(etl_root, s3_config)
    assert done.returncode == 0, done.stderr
    etl = summary(etl_root, "etl")
    assert etl["job"] == "cf-test-job" and etl["stage"] == "etl"
    assert etl["etl"]["rows_in"] == etl["etl"]["rows_written"] + etl["etl"]["rows_quarantined"] > 0
    assert len(lake.list_partitions(METRICS_DAILY)) == etl["etl"]["partitions_written"] == 90

    # A training job stages its parts (one host, under its own contract), then the outputs job publishes them.
    run_id = "proc-test"
    train_root = tmp_path / "train"
    params = training_hyperparameters(settings, run_date=RUN_DATE, run_id=run_id, lake_uri=uri)
    (train_root / "input" / "config").mkdir(parents=True)
    (train_root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(params), encoding="utf-8")
    channel = train_root / "input" / "data" / "curated"
    for info in lake.store.list(METRICS_DAILY.prefix + "/"):
        lake.store.download_file(info.key, channel / info.key[len(METRICS_DAILY.prefix) + 1 :])
    assert run_training_job(train_root, lake=lake) == 0
    assert lake.list_partitions(FORECASTS) == []  # staged, not published

    out_root = contract(
        tmp_path / "outputs", ["outputs", "--run-id", run_id, "--run-date", "2026-11-23"], environment(uri)
    )
    done = run_job(out_root, s3_config)
    assert done.returncode == 0, done.stderr
    outputs = summary(out_root, "outputs")
    assert outputs["publish"]["series"] == 16 and outputs["publish"]["already_published"] is False
    assert outputs["risk"]["series"] == 16 and outputs["consolidation"]["servers"] == 4
    assert len(lake.read_table(RISK_REGISTER, where={"run_date": RUN_DATE})) == 16
    assert len(lake.read_table(CONSOLIDATION, where={"run_date": RUN_DATE})) == 4
    assert any(i.key.endswith(".html") for i in lake.store.list(report_prefix(RUN_DATE)))
    assert not ProcessingPaths(out_root).message.exists()


@pytest.mark.parametrize(
    ("arguments", "hosts", "env", "expected"),
    [
        (["train"], 1, None, "processing job arguments: argument stage: invalid choice: 'train'"),
        (["outputs"], 1, None, "processing stage outputs needs --run-id and --run-date"),
        (["outputs", "--run-id", "x", "--run-date", "2026-13-01"], 1, None, "processing job arguments:"),
        (["etl"], 2, None, "runs on one instance, not 2"),
        (["etl"], 1, {}, "processing job environment has no CF_LAKE"),
        (["etl"], 1, {"CF_LAKE": "s3://b/l", "CF_FLEET_SERVERS": "0"}, "fleet.servers=0 must be between 1 and 100000"),
    ],
)
def test_bad_requests_fail_with_one_line_in_the_exit_message(
    arguments: list[str],
    hosts: int,
    env: dict[str, str] | None,
    expected: str,
    s3_config: S3Config,
    tmp_path: Path,
) -> None:
    root = contract(tmp_path, arguments, environment("s3://bucket/lake") if env is None else env, hosts=hosts)
    done = run_job(root, s3_config)
    assert done.returncode == 1
    message = ProcessingPaths(root).message.read_text(encoding="utf-8")
    assert expected in message and "\n" not in message and len(message.encode()) <= MAX_MESSAGE_BYTES
    assert "Traceback" not in done.stderr
    assert not (ProcessingPaths(root).summary / f"{arguments[0]}.json").exists()


def test_a_missing_job_config_is_named(s3_config: S3Config, tmp_path: Path) -> None:
    done = run_job(tmp_path, s3_config)
    assert done.returncode == 1
    assert "no processing job config at" in ProcessingPaths(tmp_path).message.read_text(encoding="utf-8")


def test_the_job_request_is_a_valid_create_processing_job_call(moto_server: str) -> None:
    """botocore validates the request against the SageMaker API model (a bad field raises before sending); the
    moto server accepts and records it."""
    import boto3

    request = processing_job_request(
        job_name="capacity-forecaster-etl-20261123-abc123",
        stage_arguments=["etl"],
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-assets:lambdas",
        role_arn="arn:aws:iam::123456789012:role/processing",
        instance_type=processing_instance(100_000).name,
        environment=environment("s3://lake-bucket"),
        summary_uri="s3://lake-bucket/processing/output/capacity-forecaster-etl-20261123-abc123",
        kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    )
    client = boto3.client("sagemaker", endpoint_url=moto_server, region_name="us-east-1")
    client.create_processing_job(**request)
    job = client.describe_processing_job(ProcessingJobName=request["ProcessingJobName"])
    assert job["AppSpecification"]["ContainerArguments"] == ["etl"]
    assert job["AppSpecification"]["ContainerEntrypoint"] == ["python3", "-m", "capacity_forecaster.processing"]
    [output] = job["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["LocalPath"] == str(ProcessingPaths(Path("/opt/ml")).summary)


def test_the_request_runs_under_the_local_contract(
    s3_lake: tuple[str, Lake], s3_config: S3Config, tmp_path: Path
) -> None:
    """What the request asks of the container is what the contract reads: its arguments and environment."""
    uri, lake = s3_lake
    run_generate(lake, load_settings(environ={}, overrides={"lake": uri, **SETTINGS}), run_date=RUN_DATE)
    request = processing_job_request(
        job_name="cf-etl",
        stage_arguments=["etl"],
        image_uri="local",
        role_arn="arn:aws:iam::123456789012:role/processing",
        instance_type="ml.m5.xlarge",
        environment=environment(uri),
        summary_uri=f"{uri}/processing/output/cf-etl",
    )
    root = tmp_path / "opt-ml"
    paths = ProcessingPaths(root)
    paths.job_config.parent.mkdir(parents=True)
    paths.job_config.write_text(json.dumps(request), encoding="utf-8")
    done = run_job(root, s3_config)
    assert done.returncode == 0, done.stderr
    assert summary(root, "etl")["etl"]["partitions_written"] == 90
