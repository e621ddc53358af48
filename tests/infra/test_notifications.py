"""CDK assertions on notifications: the encrypted topic, failed training jobs, alarm actions, the risk Lambda; with
``scale.engine: sagemaker`` (its own synthesis) failed processing jobs, the processing launcher's alarm and the
outputs job's run summary."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from constructs import Construct

from capacity_forecaster.access import NOTIFY_ACTIONS, function_access
from infra import names
from infra.processing import JOB_STAGES, PROCESSING_JOB_PREFIX
from infra.settings import SettingsError, StackSettings
from infra.stack import CapacityForecasterStack
from tests.infra.options import OptionsSynth
from tests.infra.template_tools import logical_id, render, statements


@pytest.fixture(scope="module")
def ids(stack: CapacityForecasterStack) -> dict[str, str]:
    notifications = stack.notifications
    found = {
        "topic": logical_id(stack, notifications.topic),
        "key": logical_id(stack, notifications.key),
        "rule": logical_id(stack, notifications.training_failed),
    }
    for name, fn in [*stack.pipeline.functions.items(), ("launcher", stack.training.launcher)]:
        assert isinstance(fn.role, Construct)
        found[f"{name}-role"] = logical_id(stack, fn.role)
        found[name] = logical_id(stack, fn)
    return found


def test_topic_is_encrypted_with_its_own_key_and_tls_only(template: Template, ids: dict[str, str]) -> None:
    template.resource_count_is("AWS::SNS::Topic", 1)
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [ids["key"], "Arn"]}})
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": ids["topic"]}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            },
        },
    )


def test_topic_policy_lets_cloudwatch_publish_for_this_stacks_alarms(
    template_json: dict[str, Any], ids: dict[str, str], stack: CapacityForecasterStack
) -> None:
    """The topic policy replaces SNS's default one: without this statement no alarm could notify."""
    [policy] = [r["Properties"] for r in template_json["Resources"].values() if r["Type"] == "AWS::SNS::TopicPolicy"]
    assert policy["Topics"] == [{"Ref": ids["topic"]}]
    allowed = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    [alarms] = [s for s in allowed if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert alarms["Action"] == "sns:Publish" and alarms["Resource"] == {"Ref": ids["topic"]}
    assert alarms["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    alarm_ids = sorted(logical_id(stack, a) for a in stack.notifications.alarms)
    assert sorted(a["Fn::GetAtt"][0] for a in alarms["Condition"]["ArnLike"]["aws:SourceArn"]) == alarm_ids
    every_alarm = sorted(k for k, r in template_json["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm")
    assert alarm_ids == every_alarm
    assert sorted(s["Principal"]["Service"] for s in allowed) == ["cloudwatch.amazonaws.com", "events.amazonaws.com"]


def test_only_this_accounts_eventbridge_and_alarms_may_use_the_key(
    template_json: dict[str, Any], ids: dict[str, str]
) -> None:
    policy = template_json["Resources"][ids["key"]]["Properties"]["KeyPolicy"]["Statement"]
    [publishers] = [s for s in policy if s.get("Sid") == "AllowAlertPublishersOfThisAccount"]
    assert sorted(publishers["Principal"]["Service"]) == ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
    assert publishers["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert publishers["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_failed_training_jobs_of_this_stack_notify(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    rule = template_json["Resources"][ids["rule"]]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Training Job State Change"],
        "detail": {"TrainingJobStatus": ["Failed"], "TrainingJobName": [{"prefix": names.TRAINING_JOB_PREFIX}]},
    }
    [target] = rule["Targets"]
    assert target["Arn"] == {"Ref": ids["topic"]}
    transformer = target["InputTransformer"]
    assert set(transformer["InputPathsMap"].values()) == {"$.detail.TrainingJobName", "$.detail.FailureReason"}
    assert "failed" in transformer["InputTemplate"]


def test_every_alarm_notifies_the_topic(
    template_json: dict[str, Any], ids: dict[str, str], stack: CapacityForecasterStack
) -> None:
    alarms = [r["Properties"] for r in template_json["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(alarms) == len(stack.pipeline.functions) + 2  # each data Lambda, the dead letters, the launcher
    assert "generate" not in stack.pipeline.functions  # without the demo
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": ids["topic"]}]


def test_risk_lambda_is_told_the_topic_and_alone_may_publish(
    template_json: dict[str, Any], ids: dict[str, str]
) -> None:
    env = template_json["Resources"][ids["risk"]]["Properties"]["Environment"]["Variables"]
    assert env[names.NOTIFY_TOPIC_ENV] == {"Ref": ids["topic"]}
    for name in ("etl", "risk", "launcher"):
        publish = [s for s in statements(template_json, ids[f"{name}-role"]) if s["Action"] == "sns:Publish"]
        if name == "risk":
            assert [s["Resource"] for s in publish] == [{"Ref": ids["topic"]}]
        else:
            assert publish == []


def test_topic_arn_is_a_stack_output(template: Template, ids: dict[str, str]) -> None:
    template.has_output(names.OUTPUT_ALERTS_TOPIC, {"Value": {"Ref": ids["topic"]}})


def test_no_email_subscription_unless_asked(template: Template) -> None:
    template.resource_count_is("AWS::SNS::Subscription", 0)


@pytest.mark.parametrize("value", ["ops", "ops@", "a b@example.com"])
def test_alert_email_is_validated(value: str) -> None:
    with pytest.raises(SettingsError, match="alert_email"):
        StackSettings(alert_email=value)
    assert StackSettings(alert_email="capacity@example.com").alert_email == "capacity@example.com"


# --------------------------------------------------------------------------- scale.engine: sagemaker


def _alarm_wiring(template_json: dict[str, Any], topic: str) -> tuple[list[str], list[str]]:
    """(every alarm of the template, the alarms the topic policy lets CloudWatch publish for); each alarm's actions
    must be the topic."""
    every = sorted(k for k, r in template_json["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm")
    for alarm_id in every:
        assert template_json["Resources"][alarm_id]["Properties"]["AlarmActions"] == [{"Ref": topic}], alarm_id
    [policy] = [r["Properties"] for r in template_json["Resources"].values() if r["Type"] == "AWS::SNS::TopicPolicy"]
    [alarms] = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    return every, sorted(a["Fn::GetAtt"][0] for a in alarms["Condition"]["ArnLike"]["aws:SourceArn"])


def test_a_failed_processing_job_of_this_stack_notifies_in_a_readable_line(sagemaker_synth: OptionsSynth) -> None:
    stack, template = sagemaker_synth.stack, sagemaker_synth.template_json
    rule = stack.notifications.processing_failed
    assert rule is not None, "the sagemaker engine must watch its processing jobs"
    props = template["Resources"][logical_id(stack, rule)]["Properties"]
    assert props["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Processing Job State Change"],
        "detail": {"ProcessingJobStatus": ["Failed"], "ProcessingJobName": [{"prefix": PROCESSING_JOB_PREFIX}]},
    }
    [target] = props["Targets"]
    topic = logical_id(stack, stack.notifications.topic)
    assert target["Arn"] == {"Ref": topic}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [logical_id(stack, stack.pipeline.dead_letters), "Arn"]}
    transformer = target["InputTransformer"]
    paths = {v: k for k, v in transformer["InputPathsMap"].items()}
    assert set(paths) == {"$.detail.ProcessingJobName", "$.detail.FailureReason"}
    # the message EventBridge sends: the template with an example job's name and reason in place
    message = transformer["InputTemplate"]
    for path, value in {
        "$.detail.ProcessingJobName": "capacity-forecaster-etl-x",
        "$.detail.FailureReason": "E",
    }.items():
        message = message.replace(f"<{paths[path]}>", value)
    assert message.startswith('"Capacity Forecaster processing job capacity-forecaster-etl-x failed: E.')
    assert "--processing-job-name capacity-forecaster-etl-x" in message and "<" not in message
    # failed training jobs still notify on this engine
    training = template["Resources"][logical_id(stack, stack.notifications.training_failed)]["Properties"]
    assert training["EventPattern"]["detail"]["TrainingJobStatus"] == ["Failed"]


PROCESSING_FAILED = json.loads(
    (Path(__file__).resolve().parents[1] / "events" / "sagemaker_processing_job_state_change.json").read_text()
)


def _at(event: Any, path: str) -> Any:
    for part in path.removeprefix("$.").split("."):
        event = event[part]
    return event


def test_the_processing_rule_matches_a_failed_job_of_this_stack_only(
    sagemaker_synth: OptionsSynth, moto_server: str
) -> None:
    """The rule's pattern on moto's EventBridge (a rule with it, an SQS target, the events put on the bus): the
    failed job of this stack arrives, a completed one, another stack's and a training job's do not; the message
    EventBridge sends for it names the job and the reason."""
    import boto3

    stack, template = sagemaker_synth.stack, sagemaker_synth.template_json
    assert stack.notifications.processing_failed is not None
    props = template["Resources"][logical_id(stack, stack.notifications.processing_failed)]["Properties"]
    events, sqs = (boto3.client(s, endpoint_url=moto_server, region_name="us-east-1") for s in ("events", "sqs"))
    queue = sqs.create_queue(QueueName="processing-failed-rule")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="processing-failed", EventPattern=json.dumps(props["EventPattern"]))
    events.put_targets(Rule="processing-failed", Targets=[{"Id": "inbox", "Arn": arn}])
    detail = PROCESSING_FAILED["detail"]
    candidates = {
        "failed": (PROCESSING_FAILED["detail-type"], detail),
        "completed": (PROCESSING_FAILED["detail-type"], {**detail, "ProcessingJobStatus": "Completed"}),
        "other-stack": (PROCESSING_FAILED["detail-type"], {**detail, "ProcessingJobName": "other-etl-1"}),
        "training": ("SageMaker Training Job State Change", detail),
    }
    for name, (kind, body) in candidates.items():
        entry = {"Source": "aws.sagemaker", "DetailType": kind, "Detail": json.dumps({**body, "case": name})}
        assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(m["Body"])["detail"]["case"] for m in received] == ["failed"]
    transformer = props["Targets"][0]["InputTransformer"]
    message = re.sub(
        r"<([A-Za-z0-9_-]+)>",
        lambda m: str(_at(PROCESSING_FAILED, transformer["InputPathsMap"][m[1]])),
        json.loads(transformer["InputTemplate"]),
    )
    assert message == (
        f"Capacity Forecaster processing job {detail['ProcessingJobName']} failed: {detail['FailureReason']}. The "
        "job's own one-line reason is its exit message (aws sagemaker describe-processing-job --processing-job-name "
        f"{detail['ProcessingJobName']}). The lake's tables keep what the last completed job wrote."
    )


def test_the_lambda_engine_has_no_processing_rule(stack: CapacityForecasterStack) -> None:
    assert stack.processing is None and stack.notifications.processing_failed is None


def test_every_alarm_of_the_sagemaker_stack_notifies_the_launchers_included(sagemaker_synth: OptionsSynth) -> None:
    stack, template = sagemaker_synth.stack, sagemaker_synth.template_json
    assert stack.processing is not None
    every, allowed = _alarm_wiring(template, logical_id(stack, stack.notifications.topic))
    assert every == allowed
    launchers = {logical_id(stack, stack.processing.launcher_alarm), logical_id(stack, stack.training.launcher_alarm)}
    assert launchers <= set(every)
    errors = template["Resources"][logical_id(stack, stack.processing.launcher_alarm)]["Properties"]
    assert errors["MetricName"] == "Errors" and errors["Threshold"] == 1
    assert errors["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": logical_id(stack, stack.processing.launcher)}}
    ]


def test_the_outputs_job_may_publish_the_run_summary_and_is_told_the_topic(sagemaker_synth: OptionsSynth) -> None:
    """Who publishes follows capacity_forecaster.access: the job roles whose stages hold NOTIFY_ACTIONS (outputs),
    on the topic and its key; the launcher puts the topic in every job's environment."""
    stack, template = sagemaker_synth.stack, sagemaker_synth.template_json
    assert stack.processing is not None
    topic, key = logical_id(stack, stack.notifications.topic), logical_id(stack, stack.notifications.key)
    senders = {s for s in JOB_STAGES if set(NOTIFY_ACTIONS) <= set(function_access(*JOB_STAGES[s]).actions)}
    assert senders == {"outputs"}
    for stage, role in stack.processing.roles.items():
        found = statements(template, logical_id(stack, role))
        publish = [s for s in found if s["Action"] == "sns:Publish"]
        keys = [s for s in found if s["Resource"] == {"Fn::GetAtt": [key, "Arn"]}]
        if stage in senders:
            assert [s["Resource"] for s in publish] == [{"Ref": topic}], stage
            assert [sorted(s["Action"]) for s in keys] == [["kms:Decrypt", "kms:GenerateDataKey*"]], stage
        else:
            assert publish == [] and keys == [], stage
    fn = template["Resources"][logical_id(stack, stack.processing.launcher)]["Properties"]
    job_env = fn["Environment"]["Variables"]["CF_PROCESSING_ENVIRONMENT"]
    parts = job_env["Fn::Join"][1]  # the topic's Ref sits inside the JSON text
    assert {"Ref": topic} in parts
    text = render(job_env)
    assert f'"{names.NOTIFY_TOPIC_ENV}":"<{topic}>"' in text
    # the launcher's own role may not publish: it only starts jobs
    launcher_role = stack.processing.launcher.role
    assert isinstance(launcher_role, Construct)
    launcher = statements(template, logical_id(stack, launcher_role))
    assert [s for s in launcher if s["Action"] == "sns:Publish"] == []
