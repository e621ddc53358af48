"""The optional dashboards: absent by default; with a QuickSight principal, a data source over the workgroup, a
data set per view, the dashboard and the service role's access, clean under cdk-nag and cfn-lint."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import duckdb
import pyarrow as pa
import pytest
import sqlglot
from aws_cdk.assertions import Template
from cfnlint.api import ManualArgs, lint_file

from app import load_cdk_context
from capacity_forecaster.query import view_tables, views
from capacity_forecaster.schema import TABLES
from capacity_forecaster.view_schemas import view_schemas
from infra import names
from infra.catalog import ATHENA_QUERY_ACTIONS, Catalog, view_order
from infra.dashboards import (
    ATHENA_CATALOG,
    DASHBOARD_ACTIONS,
    DASHBOARD_VIEWS,
    DATA_SET_ACTIONS,
    DATA_SOURCE_ACTIONS,
    RISK_TABLE_COLUMNS,
    Dashboards,
    dashboard_definition,
    quicksight_sub_type,
    quicksight_type,
)
from infra.settings import SettingsError, StackSettings
from infra.stack import CapacityForecasterStack
from infra.storage import DataLake
from tests.infra.options import QUICKSIGHT_PRINCIPAL, OptionsSynth
from tests.infra.template_tools import logical_id, render
from tests.infra.test_nag import MIN_REASON, acknowledgments

PRINCIPAL = QUICKSIGHT_PRINCIPAL
DEFAULTS = StackSettings()


DashboardSynth = OptionsSynth


@pytest.fixture(scope="module")
def dash(options_synth: OptionsSynth) -> OptionsSynth:
    return options_synth


def of_type(template_json: dict[str, Any], cfn_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == cfn_type}


# ---- absent by default ----------------------------------------------------------------------------------


def test_no_quicksight_resources_by_default(template_json: dict[str, Any], stack: CapacityForecasterStack) -> None:
    assert stack.dashboards is None
    assert not [r for r in template_json["Resources"].values() if r["Type"].startswith("AWS::QuickSight::")]
    assert names.OUTPUT_DASHBOARD_ID not in template_json.get("Outputs", {})


# ---- present with a principal ---------------------------------------------------------------------------


def test_data_source_is_athena_over_the_workgroup(dash: DashboardSynth) -> None:
    sources = of_type(dash.template_json, "AWS::QuickSight::DataSource")
    assert len(sources) == 1
    (resource,) = sources.values()
    props = resource["Properties"]
    assert props["Type"] == "ATHENA"
    assert dash.stack.dashboards is not None and dash.stack.dashboards.created_role is not None
    role = logical_id(dash.stack, dash.stack.dashboards.created_role)
    assert props["DataSourceParameters"] == {
        "AthenaParameters": {"WorkGroup": DEFAULTS.athena_workgroup_name, "RoleArn": {"Fn::GetAtt": [role, "Arn"]}}
    }
    assert props["SslProperties"] == {"DisableSsl": False}
    assert props["AwsAccountId"] == {"Ref": "AWS::AccountId"}
    assert props["Permissions"] == [{"Principal": PRINCIPAL, "Actions": list(DATA_SOURCE_ACTIONS)}]
    assert logical_id(dash.stack, dash.stack.catalog.workgroup) in resource["DependsOn"]


def data_sets(dash: DashboardSynth) -> dict[str, dict[str, Any]]:
    """View name -> the data set's properties."""
    found = {}
    for resource in of_type(dash.template_json, "AWS::QuickSight::DataSet").values():
        (table,) = resource["Properties"]["PhysicalTableMap"].values()
        found[table["RelationalTable"]["Name"]] = resource["Properties"]
    return found


def test_one_direct_query_data_set_per_view(dash: DashboardSynth) -> None:
    assert dash.stack.dashboards is not None
    source_id = logical_id(dash.stack, dash.stack.dashboards.data_source)
    found = data_sets(dash)
    assert sorted(found) == sorted(views())
    for view, props in found.items():
        assert props["ImportMode"] == "DIRECT_QUERY"
        assert props["Permissions"] == [{"Principal": PRINCIPAL, "Actions": list(DATA_SET_ACTIONS)}]
        table = props["PhysicalTableMap"][view.replace("_", "-")]["RelationalTable"]
        assert table["DataSourceArn"] == {"Fn::GetAtt": [source_id, "Arn"]}
        # the view itself, in the Glue database the catalog creates it in at deploy
        assert (table["Catalog"], table["Schema"], table["Name"]) == (
            ATHENA_CATALOG,
            DEFAULTS.glue_database_name,
            view,
        )
        schema = view_schemas()[view]
        assert table["InputColumns"] == [
            {"Name": f.name, "Type": quicksight_type(f.type)}
            | ({"SubType": "FLOAT"} if pa.types.is_floating(f.type) else {})
            for f in schema
        ]
        assert any(c.get("SubType") == "FLOAT" for c in table["InputColumns"])


