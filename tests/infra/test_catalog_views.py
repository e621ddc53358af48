"""The planners' views deployed as Athena named queries: one per ``sql/*.sql`` file, in the workgroup."""

from __future__ import annotations

from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from capacity_forecaster.query import views
from infra.catalog import NAMED_QUERY_DESCRIPTION_MAX, view_description
from infra.settings import StackSettings
from infra.stack import CapacityForecasterStack
from tests.infra.template_tools import logical_id

DEFAULTS = StackSettings()


def named_queries(template_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Named query name -> its resource."""
    found = {}
    for resource in template_json["Resources"].values():
        if resource["Type"] == "AWS::Athena::NamedQuery":
            found[resource["Properties"]["Name"]] = resource
    return found


def test_one_named_query_per_sql_file(template_json: dict[str, Any]) -> None:
    expected = ["fleet_summary", "forecast_accuracy", "latest_forecasts", "risk_servers"]
    assert sorted(named_queries(template_json)) == sorted(views()) == expected


@pytest.mark.parametrize("name", sorted(views()))
def test_named_query_is_the_view_statement_in_the_workgroup(
    template_json: dict[str, Any], stack: CapacityForecasterStack, name: str
) -> None:
    resource = named_queries(template_json)[name]
    props = resource["Properties"]
    assert props["QueryString"] == views()[name].strip()
    assert props["Database"] == DEFAULTS.glue_database_name
    assert props["WorkGroup"] == DEFAULTS.athena_workgroup_name
    assert props["Description"] == view_description(views()[name])
    assert 20 <= len(props["Description"]) <= NAMED_QUERY_DESCRIPTION_MAX
    # named, not referenced: the query must wait for the workgroup and the database to exist
    depends = set(resource["DependsOn"])
    assert logical_id(stack, stack.catalog.workgroup) in depends
    assert logical_id(stack, stack.catalog.database) in depends


@pytest.mark.parametrize("name", sorted(views()))
def test_named_query_creates_the_view_of_its_name_in_trino(template_json: dict[str, Any], name: str) -> None:
    tree = sqlglot.parse_one(named_queries(template_json)[name]["Properties"]["QueryString"], read="trino")
    assert isinstance(tree, exp.Create)
    assert tree.args["kind"] == "VIEW" and tree.args.get("replace") is True
    assert tree.this.name == name
    # every table it reads is a Glue table of the catalog (or one of its own CTEs)
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    read = {t.name for t in tree.expression.find_all(exp.Table)} - ctes
    glue_tables = {
        r["Properties"]["TableInput"]["Name"]
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::Glue::Table"
    }
    assert read and read <= glue_tables


def test_view_description_is_the_leading_comment() -> None:
    sql = "-- Which servers run hot,\n-- and when.\nCREATE OR REPLACE VIEW v AS SELECT 1\n-- not this"
    assert view_description(sql) == "Which servers run hot, and when."


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("CREATE OR REPLACE VIEW v AS SELECT 1", "must start with a -- comment"),
        ("-- " + "x" * 1100 + "\nCREATE VIEW v AS SELECT 1", "exceeds Athena's 1024"),
    ],
)
def test_view_description_refuses_what_athena_would(sql: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        view_description(sql)


# ---- the views exist right after deploy: a custom resource runs the statements -------------------------------


def views_resource(template_json: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [(rid, resource)] = [(k, v) for k, v in template_json["Resources"].items() if v["Type"] == "Custom::AthenaViews"]
    return rid, resource


def test_a_custom_resource_runs_every_view_statement_in_dependency_order(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    from infra.catalog import view_order

    _, resource = views_resource(template_json)
    props = resource["Properties"]
    assert props["Database"] == DEFAULTS.glue_database_name and props["WorkGroup"] == DEFAULTS.athena_workgroup_name
    assert [v["Name"] for v in props["Views"]] == view_order(views())
    assert {v["Name"]: v["Sql"] for v in props["Views"]} == {n: sql.strip() for n, sql in views().items()}
    # the Provider framework's function is its service token; it invokes the boto3-only views handler
    handler = stack.catalog.node.find_child("ViewsHandler")
    handler_props = template_json["Resources"][logical_id(stack, handler)]["Properties"]
    assert handler_props["Handler"] == "handler.on_event" and handler_props["Runtime"] == "python3.13"


def test_the_views_wait_for_the_database_the_workgroup_and_every_table(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    _, resource = views_resource(template_json)
    catalog = stack.catalog
    needed = {logical_id(stack, catalog.database), logical_id(stack, catalog.workgroup)}
    needed |= {logical_id(stack, t) for t in catalog.tables.values()}
    assert needed <= set(resource["DependsOn"])


def test_the_views_handler_may_run_ddl_in_the_workgroup_and_the_database_only(
    template_json: dict[str, Any], stack: CapacityForecasterStack
) -> None:
    from infra.catalog import VIEW_DDL_ATHENA_ACTIONS, VIEW_DDL_GLUE_ACTIONS
    from tests.infra.template_tools import render, statements

    handler = stack.catalog.node.find_child("ViewsHandler")
    role = logical_id(stack, handler.role)
    granted: dict[str, set[str]] = {}
    for statement in statements(template_json, role):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            granted.setdefault(action, set()).update(render(r) for r in resources)
    for action in VIEW_DDL_ATHENA_ACTIONS:
        assert granted[action] == {
            f"arn:<AWS::Partition>:athena:<AWS::Region>:<AWS::AccountId>:workgroup/{DEFAULTS.athena_workgroup_name}"
        }
    glue_arn = "arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>"
    db = DEFAULTS.glue_database_name
    for action in VIEW_DDL_GLUE_ACTIONS:
        assert granted[action] == {f"{glue_arn}:catalog", f"{glue_arn}:database/{db}", f"{glue_arn}:table/{db}/*"}
    bucket = logical_id(stack, stack.lake.bucket)
    assert granted["s3:PutObject"] == {f"<{bucket}.Arn>/athena-results/*"}
    assert not [a for a in granted if a.startswith("athena:") and a not in VIEW_DDL_ATHENA_ACTIONS]


def test_view_order_puts_a_view_after_the_views_it_reads() -> None:
    from infra.catalog import view_order

    order = view_order({"top": "SELECT * FROM middle", "middle": "SELECT * FROM base JOIN risk_register", "base": "x"})
    assert order == ["base", "middle", "top"]
    with pytest.raises(ValueError, match="cycle"):
        view_order({"a": "SELECT * FROM b", "b": "SELECT * FROM a"})


def test_the_views_are_replaced_when_a_table_changes_its_columns() -> None:
    import dataclasses

    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from app import load_cdk_context
    from capacity_forecaster.schema import TABLES
    from infra.catalog import Catalog
    from infra.storage import DataLake

    def views_properties(tables: list[Any]) -> dict[str, Any]:
        stack = cdk.Stack(cdk.App(context=load_cdk_context()), "ViewsProbe")
        lake = DataLake(stack, "Lake", settings=DEFAULTS)
        Catalog(stack, "Catalog", lake=lake, settings=DEFAULTS, tables=tables)
        [resource] = Template.from_stack(stack).find_resources("Custom::AthenaViews").values()
        return dict(resource["Properties"])

    tables = list(TABLES.values())
    register = TABLES["risk_register"]
    fewer = dataclasses.replace(register, columns=register.columns[:-1])
    before = views_properties(tables)
    after = views_properties([fewer if t is register else t for t in tables])
    assert before["TablesDigest"] != after["TablesDigest"]
    assert before["Views"] == after["Views"]
