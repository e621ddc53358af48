"""Nothing is lost silently: every Lambda and every EventBridge rule target dead-letters into the one encrypted
queue, which EventBridge (of this account, from these rules only) may write to."""

from __future__ import annotations

import json
import re
from typing import Any

from infra.stack import CapacityForecasterStack
from tests.infra.template_tools import logical_id


def of_type(template_json: dict[str, Any], cfn_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == cfn_type}


def test_every_rule_target_dead_letters_into_the_queue(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    queue = {"Fn::GetAtt": [logical_id(stack, stack.pipeline.dead_letters), "Arn"]}
    rules = of_type(template_json, "AWS::Events::Rule")
    assert len(rules) == 5  # etl (schedule and uploads), risk, training launch, training failed (no demo)
    for rule_id, rule in rules.items():
        for target in rule["Properties"]["Targets"]:
            assert target["DeadLetterConfig"] == {"Arn": queue}, rule_id


def test_every_function_dead_letters_into_the_queue(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    queue = {"Fn::GetAtt": [logical_id(stack, stack.pipeline.dead_letters), "Arn"]}
    # CloudFormation calls custom resource providers synchronously (CDK's LogRetention, the views' Provider
    # framework), and the framework calls its handler synchronously: no events to lose there
    providers = {
        r["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
        for r in template_json["Resources"].values()
        if r["Type"].startswith("Custom::")
    }
    handlers = {
        ref
        for name in providers
        for ref in re.findall(r'"Ref": "([A-Za-z0-9]+)"', json.dumps(template_json["Resources"][name]["Properties"]))
        if template_json["Resources"].get(ref, {}).get("Type") == "AWS::Lambda::Function"
    }
    handlers |= {
        arn["Fn::GetAtt"][0]
        for name in providers
        for arn in template_json["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {}).values()
        if isinstance(arn, dict) and "Fn::GetAtt" in arn
    }
    functions = set(of_type(template_json, "AWS::Lambda::Function")) - providers - handlers
    configs = {
        c["Properties"]["FunctionName"]["Ref"]: c["Properties"]
        for c in of_type(template_json, "AWS::Lambda::EventInvokeConfig").values()
    }
    assert set(configs) == functions  # every function, the launcher included
    for config in configs.values():
        assert config["DestinationConfig"] == {"OnFailure": {"Destination": queue}}
        assert config["MaximumRetryAttempts"] == 2


def test_queue_admits_eventbridge_only_from_this_stacks_rules(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    queue_id = logical_id(stack, stack.pipeline.dead_letters)
    (policy,) = [
        p
        for p in of_type(template_json, "AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    ]
    allowed = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    rules = set(of_type(template_json, "AWS::Events::Rule"))
    assert {s["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::GetAtt"][0] for s in allowed} == rules
    for statement in allowed:
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"


def test_queue_key_lets_eventbridge_of_this_account_encrypt(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    key = template_json["Resources"][logical_id(stack, stack.pipeline.key)]
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    (events,) = [s for s in statements if s.get("Principal") == {"Service": "events.amazonaws.com"}]
    assert sorted(events["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert events["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
