"""CDK assertions on the pipeline: container-image Lambdas, grants per prefix, dead letters, alarms, rules, and
the demo switch (the generator only with ``demo``: the options synthesis turns it on)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from capacity_forecaster.access import LOCKS_PREFIX
from capacity_forecaster.settings import ENV_VARS, Settings, load_settings
from infra import names
from infra.pipeline import DEMO_FUNCTIONS, SERIALISED, function_access
from infra.settings import SettingsError, StackSettings
from infra.stack import CapacityForecasterStack
from infra.storage import normalize_prefix
from tests.infra.options import OPTIONS, OptionsSynth
from tests.infra.template_tools import logical_id, render, s3_object_access, statements

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = StackSettings()
OPTIONS_GENERATE_SCHEDULE = OPTIONS["generateSchedule"]
FUNCTIONS = tuple(n for n in names.HANDLER_COMMANDS if n not in DEMO_FUNCTIONS | names.OPTIONAL_FUNCTIONS)
"""The data functions of the default synthesis: etl and risk (no demo generator, no CloudWatch puller without a
tag filter)."""


@pytest.fixture(scope="module")
def ids(stack: CapacityForecasterStack) -> dict[str, str]:
    pipeline = stack.pipeline
    found = {name: logical_id(stack, fn) for name, fn in pipeline.functions.items()}
    for name, fn in pipeline.functions.items():
        assert fn.role is not None
        found[f"{name}-role"] = logical_id(stack, fn.role)
    found |= {
        "bucket": logical_id(stack, stack.lake.bucket),
        "lake-key": logical_id(stack, stack.lake.key),
        "queue": logical_id(stack, pipeline.dead_letters),
        "queue-key": logical_id(stack, pipeline.key),
    }
    return found


# ---- functions ----------------------------------------------------------------------------------------


def test_two_container_image_functions_from_one_image(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    functions = {name: template_json["Resources"][ids[name]]["Properties"] for name in FUNCTIONS}
    assert {f["PackageType"] for f in functions.values()} == {"Image"}
    assert len({json.dumps(f["Code"], sort_keys=True) for f in functions.values()}) == 1
    for name, props in functions.items():
        assert props["ImageConfig"] == {"Command": [names.HANDLER_COMMANDS[name]]}
        assert props["Architectures"] == ["x86_64"]
        assert props["MemorySize"] == DEFAULTS.lambda_memory_mb
        assert props["Timeout"] == DEFAULTS.lambda_timeout_seconds
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["EphemeralStorage"] == {"Size": names.EPHEMERAL_STORAGE_MB.get(name, 512)}
    assert functions["etl"]["EphemeralStorage"] == {"Size": 10_240}  # the ETL's work folder (docs/etl.md)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_environment_has_powertools_and_lake_settings(
    template_json: dict[str, Any], ids: dict[str, str], name: str
) -> None:
    env = template_json["Resources"][ids[name]]["Properties"]["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == f"capacity-forecaster-{name}"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == names.POWERTOOLS_NAMESPACE
    assert render(env["CF_LAKE"]) == f"s3://<{ids['bucket']}>"
    assert env["CF_S3_SSE"] == "aws:kms"
    assert env["CF_S3_KMS_KEY_ID"] == {"Fn::GetAtt": [ids["lake-key"], "Arn"]}
    # no settings file: no setting variables, and the function reads the defaults (and the stack's lake)
    assert not {k for k in env if k in ENV_VARS} - {"CF_LAKE"}
    plain = {k: v for k, v in env.items() if isinstance(v, str)} | {"CF_LAKE": "s3://lake-bucket"}
    assert load_settings(environ=plain) == Settings(lake="s3://lake-bucket")


def test_every_image_command_names_a_handler_the_image_copies() -> None:
    dockerfile = (ROOT / names.LAMBDA_DOCKERFILE).read_text()
    assert re.search(r"^FROM amazon/aws-lambda-python:3\.13$", dockerfile, re.M)
    for command in names.HANDLER_COMMANDS.values():
        package, module, function = command.split(".")
        source = ROOT / "lambdas" / package / f"{module}.py"
        assert re.search(rf"^def {function}\(", source.read_text(), re.M), f"{command}: no such handler"
        assert f"COPY lambdas/{package} ${{LAMBDA_TASK_ROOT}}/{package}" in dockerfile
    assert "COPY lambdas/common ${LAMBDA_TASK_ROOT}/common" in dockerfile


def test_staged_build_context_holds_only_what_the_images_copy(assembly_dir: Path) -> None:
    manifest = json.loads(next(assembly_dir.glob("*.assets.json")).read_text())
    images = [i for i in manifest["dockerImages"].values() if i["source"]["dockerFile"] == names.LAMBDA_DOCKERFILE]
    assert len(images) == 1
    source = images[0]["source"]
    assert source["dockerFile"] == names.LAMBDA_DOCKERFILE and source["platform"] == "linux/amd64"
    context = assembly_dir / source["directory"]
    assert sorted(p.name for p in context.iterdir()) == [".dockerignore", "lambdas", "layers", "sagemaker_jobs"]
    assert (context / "layers/core/python/capacity_forecaster/stages.py").is_file()
    assert not list(context.rglob("__pycache__"))


def test_no_function_reserves_concurrency(template_json: dict[str, Any]) -> None:
    """A new account's default quota (10 concurrent executions) cannot reserve any: nothing may ask for it."""
    functions = [r for r in template_json["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert len(functions) >= len(FUNCTIONS) + 1
    assert [r for r in functions if "ReservedConcurrentExecutions" in r["Properties"]] == []
    assert "ReservedConcurrentExecutions" not in json.dumps(template_json)


@pytest.mark.parametrize("name", sorted(SERIALISED))
def test_serialised_functions_may_take_and_release_their_lease(
    template_json: dict[str, Any], ids: dict[str, str], name: str
) -> None:
    """The lease object: read it (and a conditional delete needs GetObject too), create or take it over, delete it;
    list its prefix (the lake's existence checks list a key as a prefix)."""
    access = s3_object_access(template_json, ids[f"{name}-role"], ids["bucket"])
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert LOCKS_PREFIX in access[action], action
    listing = [s for s in statements(template_json, ids[f"{name}-role"]) if s["Action"] == "s3:ListBucket"]
    assert any(f"{LOCKS_PREFIX}*" in s["Condition"]["StringLike"]["s3:prefix"] for s in listing)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_failed_events_are_retried_then_dead_lettered(template: Template, ids: dict[str, str], name: str) -> None:
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "FunctionName": {"Ref": ids[name]},
            "MaximumRetryAttempts": names.LAMBDA_RETRY_ATTEMPTS,
            "MaximumEventAgeInSeconds": names.LAMBDA_MAX_EVENT_AGE_HOURS * 3600,
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [ids["queue"], "Arn"]}}},
        },
    )


