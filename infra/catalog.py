"""The Glue catalog and the Athena workgroup, generated from the table definitions of the domain package.

Each table of ``capacity_forecaster.schema.TABLES`` becomes one Glue table over its lake prefix: the same
columns in the same order, Arrow types mapped to Hive types, descriptions as comments, and Athena partition
projection on the Hive-style date partitions, so no crawler and no partition registration is needed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Final

import aws_cdk as cdk
import pyarrow as pa
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from capacity_forecaster.query import views as planner_views
from capacity_forecaster.schema import TABLES, Column, TableSchema
from infra.names import (
    ATHENA_ENGINE_VERSION,
    ATHENA_RESULTS_PREFIX,
    GLUE_COMMENT_MAX,
    PARQUET_INPUT_FORMAT,
    PARQUET_OUTPUT_FORMAT,
    PARQUET_SERDE,
    PROJECTION_DATE_FORMAT,
    VIEWS_HANDLER_CODE,
)
from infra.settings import StackSettings
from infra.storage import DataLake

ATHENA_QUERY_ACTIONS = (
    "athena:StartQueryExecution",
    "athena:StopQueryExecution",
    "athena:GetQueryExecution",
    "athena:GetQueryResults",
    "athena:GetQueryRuntimeStatistics",
    "athena:GetWorkGroup",
)
GLUE_READ_ACTIONS = (
    "glue:GetDatabase",
    "glue:GetTable",
    "glue:GetTables",
    "glue:GetPartition",
    "glue:GetPartitions",
)


def glue_type(arrow_type: pa.DataType) -> str:
    """The Glue/Hive column type that Athena reads a Parquet column of ``arrow_type`` as."""
    t = arrow_type
    simple = [
        (pa.types.is_string, "string"),
        (pa.types.is_large_string, "string"),
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_int8, "tinyint"),
        (pa.types.is_int16, "smallint"),
        (pa.types.is_int32, "int"),
        (pa.types.is_int64, "bigint"),
        (pa.types.is_float32, "float"),
        (pa.types.is_float64, "double"),
        (pa.types.is_date, "date"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_binary, "binary"),
    ]
    for test, name in simple:
        if test(t):
            return name
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    raise TypeError(f"no Glue type for Arrow type {t}; extend infra.catalog.glue_type")


def glue_column(column: Column) -> glue.CfnTable.ColumnProperty:
    """A Glue column with the schema's description as its comment."""
    if len(column.description) > GLUE_COMMENT_MAX:
        raise ValueError(f"description of column {column.name} exceeds Glue's {GLUE_COMMENT_MAX} characters")
    return glue.CfnTable.ColumnProperty(name=column.name, type=glue_type(column.type), comment=column.description)


def projection_parameters(table: TableSchema, *, location: str, date_range: str) -> dict[str, str]:
    """Athena partition projection for the table's date partitions (none for an unpartitioned table).

    ``location`` is the table's root URI with a trailing slash; objects live at
    ``<location><key>=<YYYY-MM-DD>/data.parquet``.
    """
    if not table.partition_keys:
        return {}
    params = {"projection.enabled": "true"}
    for key in table.partition_keys:
        if not pa.types.is_date(key.type):
            raise TypeError(f"{table.name}.{key.name}: only date partitions are projected, not {key.type}")
        params |= {
            f"projection.{key.name}.type": "date",
            f"projection.{key.name}.format": PROJECTION_DATE_FORMAT,
            f"projection.{key.name}.range": date_range,
            f"projection.{key.name}.interval": "1",
            f"projection.{key.name}.interval.unit": "DAYS",
        }
    path = "/".join(f"{k.name}=${{{k.name}}}" for k in table.partition_keys)
    params["storage.location.template"] = f"{location}{path}/"
    return params


ROOT = Path(__file__).resolve().parents[1]
VIEWS_HANDLER_TIMEOUT_SECONDS: Final = 600
"""Room for every view's statement (each waited for at most lambdas/create_views MAX_WAIT_SECONDS)."""
VIEW_DDL_ATHENA_ACTIONS: Final = (
    "athena:StartQueryExecution",
    "athena:GetQueryExecution",
    "athena:StopQueryExecution",
    "athena:GetWorkGroup",
)
"""What the views handler does in the workgroup: start each statement, poll it, stop it when it overruns."""
VIEW_DDL_GLUE_ACTIONS: Final = (
    "glue:GetDatabase",
    "glue:GetTable",
    "glue:GetTables",
    "glue:CreateTable",
    "glue:UpdateTable",
    "glue:DeleteTable",
)
"""What Athena's CREATE OR REPLACE VIEW and DROP VIEW need in the Glue catalog (a view is a Glue table)."""


