"""A small IAM evaluator: recorded AWS calls -> IAM requests -> allowed or denied by the synthesized policies.

Enough of IAM's evaluation logic to check a stack's own calls in one account: an explicit ``Deny`` in any
applicable policy wins; otherwise a role needs an ``Allow`` from its identity policies or from the resource
policy naming it (S3, SNS), and for KMS the key policy must allow it too (directly, or by allowing the account,
which hands the decision to the identity policies). A service principal (``cloudwatch.amazonaws.com``) is allowed
only by the resource policy. Actions match case-insensitively with ``*``/``?`` wildcards, resources
case-sensitively; conditions: String*, Arn*, Bool, Numeric*, Null, with ``...IfExists`` and missing keys as IAM
treats them. Every call is assumed to be made over TLS 1.3.

:func:`requests_for` maps one recorded call (service, operation, params, response facts) to the IAM requests it
needs; a call it does not know raises :class:`UnmappedCall`, so a new kind of call cannot pass unchecked. An
Athena statement also needs what Athena does with the caller's permissions (Glue for a view's DDL, the result
written to the workgroup's location): those requests are modelled from the statement and the workgroup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Statement = Mapping[str, Any]
BASIC_EXECUTION_ROLE = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
AWS_MANAGED: dict[str, list[Statement]] = {
    BASIC_EXECUTION_ROLE: [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        }
    ]
}
"""The AWS managed policies the evaluator knows (by their ARN in the aws partition)."""


class UnmappedCall(Exception):
    """A recorded call whose IAM actions the evaluator does not know."""


@dataclass(frozen=True)
class Request:
    """One IAM authorisation: who, which action, on which resource, with which condition keys."""

    principal: str
    """A role ARN, or a service principal such as ``cloudwatch.amazonaws.com``."""
    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)
    call: str = ""
    """The recorded call this request comes from (for messages)."""

    @property
    def is_service(self) -> bool:
        return not self.principal.startswith("arn:")


@dataclass(frozen=True)
class Decision:
    request: Request
    allowed: bool
    reason: str

    def __str__(self) -> str:
        verdict = "ALLOWED" if self.allowed else "DENIED"
        return f"{verdict} {self.request.principal} {self.request.action} {self.request.resource}: {self.reason}"


# ----------------------------------------------------------------------------------------------- matching


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _glob(pattern: str, value: str, *, ignore_case: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _matches_any(patterns: Any, value: str, *, ignore_case: bool) -> bool:
    return any(_glob(str(p), value, ignore_case=ignore_case) for p in _as_list(patterns))


def action_matches(statement: Statement, action: str) -> bool:
    if "NotAction" in statement:
        return not _matches_any(statement["NotAction"], action, ignore_case=True)
    return _matches_any(statement.get("Action"), action, ignore_case=True)


def resource_matches(statement: Statement, resource: str) -> bool:
    if "NotResource" in statement:
        return not _matches_any(statement["NotResource"], resource, ignore_case=False)
    return _matches_any(statement.get("Resource", "*"), resource, ignore_case=False)


def principal_kind(statement: Statement, principal: str, account: str) -> str | None:
    """How a resource policy statement names ``principal``: "direct", "account" (the account root), or None."""
    if "NotPrincipal" in statement:
        raise UnmappedCall(f"NotPrincipal is not supported by this evaluator: {statement}")
    named = statement.get("Principal")
    if named == "*":
        return "direct"
    if not isinstance(named, Mapping):
        return None
    if any(p == "*" for p in _as_list(named.get("AWS"))):
        return "direct"
    if not principal.startswith("arn:"):
        return "direct" if principal in _as_list(named.get("Service")) else None
    for entry in _as_list(named.get("AWS")):
        if entry == principal:
            return "direct"
        if entry in (account, f"arn:aws:iam::{account}:root"):
            return "account"
    return None


_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike"}
_NEGATED |= {"NumericNotEquals", "DateNotEquals"}


def _test(operator: str, expected: list[Any], actual: list[Any]) -> bool:
    base = operator
    if base.startswith("String"):
        ignore = base.endswith("IgnoreCase")
        if "Like" in base:
            hit = any(_glob(str(e), str(a), ignore_case=False) for e in expected for a in actual)
        elif ignore:
            hit = any(str(e).lower() == str(a).lower() for e in expected for a in actual)
        else:
            hit = any(str(e) == str(a) for e in expected for a in actual)
        return not hit if base in _NEGATED else hit
    if base.startswith("Arn"):
        hit = any(_glob(str(e), str(a), ignore_case=False) for e in expected for a in actual)
        return not hit if base in _NEGATED else hit
    if base == "Bool":
        return any(str(e).lower() == str(a).lower() for e in expected for a in actual)
    if base.startswith("Numeric"):
        compare = {
            "NumericEquals": float.__eq__,
            "NumericNotEquals": float.__ne__,
            "NumericLessThan": float.__lt__,
            "NumericLessThanEquals": float.__le__,
            "NumericGreaterThan": float.__gt__,
            "NumericGreaterThanEquals": float.__ge__,
        }[base]
        return any(compare(float(a), float(e)) for e in expected for a in actual)
    raise UnmappedCall(f"condition operator {operator} is not supported by this evaluator")


def conditions_match(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, Any]) -> bool:
    """Every operator and key of a statement's Condition block holds for the request's context."""
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, keys in conditions.items():
        op = operator.split(":", 1)[1] if operator.startswith(("ForAnyValue:", "ForAllValues:")) else operator
        if_exists = op.endswith("IfExists")
        op = op.removesuffix("IfExists")
        for key, expected_value in keys.items():
            expected = _as_list(expected_value)
            present = key.lower() in lowered
            if op == "Null":
                if any(str(e).lower() == "true" for e in expected) == present:
                    return False
                continue
            if not present:
                if if_exists or op in _NEGATED:
                    continue
                return False
            if not _test(op, expected, _as_list(lowered[key.lower()])):
                return False
    return True


def statement_applies(statement: Statement, request: Request) -> bool:
    return (
        action_matches(statement, request.action)
        and resource_matches(statement, request.resource)
        and conditions_match(statement.get("Condition") or {}, request.context)
    )


# --------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class ResourcePolicy:
    kind: str
    """s3, kms, sns or sqs: how the policy combines with the identity policies."""
    owner: str
    """The ARN it is attached to (the bucket, key, topic or queue)."""
    statements: tuple[Statement, ...]


@dataclass
class PolicySet:
    """The identity policies of each role and the resource policies, by ARN, of one account."""

    account: str
    identity: dict[str, list[Statement]] = field(default_factory=dict)
    resources: dict[str, ResourcePolicy] = field(default_factory=dict)

    def owner_of(self, resource: str) -> str:
        if resource.startswith("arn:aws:s3:::"):
            return resource.split("/", 1)[0]
        return resource

    def evaluate(self, request: Request) -> Decision:
        identity = [] if request.is_service else self.identity.get(request.principal)
        if identity is None:
            return Decision(request, False, "the principal has no identity policies in the template")
        policy = self.resources.get(self.owner_of(request.resource))
        resource_statements = list(policy.statements) if policy else []
        for index, statement in enumerate(identity):
            if statement.get("Effect") == "Deny" and statement_applies(statement, request):
                return Decision(request, False, f"explicit deny in the identity policy ({_label(statement, index)})")
        for index, statement in enumerate(resource_statements):
            if (
                statement.get("Effect") == "Deny"
                and principal_kind(statement, request.principal, self.account)
                and statement_applies(statement, request)
            ):
                assert policy is not None
                return Decision(
                    request,
                    False,
                    f"explicit deny in the {policy.kind} policy of {policy.owner} ({_label(statement, index)})",
                )
        identity_allow = next(
            (i for i, s in enumerate(identity) if s.get("Effect") == "Allow" and statement_applies(s, request)), None
        )
        kinds = {
            principal_kind(s, request.principal, self.account)
            for s in resource_statements
            if s.get("Effect") == "Allow" and statement_applies(s, request)
        }
        direct, via_account = "direct" in kinds, "account" in kinds
        if request.is_service:
            if direct:
                return Decision(request, True, "allowed by the resource policy")
            where = f"the {policy.kind} policy of {policy.owner}" if policy else "no resource policy"
            return Decision(request, False, f"no statement of {where} allows the service principal")
        if policy is not None and policy.kind == "kms":
            if direct:
                return Decision(request, True, "allowed by the key policy")
            if via_account and identity_allow is not None:
                return Decision(request, True, "the key policy delegates to IAM, which allows it")
            if not via_account:
                return Decision(
                    request, False, f"the key policy of {policy.owner} neither names the role nor the account"
                )
            return Decision(request, False, "no identity policy statement allows it (the key policy delegates to IAM)")
        if identity_allow is not None:
            return Decision(request, True, f"allowed by the identity policy (statement {identity_allow})")
        if direct:
            return Decision(request, True, "allowed by the resource policy")
        return Decision(request, False, "no identity policy statement allows it")


def _label(statement: Statement, index: int) -> str:
    return f"Sid {statement['Sid']}" if statement.get("Sid") else f"statement {index}"


def evaluate_all(policies: PolicySet, requests: Iterable[Request]) -> list[Decision]:
    return [policies.evaluate(r) for r in requests]


# ------------------------------------------------------------------------------------------ call mapping


@dataclass(frozen=True)
class AccountFacts:
    """What mapping a call needs to know about the account: its ids and the keys behind buckets and topics."""

    account: str
    region: str
    bucket_keys: Mapping[str, str] = field(default_factory=dict)
    """Bucket name -> the KMS key ARN of its default encryption (buckets encrypted with a KMS key)."""
    topic_keys: Mapping[str, str] = field(default_factory=dict)
    """Topic ARN -> the KMS key ARN it is encrypted with."""
    workgroup_results: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Athena workgroup name -> (its result location ``s3://bucket/prefix/``, the KMS key ARN of its SSE_KMS
    results or "")."""

    def key_arn(self, key: str) -> str:
        return key if key.startswith("arn:") else f"arn:aws:kms:{self.region}:{self.account}:key/{key}"

    def base_context(self, principal: str) -> dict[str, Any]:
        context: dict[str, Any] = {"aws:SecureTransport": "true", "s3:TlsVersion": "1.3"}
        if principal.startswith("arn:"):
            context |= {"aws:PrincipalArn": principal, "aws:PrincipalAccount": self.account}
        else:
            context |= {"aws:SourceAccount": self.account, "aws:PrincipalServiceName": principal}
        return context


