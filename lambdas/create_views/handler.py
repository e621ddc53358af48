"""Custom resource handler: create (or replace) the planners' Athena views when the stack is created or updated.

A zip function with boto3 only, behind CDK's custom resource Provider: the Provider sends CloudFormation the
response, so an exception here fails the deployment with its message. The resource's properties carry the
``CREATE OR REPLACE VIEW`` statements in dependency order (infra/catalog.py builds them from the domain
package's ``sql/*.sql``), the Glue database and the Athena workgroup. Each statement is started, then polled
until it succeeds or fails, within a bounded wait. On Update, views no longer listed are dropped. On Delete the
views are left: they are metadata in the Glue database, which goes with the stack.
"""

from __future__ import annotations

import time
from typing import Any, Final

import boto3

MAX_WAIT_SECONDS: Final = 120
"""The longest one statement is waited for (a view's DDL takes seconds)."""
POLL_SECONDS: Final = 1.0
DONE: Final = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class ViewError(RuntimeError):
    """A view statement failed or did not finish in time; the message is CloudFormation's failure reason."""


def run_statement(athena: Any, sql: str, *, database: str, workgroup: str, what: str, deadline: float) -> str:
    """Run one DDL statement in the workgroup and wait for it; the query execution id."""
    started = athena.start_query_execution(
        QueryString=sql, QueryExecutionContext={"Database": database}, WorkGroup=workgroup
    )
    query_id = str(started["QueryExecutionId"])
    while True:
        status = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]
        state = status["State"]
        if state == "SUCCEEDED":
            return query_id
        if state in DONE:
            reason = " ".join(str(status.get("StateChangeReason") or "no reason given").split())
            raise ViewError(f"{what} {state} (query {query_id}): {reason}")
        if time.monotonic() >= deadline:
            athena.stop_query_execution(QueryExecutionId=query_id)
            raise ViewError(f"{what} did not finish within {MAX_WAIT_SECONDS} s (query {query_id}, stopped)")
        time.sleep(POLL_SECONDS)


def view_names(properties: dict[str, Any] | None) -> list[str]:
    return [str(v["Name"]) for v in (properties or {}).get("Views", [])]


def on_event(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The Provider's onEvent: Create/Update run the views' statements in order; Delete leaves the views."""
    props = event["ResourceProperties"]
    database, workgroup = str(props["Database"]), str(props["WorkGroup"])
    physical_id = event.get("PhysicalResourceId") or f"{database}/views"
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": physical_id}
    athena = boto3.client("athena")
    done = []
    for view in props["Views"]:
        name, sql = str(view["Name"]), str(view["Sql"])
        deadline = time.monotonic() + MAX_WAIT_SECONDS
        run_statement(athena, sql, database=database, workgroup=workgroup, what=f"view {name}", deadline=deadline)
        done.append(name)
    if event["RequestType"] == "Update":
        for gone in sorted(set(view_names(event.get("OldResourceProperties"))) - set(done)):
            deadline = time.monotonic() + MAX_WAIT_SECONDS
            drop = f'DROP VIEW IF EXISTS "{gone}"'
            run_statement(athena, drop, database=database, workgroup=workgroup, what=f"drop {gone}", deadline=deadline)
    return {"PhysicalResourceId": physical_id, "Data": {"Views": ",".join(done)}}
