"""The views custom resource's handler against moto's Athena on loopback: Create and Update run each view's
statement in the workgroup and database, in order, and wait for it; Delete leaves the views; a statement that
fails or cannot start fails the deployment with its reason."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from capacity_forecaster.query import views
from infra.catalog import view_order
from tests.lambda_modules import load_handler

DATABASE = "capacity_forecaster"


@pytest.fixture
def athena(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ATHENA", moto_server)
    yield boto3.client("athena")


@pytest.fixture
def workgroup(athena: Any) -> str:
    name = f"cf-{uuid.uuid4().hex[:8]}"
    athena.create_work_group(Name=name, Configuration={"ResultConfiguration": {"OutputLocation": "s3://r/x/"}})
    return name


def event(request: str, workgroup: str, names: list[str], **extra: Any) -> dict[str, Any]:
    statements = [{"Name": n, "Sql": views()[n].strip()} for n in names]
    props = {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:p", "Database": DATABASE}
    return {
        "RequestType": request,
        "ResourceProperties": {**props, "WorkGroup": workgroup, "Views": statements},
    } | extra


def executions(athena: Any, workgroup: str) -> list[dict[str, Any]]:
    ids = athena.list_query_executions(WorkGroup=workgroup)["QueryExecutionIds"]
    found = [athena.get_query_execution(QueryExecutionId=i)["QueryExecution"] for i in ids]
    return sorted(found, key=lambda q: q["Status"]["SubmissionDateTime"])


def test_create_runs_each_view_statement_in_order_in_the_workgroup_and_database(athena: Any, workgroup: str) -> None:
    handler = load_handler("create_views")
    order = view_order(views())
    result = handler.on_event(event("Create", workgroup, order))
    assert result == {"PhysicalResourceId": f"{DATABASE}/views", "Data": {"Views": ",".join(order)}}
    ran = executions(athena, workgroup)
    assert [q["Query"] for q in ran] == [views()[n].strip() for n in order]
    assert {q["QueryExecutionContext"]["Database"] for q in ran} == {DATABASE}
    assert {q["Status"]["State"] for q in ran} == {"SUCCEEDED"}


def test_update_replaces_the_views_and_drops_those_no_longer_listed(athena: Any, workgroup: str) -> None:
    handler = load_handler("create_views")
    old = event("Create", workgroup, ["risk_servers", "fleet_summary"])["ResourceProperties"]
    update = event("Update", workgroup, ["risk_servers"], PhysicalResourceId="x", OldResourceProperties=old)
    assert handler.on_event(update)["PhysicalResourceId"] == "x"
    assert [q["Query"] for q in executions(athena, workgroup)] == [
        views()["risk_servers"].strip(),
        'DROP VIEW IF EXISTS "fleet_summary"',
    ]


def test_delete_leaves_the_views(athena: Any, workgroup: str) -> None:
    handler = load_handler("create_views")
    deleted = handler.on_event(event("Delete", workgroup, ["risk_servers"], PhysicalResourceId="p"))
    assert deleted == {"PhysicalResourceId": "p"}
    assert executions(athena, workgroup) == []


def stubbed(states: list[dict[str, Any]], *, stop: bool = False) -> tuple[Any, Any]:
    """A real Athena client whose answers are botocore-stubbed (moto's Athena runs no SQL, so it never fails
    one): the statement starts as q-1, then reports ``states`` in turn."""
    from botocore.stub import Stubber

    client = boto3.client("athena", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_response("start_query_execution", {"QueryExecutionId": "q-1"})
    for status in states:
        stubber.add_response("get_query_execution", {"QueryExecution": {"Status": status}}, {"QueryExecutionId": "q-1"})
    if stop:
        stubber.add_response("stop_query_execution", {}, {"QueryExecutionId": "q-1"})
    stubber.activate()
    return client, stubber


def test_a_failed_statement_fails_the_deployment_with_its_reason() -> None:
    handler = load_handler("create_views")
    reason = "line 3:6: Table 'capacity_forecaster.risk_register'\n does not exist"
    client, stubber = stubbed([{"State": "RUNNING"}, {"State": "FAILED", "StateChangeReason": reason}])
    handler.POLL_SECONDS = 0
    message = r"view risk_servers FAILED \(query q-1\): line 3:6: Table 'capacity_forecaster.risk_register' does not"
    with pytest.raises(handler.ViewError, match=message):
        handler.run_statement(
            client, "CREATE ...", database=DATABASE, workgroup="wg", what="view risk_servers", deadline=1e12
        )
    stubber.assert_no_pending_responses()


def test_a_statement_still_running_at_the_deadline_is_stopped_and_fails_the_deployment() -> None:
    handler = load_handler("create_views")
    client, stubber = stubbed([{"State": "RUNNING"}], stop=True)
    with pytest.raises(handler.ViewError, match=r"view a did not finish within \d+ s \(query q-1, stopped\)"):
        handler.run_statement(client, "CREATE ...", database=DATABASE, workgroup="wg", what="view a", deadline=0)
    stubber.assert_no_pending_responses()


def test_a_statement_that_cannot_start_fails_the_deployment(athena: Any) -> None:
    from botocore.exceptions import ClientError

    handler = load_handler("create_views")
    with pytest.raises(ClientError):
        handler.on_event(event("Create", f"missing-{uuid.uuid4().hex[:6]}", ["risk_servers"]))