def test_dead_letter_queue_is_kms_encrypted_and_tls_only(template: Template, ids: dict[str, str]) -> None:
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "KmsMasterKeyId": {"Fn::GetAtt": [ids["queue-key"], "Arn"]},
            "MessageRetentionPeriod": names.DLQ_RETENTION_DAYS * 86400,
        },
    )
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )


@pytest.mark.parametrize("name", FUNCTIONS)
def test_an_alarm_on_errors_per_function(template: Template, ids: dict[str, str], name: str) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": ids[name]}}],
            "Statistic": "Sum",
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
        },
    )


def test_an_alarm_on_the_dead_letter_queue(template: Template, ids: dict[str, str]) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [ids["queue"], "QueueName"]}}],
            "Threshold": 1,
        },
    )


# ---- grants -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FUNCTIONS)
def test_grants_are_exactly_the_prefixes_each_stage_touches(
    template_json: dict[str, Any], ids: dict[str, str], name: str
) -> None:
    access = s3_object_access(template_json, ids[f"{name}-role"], ids["bucket"])
    spec = function_access(name)
    assert access.get("s3:GetObject", set()) == {normalize_prefix(p) for p in spec.read}
    assert access["s3:PutObject"] == {normalize_prefix(p) for p in spec.write}
    assert access.get("s3:DeleteObject", set()) == {normalize_prefix(p) for p in spec.delete}


