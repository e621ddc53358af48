"""The synthesized template on a moto server: its resources created there, its intrinsics resolved to them.

:func:`provision` creates, for each KMS key, IAM role, SQS queue, SNS topic, S3 bucket, Athena workgroup and Glue
database of the template, the same resource on moto (with the template's name where it sets one, the bucket's
default encryption, the topic's key and the workgroup's result location), and returns a :class:`Resolver` that
turns ``Ref``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Sub``, ``Fn::Select``, ``Fn::Split`` and the pseudo parameters
into those physical names. Resources moto is not asked to
create (functions, alarms, rules...) get deterministic names and ARNs. :func:`policy_set` collects the identity
and resource policies of the template, resolved, for :mod:`tests.cloud.iam`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.cloud.iam import AWS_MANAGED, AccountFacts, PolicySet, ResourcePolicy

ACCOUNT = "123456789012"
"""moto's default account."""
REGION = "us-east-1"
STACK = "CapacityForecaster"


def _service_of(resource_type: str) -> str:
    return resource_type.split("::")[1].lower()


@dataclass
class Resolver:
    """Intrinsic functions of one template, resolved to the physical names on moto."""

    template: Mapping[str, Any]
    account: str = ACCOUNT
    region: str = REGION
    stack: str = STACK
    refs: dict[str, str] = field(default_factory=dict)
    attrs: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        return dict(self.template.get("Resources", {}))

    def pseudo(self) -> dict[str, str]:
        return {
            "AWS::AccountId": self.account,
            "AWS::Region": self.region,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account}:stack/{self.stack}/0",
        }

    def ref(self, name: str) -> str:
        pseudo = self.pseudo()
        if name in pseudo:
            return pseudo[name]
        if name in self.refs:
            return self.refs[name]
        parameter = self.template.get("Parameters", {}).get(name)
        if parameter is not None and "Default" in parameter:
            return str(parameter["Default"])
        raise KeyError(f"Ref {name}: not a provisioned resource, parameter or pseudo parameter")

    def get_att(self, name: str, attribute: str) -> str:
        if (name, attribute) in self.attrs:
            return self.attrs[(name, attribute)]
        raise KeyError(f"Fn::GetAtt {name}.{attribute}: unknown attribute")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((fn, arg),) = value.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attribute)
            if fn == "Fn::Join":
                separator, parts = arg
                return str(separator).join(str(self.resolve(p)) for p in self.resolve(parts))
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return self._sub(text, variables)
            if fn == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if fn == "Fn::Split":
                separator, text = arg
                return str(self.resolve(text)).split(separator)
            if fn.startswith("Fn::"):
                raise KeyError(f"{fn} is not resolved by this harness")
        return {k: self.resolve(v) for k, v in value.items()}

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".", 1)[0] in self.resources:
                return self.get_att(*name.split(".", 1))
            return self.ref(name)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def logical_id_of(self, physical: str) -> str | None:
        """The logical id whose Ref or an attribute is ``physical``."""
        for name, value in self.refs.items():
            if value == physical:
                return name
        for (name, _), value in self.attrs.items():
            if value == physical:
                return name
        return None

    def of_type(self, resource_type: str) -> dict[str, Mapping[str, Any]]:
        return {k: r for k, r in self.resources.items() if r.get("Type") == resource_type}

    def arn(self, name: str) -> str:
        return self.get_att(name, "Arn")

    def role_of(self, function: str) -> str:
        """The logical id of a function's role (its Role property)."""
        role = self.resolve(self.resources[function]["Properties"]["Role"])
        name = self.logical_id_of(str(role))
        if name is None:
            raise KeyError(f"{function}: its role {role} is not a role of the template")
        return name


def _default_name(stack: str, logical_id: str, limit: int = 64) -> str:
    return f"{stack}-{logical_id}"[:limit]


