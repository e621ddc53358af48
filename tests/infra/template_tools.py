"""Helpers to read the synthesized template: logical ids, rendered values, a role's statements and S3 access."""

from __future__ import annotations

import re
from typing import Any

import aws_cdk as cdk
from constructs import Construct


def logical_id(stack: cdk.Stack, construct: Construct) -> str:
    element = construct.node.default_child or construct
    assert isinstance(element, cdk.CfnElement)
    return str(stack.resolve(element.logical_id))


def render(value: Any) -> str:
    """A template value as text: ``{"Fn::GetAtt": [id, "Arn"]}`` -> ``<id.Arn>``, ``{"Ref": id}`` -> ``<id>``."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(render(p) for p in parts)
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if "Fn::Sub" in value:
        return str(value["Fn::Sub"])
    if "Ref" in value:
        return f"<{value['Ref']}>"
    raise AssertionError(f"unexpected template value {value!r}")


def statements(template_json: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to the role."""
    found = []
    for resource in template_json["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"]["Roles"]:
            found += resource["Properties"]["PolicyDocument"]["Statement"]
    return found


def s3_object_access(template_json: dict[str, Any], role_id: str, bucket_id: str) -> dict[str, set[str]]:
    """Object action -> the lake prefixes it is allowed on (``raw/`` for ``<bucket>/raw/*``)."""
    access: dict[str, set[str]] = {}
    for statement in statements(template_json, role_id):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in map(render, resources):
            match = re.fullmatch(rf"<{bucket_id}\.Arn>/(.+)\*", resource)
            if match:
                for action in actions:
                    access.setdefault(action, set()).add(match[1])
    return access