@pytest.mark.parametrize("view", sorted(views()))
def test_the_view_returns_the_columns_its_data_set_declares(view: str) -> None:
    """The view's statement, run as written (transpiled to DuckDB) in a schema named like the Glue database over
    empty tables, creates a view whose columns are those the data set declares, in order and with their types."""
    database = DEFAULTS.glue_database_name
    con = duckdb.connect(":memory:")
    con.execute(f"CREATE SCHEMA {database}")
    con.execute(f"SET schema = '{database}'")
    for name, table in TABLES.items():
        con.register(f"_empty_{name}", table.arrow_schema(with_partitions=True).empty_table())
        con.execute(f'CREATE VIEW {database}."{name}" AS SELECT * FROM "_empty_{name}"')
    for name in view_order(views()):  # the views the view reads are created first, as at deploy
        con.execute(sqlglot.transpile(views()[name], read="trino", write="duckdb")[0])
    schema = con.sql(f'SELECT * FROM {database}."{view}"').to_arrow_table().schema
    assert [(f.name, quicksight_type(f.type)) for f in schema] == [
        (f.name, quicksight_type(f.type)) for f in view_schemas()[view]
    ]


def test_dashboard_definition_and_permissions(dash: DashboardSynth) -> None:
    assert dash.stack.dashboards is not None
    (resource,) = of_type(dash.template_json, "AWS::QuickSight::Dashboard").values()
    props = resource["Properties"]
    assert props["DashboardId"] == names.PROJECT
    assert props["Permissions"] == [{"Principal": PRINCIPAL, "Actions": list(DASHBOARD_ACTIONS)}]
    arns = {
        v: {"Fn::GetAtt": [logical_id(dash.stack, dash.stack.dashboards.data_sets[v]), "Arn"]} for v in DASHBOARD_VIEWS
    }
    assert props["Definition"] == dashboard_definition(arns, view_schemas())
    assert dash.template_json["Outputs"][names.OUTPUT_DASHBOARD_ID]["Value"] == names.PROJECT


def column_references(node: Any) -> list[tuple[str, str]]:
    """Every (data set identifier, column) a definition refers to."""
    found = []
    if isinstance(node, dict):
        if set(node) == {"DataSetIdentifier", "ColumnName"}:
            found.append((node["DataSetIdentifier"], node["ColumnName"]))
        for value in node.values():
            found += column_references(value)
    elif isinstance(node, list):
        for value in node:
            found += column_references(value)
    return found


def test_definition_refers_only_to_declared_data_sets_and_columns() -> None:
    definition = dashboard_definition({v: f"arn:{v}" for v in DASHBOARD_VIEWS}, view_schemas())
    declared = {d["Identifier"] for d in definition["DataSetIdentifierDeclarations"]}
    references = column_references(definition)
    assert references
    for data_set, column in references:
        assert data_set in declared
        assert column in view_schemas()[data_set].names, f"{data_set}.{column}"
    (sheet,) = definition["Sheets"]
    kinds = [next(iter(v)) for v in sheet["Visuals"]]
    assert kinds == ["TableVisual", "LineChartVisual"]
    table = sheet["Visuals"][0]["TableVisual"]["ChartConfiguration"]["FieldWells"]["TableUnaggregatedFieldWells"]
    assert [v["Column"]["ColumnName"] for v in table["Values"]] == list(RISK_TABLE_COLUMNS)
    line = sheet["Visuals"][1]["LineChartVisual"]["ChartConfiguration"]["FieldWells"]["LineChartAggregatedFieldWells"]
    assert [v["NumericalMeasureField"]["Column"]["ColumnName"] for v in line["Values"]] == ["p10", "p50", "p90"]
    # field ids are unique, and the server picker drives the filter on the forecast chart
    wells = [v[next(iter(v))]["ChartConfiguration"]["FieldWells"] for v in sheet["Visuals"]]
    field_ids = _values_of(wells, "FieldId")
    assert len(field_ids) == len(set(field_ids))
    sorts = sheet["Visuals"][0]["TableVisual"]["ChartConfiguration"]["SortConfiguration"]
    assert set(_values_of(sorts, "FieldId")) <= set(field_ids)
    (control,) = sheet["FilterControls"]
    (group,) = definition["FilterGroups"]
    assert control["Dropdown"]["SourceFilterId"] == group["Filters"][0]["CategoryFilter"]["FilterId"]