def provision(template: Mapping[str, Any], clients: Mapping[str, Any]) -> Resolver:
    """Create the template's keys, roles, queues, topics, buckets, Athena workgroups and Glue databases on moto;
    the resolver to their names.

    ``clients``: boto3 clients on the moto server by service name (kms, iam, sqs, sns, s3, athena, glue).
    """
    resolver = Resolver(template)
    account, region = resolver.account, resolver.region
    for name, resource in resolver.resources.items():  # deterministic names for everything not created below
        service = _service_of(resource["Type"])
        physical = _default_name(resolver.stack, name)
        resolver.refs[name] = physical
        resolver.attrs[(name, "Arn")] = f"arn:aws:{service}:{region}:{account}:{physical}"
        if resource["Type"] == "AWS::Lambda::Function":
            resolver.attrs[(name, "Arn")] = f"arn:aws:lambda:{region}:{account}:function:{physical}"
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            resolver.attrs[(name, "Arn")] = f"arn:aws:cloudwatch:{region}:{account}:alarm:{physical}"
    for name, resource in resolver.of_type("AWS::KMS::Key").items():
        props = resource.get("Properties", {})
        key = clients["kms"].create_key(Description=str(props.get("Description", name)))["KeyMetadata"]
        resolver.refs[name], resolver.attrs[(name, "Arn")] = key["KeyId"], key["Arn"]
        resolver.attrs[(name, "KeyId")] = key["KeyId"]
    for name, resource in resolver.of_type("AWS::IAM::Role").items():
        props = resource.get("Properties", {})
        role_name = str(resolver.resolve(props.get("RoleName") or _default_name(resolver.stack, name)))
        trust = json.dumps(resolver.resolve(props.get("AssumeRolePolicyDocument", {})))
        role = clients["iam"].create_role(RoleName=role_name, AssumeRolePolicyDocument=trust)["Role"]
        resolver.refs[name], resolver.attrs[(name, "Arn")] = role_name, role["Arn"]
        resolver.attrs[(name, "RoleId")] = role["RoleId"]
    for name, resource in resolver.of_type("AWS::SQS::Queue").items():
        props = resource.get("Properties", {})
        queue_name = str(resolver.resolve(props.get("QueueName") or _default_name(resolver.stack, name, 80)))
        url = clients["sqs"].create_queue(QueueName=queue_name)["QueueUrl"]
        resolver.refs[name], resolver.attrs[(name, "QueueName")] = url, queue_name
        resolver.attrs[(name, "Arn")] = f"arn:aws:sqs:{region}:{account}:{queue_name}"
    for name, resource in resolver.of_type("AWS::SNS::Topic").items():
        props = resource.get("Properties", {})
        topic_name = str(resolver.resolve(props.get("TopicName") or _default_name(resolver.stack, name, 256)))
        attributes = (
            {"KmsMasterKeyId": str(resolver.resolve(props["KmsMasterKeyId"]))} if "KmsMasterKeyId" in props else {}
        )
        arn = clients["sns"].create_topic(Name=topic_name, Attributes=attributes)["TopicArn"]
        resolver.refs[name], resolver.attrs[(name, "TopicName")] = arn, topic_name
        resolver.attrs[(name, "TopicArn")] = arn
    for name, resource in resolver.of_type("AWS::S3::Bucket").items():
        props = resource.get("Properties", {})
        bucket = str(resolver.resolve(props.get("BucketName") or _default_name(resolver.stack, name).lower()))
        clients["s3"].create_bucket(Bucket=bucket)
        if "BucketEncryption" in props:
            rules = [
                {
                    "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                    **({"BucketKeyEnabled": rule["BucketKeyEnabled"]} if "BucketKeyEnabled" in rule else {}),
                }
                for rule in resolver.resolve(props["BucketEncryption"])["ServerSideEncryptionConfiguration"]
            ]
            clients["s3"].put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})
        resolver.refs[name], resolver.attrs[(name, "Arn")] = bucket, f"arn:aws:s3:::{bucket}"
        resolver.attrs[(name, "DomainName")] = f"{bucket}.s3.amazonaws.com"
    for name, resource in resolver.of_type("AWS::Athena::WorkGroup").items():
        props = resolver.resolve(resource.get("Properties", {}))
        results = (props.get("WorkGroupConfiguration") or {}).get("ResultConfiguration") or {}
        encryption = results.get("EncryptionConfiguration") or {}
        configuration = {
            "ResultConfiguration": {
                **({"OutputLocation": results["OutputLocation"]} if "OutputLocation" in results else {}),
                **({"EncryptionConfiguration": encryption} if encryption else {}),
            }
        }
        clients["athena"].create_work_group(Name=props["Name"], Configuration=configuration)
        resolver.refs[name] = props["Name"]
        resolver.attrs[(name, "Arn")] = f"arn:aws:athena:{region}:{account}:workgroup/{props['Name']}"
    for name, resource in resolver.of_type("AWS::Glue::Database").items():
        database = resolver.resolve(resource.get("Properties", {}))["DatabaseInput"]
        clients["glue"].create_database(DatabaseInput=database)
        resolver.refs[name] = database["Name"]
    return resolver