_S3_OBJECT = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "GetObjectTagging": "s3:GetObjectTagging",
    "PutObjectTagging": "s3:PutObjectTagging",
}
_S3_BUCKET = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetBucketLocation": "s3:GetBucketLocation",
    "ListObjectVersions": "s3:ListBucketVersions",
}
_GLOBAL = {
    ("cloudwatch", "PutMetricData"),
    ("cloudwatch", "GetMetricData"),
    ("cloudwatch", "GetMetricStatistics"),
    ("cloudwatch", "ListMetrics"),
    ("ec2", "DescribeInstances"),
    ("ec2", "DescribeRegions"),
    ("ec2", "DescribeTags"),
    ("xray", "PutTraceSegments"),
    ("xray", "PutTelemetryRecords"),
}
"""Calls on actions without resource-level permissions (the resource is ``*``)."""
_UNAUTHORISED = {("sts", "GetCallerIdentity")}
"""Calls that need no permission."""
_ATHENA = {"StartQueryExecution", "GetQueryExecution", "StopQueryExecution", "GetQueryResults", "GetWorkGroup"}
"""Athena calls authorised on the workgroup (the one a query execution was started in)."""
_VIEW_DDL = re.compile(
    r'^(?P<verb>CREATE(?:\s+OR\s+REPLACE)?\s+VIEW|DROP\s+VIEW(?:\s+IF\s+EXISTS)?)\s+"?(?P<name>[A-Za-z0-9_]+)"?',
    re.IGNORECASE,
)