def _values_of(node: Any, key: str) -> list[Any]:
    if isinstance(node, dict):
        own = [node[key]] if key in node else []
        return own + [x for v in node.values() for x in _values_of(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in _values_of(v, key)]
    return []


def test_the_stack_creates_the_role_quicksight_queries_with(dash: DashboardSynth) -> None:
    """No role has to exist before the deploy: the data source names the stack's own, trusted by QuickSight only,
    and is created after its policy (QuickSight checks its access when the data source is made)."""
    assert DEFAULTS.quicksight_service_role_name == ""
    assert dash.stack.dashboards is not None and dash.stack.dashboards.created_role is not None
    role_id = logical_id(dash.stack, dash.stack.dashboards.created_role)
    role = dash.template_json["Resources"][role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "quicksight.amazonaws.com"}}
    ]
    assert "ManagedPolicyArns" not in role and "RoleName" not in role
    [policy_id] = [
        k
        for k, p in of_type(dash.template_json, "AWS::IAM::Policy").items()
        if p["Properties"]["Roles"] == [{"Ref": role_id}]
    ]
    (source,) = of_type(dash.template_json, "AWS::QuickSight::DataSource").values()
    assert policy_id in source["DependsOn"]


def test_service_role_may_query_the_views_tables(dash: DashboardSynth) -> None:
    assert dash.stack.dashboards is not None and dash.stack.dashboards.created_role is not None
    role_id = logical_id(dash.stack, dash.stack.dashboards.created_role)
    policies = [
        p
        for p in of_type(dash.template_json, "AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role_id}]
    ]
    assert len(policies) == 1
    statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    allowed: dict[str, set[str]] = {}
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        for action in actions:
            allowed.setdefault(action, set()).update(render(r) for r in resources)
    workgroup = f"arn:<AWS::Partition>:athena:<AWS::Region>:<AWS::AccountId>:workgroup/{DEFAULTS.athena_workgroup_name}"
    for action in (*ATHENA_QUERY_ACTIONS, "athena:GetQueryResultsStream"):
        assert allowed[action] == {workgroup}, action
    read_tables = sorted({t for sql in views().values() for t in view_tables(sql)})
    glue_tables = {r.rsplit("/", 1)[1] for r in allowed["glue:GetTable"] if ":table/" in r}
    assert glue_tables == set(read_tables) | set(views())  # the tables the views read, and the views
    bucket = logical_id(dash.stack, dash.stack.lake.bucket)
    objects = {r.removeprefix(f"<{bucket}.Arn>/") for r in allowed["s3:GetObject"]}
    assert objects == {f"{TABLES[t].prefix}/*" for t in read_tables} | {f"{names.ATHENA_RESULTS_PREFIX}*"}
    assert {r.removeprefix(f"<{bucket}.Arn>/") for r in allowed["s3:PutObject"]} == {f"{names.ATHENA_RESULTS_PREFIX}*"}
    assert "s3:DeleteObject" not in allowed
    assert {r.removeprefix(f"<{bucket}.Arn>/") for r in allowed["s3:ListMultipartUploadParts"]} == {
        f"{names.ATHENA_RESULTS_PREFIX}*"
    }
    assert allowed["s3:ListBucketMultipartUploads"] == {f"<{bucket}.Arn>"}
    assert allowed["kms:Decrypt"] == {f"<{logical_id(dash.stack, dash.stack.lake.key)}.Arn>"}


def test_nag_finds_nothing_unacknowledged_and_acks_are_narrow(dash: DashboardSynth) -> None:
    report = json.loads((dash.assembly_dir / "validation-report.json").read_text(encoding="utf-8"))
    findings = [
        f"{v['ruleName']} at {c['constructPath']}"
        for plugin in report["pluginReports"]
        for v in plugin.get("violations", [])
        for c in v.get("violatingConstructs", [])
    ]
    assert findings == []
    dashboard_acks = [a for a in acknowledgments(dash.assembly_dir) if "/Dashboards/" in a[0]]
    assert dashboard_acks, "the service role's prefix grants are acknowledged with reasons"
    for construct_path, rule, reason in dashboard_acks:
        assert construct_path.endswith("/Dashboards/DataSourceRole"), construct_path
        assert rule.removeprefix("Annotation::").startswith("AwsSolutions-IAM5[Resource::"), rule
        assert len(reason) >= MIN_REASON


def test_cfn_lint_finds_nothing(dash: DashboardSynth) -> None:
    (template,) = dash.assembly_dir.glob("*.template.json")
    matches = lint_file(template, ManualArgs(ignore_checks=["W3005"], regions=["us-east-1", "eu-west-1"]))
    assert [str(m) for m in matches] == []


# ---- the construct and its pure parts, without a synthesis --------------------------------------------------


def test_an_existing_role_can_be_named_instead() -> None:
    """``quicksightServiceRoleName``: the policy goes on that role (by name: QuickSight's own lives under the
    service-role/ path), no role is created, and the data source uses QuickSight's account-wide role."""
    app = cdk.App(context=load_cdk_context())
    stack = cdk.Stack(app, "DashboardsProbe")
    settings = StackSettings(
        quicksight_principal_arn=PRINCIPAL, quicksight_service_role_name="aws-quicksight-service-role-v0"
    )
    lake = DataLake(stack, "Lake", settings=settings)
    catalog = Catalog(stack, "Catalog", lake=lake, settings=settings)
    dashboards = Dashboards(stack, "Dashboards", catalog=catalog, settings=settings)
    assert dashboards.created_role is None
    template = Template.from_stack(stack)
    # the stack's own roles are the catalog's views handler's and its Provider framework's: none for QuickSight
    template.resource_count_is("AWS::IAM::Role", 2)
    quicksight = [
        p
        for p in template.find_resources("AWS::IAM::Policy").values()
        if "aws-quicksight-service-role-v0" in p["Properties"]["Roles"]
    ]
    assert len(quicksight) == 1 and quicksight[0]["Properties"]["Roles"] == ["aws-quicksight-service-role-v0"]
    [source] = template.find_resources("AWS::QuickSight::DataSource").values()
    assert source["Properties"]["DataSourceParameters"] == {
        "AthenaParameters": {"WorkGroup": DEFAULTS.athena_workgroup_name}
    }
    template.resource_count_is("AWS::QuickSight::DataSet", len(views()))


def test_dashboards_need_a_principal() -> None:
    app = cdk.App(context=load_cdk_context())
    stack = cdk.Stack(app, "NoPrincipal")
    lake = DataLake(stack, "Lake", settings=DEFAULTS)
    catalog = Catalog(stack, "Catalog", lake=lake, settings=DEFAULTS)
    with pytest.raises(ValueError, match="quicksight_principal_arn"):
        Dashboards(stack, "Dashboards", catalog=catalog, settings=DEFAULTS)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"quicksightPrincipalArn": "arn:aws:iam::123456789012:user/planner"}, "quicksight_principal_arn"),
        ({"quicksightPrincipalArn": "planner"}, "quicksight_principal_arn"),
        ({"quicksightServiceRoleName": "has space"}, "quicksight_service_role_name"),
    ],
)
def test_dashboard_settings_are_validated(context: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        StackSettings.from_mapping({f"{names.CONTEXT_NAMESPACE}:{k}": v for k, v in context.items()})


@pytest.mark.parametrize(
    "principal",
    [PRINCIPAL, "arn:aws:quicksight:eu-west-1:123456789012:group/default/capacity-planners"],
)
def test_quicksight_users_and_groups_are_accepted(principal: str) -> None:
    assert StackSettings(quicksight_principal_arn=principal).quicksight_principal_arn == principal


@pytest.mark.parametrize(
    ("arrow", "quicksight"),
    [
        (pa.string(), "STRING"),
        (pa.bool_(), "BOOLEAN"),
        (pa.int32(), "INTEGER"),
        (pa.int64(), "INTEGER"),
        (pa.float64(), "DECIMAL"),
        (pa.decimal128(10, 2), "DECIMAL"),
        (pa.date32(), "DATETIME"),
        (pa.timestamp("us", tz="UTC"), "DATETIME"),
    ],
)
def test_quicksight_type(arrow: pa.DataType, quicksight: str) -> None:
    assert quicksight_type(arrow) == quicksight


@pytest.mark.parametrize(
    ("arrow", "sub_type"),
    [(pa.float64(), "FLOAT"), (pa.float32(), "FLOAT"), (pa.decimal128(10, 2), "FIXED"), (pa.int64(), None)],
)
def test_quicksight_sub_type(arrow: pa.DataType, sub_type: str | None) -> None:
    assert quicksight_sub_type(arrow) == sub_type


def test_quicksight_type_refuses_what_it_cannot_map() -> None:
    with pytest.raises(TypeError, match="no QuickSight column type"):
        quicksight_type(pa.list_(pa.string()))


def test_definition_needs_the_views_it_shows() -> None:
    with pytest.raises(ValueError, match="latest_forecasts"):
        dashboard_definition({"risk_servers": "arn:x"}, view_schemas())
    schemas = dict(view_schemas())
    schemas["risk_servers"] = pa.schema([f for f in schemas["risk_servers"] if f.name != "severity_rank"])
    with pytest.raises(ValueError, match=r"risk_servers\.severity_rank"):
        dashboard_definition({v: "arn:x" for v in DASHBOARD_VIEWS}, schemas)


def test_data_sets_wait_for_the_views(dash: DashboardSynth) -> None:
    [views_id] = [k for k, v in dash.template_json["Resources"].items() if v["Type"] == "Custom::AthenaViews"]
    sets = of_type(dash.template_json, "AWS::QuickSight::DataSet")
    assert sets and all(views_id in r.get("DependsOn", []) for r in sets.values())
