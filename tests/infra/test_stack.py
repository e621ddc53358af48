"""CDK assertions on the synthesized stack: storage, catalog, Athena, outputs; settings and grants."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pyarrow as pa
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template
from constructs import Construct

from app import load_cdk_context
from capacity_forecaster.schema import TABLES, TableSchema
from infra import names
from infra.catalog import Catalog, glue_type
from infra.pipeline import DEMO_FUNCTIONS
from infra.settings import SettingsError, StackSettings
from infra.stack import CapacityForecasterStack
from infra.storage import DataLake, normalize_prefix

DEFAULTS = StackSettings()


def logical_id(stack: cdk.Stack, construct: Construct) -> str:
    """Logical id of an L2 construct's CloudFormation resource (or of an L1 itself)."""
    element = construct.node.default_child or construct
    assert isinstance(element, cdk.CfnElement)
    return str(stack.resolve(element.logical_id))


def resources(template_json: dict[str, Any], cfn_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == cfn_type}


def s3_uri(bucket_id: str, path: str) -> dict[str, Any]:
    """How an ``s3://<lake bucket>/<path>`` string looks in the template."""
    return {"Fn::Join": ["", ["s3://", {"Ref": bucket_id}, f"/{path}"]]}


@pytest.fixture(scope="module")
def ids(stack: CapacityForecasterStack) -> dict[str, str]:
    return {
        "key": logical_id(stack, stack.lake.key),
        "bucket": logical_id(stack, stack.lake.bucket),
        "log_bucket": logical_id(stack, stack.lake.log_bucket),
        "database": logical_id(stack, stack.catalog.database),
    }


# ---- storage ------------------------------------------------------------------------------------------


def test_keys_rotate_and_are_retained(template_json: dict[str, Any]) -> None:
    keys = resources(template_json, "AWS::KMS::Key")
    assert len(keys) == 3  # the lake's, the pipeline's (dead-letter queue) and the alerts topic's
    for key in keys.values():
        assert key["Properties"]["EnableKeyRotation"] is True
        assert (key["DeletionPolicy"], key["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_lake_bucket_versioned_and_encrypted_with_the_lake_key(
    template_json: dict[str, Any], ids: dict[str, str]
) -> None:
    bucket = template_json["Resources"][ids["bucket"]]
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms",
                "KMSMasterKeyID": {"Fn::GetAtt": [ids["key"], "Arn"]},
            },
        }
    ]
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert bucket["DeletionPolicy"] == "Retain"


def test_every_bucket_blocks_public_access(template_json: dict[str, Any]) -> None:
    buckets = resources(template_json, "AWS::S3::Bucket")
    assert len(buckets) == 2
    for bucket in buckets.values():
        assert bucket["Properties"]["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }


@pytest.mark.parametrize("which", ["bucket", "log_bucket"])
def test_every_bucket_denies_insecure_transport(template: Template, ids: dict[str, str], which: str) -> None:
    arn = {"Fn::GetAtt": [ids[which], "Arn"]}
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": ids[which]},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Action": "s3:*",
                            "Effect": "Deny",
                            "Principal": {"AWS": "*"},
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            "Resource": [arn, {"Fn::Join": ["", [arn, "/*"]]}],
                        },
                        Match.object_like({"Effect": "Deny", "Condition": {"NumericLessThan": {"s3:TlsVersion": 1.2}}}),
                    ]
                )
            },
        },
    )


def test_lake_bucket_logs_to_the_log_bucket(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    lake = template_json["Resources"][ids["bucket"]]["Properties"]
    assert lake["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": ids["log_bucket"]},
        "LogFilePrefix": names.ACCESS_LOGS_PREFIX,
    }
    log = template_json["Resources"][ids["log_bucket"]]["Properties"]
    assert log["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert log["VersioningConfiguration"] == {"Status": "Enabled"}
    assert log["LifecycleConfiguration"]["Rules"] == [
        {
            "Id": "expire-access-logs",
            "Status": "Enabled",
            "ExpirationInDays": DEFAULTS.access_log_expiration_days,
            "NoncurrentVersionExpiration": {"NoncurrentDays": DEFAULTS.noncurrent_version_expiration_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        }
    ]


def test_log_bucket_admits_only_the_lake_buckets_logs(template: Template, ids: dict[str, str]) -> None:
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": ids["log_bucket"]},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "s3:PutObject",
                                "Effect": "Allow",
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Condition": Match.object_like(
                                    {"ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [ids["bucket"], "Arn"]}}}
                                ),
                            }
                        )
                    ]
                )
            },
        },
    )