def account_facts(resolver: Resolver) -> AccountFacts:
    """The account's ids, which KMS key encrypts each bucket (by default) and each topic, and where each Athena
    workgroup writes its results."""
    bucket_keys, topic_keys, workgroups = {}, {}, {}
    for name, resource in resolver.of_type("AWS::S3::Bucket").items():
        rules = resolver.resolve(resource.get("Properties", {}).get("BucketEncryption", {})).get(
            "ServerSideEncryptionConfiguration", []
        )
        for rule in rules:
            default = rule.get("ServerSideEncryptionByDefault", {})
            if default.get("SSEAlgorithm") in ("aws:kms", "aws:kms:dsse") and default.get("KMSMasterKeyID"):
                bucket_keys[resolver.ref(name)] = str(default["KMSMasterKeyID"])
    for name, resource in resolver.of_type("AWS::SNS::Topic").items():
        key = resource.get("Properties", {}).get("KmsMasterKeyId")
        if key is not None:
            topic_keys[resolver.ref(name)] = str(resolver.resolve(key))
    for _, resource in resolver.of_type("AWS::Athena::WorkGroup").items():
        props = resolver.resolve(resource.get("Properties", {}))
        results = (props.get("WorkGroupConfiguration") or {}).get("ResultConfiguration") or {}
        if "OutputLocation" in results:
            encryption = results.get("EncryptionConfiguration") or {}
            key = str(encryption.get("KmsKey", "")) if encryption.get("EncryptionOption") == "SSE_KMS" else ""
            location = str(results["OutputLocation"])
            workgroups[str(props["Name"])] = (location if location.endswith("/") else location + "/", key)
    return AccountFacts(resolver.account, resolver.region, bucket_keys, topic_keys, workgroups)


def role_statements(resolver: Resolver, role: str) -> list[Mapping[str, Any]]:
    """Every identity policy statement of the role ``role`` (logical id): its inline policies, the
    AWS::IAM::Policy and AWS::IAM::ManagedPolicy resources attached to it, and the AWS managed policies known
    to the evaluator (others are left out: they could only allow more)."""
    props = resolver.resources[role].get("Properties", {})
    statements: list[Mapping[str, Any]] = []
    for policy in props.get("Policies", []):
        statements += _statements(resolver.resolve(policy["PolicyDocument"]))
    for arn in resolver.resolve(props.get("ManagedPolicyArns", [])):
        statements += AWS_MANAGED.get(arn, [])
    for policy_type in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for name, resource in resolver.of_type(policy_type).items():
            policy_props = resource.get("Properties", {})
            roles = policy_props.get("Roles", [])
            managed_here = {"Ref": name} in props.get("ManagedPolicyArns", [])
            if {"Ref": role} in roles or managed_here:
                statements += _statements(resolver.resolve(policy_props["PolicyDocument"]))
    return statements


def _statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statement = document.get("Statement", [])
    return list(statement) if isinstance(statement, list) else [statement]


def policy_set(resolver: Resolver) -> PolicySet:
    """The identity policies of every role (by role ARN) and the resource policies of buckets, keys, topics and
    queues (by the resource's ARN), resolved to the moto names."""
    policies = PolicySet(resolver.account)
    for name in resolver.of_type("AWS::IAM::Role"):
        policies.identity[resolver.arn(name)] = role_statements(resolver, name)
    for name, resource in resolver.of_type("AWS::KMS::Key").items():
        document = resolver.resolve(resource.get("Properties", {}).get("KeyPolicy", {}))
        policies.resources[resolver.arn(name)] = ResourcePolicy("kms", resolver.arn(name), tuple(_statements(document)))
    for _, resource in resolver.of_type("AWS::S3::BucketPolicy").items():
        props = resolver.resolve(resource["Properties"])
        owner = f"arn:aws:s3:::{props['Bucket']}"
        policies.resources[owner] = ResourcePolicy("s3", owner, tuple(_statements(props["PolicyDocument"])))
    for policy_type, kind, key in (
        ("AWS::SNS::TopicPolicy", "sns", "Topics"),
        ("AWS::SQS::QueuePolicy", "sqs", "Queues"),
    ):
        for _, resource in resolver.of_type(policy_type).items():
            props = resolver.resolve(resource["Properties"])
            for target in props[key]:
                owner = target if kind == "sns" else _queue_arn(resolver, target)
                existing = policies.resources.get(owner)
                statements = (existing.statements if existing else ()) + tuple(_statements(props["PolicyDocument"]))
                policies.resources[owner] = ResourcePolicy(kind, owner, statements)
    return policies


def _queue_arn(resolver: Resolver, url: str) -> str:
    name = resolver.logical_id_of(url)
    return resolver.arn(name) if name else url