def view_order(views: Mapping[str, str]) -> list[str]:
    """The views' names in dependency order: a view that selects from another view comes after it."""
    graph = {
        name: {other for other in views if other != name and re.search(rf"\b(?:from|join)\s+{other}\b", sql.lower())}
        for name, sql in views.items()
    }
    try:
        return list(TopologicalSorter({n: graph[n] for n in sorted(graph)}).static_order())
    except CycleError as exc:
        raise ValueError(f"the views select from each other in a cycle: {exc.args[1]}") from None


NAMED_QUERY_DESCRIPTION_MAX: Final = 1024
"""Athena's limit on a named query's description."""


def view_description(sql: str) -> str:
    """The leading ``--`` comment of a view's SQL file, as one line: what the view answers."""
    lines = []
    for line in sql.strip().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line.removeprefix("--").strip())
    text = " ".join(lines)
    if not text:
        raise ValueError("a view's SQL must start with a -- comment saying what it answers")
    if len(text) > NAMED_QUERY_DESCRIPTION_MAX:
        raise ValueError(f"a view's description exceeds Athena's {NAMED_QUERY_DESCRIPTION_MAX} characters: {text!r}")
    return text


class Catalog(Construct):
    """A Glue database with one table per lake table, an Athena workgroup with enforced settings, and the
    planners' views as named queries in that workgroup.

    ``tables`` defaults to every table of ``capacity_forecaster.schema.TABLES``. The workgroup writes results
    to ``athena-results/`` in the lake bucket, encrypted with the lake key, and cancels any query that scans
    more than the configured cutoff. ``views`` (name -> ``CREATE OR REPLACE VIEW`` statement) defaults to the
    domain package's ``sql/*.sql``, the statements ``capacity-forecaster query`` runs on DuckDB: each becomes
    one Athena named query that creates or refreshes the view when run, and a custom resource
    (``Custom::AthenaViews``, lambdas/create_views through CDK's Provider) runs them all at every deploy, after
    the tables, so the views exist right after ``cdk deploy``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        lake: DataLake,
        settings: StackSettings,
        tables: Iterable[TableSchema] | None = None,
        views: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._lake = lake
        self.lake = lake
        self.database_name = settings.glue_database_name
        self.workgroup_name = settings.athena_workgroup_name

        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=cdk.Aws.ACCOUNT_ID,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description="Capacity Forecaster lake tables (generated from capacity_forecaster.schema).",
                location_uri=f"{lake.uri}/",
            ),
        )

        self.tables: dict[str, glue.CfnTable] = {}
        self.table_schemas: dict[str, TableSchema] = {}
        for table in TABLES.values() if tables is None else tables:
            self.tables[table.name] = self._glue_table(table, date_range=settings.projection_range)
            self.table_schemas[table.name] = table

        self.workgroup = athena.CfnWorkGroup(
            self,
            "Workgroup",
            name=self.workgroup_name,
            description="Capacity Forecaster queries: enforced result location, encryption and scan cutoff.",
            state="ENABLED",
            recursive_delete_option=True,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                requester_pays_enabled=False,
                bytes_scanned_cutoff_per_query=settings.athena_bytes_scanned_cutoff,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(selected_engine_version=ATHENA_ENGINE_VERSION),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=lake.uri_for(ATHENA_RESULTS_PREFIX),
                    expected_bucket_owner=cdk.Aws.ACCOUNT_ID,
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=lake.key.key_arn
                    ),
                ),
            ),
        )

        self.views: dict[str, str] = dict(planner_views() if views is None else views)
        self.named_queries: dict[str, athena.CfnNamedQuery] = {}
        for name, sql in sorted(self.views.items()):
            query = athena.CfnNamedQuery(
                self,
                f"View-{name}",
                name=name,
                description=view_description(sql),
                database=self.database_name,
                work_group=self.workgroup_name,
                query_string=sql.strip(),
            )
            # The workgroup and the database are named, not referenced: wait for both explicitly.
            query.add_resource_dependency(self.workgroup)
            query.add_resource_dependency(self.database)
            self.named_queries[name] = query
        self.views_resource = self._views_resource() if self.views else None

    def _views_resource(self) -> cdk.CustomResource:
        """A custom resource that runs each view's statement in the workgroup at every deploy (in dependency
        order, after the tables and the workgroup exist), so the views are there right after ``cdk deploy``.

        CDK's ``custom_resources.Provider`` rather than a bare CfnCustomResource with a hand-written cfn-response:
        the framework sends CloudFormation the answer, so a crash or a timeout of the handler still fails the deploy
        with its message instead of leaving the stack waiting for an hour; it costs one framework function."""
        handler = lambda_.Function(
            self,
            "ViewsHandler",
            description="Creates or replaces the Capacity Forecaster Athena views at deploy time.",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.X86_64,
            handler="handler.on_event",
            code=lambda_.Code.from_asset(str(ROOT / VIEWS_HANDLER_CODE), exclude=["__pycache__", "*.pyc"]),
            timeout=cdk.Duration.seconds(VIEWS_HANDLER_TIMEOUT_SECONDS),
            log_group=logs.LogGroup(
                self,
                "ViewsHandlerLogs",
                retention=logs.RetentionDays.ONE_MONTH,
                removal_policy=cdk.RemovalPolicy.DESTROY,
            ),
        )
        stack = cdk.Stack.of(self)
        handler.add_to_role_policy(
            iam.PolicyStatement(actions=list(VIEW_DDL_ATHENA_ACTIONS), resources=[self.workgroup_arn()])
        )
        handler.add_to_role_policy(
            iam.PolicyStatement(
                actions=list(VIEW_DDL_GLUE_ACTIONS),
                resources=[
                    stack.format_arn(service="glue", resource="catalog"),
                    self.database_arn(),
                    self.table_arn("*"),
                ],
            )
        )
        self._lake.grant_read_write(handler, ATHENA_RESULTS_PREFIX)
        provider = cr.Provider(
            self,
            "ViewsProvider",
            on_event_handler=handler,
            log_group=logs.LogGroup(
                self,
                "ViewsProviderLogs",
                retention=logs.RetentionDays.ONE_MONTH,
                removal_policy=cdk.RemovalPolicy.DESTROY,
            ),
        )
        resource = cdk.CustomResource(
            self,
            "Views",
            service_token=provider.service_token,
            resource_type="Custom::AthenaViews",
            properties={
                "Database": self.database_name,
                "WorkGroup": self.workgroup_name,
                "Views": [{"Name": name, "Sql": self.views[name].strip()} for name in view_order(self.views)],
                # a table whose columns change makes the views over it stale: replace them then too
                "TablesDigest": self._tables_digest(),
            },
        )
        # The statements name the database, the workgroup and the tables: wait for all of them.
        resource.node.add_dependency(self.database, self.workgroup, *self.tables.values())
        self._acknowledge_views(handler, provider)
        return resource

    def _tables_digest(self) -> str:
        """A digest of every table's columns and partition keys, as the Glue tables declare them."""
        columns = {
            name: [(c.name, glue_type(c.type)) for c in (*table.columns, *table.partition_keys)]
            for name, table in sorted(self.table_schemas.items())
        }
        return hashlib.sha256(json.dumps(columns, sort_keys=True).encode()).hexdigest()[:16]

    def _acknowledge_views(self, handler: lambda_.Function, provider: cr.Provider) -> None:
        """cdk-nag findings on the view handler and CDK's Provider framework that are by design, with why."""
        stack = cdk.Stack.of(self)
        bucket = self._lake.bucket.node.default_child
        assert isinstance(bucket, cdk.CfnElement)
        bucket_id = stack.resolve(bucket.logical_id)
        reasons = {
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]": "The AWS managed basic execution policy only lets the function write "
            "its own logs; it grants no data access.",
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>:table/"
            f"{self.database_name}/*]": "A view is a Glue table of the project's database; the views are named "
            "in the SQL files, and CREATE OR REPLACE VIEW reads the tables each view selects from.",
            f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{ATHENA_RESULTS_PREFIX.rstrip('/')}/*]": "Athena writes "
            "each statement's result under the workgroup's result prefix, and only there.",
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "Athena encrypts the statements' results with the "
            "lake key (through S3 only).",
            "AwsSolutions-IAM5[Action::kms:ReEncrypt*]": "CDK's grant for writing KMS-encrypted results; limited "
            "to the lake key, through S3 only.",
            "AwsSolutions-L1": "Python 3.13 on purpose: the version the project, its layer and its container images "
            "are built and tested with; it moves with them.",
        }
        for rule_id, reason in reasons.items():
            cdk.Validations.of(handler).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))
        function = handler.node.default_child
        assert isinstance(function, cdk.CfnElement)
        handler_id = stack.resolve(function.logical_id)
        framework = {
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]": "CDK's custom resource Provider framework function: the managed policy "
            "only lets it write its own logs.",
            f"AwsSolutions-IAM5[Resource::<{handler_id}.Arn>:*]": "CDK's Provider framework invokes "
            "every version of the one views handler.",
            "AwsSolutions-L1": "CDK's Provider framework function; CDK chooses its runtime.",
        }
        for rule_id, reason in framework.items():
            cdk.Validations.of(provider).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))

    def _glue_table(self, table: TableSchema, *, date_range: str) -> glue.CfnTable:
        location = self._lake.uri_for(table.prefix)
        parameters = {"classification": "parquet", "EXTERNAL": "TRUE"}
        parameters |= projection_parameters(table, location=location, date_range=date_range)
        return glue.CfnTable(
            self,
            f"Table-{table.name}",
            catalog_id=cdk.Aws.ACCOUNT_ID,
            database_name=self.database.ref,  # the Ref is the name, and makes the table wait for the database
            table_input=glue.CfnTable.TableInputProperty(
                name=table.name,
                description=table.description,
                table_type="EXTERNAL_TABLE",
                parameters=parameters,
                partition_keys=[glue_column(c) for c in table.partition_keys],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[glue_column(c) for c in table.columns],
                    location=location,
                    input_format=PARQUET_INPUT_FORMAT,
                    output_format=PARQUET_OUTPUT_FORMAT,
                    compressed=False,
                    stored_as_sub_directories=False,
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library=PARQUET_SERDE, parameters={"serialization.format": "1"}
                    ),
                ),
            ),
        )

    # ---- grants ---------------------------------------------------------------------------------------

    def database_arn(self) -> str:
        return cdk.Stack.of(self).format_arn(service="glue", resource="database", resource_name=self.database_name)

    def table_arn(self, table: str) -> str:
        return cdk.Stack.of(self).format_arn(
            service="glue", resource="table", resource_name=f"{self.database_name}/{table}"
        )

    def workgroup_arn(self) -> str:
        return cdk.Stack.of(self).format_arn(service="athena", resource="workgroup", resource_name=self.workgroup_name)

    def grant_query(self, grantee: iam.IGrantable, *tables: str) -> iam.Grant:
        """Let ``grantee`` run Athena SELECTs in the workgroup over the named tables (all when none named).

        Covers Glue metadata reads, reading the tables' prefixes, and writing results to ``athena-results/``
        (multipart uploads included).
        CTAS and UNLOAD (awswrangler's ``ctas_approach``/``unload_approach``) need more and are not covered.
        """
        names = list(tables) or list(self.tables)
        unknown = sorted(set(names) - set(self.tables))
        if unknown:
            raise ValueError(f"unknown tables {unknown}; known: {sorted(self.tables)}")
        stack = cdk.Stack.of(self)
        grant = iam.Grant.add_to_principal(
            grantee=grantee, actions=list(ATHENA_QUERY_ACTIONS), resource_arns=[self.workgroup_arn()]
        )
        grant = grant.combine(
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=list(GLUE_READ_ACTIONS),
                resource_arns=[
                    stack.format_arn(service="glue", resource="catalog"),
                    self.database_arn(),
                    *(self.table_arn(n) for n in names),
                ],
            )
        )
        grant = grant.combine(self._lake.grant_read(grantee, *(self.table_schemas[n].prefix for n in names)))
        grant = grant.combine(self._lake.grant_read_write(grantee, ATHENA_RESULTS_PREFIX))
        # Athena writes large results in multipart uploads on the caller's behalf (its documented result-location
        # permissions): list the uploads of the bucket and the parts of those under the results prefix.
        grant = grant.combine(self._lake.grant_abort_uploads(grantee))
        return grant.combine(
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=["s3:ListMultipartUploadParts"],
                resource_arns=[self._lake.bucket.arn_for_objects(f"{ATHENA_RESULTS_PREFIX}*")],
            )
        )