def test_deletes_only_uploads_moved_aside_staging_and_leases(
    template_json: dict[str, Any], ids: dict[str, str]
) -> None:
    deleting = {
        name: access["s3:DeleteObject"]
        for name in FUNCTIONS
        if "s3:DeleteObject" in (access := s3_object_access(template_json, ids[f"{name}-role"], ids["bucket"]))
    }
    assert deleting == {
        "etl": {names.ETL_TRIGGER_PREFIX, "state/etl_samples/", "state/locks/"},
        "risk": {names.STAGING_TRAINING_PREFIX, "state/locks/"},
    }


def test_etl_cannot_write_raw(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    etl = s3_object_access(template_json, ids["etl-role"], ids["bucket"])
    assert not any(p.startswith(names.RAW_PREFIX) for p in etl["s3:PutObject"])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_no_wildcard_s3_actions_and_lake_key_only_through_s3(
    template_json: dict[str, Any], ids: dict[str, str], name: str
) -> None:
    for statement in statements(template_json, ids[f"{name}-role"]):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a.startswith("s3:") and "*" in a for a in actions), statement
        if statement["Resource"] == {"Fn::GetAtt": [ids["lake-key"], "Arn"]}:
            assert "kms:ViaService" in json.dumps(statement["Condition"])
        if "s3:ListBucket" in actions:
            assert "s3:prefix" in statement["Condition"]["StringLike"]


# ---- triggers -----------------------------------------------------------------------------------------