def test_lake_lifecycle_rules(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    rules = {
        r["Id"]: r for r in template_json["Resources"][ids["bucket"]]["Properties"]["LifecycleConfiguration"]["Rules"]
    }
    assert all(r["Status"] == "Enabled" for r in rules.values())
    everything = rules["all-objects"]
    assert "Prefix" not in everything
    assert everything["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert everything["NoncurrentVersionExpiration"] == {"NoncurrentDays": DEFAULTS.noncurrent_version_expiration_days}
    raw = rules["age-raw"]
    assert raw["Prefix"] == f"{TABLES['raw_samples'].zone}/"
    assert raw["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": DEFAULTS.raw_transition_days}]
    assert raw["ExpirationInDays"] == DEFAULTS.raw_expiration_days
    quarantine = rules["expire-quarantine"]
    assert quarantine["Prefix"] == f"{TABLES['quarantine'].prefix}/"
    assert quarantine["ExpirationInDays"] == DEFAULTS.quarantine_expiration_days
    results = rules["expire-athena-results"]
    assert results["Prefix"] == names.ATHENA_RESULTS_PREFIX
    assert results["ExpirationInDays"] == DEFAULTS.athena_results_expiration_days


# ---- catalog ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrow", "hive"),
    [
        (pa.string(), "string"),
        (pa.large_string(), "string"),
        (pa.float64(), "double"),
        (pa.float32(), "float"),
        (pa.int32(), "int"),
        (pa.int64(), "bigint"),
        (pa.int16(), "smallint"),
        (pa.bool_(), "boolean"),
        (pa.date32(), "date"),
        (pa.timestamp("us", tz="UTC"), "timestamp"),
        (pa.timestamp("ms"), "timestamp"),
        (pa.decimal128(12, 2), "decimal(12,2)"),
    ],
)
def test_glue_type(arrow: pa.DataType, hive: str) -> None:
    assert glue_type(arrow) == hive


def test_glue_type_refuses_what_it_cannot_map() -> None:
    with pytest.raises(TypeError, match="no Glue type"):
        glue_type(pa.list_(pa.int32()))


