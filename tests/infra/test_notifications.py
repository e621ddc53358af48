"""CDK assertions on notifications: the encrypted topic, failed training jobs, alarm actions, the risk Lambda."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra import names
from infra.settings import SettingsError, StackSettings
from infra.stack import CapacityForecasterStack
from tests.infra.template_tools import logical_id, statements
from tests.lambda_modules import load_handler


@pytest.fixture(scope="module")
def ids(stack: CapacityForecasterStack) -> dict[str, str]:
    notifications = stack.notifications
    found = {
        "topic": logical_id(stack, notifications.topic),
        "key": logical_id(stack, notifications.key),
        "rule": logical_id(stack, notifications.training_failed),
    }
    for name, fn in [*stack.pipeline.functions.items(), ("launcher", stack.training.launcher)]:
        assert fn.role is not None
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


def test_every_alarm_notifies_the_topic(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    alarms = [r["Properties"] for r in template_json["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    default_functions = set(names.HANDLER_COMMANDS) - names.OPTIONAL_FUNCTIONS
    assert len(alarms) == len(default_functions) + 2  # each data Lambda, the dead letters, the launcher
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": ids["topic"]}]


def test_risk_lambda_is_told_the_topic_and_alone_may_publish(
    template_json: dict[str, Any], ids: dict[str, str]
) -> None:
    env = template_json["Resources"][ids["risk"]]["Properties"]["Environment"]["Variables"]
    assert env[names.NOTIFY_TOPIC_ENV] == {"Ref": ids["topic"]}
    for name in ("generate", "etl", "risk", "launcher"):
        publish = [s for s in statements(template_json, ids[f"{name}-role"]) if s["Action"] == "sns:Publish"]
        if name == "risk":
            assert [s["Resource"] for s in publish] == [{"Ref": ids["topic"]}]
        else:
            assert publish == []


def test_handler_reads_the_variable_the_stack_sets() -> None:
    module = load_handler("risk")
    assert module.NOTIFY_TOPIC_ENV == names.NOTIFY_TOPIC_ENV


def test_topic_arn_is_a_stack_output(template: Template, ids: dict[str, str]) -> None:
    template.has_output(names.OUTPUT_ALERTS_TOPIC, {"Value": {"Ref": ids["topic"]}})


def test_no_email_subscription_unless_asked(template: Template) -> None:
    template.resource_count_is("AWS::SNS::Subscription", 0)


@pytest.mark.parametrize("value", ["ops", "ops@", "a b@example.com"])
def test_alert_email_is_validated(value: str) -> None:
    with pytest.raises(SettingsError, match="alert_email"):
        StackSettings(alert_email=value)
    assert StackSettings(alert_email="capacity@example.com").alert_email == "capacity@example.com"
