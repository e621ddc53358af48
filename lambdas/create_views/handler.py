"""Custom resource handler: create (or replace) the planners' Athena views when the stack is created or updated.

A zip function with boto3 only, behind CDK's custom resource Provider: the Provider sends CloudFormation the
response, so an exception here fails the deployment with its message. The resource's properties carry the
``CREATE OR REPLACE VIEW`` statements in dependency order (infra/catalog.py builds them from the domain
package's ``sql/*.sql``), the Glue database and the Athena workgroup. Each statement is started, then polled
until it succeeds or fails, within a bounded wait. On Update, views no longer listed are dropped. On Delete the
views are left: they are metadata in the Glue database, which goes with the stack.

A malformed request (not an object, an unknown RequestType, properties missing or of the wrong type, a view name
that is not an identifier) is rejected before any Athena call: one log line, the ``RejectedEvents`` metric (an
embedded-metric line, as Powertools writes them; this function has boto3 only) and a :class:`RequestError`
whose one-line message the Provider gives CloudFormation as the reason the resource failed. Raising is how a
custom resource says no: a returned value would tell CloudFormation the views exist.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import boto3

MAX_WAIT_SECONDS: Final = 120
"""The longest one statement is waited for (a view's DDL takes seconds)."""
POLL_SECONDS: Final = 1.0
DONE: Final = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
REQUEST_TYPES: Final = ("Create", "Update", "Delete")
NAMESPACE: Final = "CapacityForecaster"
"""The metrics namespace of every function (infra/names.POWERTOOLS_NAMESPACE)."""
SERVICE: Final = "capacity-forecaster-views"
MAX_REASON: Final = 300
_VIEW_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_DATABASE = re.compile(r"[a-z0-9_]{1,255}")
_WORKGROUP = re.compile(r"[A-Za-z0-9._-]{1,128}")


class ViewError(RuntimeError):
    """A view statement failed or did not finish in time; the message is CloudFormation's failure reason."""


class RequestError(ViewError):
    """A malformed custom resource request: the resource fails with this one line, before any Athena call."""


@dataclass(frozen=True)
class Request:
    """A checked request: what to run (Create/Update), what was there before (Update), the resource's id."""

    kind: str
    physical_id: str
    database: str = ""
    workgroup: str = ""
    views: tuple[tuple[str, str], ...] = ()
    old_names: tuple[str, ...] = ()


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reject(reason: str) -> NoReturn:
    """Log the reason in one line, count it (``RejectedEvents``) and fail the resource with it."""
    reason = " ".join(reason.split())
    reason = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
    metric = {
        "Namespace": NAMESPACE,
        "Dimensions": [["service"]],
        "Metrics": [{"Name": "RejectedEvents", "Unit": "Count"}],
    }
    emf = {"_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [metric]}, "service": SERVICE}
    print(json.dumps({**emf, "RejectedEvents": [1.0]}))
    print(json.dumps({"level": "ERROR", "message": "request rejected", "service": SERVICE, "reason": reason}))
    raise RequestError(f"request rejected: {reason}")


def _views(props: dict[str, Any], what: str) -> tuple[tuple[str, str], ...]:
    views = props.get("Views")
    if not isinstance(views, list):
        reject(f"{what}.Views must be a list of {{Name, Sql}} objects, not {type(views).__name__}")
    found = []
    for i, view in enumerate(views):
        name = view.get("Name") if isinstance(view, dict) else None
        sql = view.get("Sql") if isinstance(view, dict) else None
        if not isinstance(name, str) or not _VIEW_NAME.fullmatch(name):
            reject(f"{what}.Views[{i}].Name must be an identifier, not {_shown(name)}")
        if not isinstance(sql, str) or not sql.strip():
            reject(f"{what}.Views[{i}].Sql of view {name} must be a statement, not {_shown(sql)}")
        found.append((name, sql))
    return tuple(found)


def parse_request(event: Any) -> Request:
    """The Provider's event checked; :func:`reject` for anything malformed."""
    if not isinstance(event, dict):
        reject(f"expected a custom resource request object, got {type(event).__name__}")
    kind = event.get("RequestType")
    if not isinstance(kind, str) or kind not in REQUEST_TYPES:
        reject(f"RequestType must be one of {', '.join(REQUEST_TYPES)}, not {_shown(kind)}")
    physical_id = event.get("PhysicalResourceId", "" if kind == "Create" else None)  # a Create has none yet
    if not isinstance(physical_id, str) or (kind != "Create" and not physical_id):
        reject(f"{kind} request PhysicalResourceId must be a non-empty string, not {_shown(physical_id)}")
    if kind == "Delete":
        return Request(kind=kind, physical_id=physical_id)
    props = event.get("ResourceProperties")
    if not isinstance(props, dict):
        reject(f"ResourceProperties must be an object, not {type(props).__name__}")
    database, workgroup = props.get("Database"), props.get("WorkGroup")
    if not isinstance(database, str) or not _DATABASE.fullmatch(database):
        reject(f"ResourceProperties.Database must be a Glue database name, not {_shown(database)}")
    if not isinstance(workgroup, str) or not _WORKGROUP.fullmatch(workgroup):
        reject(f"ResourceProperties.WorkGroup must be an Athena workgroup name, not {_shown(workgroup)}")
    views = _views(props, "ResourceProperties")
    old_names: tuple[str, ...] = ()
    if kind == "Update":
        old = event.get("OldResourceProperties")
        if not isinstance(old, dict):
            reject(f"OldResourceProperties must be an object, not {type(old).__name__}")
        old_names = tuple(name for name, _ in _views(old, "OldResourceProperties"))
    return Request(
        kind=kind,
        physical_id=physical_id or f"{database}/views",
        database=database,
        workgroup=workgroup,
        views=views,
        old_names=old_names,
    )


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


def on_event(event: Any, context: Any = None) -> dict[str, Any]:
    """The Provider's onEvent: Create/Update run the views' statements in order; Delete leaves the views."""
    request = parse_request(event)
    if request.kind == "Delete":
        return {"PhysicalResourceId": request.physical_id}
    athena = boto3.client("athena")
    database, workgroup = request.database, request.workgroup
    done = []
    for name, sql in request.views:
        deadline = time.monotonic() + MAX_WAIT_SECONDS
        run_statement(athena, sql, database=database, workgroup=workgroup, what=f"view {name}", deadline=deadline)
        done.append(name)
    for gone in sorted(set(request.old_names) - set(done)):
        deadline = time.monotonic() + MAX_WAIT_SECONDS
        drop = f'DROP VIEW IF EXISTS "{gone}"'
        run_statement(athena, drop, database=database, workgroup=workgroup, what=f"drop {gone}", deadline=deadline)
    return {"PhysicalResourceId": request.physical_id, "Data": {"Views": ",".join(done)}}
