"""CDK assertions on training: the SageMaker image and role, the launcher on its light layer, its schedule."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra import names
from infra.settings import StackSettings
from infra.stack import CapacityForecasterStack
from infra.storage import normalize_prefix
from infra.training import ROOT, powertools_version
from tests.infra.template_tools import logical_id, render, s3_object_access, statements
from tests.lambda_modules import load_handler

DEFAULTS = StackSettings()


@pytest.fixture(scope="module")
def ids(stack: CapacityForecasterStack) -> dict[str, str]:
    training = stack.training
    assert training.launcher.role is not None
    return {
        "role": logical_id(stack, training.role),
        "launcher": logical_id(stack, training.launcher),
        "launcher-role": logical_id(stack, training.launcher.role),
        "layer": logical_id(stack, training.layer),
        "bucket": logical_id(stack, stack.lake.bucket),
        "queue": logical_id(stack, stack.pipeline.dead_letters),
    }


def test_job_role_is_assumed_by_sagemaker_only(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    role = template_json["Resources"][ids["role"]]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}}
    ]
    assert "ManagedPolicyArns" not in role


def test_job_role_reads_metrics_and_writes_only_its_prefixes(
    template_json: dict[str, Any], ids: dict[str, str]
) -> None:
    access = s3_object_access(template_json, ids["role"], ids["bucket"])
    assert access["s3:GetObject"] == {
        names.TRAINING_METRICS_PREFIX,
        "curated/metrics_hourly/",  # the channel of training.grain hourly
        names.TRAINING_CHECKPOINT_PREFIX,
    }
    assert access["s3:PutObject"] == {
        normalize_prefix(names.STAGING_TRAINING_PREFIX),
        names.TRAINING_OUTPUT_PREFIX,
        names.TRAINING_CHECKPOINT_PREFIX,
    }
    assert access["s3:DeleteObject"] == {names.TRAINING_CHECKPOINT_PREFIX}


def test_job_role_pulls_the_training_image_and_writes_sagemaker_logs(
    template_json: dict[str, Any], ids: dict[str, str]
) -> None:
    found = statements(template_json, ids["role"])
    actions = {a for s in found for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:GetAuthorizationToken"} <= actions
    [logs] = [s for s in found if "logs:PutLogEvents" in s["Action"]]
    assert all(names.SAGEMAKER_LOG_GROUP in render(r) for r in logs["Resource"])
    [metrics] = [s for s in found if s["Action"] == "cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}


def test_training_image_is_built_from_its_dockerfile(assembly_dir: Path) -> None:
    manifest = json.loads(next(assembly_dir.glob("*.assets.json")).read_text())
    dockerfiles = sorted(i["source"]["dockerFile"] for i in manifest["dockerImages"].values())
    assert dockerfiles == sorted([names.LAMBDA_DOCKERFILE, names.TRAINING_DOCKERFILE])


def test_launcher_is_a_zip_function_on_the_light_layer(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    props = template_json["Resources"][ids["launcher"]]["Properties"]
    assert (props["Runtime"], props["Handler"], props["Architectures"]) == ("python3.13", "handler.handler", ["x86_64"])
    assert props["Layers"] == [{"Ref": ids["layer"]}, POWERTOOLS_LAYER]
    assert "ReservedConcurrentExecutions" not in props  # a re-delivered event finds its job by name
    assert props["TracingConfig"] == {"Mode": "Active"}
    env = props["Environment"]["Variables"]
    assert env["CF_TRAINING_ROLE_ARN"] == {"Fn::GetAtt": [ids["role"], "Arn"]}
    assert ".dkr.ecr." in render(env["CF_TRAINING_IMAGE_URI"])
    assert render(env["CF_LAKE"]) == f"s3://<{ids['bucket']}>"
    assert (env["CF_TRAINING_INSTANCE_TYPE"], env["CF_TRAINING_INSTANCE_COUNT"]) == ("ml.m5.xlarge", "1")
    assert (env["CF_TRAINING_SPOT"], env["CF_TRAINING_MAX_WAIT_SECONDS"]) == ("true", "7200")
    # the job's settings hyperparameters, precomputed at synth (none: every setting at its default)
    assert json.loads(env["CF_TRAINING_HYPERPARAMETERS"]) == {}
    assert env["CF_TRAINING_CHANNEL_PREFIX"] == names.TRAINING_METRICS_PREFIX
    assert env["POWERTOOLS_SERVICE_NAME"] == "capacity-forecaster-launch-training"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == names.POWERTOOLS_NAMESPACE


POWERTOOLS_LAYER = "{{resolve:ssm:/aws/service/powertools/python/x86_64/python3.13/3.37.0}}"
"""AWS's Powertools layer, resolved at deploy time from AWS's public parameter for the pinned version."""


def test_powertools_layer_is_the_version_the_images_pin() -> None:
    pinned = re.search(
        r"^aws-lambda-powertools\[tracer\]==(\S+)$", (ROOT / "lambdas" / "requirements.txt").read_text(), re.M
    )
    assert pinned is not None and powertools_version() == pinned[1] == "3.37.0"
    assert powertools_version("boto3==1\naws-lambda-powertools==3.1.0\n") == "3.1.0"
    with pytest.raises(ValueError, match="exactly once"):
        powertools_version("aws-lambda-powertools>=3\n")


def test_layer_holds_only_the_light_modules(
    template_json: dict[str, Any], ids: dict[str, str], assembly_dir: Path
) -> None:
    s3_key = template_json["Resources"][ids["layer"]]["Properties"]["Content"]["S3Key"]
    root = assembly_dir / f"asset.{s3_key.removesuffix('.zip')}" / "python" / "capacity_forecaster"
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert found == sorted(names.LAYER_MODULES)


def test_launcher_may_create_only_this_stacks_jobs_and_pass_only_the_job_role(
    template_json: dict[str, Any], ids: dict[str, str]
) -> None:
    found = statements(template_json, ids["launcher-role"])
    [sagemaker] = [s for s in found if "sagemaker:CreateTrainingJob" in s["Action"]]
    assert sorted(sagemaker["Action"]) == [
        "sagemaker:AddTags",
        "sagemaker:CreateTrainingJob",
        "sagemaker:DescribeTrainingJob",
    ]
    assert render(sagemaker["Resource"]).endswith(f":training-job/{names.TRAINING_JOB_PREFIX}*")
    [pass_role] = [s for s in found if s["Action"] == "iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": [ids["role"], "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert not [s for s in found if any(str(a).startswith("s3:") for a in s["Action"])]


def test_launcher_runs_weekly_and_dead_letters_failures(template: Template, ids: dict[str, str]) -> None:
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": DEFAULTS.training_schedule,
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [ids["launcher"], "Arn"]}})],
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "FunctionName": {"Ref": ids["launcher"]},
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [ids["queue"], "Arn"]}}},
        },
    )
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"MetricName": "Errors", "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": ids["launcher"]}}]},
    )


def test_the_launcher_and_the_rule_agree_on_job_names() -> None:
    module = load_handler("launch_training")
    assert module.JOB_PREFIX == names.TRAINING_JOB_PREFIX
    assert module.METRICS_DAILY_PREFIX == names.TRAINING_METRICS_PREFIX
    assert (module.OUTPUT_PREFIX, module.CHECKPOINT_PREFIX) == (
        names.TRAINING_OUTPUT_PREFIX,
        names.TRAINING_CHECKPOINT_PREFIX,
    )


def test_sagemaker_log_group_gets_the_retention_without_being_owned(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    """The account-wide /aws/sagemaker/TrainingJobs group may exist already: no AWS::Logs::LogGroup of that name
    (which would fail there), but CDK's LogRetention resource, which creates it if missing and keeps it."""
    groups = [
        r["Properties"].get("LogGroupName")
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::Logs::LogGroup"
    ]
    assert names.SAGEMAKER_LOG_GROUP not in groups
    [retention] = [r["Properties"] for r in template_json["Resources"].values() if r["Type"] == "Custom::LogRetention"]
    assert retention["LogGroupName"] == names.SAGEMAKER_LOG_GROUP
    assert retention["RetentionInDays"] == DEFAULTS.log_retention_days
    assert retention["RemovalPolicy"] == "retain"
    provider = retention["ServiceToken"]["Fn::GetAtt"][0]
    role = template_json["Resources"][provider]["Properties"]["Role"]["Fn::GetAtt"][0]
    actions = {a for st in statements(template_json, role) for a in st["Action"]}
    assert actions == {"logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy"}
    managed = template_json["Resources"][role]["Properties"]["ManagedPolicyArns"]
    assert [render(m) for m in managed] == [
        "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]