def _s3_kms(
    facts: AccountFacts, principal: str, call: Mapping[str, Any], bucket: str, actions: Sequence[str], label: str
) -> list[Request]:
    """The KMS requests S3 makes on the caller's behalf for an object encrypted with a KMS key."""
    params, response = call.get("params") or {}, call.get("response") or {}
    sse = params.get("ServerSideEncryption") or response.get("ServerSideEncryption")
    key = params.get("SSEKMSKeyId") or response.get("SSEKMSKeyId")
    if sse in (None, "") and bucket in facts.bucket_keys:
        sse, key = "aws:kms", key or facts.bucket_keys[bucket]
    if sse not in ("aws:kms", "aws:kms:dsse"):
        return []
    if not key:
        key = facts.bucket_keys.get(bucket)
    if not key:
        raise UnmappedCall(f"{label}: SSE-KMS with the AWS managed key, which the evaluator does not model")
    context = facts.base_context(principal) | {
        "kms:ViaService": f"s3.{facts.region}.amazonaws.com",
        "kms:CallerAccount": facts.account,
    }
    return [Request(principal, a, facts.key_arn(str(key)), context, label) for a in actions]


def requests_for(call: Mapping[str, Any], principal: str, facts: AccountFacts) -> list[Request]:
    """The IAM requests one recorded call needs (empty for calls that need none)."""
    service, operation = str(call.get("service")), str(call.get("operation"))
    params: Mapping[str, Any] = call.get("params") or {}
    label = f"{service}.{operation} {_describe(params)}".strip()
    context = facts.base_context(principal)
    if (service, operation) in _UNAUTHORISED:
        return []
    if (service, operation) in _GLOBAL:
        namespace = {"cloudwatch:namespace": params["Namespace"]} if params.get("Namespace") else {}
        return [Request(principal, f"{service}:{operation}", "*", context | namespace, label)]
    if service == "s3":
        bucket = str(params.get("Bucket", ""))
        if not bucket:
            raise UnmappedCall(f"{label}: an S3 call without a bucket")
        bucket_arn = f"arn:aws:s3:::{bucket}"
        if operation in _S3_BUCKET:
            extra: dict[str, Any] = {}
            if operation in ("ListObjectsV2", "ListObjects", "ListObjectVersions"):
                extra["s3:prefix"] = params.get("Prefix", "")
                if "Delimiter" in params:
                    extra["s3:delimiter"] = params["Delimiter"]
                if "MaxKeys" in params:
                    extra["s3:max-keys"] = str(params["MaxKeys"])
            return [Request(principal, _S3_BUCKET[operation], bucket_arn, context | extra, label)]
        if operation == "DeleteObjects":
            keys = [o["Key"] for o in (params.get("Delete") or {}).get("Objects", [])]
            return [Request(principal, "s3:DeleteObject", f"{bucket_arn}/{k}", context, label) for k in keys]
        if operation == "CopyObject":
            source = params.get("CopySource")
            if isinstance(source, Mapping):
                src_bucket, src_key = str(source["Bucket"]), str(source["Key"])
            else:
                src_bucket, _, src_key = str(source).lstrip("/").partition("/")
            out = [Request(principal, "s3:GetObject", f"arn:aws:s3:::{src_bucket}/{src_key}", context, label)]
            out += _s3_kms(facts, principal, {"params": {}}, src_bucket, ["kms:Decrypt"], label)
            out.append(Request(principal, "s3:PutObject", f"{bucket_arn}/{params['Key']}", context, label))
            return out + _s3_kms(facts, principal, call, bucket, ["kms:GenerateDataKey"], label)
        if operation in _S3_OBJECT:
            resource = f"{bucket_arn}/{params.get('Key', '')}"
            extra = {}
            if operation in ("PutObject", "CreateMultipartUpload"):
                if params.get("ServerSideEncryption"):
                    extra["s3:x-amz-server-side-encryption"] = params["ServerSideEncryption"]
                if params.get("SSEKMSKeyId"):
                    extra["s3:x-amz-server-side-encryption-aws-kms-key-id"] = params["SSEKMSKeyId"]
            out = [Request(principal, _S3_OBJECT[operation], resource, context | extra, label)]
            kms_actions = {
                "GetObject": ["kms:Decrypt"],
                "PutObject": ["kms:GenerateDataKey"],
                "CreateMultipartUpload": ["kms:GenerateDataKey", "kms:Decrypt"],
            }.get(operation)
            if kms_actions:
                out += _s3_kms(facts, principal, call, bucket, kms_actions, label)
            return out
        raise UnmappedCall(f"{label}: no IAM mapping for S3 {operation}")
    if service == "sns" and operation == "Publish":
        topic = str(params.get("TopicArn") or params.get("TargetArn") or "")
        out = [Request(principal, "sns:Publish", topic, context, label)]
        if topic in facts.topic_keys:
            via = context | {"kms:ViaService": f"sns.{facts.region}.amazonaws.com", "kms:CallerAccount": facts.account}
            out += [
                Request(principal, a, facts.topic_keys[topic], via, label)
                for a in ("kms:GenerateDataKey", "kms:Decrypt")
            ]
        return out
    if service == "sagemaker" and operation in ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob"):
        name = str(params.get("TrainingJobName", ""))
        job = f"arn:aws:sagemaker:{facts.region}:{facts.account}:training-job/{name.lower()}"
        out = [Request(principal, f"sagemaker:{operation}", job, context, label)]
        if operation == "CreateTrainingJob":
            if params.get("Tags"):
                out.append(Request(principal, "sagemaker:AddTags", job, context, label))
            role = str(params.get("RoleArn", ""))
            passed = context | {"iam:PassedToService": "sagemaker.amazonaws.com"}
            out.append(Request(principal, "iam:PassRole", role, passed, label))
        return out
    if service == "kms" and operation in ("Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey"):
        key = str(params.get("KeyId") or (call.get("response") or {}).get("KeyId") or "")
        if not key:
            raise UnmappedCall(f"{label}: a KMS call without a key id")
        return [Request(principal, f"kms:{operation}", facts.key_arn(key), context, label)]
    if service == "athena" and operation in _ATHENA:
        return _athena(facts, principal, call, label)
    raise UnmappedCall(f"{label}: no IAM mapping for {service} {operation}")


