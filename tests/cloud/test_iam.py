"""The IAM evaluator on hand-made policies: what it allows and denies, and why (no moto, no synth)."""

from __future__ import annotations

import pytest

from tests.cloud.iam import (
    AccountFacts,
    PolicySet,
    Request,
    ResourcePolicy,
    UnmappedCall,
    conditions_match,
    requests_for,
)

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/etl"
BUCKET = "arn:aws:s3:::lake"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/k1"
FACTS = AccountFacts(ACCOUNT, "us-east-1", bucket_keys={"lake": KEY})
TLS_ONLY = {
    "Effect": "Deny",
    "Principal": {"AWS": "*"},
    "Action": "s3:*",
    "Resource": [BUCKET, f"{BUCKET}/*"],
    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
}
ACCOUNT_KEY_POLICY = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*"}


def policies(*identity: dict, bucket: tuple = (TLS_ONLY,), key: tuple = (ACCOUNT_KEY_POLICY,)) -> PolicySet:
    out = PolicySet(ACCOUNT, identity={ROLE: list(identity)})
    out.resources[BUCKET] = ResourcePolicy("s3", BUCKET, bucket)
    out.resources[KEY] = ResourcePolicy("kms", KEY, tuple({**s, "Resource": "*"} for s in key))
    return out


def request(action: str, resource: str, **context: str) -> Request:
    return Request(ROLE, action, resource, FACTS.base_context(ROLE) | context)


def test_wildcards_match_actions_without_case_and_resources_with_it() -> None:
    allow = {"Effect": "Allow", "Action": "S3:Get*", "Resource": f"{BUCKET}/raw/*"}
    assert policies(allow).evaluate(request("s3:GetObject", f"{BUCKET}/raw/a.csv")).allowed
    assert not policies(allow).evaluate(request("s3:GetObject", f"{BUCKET}/RAW/a.csv")).allowed
    assert not policies(allow).evaluate(request("s3:PutObject", f"{BUCKET}/raw/a.csv")).allowed


def test_an_explicit_deny_wins_over_an_allow() -> None:
    allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    deny = {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": f"{BUCKET}/curated/*"}
    decision = policies(allow, deny).evaluate(request("s3:DeleteObject", f"{BUCKET}/curated/x"))
    assert not decision.allowed and "explicit deny" in decision.reason
    tls = {"Effect": "Deny", **{k: v for k, v in TLS_ONLY.items() if k != "Effect"}}
    plain = Request(ROLE, "s3:GetObject", f"{BUCKET}/a", FACTS.base_context(ROLE) | {"aws:SecureTransport": "false"})
    assert not policies(allow, bucket=(tls,)).evaluate(plain).allowed
    assert policies(allow, bucket=(tls,)).evaluate(request("s3:GetObject", f"{BUCKET}/a")).allowed


def test_listing_is_scoped_by_the_prefix_condition() -> None:
    listing = {
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": BUCKET,
        "Condition": {"StringLike": {"s3:prefix": ["raw/*"]}},
    }
    call = {"service": "s3", "operation": "ListObjectsV2", "params": {"Bucket": "lake", "Prefix": "raw/uploads/"}}
    (allowed,) = requests_for(call, ROLE, FACTS)
    assert policies(listing).evaluate(allowed).allowed
    other = {**call, "params": {"Bucket": "lake", "Prefix": "curated/"}}
    assert not policies(listing).evaluate(requests_for(other, ROLE, FACTS)[0]).allowed
    bare = {**call, "params": {"Bucket": "lake"}}  # no prefix: the StringLike condition's key is missing
    assert not policies(listing).evaluate(requests_for(bare, ROLE, FACTS)[0]).allowed


def test_sse_kms_needs_the_key_through_s3_and_a_key_policy_that_delegates_to_iam() -> None:
    put = {"service": "s3", "operation": "PutObject", "params": {"Bucket": "lake", "Key": "curated/x"}}
    s3_request, kms_request = requests_for(put, ROLE, FACTS)
    assert (s3_request.action, s3_request.resource) == ("s3:PutObject", f"{BUCKET}/curated/x")
    assert (kms_request.action, kms_request.resource) == ("kms:GenerateDataKey", KEY)
    s3_allow = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{BUCKET}/curated/*"}
    via_s3 = {
        "Effect": "Allow",
        "Action": "kms:GenerateDataKey",
        "Resource": KEY,
        "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
    }
    assert policies(s3_allow, via_s3).evaluate(kms_request).allowed
    assert not policies(s3_allow).evaluate(kms_request).allowed  # IAM does not allow it
    assert not policies(s3_allow, via_s3, key=()).evaluate(kms_request).allowed  # the key policy does not delegate
    direct = Request(ROLE, "kms:GenerateDataKey", KEY, FACTS.base_context(ROLE))
    assert not policies(s3_allow, via_s3).evaluate(direct).allowed  # not through S3


def test_a_service_principal_needs_the_resource_policy() -> None:
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:alerts"
    out = PolicySet(ACCOUNT)
    events_only = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sns:Publish"}
    out.resources[topic] = ResourcePolicy("sns", topic, ({**events_only, "Resource": topic},))
    context = FACTS.base_context("cloudwatch.amazonaws.com")
    assert not out.evaluate(Request("cloudwatch.amazonaws.com", "sns:Publish", topic, context)).allowed
    assert out.evaluate(Request("events.amazonaws.com", "sns:Publish", topic, context)).allowed


def test_conditions_follow_iam_for_missing_keys() -> None:
    assert conditions_match({"StringNotEquals": {"aws:SourceAccount": "1"}}, {})
    assert not conditions_match({"StringEquals": {"aws:SourceAccount": "1"}}, {})
    assert conditions_match({"StringEqualsIfExists": {"aws:SourceAccount": "1"}}, {})
    assert conditions_match({"Null": {"s3:prefix": "true"}}, {})
    assert not conditions_match({"NumericLessThan": {"s3:TlsVersion": 1.2}}, {"s3:TlsVersion": "1.3"})
    assert conditions_match(
        {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::lake*"}}, {"AWS:SOURCEARN": "arn:aws:s3:::lake"}
    )


def test_copy_passes_role_and_unknown_calls_are_loud() -> None:
    copy = {
        "service": "s3",
        "operation": "CopyObject",
        "params": {"Bucket": "lake", "Key": "quarantine/files/a", "CopySource": {"Bucket": "lake", "Key": "raw/a"}},
    }
    actions = [(r.action, r.resource) for r in requests_for(copy, ROLE, FACTS)]
    assert actions == [
        ("s3:GetObject", f"{BUCKET}/raw/a"),
        ("kms:Decrypt", KEY),
        ("s3:PutObject", f"{BUCKET}/quarantine/files/a"),
        ("kms:GenerateDataKey", KEY),
    ]
    create = {
        "service": "sagemaker",
        "operation": "CreateTrainingJob",
        "params": {"TrainingJobName": "cf-1", "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/job"},
    }
    pass_role = requests_for(create, ROLE, FACTS)[-1]
    assert pass_role.action == "iam:PassRole" and pass_role.context["iam:PassedToService"] == "sagemaker.amazonaws.com"
    with pytest.raises(UnmappedCall, match="no IAM mapping for S3 PutBucketPolicy"):
        requests_for({"service": "s3", "operation": "PutBucketPolicy", "params": {"Bucket": "lake"}}, ROLE, FACTS)
    with pytest.raises(UnmappedCall, match="dynamodb"):
        requests_for({"service": "dynamodb", "operation": "PutItem", "params": {}}, ROLE, FACTS)