def glue_tables(template_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Table name -> TableInput."""
    tables = resources(template_json, "AWS::Glue::Table").values()
    return {t["Properties"]["TableInput"]["Name"]: t["Properties"]["TableInput"] for t in tables}


def test_one_glue_table_per_schema_table(template_json: dict[str, Any], ids: dict[str, str]) -> None:
    tables = resources(template_json, "AWS::Glue::Table")
    assert sorted(glue_tables(template_json)) == sorted(TABLES)
    assert len(tables) == len(TABLES)
    for table in tables.values():
        assert table["Properties"]["DatabaseName"] == {"Ref": ids["database"]}


def test_glue_database(template: Template) -> None:
    template.resource_count_is("AWS::Glue::Database", 1)
    template.has_resource_properties(
        "AWS::Glue::Database",
        {
            "CatalogId": {"Ref": "AWS::AccountId"},
            "DatabaseInput": Match.object_like({"Name": "capacity_forecaster"}),
        },
    )


@pytest.mark.parametrize("table", TABLES.values(), ids=list(TABLES))
def test_glue_table_matches_schema(template_json: dict[str, Any], ids: dict[str, str], table: TableSchema) -> None:
    glue = glue_tables(template_json)[table.name]
    sd = glue["StorageDescriptor"]

    def described(cols: Any) -> list[tuple[str, str, str]]:
        return [(c.name, glue_type(c.type), c.description) for c in cols]

    assert [(c["Name"], c["Type"], c["Comment"]) for c in sd["Columns"]] == described(table.columns)
    assert [(c["Name"], c["Type"], c["Comment"]) for c in glue.get("PartitionKeys", [])] == described(
        table.partition_keys
    )
    assert glue["TableType"] == "EXTERNAL_TABLE"
    assert glue["Description"] == table.description
    assert sd["Location"] == s3_uri(ids["bucket"], f"{table.prefix}/")
    assert sd["InputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    assert sd["OutputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert glue["Parameters"]["classification"] == "parquet"


@pytest.mark.parametrize("table", TABLES.values(), ids=list(TABLES))
def test_glue_table_partition_projection(
    template_json: dict[str, Any], ids: dict[str, str], table: TableSchema
) -> None:
    params = glue_tables(template_json)[table.name]["Parameters"]
    if not table.partition_keys:
        assert not any(k.startswith("projection.") for k in params)
        assert "storage.location.template" not in params
        return
    assert params["projection.enabled"] == "true"
    for key in table.partition_keys:
        assert pa.types.is_date(key.type)
        assert params[f"projection.{key.name}.type"] == "date"
        assert params[f"projection.{key.name}.format"] == "yyyy-MM-dd"
        assert params[f"projection.{key.name}.range"] == f"{DEFAULTS.partition_projection_start},NOW"
        assert params[f"projection.{key.name}.interval"] == "1"
        assert params[f"projection.{key.name}.interval.unit"] == "DAYS"
    hive_path = "/".join(f"{k.name}=${{{k.name}}}" for k in table.partition_keys)
    assert params["storage.location.template"] == s3_uri(ids["bucket"], f"{table.prefix}/{hive_path}/")


# ---- Athena -------------------------------------------------------------------------------------------


def test_athena_workgroup_is_enforced_encrypted_and_capped(template: Template, ids: dict[str, str]) -> None:
    template.resource_count_is("AWS::Athena::WorkGroup", 1)
    template.has_resource_properties(
        "AWS::Athena::WorkGroup",
        {
            "Name": DEFAULTS.athena_workgroup_name,
            "State": "ENABLED",
            "WorkGroupConfiguration": {
                "EnforceWorkGroupConfiguration": True,
                "BytesScannedCutoffPerQuery": DEFAULTS.athena_bytes_scanned_cutoff,
                "EngineVersion": {"SelectedEngineVersion": "AUTO"},
                "PublishCloudWatchMetricsEnabled": True,
                "RequesterPaysEnabled": False,
                "ResultConfiguration": {
                    "OutputLocation": s3_uri(ids["bucket"], names.ATHENA_RESULTS_PREFIX),
                    "EncryptionConfiguration": {
                        "EncryptionOption": "SSE_KMS",
                        "KmsKey": {"Fn::GetAtt": [ids["key"], "Arn"]},
                    },
                    "ExpectedBucketOwner": {"Ref": "AWS::AccountId"},
                },
            },
        },
    )


# ---- outputs ------------------------------------------------------------------------------------------


def test_outputs(template: Template, ids: dict[str, str]) -> None:
    template.has_output(names.OUTPUT_LAKE_BUCKET, {"Value": {"Ref": ids["bucket"]}})
    template.has_output(names.OUTPUT_LAKE_KEY_ARN, {"Value": {"Fn::GetAtt": [ids["key"], "Arn"]}})
    template.has_output(names.OUTPUT_GLUE_DATABASE, {"Value": DEFAULTS.glue_database_name})
    template.has_output(names.OUTPUT_ATHENA_WORKGROUP, {"Value": DEFAULTS.athena_workgroup_name})


def test_iam_only_for_the_functions_and_the_training_job(template: Template) -> None:
    """Grants arrive with the functions that need them: one role each, no users."""
    deployed = set(names.HANDLER_COMMANDS) - names.OPTIONAL_FUNCTIONS - DEMO_FUNCTIONS
    # + the launcher's, the training job's, the views handler's, CDK's custom resource Provider framework's and
    # that of CDK's LogRetention provider (the SageMaker log group's retention)
    template.resource_count_is("AWS::IAM::Role", len(deployed) + 5)
    template.resource_count_is("AWS::IAM::User", 0)


# ---- settings -----------------------------------------------------------------------------------------


def test_cdk_json_lists_every_setting_with_its_default() -> None:
    context = load_cdk_context()
    project = {k: v for k, v in context.items() if k.startswith(f"{names.CONTEXT_NAMESPACE}:")}
    assert project == StackSettings.context_defaults()


def test_cdk_json_has_the_recommended_feature_flags() -> None:
    context = load_cdk_context()
    assert context["@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"] is True
    assert context["@aws-cdk/aws-s3:createDefaultLoggingPolicy"] is True
    assert sum(k.startswith("@aws-cdk") for k in context) >= 80


def test_settings_from_cli_strings() -> None:
    ns = names.CONTEXT_NAMESPACE
    settings = StackSettings.from_mapping(
        {f"{ns}:rawExpirationDays": "400", f"{ns}:removalPolicy": "destroy", "unrelated": 1}
    )
    assert settings.raw_expiration_days == 400
    assert settings.cdk_removal_policy == cdk.RemovalPolicy.DESTROY
    assert DEFAULTS.cdk_removal_policy == cdk.RemovalPolicy.RETAIN


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"lakeBucketPrefix": "Bad_Name"}, "lake_bucket_prefix"),
        ({"lakeBucketPrefix": "x" * 40}, "lake_bucket_prefix"),
        ({"glueDatabaseName": "capacity-forecaster"}, "glue_database_name"),
        ({"athenaWorkgroupName": "has space"}, "athena_workgroup_name"),
        ({"athenaBytesScannedCutoff": 1000}, "athena_bytes_scanned_cutoff"),
        ({"rawTransitionDays": 10}, "raw_transition_days"),
        ({"rawTransitionDays": 60, "rawExpirationDays": 45}, "raw_expiration_days"),
        ({"quarantineExpirationDays": 0}, "quarantine_expiration_days"),
        ({"removalPolicy": "snapshot"}, "removal_policy"),
        ({"partitionProjectionStart": "2015-1-1"}, "partition_projection_start"),
        ({"rawExpirationDays": "ninety"}, "must be an integer"),
        ({"rawExpirationDays": True}, "must be an integer"),
        ({"lakeBucketPrefx": "typo"}, "unknown context key"),
    ],
)
def test_settings_are_validated(context: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        StackSettings.from_mapping({f"{names.CONTEXT_NAMESPACE}:{k}": v for k, v in context.items()})


def test_raw_lifecycle_can_be_turned_off() -> None:
    settings = StackSettings(raw_transition_days=0, raw_expiration_days=0)
    assert settings.raw_transition_days == 0


# ---- grants (resolved in a throwaway stack, no synthesis) ----------------------------------------------


@pytest.fixture(scope="module")
def grant_policies() -> dict[str, Any]:
    app = cdk.App(context=load_cdk_context())
    stack = cdk.Stack(app, "GrantProbe")
    lake = DataLake(stack, "Lake", settings=DEFAULTS)
    catalog = Catalog(stack, "Catalog", lake=lake, settings=DEFAULTS)
    reader = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    writer = iam.Role(stack, "Writer", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    querier = iam.Role(stack, "Querier", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    lake.grant_read(reader, TABLES["metrics_daily"].prefix)
    lake.grant_write(writer, "raw")
    catalog.grant_query(querier, "risk_register")

    def statements(role: iam.Role) -> list[dict[str, Any]]:
        policy = role.node.find_child("DefaultPolicy")
        assert isinstance(policy, iam.Policy)
        return list(stack.resolve(policy.document.to_json())["Statement"])

    return {"reader": statements(reader), "writer": statements(writer), "querier": statements(querier)}


def _dump(statements: list[dict[str, Any]]) -> str:
    return json.dumps(statements)


def test_read_grant_is_scoped_to_the_prefix(grant_policies: dict[str, Any]) -> None:
    text = _dump(grant_policies["reader"])
    assert '"s3:*"' not in text and "s3:PutObject" not in text
    assert "/curated/metrics_daily/*" in text
    listing = [s for s in grant_policies["reader"] if s["Action"] == "s3:ListBucket"]
    assert len(listing) == 1
    assert listing[0]["Condition"] == {"StringLike": {"s3:prefix": ["curated/metrics_daily/*"]}}
    kms = [s for s in grant_policies["reader"] if s["Action"] == "kms:Decrypt"]
    assert kms and "kms:ViaService" in kms[0]["Condition"]["StringEquals"]


def test_write_grant_is_scoped_and_cannot_delete(grant_policies: dict[str, Any]) -> None:
    text = _dump(grant_policies["writer"])
    assert "s3:PutObject" in text and "s3:DeleteObject" not in text and "s3:GetObject" not in text
    assert '"/raw/*"' in text


def test_query_grant_covers_workgroup_tables_and_results(grant_policies: dict[str, Any]) -> None:
    text = _dump(grant_policies["querier"])
    assert "athena:StartQueryExecution" in text and ":workgroup/capacity-forecaster" in text
    assert ":table/capacity_forecaster/risk_register" in text
    assert ":table/capacity_forecaster/forecasts" not in text
    assert "/curated/risk_register/*" in text and "/athena-results/*" in text
    assert "s3:ListBucketMultipartUploads" in text and "s3:ListMultipartUploadParts" in text


@pytest.mark.parametrize("bad", ["", "/", "/raw", "raw/*", "*"])
def test_prefixes_must_be_relative_and_literal(bad: str) -> None:
    with pytest.raises(ValueError, match="lake prefix"):
        normalize_prefix(bad)


def test_prefix_normalization() -> None:
    assert normalize_prefix("curated/metrics_daily") == "curated/metrics_daily/"
    assert normalize_prefix("raw/") == "raw/"