def rule_targets(template_json: dict[str, Any], function_id: str) -> list[dict[str, Any]]:
    return [
        r["Properties"]
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::Events::Rule"
        and any(t["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]} for t in r["Properties"]["Targets"])
    ]


def test_schedules_from_settings(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    etl = [r for r in rule_targets(template_json, ids["etl"]) if "ScheduleExpression" in r]
    assert [r["ScheduleExpression"] for r in etl] == [DEFAULTS.etl_schedule]
    for rule in etl:
        assert rule["Targets"][0]["RetryPolicy"]["MaximumRetryAttempts"] == names.LAMBDA_RETRY_ATTEMPTS


def test_objects_created_under_raw_uploads_start_the_etl(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    patterns = [r["EventPattern"] for r in rule_targets(template_json, ids["etl"]) if "EventPattern" in r]
    assert patterns == [
        {
            "source": ["aws.s3"],
            "detail-type": ["Object Created"],
            "detail": {
                "bucket": {"name": [{"Ref": ids["bucket"]}]},
                "object": {"key": [{"prefix": names.ETL_TRIGGER_PREFIX}]},
            },
        }
    ]
    assert names.ETL_TRIGGER_PREFIX.startswith(names.RAW_PREFIX)


def test_lake_bucket_sends_events_to_eventbridge_without_a_custom_resource(
    template_json: dict[str, Any], ids: dict[str, str]
) -> None:
    bucket = template_json["Resources"][ids["bucket"]]["Properties"]
    assert bucket["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    assert not [r for r in template_json["Resources"].values() if r["Type"] == "Custom::S3BucketNotifications"]


def test_completed_training_jobs_of_this_stack_start_risk(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    [rule] = rule_targets(template_json, ids["risk"])
    assert rule["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Training Job State Change"],
        "detail": {
            "TrainingJobStatus": ["Completed"],
            "TrainingJobName": [{"prefix": names.TRAINING_JOB_PREFIX}],
        },
    }


def test_event_pattern_matches_the_recorded_event() -> None:
    """The rule's pattern fields exist in the real payload the risk handler is tested with."""
    event = json.loads((ROOT / "tests/events/sagemaker_training_job_state_change.json").read_text())
    assert event["source"] == "aws.sagemaker"
    assert event["detail-type"] == "SageMaker Training Job State Change"
    assert event["detail"]["TrainingJobStatus"] == "Completed"
    assert event["detail"]["TrainingJobName"].startswith(names.TRAINING_JOB_PREFIX)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_eventbridge_may_invoke_each_function(template: Template, ids: dict[str, str], name: str) -> None:
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Fn::GetAtt": [ids[name], "Arn"]},
            "Principal": "events.amazonaws.com",
        },
    )


# ---- settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("generate_schedule", "every day", "cron(...) or rate(...)"),
        ("etl_schedule", "rate(1 fortnight)", "cron(...) or rate(...)"),
        ("lambda_memory_mb", 64, "lambda_memory_mb must be between"),
        ("lambda_timeout_seconds", 901, "lambda_timeout_seconds must be between"),
        ("log_retention_days", 10, "log_retention_days must be one of"),
    ],
)
def test_pipeline_settings_are_validated(field: str, value: Any, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        StackSettings(**{field: value})


def test_pipeline_settings_from_context_strings() -> None:
    settings = StackSettings.from_mapping(
        {"capacity-forecaster:lambdaMemoryMb": "4096", "capacity-forecaster:etlSchedule": "rate(6 hours)"}
    )
    assert (settings.lambda_memory_mb, settings.etl_schedule) == (4096, "rate(6 hours)")


# ---- the demo switch ----------------------------------------------------------------------------------


def image_commands(template_json: dict[str, Any]) -> list[str]:
    return [
        command
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
        for command in r["Properties"].get("ImageConfig", {}).get("Command", [])
    ]


def raw_writers(template_json: dict[str, Any]) -> list[str]:
    """Roles whose policies allow PutObject anywhere under raw/."""
    found = []
    for policy_id, policy in template_json["Resources"].items():
        if policy["Type"] != "AWS::IAM::Policy":
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if "s3:PutObject" in actions and any(f"/{names.RAW_PREFIX}" in json.dumps(r) for r in resources):
                found.append(policy_id)
    return found


def test_without_the_demo_the_stack_generates_nothing(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    assert DEFAULTS.demo is False and not stack.settings.demo
    assert names.HANDLER_COMMANDS["generate"] not in image_commands(template_json)
    assert sorted(image_commands(template_json)) == sorted(names.HANDLER_COMMANDS[n] for n in FUNCTIONS)
    schedules = {
        r["Properties"].get("ScheduleExpression")
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::Events::Rule"
    }
    assert DEFAULTS.generate_schedule not in schedules and "generate-schedule" not in stack.pipeline.rules
    assert raw_writers(template_json) == []  # no role may write raw/: the grants went with the function
    assert names.OUTPUT_FUNCTION_NAMES["generate"] not in template_json["Outputs"]
    alarms = [r for r in template_json["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert not any("generate" in r["Properties"]["AlarmDescription"] for r in alarms)


def test_with_the_demo_the_generator_its_schedule_grants_alarm_and_output(options_synth: OptionsSynth) -> None:
    stack, template_json = options_synth.stack, options_synth.template_json
    assert stack.settings.demo is True  # the options synthesis passes demo as the string "true"
    fn = stack.pipeline.functions["generate"]
    assert fn.role is not None
    fn_id, role_id = logical_id(stack, fn), logical_id(stack, fn.role)
    bucket_id = logical_id(stack, stack.lake.bucket)
    assert image_commands(template_json).count(names.HANDLER_COMMANDS["generate"]) == 1
    [rule] = rule_targets(template_json, fn_id)
    assert rule["ScheduleExpression"] == OPTIONS_GENERATE_SCHEDULE
    access = s3_object_access(template_json, role_id, bucket_id)
    spec = function_access("generate")
    assert access["s3:GetObject"] == {normalize_prefix(p) for p in spec.read}
    assert access["s3:PutObject"] == {normalize_prefix(p) for p in spec.write}
    assert "s3:DeleteObject" not in access  # the generator never deletes
    assert len(raw_writers(template_json)) == 2  # the generator and the CloudWatch puller (raw/uploads/)
    output = template_json["Outputs"][names.OUTPUT_FUNCTION_NAMES["generate"]]
    assert output["Value"] == {"Ref": fn_id}
    Template.from_json(template_json).has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"MetricName": "Errors", "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": fn_id}}]},
    )


