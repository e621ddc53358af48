"""The Glue catalog and the Athena workgroup, generated from the table definitions of the domain package.

Each table of ``capacity_forecaster.schema.TABLES`` becomes one Glue table over its lake prefix: the same
columns in the same order, Arrow types mapped to Hive types, descriptions as comments, and Athena partition
projection on the Hive-style date partitions, so no crawler and no partition registration is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import aws_cdk as cdk
import pyarrow as pa
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
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
    one Athena named query that creates or refreshes the view when run.
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
