"""Dashboards (optional): a QuickSight Athena data source, a data set per planners' view, and a dashboard.

Created only when the ``quicksightPrincipalArn`` context value names a QuickSight user or group, which then
owns every QuickSight resource here. Each data set is a direct query (no SPICE import, always the newest run)
of its view's SELECT, with the tables qualified by the Glue database: the same statement as the view, from the
same SQL file, and its grants stay on the tables. The data sets are created after the catalog's views resource
has created the views (a dependency), so the views and the data sets answer alike from the first deploy.
The dashboard has a sheet with the risk register (a table, most urgent first) and a line chart of the latest
forecasts (P10, P50, P90 by day, one small multiple per metric, with a server picker).

QuickSight runs the data source's Athena queries as a role the stack creates for it (trusted by
quicksight.amazonaws.com, named in the data source's ``AthenaParameters.RoleArn``), so no role needs to exist
before the deploy. Its policy grants the workgroup, the Glue tables the views read, those lake prefixes, the
query results prefix and the lake key through S3. Name an existing role in ``quicksightServiceRoleName``
(QuickSight's own ``aws-quicksight-service-role-v0``, say) to attach that policy to it instead and let the data
source use QuickSight's account-wide role.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import aws_cdk as cdk
import pyarrow as pa
from aws_cdk import aws_iam as iam
from aws_cdk import aws_quicksight as quicksight
from constructs import Construct

from capacity_forecaster.query import view_tables
from capacity_forecaster.view_schemas import view_schemas
from infra.catalog import Catalog
from infra.names import ATHENA_RESULTS_PREFIX, PROJECT
from infra.settings import StackSettings

DATA_SOURCE_ACTIONS: Final = (
    "quicksight:DescribeDataSource",
    "quicksight:DescribeDataSourcePermissions",
    "quicksight:PassDataSource",
    "quicksight:UpdateDataSource",
    "quicksight:DeleteDataSource",
    "quicksight:UpdateDataSourcePermissions",
)
DATA_SET_ACTIONS: Final = (
    "quicksight:DescribeDataSet",
    "quicksight:DescribeDataSetPermissions",
    "quicksight:PassDataSet",
    "quicksight:DescribeIngestion",
    "quicksight:ListIngestions",
    "quicksight:UpdateDataSet",
    "quicksight:DeleteDataSet",
    "quicksight:CreateIngestion",
    "quicksight:CancelIngestion",
    "quicksight:UpdateDataSetPermissions",
)
DASHBOARD_ACTIONS: Final = (
    "quicksight:DescribeDashboard",
    "quicksight:ListDashboardVersions",
    "quicksight:UpdateDashboardPermissions",
    "quicksight:QueryDashboard",
    "quicksight:UpdateDashboard",
    "quicksight:DeleteDashboard",
    "quicksight:DescribeDashboardPermissions",
    "quicksight:UpdateDashboardPublishedVersion",
)
"""What an owner may do with each kind of QuickSight resource (QuickSight's own owner sets)."""

QUICKSIGHT_ATHENA_EXTRA_ACTIONS: Final = ("athena:GetQueryResultsStream",)
ATHENA_CATALOG: Final = "AwsDataCatalog"
"""The Glue Data Catalog as Athena (and a QuickSight data set's relational table) names it."""
"""QuickSight reads Athena results through the streaming API, beyond what Catalog.grant_query covers."""

DASHBOARD_VIEWS: Final = ("risk_servers", "latest_forecasts")
"""The views the dashboard's visuals read; every view gets a data set for analyses of your own."""

RISK_TABLE_COLUMNS: Final = (
    "server_id",
    "application",
    "environment",
    "datacenter",
    "metric",
    "severity",
    "finding",
    "last_p95",
    "breach_date_p50",
    "days_to_breach_p50",
    "breach_date_p90",
    "peak_p90",
    "seasonal_peak",
)
"""The risk register table's columns, in order; rows sorted by severity, then days to the P50 breach."""


def quicksight_type(arrow_type: pa.DataType) -> str:
    """The QuickSight input column type of a view column of ``arrow_type``."""
    t = arrow_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "STRING"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "INTEGER"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "DECIMAL"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "DATETIME"
    raise TypeError(f"no QuickSight column type for Arrow type {t}; extend infra.dashboards.quicksight_type")


def quicksight_sub_type(arrow_type: pa.DataType) -> str | None:
    """FLOAT for floating-point columns (QuickSight would otherwise treat them as fixed-point), FIXED for decimals."""
    if pa.types.is_floating(arrow_type):
        return "FLOAT"
    if pa.types.is_decimal(arrow_type):
        return "FIXED"
    return None


def _column(data_set: str, name: str) -> dict[str, str]:
    return {"DataSetIdentifier": data_set, "ColumnName": name}


def dashboard_definition(data_set_arns: Mapping[str, str], columns: Mapping[str, pa.Schema]) -> dict[str, Any]:
    """The dashboard's Definition (CloudFormation JSON): the risk register table and the forecast line chart.

    ``data_set_arns`` and ``columns`` are keyed by view name and must hold ``DASHBOARD_VIEWS``.
    """
    for view in DASHBOARD_VIEWS:
        if view not in data_set_arns or view not in columns:
            raise ValueError(f"the dashboard needs a data set over the {view} view")
    needed = {
        "risk_servers": (*RISK_TABLE_COLUMNS, "severity_rank"),
        "latest_forecasts": ("ds", "p10", "p50", "p90", "metric", "server_id"),
    }
    missing = [f"{view}.{c}" for view, names in needed.items() for c in names if c not in columns[view].names]
    if missing:
        raise ValueError(f"columns the dashboard shows are missing from the views: {missing}")

    risk, forecasts = "risk_servers", "latest_forecasts"
    table = {
        "TableVisual": {
            "VisualId": "risk-register",
            "Title": {"Visibility": "VISIBLE", "FormatText": {"PlainText": "Risk register: most urgent first"}},
            "ChartConfiguration": {
                "FieldWells": {
                    "TableUnaggregatedFieldWells": {
                        "Values": [
                            {"FieldId": f"risk.{name}", "Column": _column(risk, name)} for name in RISK_TABLE_COLUMNS
                        ]
                    }
                },
                "SortConfiguration": {
                    "RowSort": [
                        {"ColumnSort": {"SortBy": _column(risk, "severity_rank"), "Direction": "ASC"}},
                        {"FieldSort": {"FieldId": "risk.days_to_breach_p50", "Direction": "ASC"}},
                    ]
                },
            },
        }
    }
    line = {
        "LineChartVisual": {
            "VisualId": "forecasts",
            "Title": {
                "Visibility": "VISIBLE",
                "FormatText": {"PlainText": "Latest forecasts: P10, P50 and P90 per day (pick a server)"},
            },
            "ChartConfiguration": {
                "FieldWells": {
                    "LineChartAggregatedFieldWells": {
                        "Category": [
                            {
                                "DateDimensionField": {
                                    "FieldId": "forecast.ds",
                                    "Column": _column(forecasts, "ds"),
                                    "DateGranularity": "DAY",
                                }
                            }
                        ],
                        "Values": [
                            {
                                "NumericalMeasureField": {
                                    "FieldId": f"forecast.{band}",
                                    "Column": _column(forecasts, band),
                                    "AggregationFunction": {"SimpleNumericalAggregation": "AVERAGE"},
                                }
                            }
                            for band in ("p10", "p50", "p90")
                        ],
                        "SmallMultiples": [
                            {
                                "CategoricalDimensionField": {
                                    "FieldId": "forecast.metric",
                                    "Column": _column(forecasts, "metric"),
                                }
                            }
                        ],
                    }
                },
            },
        }
    }
    server_filter = {
        "FilterGroupId": "forecast-server",
        "CrossDataset": "SINGLE_DATASET",
        "Status": "ENABLED",
        "Filters": [
            {
                "CategoryFilter": {
                    "FilterId": "forecast-server-filter",
                    "Column": _column(forecasts, "server_id"),
                    "Configuration": {
                        "FilterListConfiguration": {
                            "MatchOperator": "CONTAINS",
                            "SelectAllOptions": "FILTER_ALL_VALUES",
                        }
                    },
                }
            }
        ],
        "ScopeConfiguration": {
            "SelectedSheets": {
                "SheetVisualScopingConfigurations": [
                    {"SheetId": "capacity", "Scope": "SELECTED_VISUALS", "VisualIds": ["forecasts"]}
                ]
            }
        },
    }
    return {
        "DataSetIdentifierDeclarations": [
            {"Identifier": view, "DataSetArn": data_set_arns[view]} for view in DASHBOARD_VIEWS
        ],
        "Sheets": [
            {
                "SheetId": "capacity",
                "Name": "Capacity risks",
                "Visuals": [table, line],
                "FilterControls": [
                    {
                        "Dropdown": {
                            "FilterControlId": "forecast-server-control",
                            "Title": "Server",
                            "SourceFilterId": "forecast-server-filter",
                            "Type": "SINGLE_SELECT",
                        }
                    }
                ],
            }
        ],
        "FilterGroups": [server_filter],
    }


class Dashboards(Construct):
    """The QuickSight data source over the workgroup, a data set per view, the dashboard, and the role the data
    source queries with (created, or an existing one named in the settings) with its access to the lake."""

    def __init__(self, scope: Construct, construct_id: str, *, catalog: Catalog, settings: StackSettings) -> None:
        super().__init__(scope, construct_id)
        principal = settings.quicksight_principal_arn
        if not principal:
            raise ValueError("Dashboards need settings.quicksight_principal_arn (a QuickSight user or group ARN)")
        account = cdk.Aws.ACCOUNT_ID

        # the role the data source queries Athena with: the stack's own, or an existing one the user names
        self.created_role: iam.Role | None = None
        self.service_role: iam.IRole
        if settings.quicksight_service_role_name:
            self.service_role = iam.Role.from_role_name(
                self, "QuickSightServiceRole", settings.quicksight_service_role_name
            )
        else:
            self.created_role = iam.Role(
                self,
                "DataSourceRole",
                assumed_by=iam.ServicePrincipal("quicksight.amazonaws.com"),
                description="QuickSight's Athena queries of the Capacity Forecaster data sets (the views' tables).",
            )
            self.service_role = self.created_role
        athena = quicksight.CfnDataSource.AthenaParametersProperty(
            work_group=catalog.workgroup_name,
            role_arn=self.created_role.role_arn if self.created_role is not None else None,
        )

        self.data_source = quicksight.CfnDataSource(
            self,
            "DataSource",
            aws_account_id=account,
            data_source_id=f"{PROJECT}-athena",
            name="Capacity Forecaster (Athena)",
            type="ATHENA",
            data_source_parameters=quicksight.CfnDataSource.DataSourceParametersProperty(athena_parameters=athena),
            ssl_properties=quicksight.CfnDataSource.SslPropertiesProperty(disable_ssl=False),
            permissions=[
                quicksight.CfnDataSource.ResourcePermissionProperty(
                    principal=principal, actions=list(DATA_SOURCE_ACTIONS)
                )
            ],
        )
        self.data_source.add_resource_dependency(catalog.workgroup)
        tables = sorted({t for sql in catalog.views.values() for t in view_tables(sql)})
        catalog.grant_query(self.service_role, *tables)
        # the data sets read the views: their Glue definitions too (Athena expands a view from its definition)
        iam.Grant.add_to_principal(
            grantee=self.service_role,
            actions=["glue:GetTable"],
            resource_arns=[catalog.table_arn(view) for view in sorted(catalog.views)],
        )
        iam.Grant.add_to_principal(
            grantee=self.service_role,
            actions=list(QUICKSIGHT_ATHENA_EXTRA_ACTIONS),
            resource_arns=[catalog.workgroup_arn()],
        )
        self._acknowledge(self.service_role, catalog=catalog, tables=tables)
        if self.created_role is not None:
            # QuickSight checks the data source's access when it is created: the grants must be in place first
            policy = self.created_role.node.try_find_child("DefaultPolicy")
            if policy is not None:
                self.data_source.node.add_dependency(policy)

        schemas = view_schemas()
        self.data_sets: dict[str, quicksight.CfnDataSet] = {}
        for view in sorted(catalog.views):
            self.data_sets[view] = self._data_set(view, schemas[view], catalog=catalog, principal=principal)
            if catalog.views_resource is not None:  # the views exist before the data sets over them
                self.data_sets[view].node.add_dependency(catalog.views_resource)

        self.dashboard = quicksight.CfnDashboard(
            self,
            "Dashboard",
            aws_account_id=account,
            dashboard_id=PROJECT,
            name="Capacity Forecaster",
            permissions=[
                quicksight.CfnDashboard.ResourcePermissionProperty(principal=principal, actions=list(DASHBOARD_ACTIONS))
            ],
        )
        # The Definition is CloudFormation JSON built by a pure function (tested on its own, linted by cfn-lint).
        self.dashboard.add_property_override(
            "Definition",
            dashboard_definition({v: self.data_sets[v].attr_arn for v in DASHBOARD_VIEWS}, schemas),
        )

    def _acknowledge(self, role: iam.IRole, *, catalog: Catalog, tables: list[str]) -> None:
        """cdk-nag findings on the service role's policy that are by design, each with its reason."""
        stack = cdk.Stack.of(self)
        bucket = catalog.lake.bucket.node.default_child
        assert isinstance(bucket, cdk.CfnElement)
        bucket_id = stack.resolve(bucket.logical_id)
        prefixes = {catalog.table_schemas[t].prefix: "the table is read by a view" for t in tables}
        prefixes[ATHENA_RESULTS_PREFIX] = "Athena writes the query results there and QuickSight reads them back"
        for prefix, why in sorted(prefixes.items()):
            key = prefix.rstrip("/")
            cdk.Validations.of(role).acknowledge(
                cdk.Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{key}/*]",
                    reason=f"QuickSight's Athena queries read the objects under {key}/ ({why}): "
                    "one lake prefix, the narrowest scope for a table of one object per partition.",
                )
            )

    def _data_set(self, view: str, schema: pa.Schema, *, catalog: Catalog, principal: str) -> quicksight.CfnDataSet:
        return quicksight.CfnDataSet(
            self,
            f"DataSet-{view}",
            aws_account_id=cdk.Aws.ACCOUNT_ID,
            data_set_id=f"{PROJECT}-{view.replace('_', '-')}",
            name=f"Capacity Forecaster {view}",
            import_mode="DIRECT_QUERY",
            physical_table_map={
                view.replace("_", "-"): quicksight.CfnDataSet.PhysicalTableProperty(
                    # the view itself, as Athena has it in the Glue database (created at deploy by the catalog)
                    relational_table=quicksight.CfnDataSet.RelationalTableProperty(
                        data_source_arn=self.data_source.attr_arn,
                        catalog=ATHENA_CATALOG,
                        schema=catalog.database_name,
                        name=view,
                        input_columns=[
                            quicksight.CfnDataSet.InputColumnProperty(
                                name=f.name, type=quicksight_type(f.type), sub_type=quicksight_sub_type(f.type)
                            )
                            for f in schema
                        ],
                    )
                )
            },
            permissions=[
                quicksight.CfnDataSet.ResourcePermissionProperty(principal=principal, actions=list(DATA_SET_ACTIONS))
            ],
        )