def test_the_demo_synthesis_has_no_unacknowledged_finding(options_synth: OptionsSynth) -> None:
    report = json.loads((options_synth.assembly_dir / "validation-report.json").read_text(encoding="utf-8"))
    findings = [
        f"{v['ruleName']} at {c['constructPath']}"
        for plugin in report["pluginReports"]
        for v in plugin.get("violations", [])
        for c in v.get("violatingConstructs", [])
    ]
    assert findings == []


@pytest.mark.parametrize(
    ("value", "demo"), [(True, True), (False, False), ("true", True), ("false", False), ("TRUE", True)]
)
def test_demo_switch_from_context_booleans_and_strings(value: Any, demo: bool) -> None:
    assert StackSettings.from_mapping({"capacity-forecaster:demo": value}).demo is demo


@pytest.mark.parametrize("value", ["yes", "1", 1, ""])
def test_demo_switch_refuses_anything_else(value: Any) -> None:
    with pytest.raises(SettingsError, match="capacity-forecaster:demo must be true or false"):
        StackSettings.from_mapping({"capacity-forecaster:demo": value})


# ---- the CloudWatch puller (optional) -------------------------------------------------------------------


def _account_wide_statements(template_json: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        s
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::IAM::Policy"
        for s in r["Properties"]["PolicyDocument"]["Statement"]
        if "ec2:DescribeInstances" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]


def test_no_cloudwatch_puller_without_a_tag_filter(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    assert "pull_cloudwatch" not in stack.pipeline.functions and "cloudwatch-schedule" not in stack.pipeline.rules
    commands = [
        r["Properties"].get("ImageConfig", {}).get("Command")
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    ]
    assert [names.HANDLER_COMMANDS["pull_cloudwatch"]] not in commands
    assert _account_wide_statements(template_json) == []


def test_cloudwatch_puller_with_its_tags_days_schedule_and_grants(options_synth: Any) -> None:
    from capacity_forecaster.access import CLOUDWATCH_PULL_ACTIONS
    from tests.infra.options import OPTIONS

    stack, template_json = options_synth.stack, options_synth.template_json
    fn = stack.pipeline.functions["pull_cloudwatch"]
    props = template_json["Resources"][logical_id(stack, fn)]["Properties"]
    assert props["ImageConfig"] == {"Command": [names.HANDLER_COMMANDS["pull_cloudwatch"]]}
    env = props["Environment"]["Variables"]
    assert (env["CF_CLOUDWATCH_TAGS"], env["CF_CLOUDWATCH_DAYS"]) == (OPTIONS["cloudwatchTagFilter"], "3")
    rule = template_json["Resources"][logical_id(stack, stack.pipeline.rules["cloudwatch-schedule"])]["Properties"]
    assert rule["ScheduleExpression"] == OPTIONS["cloudwatchSchedule"]
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": [logical_id(stack, fn), "Arn"]}
    [statement] = _account_wide_statements(template_json)
    # on "*" (no resource-level permissions), merged by CDK with X-Ray's actions, which are on "*" too
    assert statement["Resource"] == "*" and set(CLOUDWATCH_PULL_ACTIONS) <= set(statement["Action"])
    assert {a for a in statement["Action"] if a not in CLOUDWATCH_PULL_ACTIONS} <= {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    assert fn.role is not None
    access = s3_object_access(template_json, logical_id(stack, fn.role), logical_id(stack, stack.lake.bucket))
    # raw/uploads/ (each object starts the ETL) and the inventory, which it reads to merge the instances into
    assert access["s3:PutObject"] == {names.ETL_TRIGGER_PREFIX, "curated/servers/"}
    assert access["s3:GetObject"] == {"curated/servers/"} and "s3:DeleteObject" not in access


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cloudwatch_tag_filter", "Team", "is not Key=Value"),
        ("cloudwatch_days", 500, "reaches back further than CloudWatch keeps data"),
        ("cloudwatch_schedule", "daily", "cloudwatch_schedule 'daily' must be an EventBridge cron"),
    ],
)
def test_cloudwatch_settings_are_validated_with_the_pullers_rules(field: str, value: Any, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        StackSettings(**{field: value})