def _athena(facts: AccountFacts, principal: str, call: Mapping[str, Any], label: str) -> list[Request]:
    """An Athena call on its workgroup; for a statement it starts, also what Athena then does with the caller's
    permissions: the Glue catalog calls of a view's DDL (the only statements this evaluator knows: any other
    is unmapped, so it cannot pass without its table reads) and the result written to the workgroup's result
    location (``<query id>.txt``, with the workgroup's KMS key)."""
    params, response = call.get("params") or {}, call.get("response") or {}
    operation = str(call.get("operation"))
    workgroup = str(params.get("WorkGroup") or ("primary" if operation == "StartQueryExecution" else ""))
    if not workgroup:
        raise UnmappedCall(f"{label}: the query execution's workgroup is unknown")
    context = facts.base_context(principal)
    arn = f"arn:aws:athena:{facts.region}:{facts.account}:workgroup/{workgroup}"
    out = [Request(principal, f"athena:{operation}", arn, context, label)]
    if operation != "StartQueryExecution":
        return out
    ddl = _VIEW_DDL.match(str(params.get("QueryString", "")))
    database = str((params.get("QueryExecutionContext") or {}).get("Database") or "default")
    if ddl is None:
        raise UnmappedCall(f"{label}: only view DDL statements are mapped, not {params.get('QueryString')!r}")
    glue = f"arn:aws:glue:{facts.region}:{facts.account}"
    database_arns = (f"{glue}:catalog", f"{glue}:database/{database}")
    table_arns = (*database_arns, f"{glue}:table/{database}/{ddl['name'].lower()}")
    # CREATE OR REPLACE creates the view's Glue table or updates it, whichever it finds: both are asked for.
    changes = ("glue:CreateTable", "glue:UpdateTable") if ddl["verb"].upper().startswith("CREATE") else ()
    table_actions = ("glue:GetTable", *(changes or ("glue:DeleteTable",)))
    out += [Request(principal, "glue:GetDatabase", r, context, label) for r in database_arns]
    out += [Request(principal, a, r, context, label) for a in table_actions for r in table_arns]
    if workgroup not in facts.workgroup_results:
        raise UnmappedCall(f"{label}: workgroup {workgroup} has no result location in the template")
    location, key = facts.workgroup_results[workgroup]
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    query_id = str(response.get("QueryExecutionId") or "")
    if not query_id:
        raise UnmappedCall(f"{label}: no query execution id in the response")
    sse = {"s3:x-amz-server-side-encryption": "aws:kms"} if key else {}
    out.append(Request(principal, "s3:GetBucketLocation", f"arn:aws:s3:::{bucket}", context, label))
    out.append(
        Request(principal, "s3:PutObject", f"arn:aws:s3:::{bucket}/{prefix}{query_id}.txt", context | sse, label)
    )
    if key:
        via = context | {"kms:ViaService": f"s3.{facts.region}.amazonaws.com", "kms:CallerAccount": facts.account}
        out.append(Request(principal, "kms:GenerateDataKey", facts.key_arn(key), via, label))
    return out


def _describe(params: Mapping[str, Any]) -> str:
    names = ("Bucket", "Key", "Prefix", "TopicArn", "TrainingJobName", "WorkGroup", "QueryExecutionId")
    parts = [f"{k}={params[k]}" for k in names if k in params]
    return " ".join(parts)
