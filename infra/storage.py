"""The data lake: a KMS key, the lake bucket and its access-log bucket, and prefix-scoped grants."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from capacity_forecaster.access import StageAccess
from infra.names import (
    ABORT_INCOMPLETE_MULTIPART_DAYS,
    ACCESS_LOGS_PREFIX,
    ATHENA_RESULTS_PREFIX,
    KMS_ALIAS,
    LOG_BUCKET_SUFFIX,
    QUARANTINE_PREFIX,
    RAW_PREFIX,
)
from infra.settings import StackSettings

READ_OBJECT_ACTIONS = ("s3:GetObject",)
WRITE_OBJECT_ACTIONS = ("s3:PutObject", "s3:AbortMultipartUpload")
DELETE_OBJECT_ACTIONS = ("s3:DeleteObject",)
KMS_DECRYPT_ACTIONS = ("kms:Decrypt",)
KMS_ENCRYPT_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
"""Writing needs Decrypt too: multipart uploads read back the data key."""


class DataLake(Construct):
    """The lake bucket (versioned, SSE-KMS with a bucket key, TLS only, private, access-logged) and its key.

    Other constructs get access through ``grant_read``/``grant_write``, which are scoped to key prefixes
    (``curated/metrics_daily/``), never to the whole bucket, and let the key be used only through S3.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: StackSettings) -> None:
        super().__init__(scope, construct_id)
        removal = settings.cdk_removal_policy

        self.key = kms.Key(
            self,
            "Key",
            alias=KMS_ALIAS,
            description="Encrypts the Capacity Forecaster data lake and its Athena query results.",
            enable_key_rotation=True,
            removal_policy=removal,
        )

        self.log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            bucket_name=_bucket_name(settings.lake_bucket_prefix, LOG_BUCKET_SUFFIX),
            # S3 server access logging can only deliver to a bucket encrypted with S3-managed keys.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=cdk.Duration.days(settings.access_log_expiration_days),
                    noncurrent_version_expiration=cdk.Duration.days(settings.noncurrent_version_expiration_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(ABORT_INCOMPLETE_MULTIPART_DAYS),
                )
            ],
            removal_policy=removal,
        )
        # No cdk-nag acknowledgment needed: AwsSolutions-S1 accepts a bucket without access logs when another
        # bucket of the stack logs to it, so the log bucket is not asked to log its own access.

        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=_bucket_name(settings.lake_bucket_prefix),
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix=ACCESS_LOGS_PREFIX,
            lifecycle_rules=_lake_lifecycle_rules(settings),
            removal_policy=removal,
        )

    @property
    def bucket_name(self) -> str:
        return self.bucket.bucket_name

    @property
    def uri(self) -> str:
        """The lake root as a URI (``s3://<bucket>``), as the domain package's storage adapter expects."""
        return f"s3://{self.bucket.bucket_name}"

    def uri_for(self, prefix: str) -> str:
        """``s3://<bucket>/<prefix>/`` for a key prefix such as ``curated/metrics_daily``."""
        return f"{self.uri}/{normalize_prefix(prefix)}"

    def enable_event_bridge(self) -> None:
        """Send the lake bucket's object events (Object Created, ...) to the account's default event bus.

        Set on the bucket resource itself, so no notifications custom resource (and its Lambda) is needed.
        """
        bucket = self.bucket.node.default_child
        assert isinstance(bucket, s3.CfnBucket)
        bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(event_bridge_enabled=True)
        )

    def grant_abort_uploads(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` list in-progress multipart uploads, which the S3 client does to abort its own after a
        failed upload (aborting itself is part of ``grant_write``, scoped to the prefixes)."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3:ListBucketMultipartUploads"], resource_arns=[self.bucket.bucket_arn]
        )

    def grant_read(self, grantee: iam.IGrantable, *prefixes: str) -> iam.Grant:
        """Let ``grantee`` list and read objects under the prefixes, and decrypt them through S3.

        Listing is limited to the prefixes (``s3:prefix`` condition). S3 answers 404 for a missing key only to
        callers allowed to list the whole bucket, so a HEAD/GET of a missing key answers 403 here: test for
        existence by listing the key as a prefix.
        """
        keys = [normalize_prefix(p) for p in _require(prefixes)]
        grant = iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(READ_OBJECT_ACTIONS),
            resource_arns=[self.bucket.arn_for_objects(f"{k}*") for k in keys],
        )
        grant = grant.combine(
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=["s3:ListBucket"],
                resource_arns=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{k}*" for k in keys]}},
            )
        )
        grant = grant.combine(
            iam.Grant.add_to_principal(
                grantee=grantee, actions=["s3:GetBucketLocation"], resource_arns=[self.bucket.bucket_arn]
            )
        )
        return grant.combine(self._grant_key(grantee, KMS_DECRYPT_ACTIONS))

    def grant_write(self, grantee: iam.IGrantable, *prefixes: str, allow_delete: bool = False) -> iam.Grant:
        """Let ``grantee`` put (and, if asked, delete) objects under the prefixes, encrypting through S3."""
        keys = [normalize_prefix(p) for p in _require(prefixes)]
        actions = WRITE_OBJECT_ACTIONS + (DELETE_OBJECT_ACTIONS if allow_delete else ())
        grant = iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(actions),
            resource_arns=[self.bucket.arn_for_objects(f"{k}*") for k in keys],
        )
        return grant.combine(self._grant_key(grantee, KMS_ENCRYPT_ACTIONS))

    def grant_delete(self, grantee: iam.IGrantable, *prefixes: str) -> iam.Grant:
        """Let ``grantee`` delete objects under the prefixes (no key use: a delete reads nothing)."""
        keys = [normalize_prefix(p) for p in _require(prefixes)]
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(DELETE_OBJECT_ACTIONS),
            resource_arns=[self.bucket.arn_for_objects(f"{k}*") for k in keys],
        )

    def grant_access(self, grantee: iam.IGrantable, access: StageAccess) -> None:
        """The grants of a stage declaration (``capacity_forecaster.access``): read, write, delete prefixes."""
        if access.read:
            self.grant_read(grantee, *access.read)
        if access.write:
            self.grant_write(grantee, *access.write)
            self.grant_abort_uploads(grantee)
        if access.delete:
            self.grant_delete(grantee, *access.delete)

    def grant_read_write(self, grantee: iam.IGrantable, *prefixes: str, allow_delete: bool = False) -> iam.Grant:
        """``grant_read`` and ``grant_write`` on the same prefixes."""
        return self.grant_read(grantee, *prefixes).combine(
            self.grant_write(grantee, *prefixes, allow_delete=allow_delete)
        )

    def _grant_key(self, grantee: iam.IGrantable, actions: Sequence[str]) -> iam.Grant:
        """Key use only on behalf of S3 in this region: the key cannot be used directly by the grantee."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(actions),
            resource_arns=[self.key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{cdk.Aws.REGION}.amazonaws.com"}},
        )


def normalize_prefix(prefix: str) -> str:
    """A key prefix with exactly one trailing slash; empty, absolute or wildcard prefixes are refused."""
    p = prefix.strip()
    if not p.strip("/") or p.startswith("/") or "*" in p or "?" in p:
        raise ValueError(f"a lake prefix must be a relative key prefix such as 'raw/', got {prefix!r}")
    return p.rstrip("/") + "/"


def _require(prefixes: Sequence[str]) -> Sequence[str]:
    if not prefixes:
        raise ValueError("name at least one prefix: grants on the whole lake bucket are not offered")
    return prefixes


def _bucket_name(prefix: str, *parts: str) -> str:
    """``<prefix>[-<part>...]-<account>-<region>``: unique across accounts and regions."""
    return "-".join((prefix, *parts, cdk.Aws.ACCOUNT_ID, cdk.Aws.REGION))


def _lake_lifecycle_rules(settings: StackSettings) -> list[s3.LifecycleRule]:
    rules = [
        s3.LifecycleRule(
            id="all-objects",
            abort_incomplete_multipart_upload_after=cdk.Duration.days(ABORT_INCOMPLETE_MULTIPART_DAYS),
            noncurrent_version_expiration=cdk.Duration.days(settings.noncurrent_version_expiration_days),
            expired_object_delete_marker=True,
        ),
        s3.LifecycleRule(
            id="expire-quarantine",
            prefix=QUARANTINE_PREFIX,
            expiration=cdk.Duration.days(settings.quarantine_expiration_days),
        ),
        s3.LifecycleRule(
            id="expire-athena-results",
            prefix=ATHENA_RESULTS_PREFIX,
            expiration=cdk.Duration.days(settings.athena_results_expiration_days),
        ),
    ]
    if settings.raw_transition_days or settings.raw_expiration_days:
        rules.append(
            s3.LifecycleRule(
                id="age-raw",
                prefix=RAW_PREFIX,
                transitions=[
                    s3.Transition(
                        storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                        transition_after=cdk.Duration.days(settings.raw_transition_days),
                    )
                ]
                if settings.raw_transition_days
                else None,
                expiration=cdk.Duration.days(settings.raw_expiration_days) if settings.raw_expiration_days else None,
            )
        )
    return rules
