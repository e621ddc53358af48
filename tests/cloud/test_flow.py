"""The deployed pipeline end to end on moto, each function in its own image, every AWS call against its role.

See conftest.py for the flow. The figures (functions run, calls recorded, calls denied, wall time) are printed;
``pytest -s`` shows them.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from capacity_forecaster import schema
from capacity_forecaster.access import CLOUDWATCH_PULL_ACTIONS, QUARANTINED_FILES_PREFIX
from tests.cloud.conftest import UNREADABLE_KEY, UPLOAD_KEY, CloudStack, Flow, Provisioned
from tests.cloud.iam import Decision, Request, UnmappedCall, requests_for
from tests.cloud.template import Resolver, policy_set
from tests.images import outside_image

EXPECTED_TABLES = (
    schema.METRICS_DAILY,
    schema.QUARANTINE,
    schema.SERVER_ATTRIBUTES,
    schema.FORECASTS,
    schema.MODEL_METRICS,
    schema.RISK_REGISTER,
    schema.CONSOLIDATION,
)
REPORT_TYPES = {
    "html": "text/html; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
"""The content type of each kind of report object (docs/cloud.md, "Where the reports land")."""


def _lake(flow: Flow, endpoint: str) -> Any:
    from capacity_forecaster.storage.lake import open_lake
    from capacity_forecaster.storage.s3_client import S3Config

    return open_lake(f"s3://{flow.bucket}", S3Config(endpoint_url=endpoint, region=flow.facts.region))


def _requests(flow: Flow) -> list[Request]:
    """Every IAM request of every recorded call; an unmapped call fails the test loudly."""
    out, unmapped = [], []
    for run, call in flow.calls:
        try:
            out += requests_for(call, run.principal, flow.facts)
        except UnmappedCall as exc:
            unmapped.append(f"{run.step}: {exc}")
    assert not unmapped, "calls the IAM evaluator cannot map:\n" + "\n".join(unmapped)
    return out


def _denied(decisions: list[Decision]) -> list[Decision]:
    return [d for d in decisions if not d.allowed]


def test_every_function_runs_in_its_image_and_fills_the_lake(flow: Flow, cloud_moto: str) -> None:
    flow.require()
    steps = [r.step for r in flow.runs]
    assert steps[:4] == ["views", "generate", "etl:schedule", "etl:upload"], steps
    assert steps[4:8] == ["pull_cloudwatch", "etl:cloudwatch", "launch", "train:algo-1"], steps
    assert {"train:algo-2", "train:sagemaker"} <= set(steps) and steps[-1] == "risk"
    lake = _lake(flow, cloud_moto)
    empty = [t.name for t in EXPECTED_TABLES if lake.read_table(t).empty]
    assert not empty, f"tables left empty by the flow: {empty}"
    upload = next(r for r in flow.runs if r.step == "etl:upload").result or {}
    assert upload["trigger"] == UPLOAD_KEY
    moved = [o.key for o in lake.store.list(QUARANTINED_FILES_PREFIX)]
    assert any(k.endswith(UNREADABLE_KEY) for k in moved), (
        f"the unreadable upload is not under quarantine/files/: {moved}"
    )
    assert not [o.key for o in lake.store.list(UNREADABLE_KEY)], "the unreadable upload is still under raw/uploads/"
    attributes = lake.read_table(schema.SERVER_ATTRIBUTES)
    assert set(attributes[attributes["attribute"] == "team"]["value"]) == {"web", "data"}
    # the two hosts each forecast their own series, together the whole fleet
    hosts = [r for r in flow.runs if r.step.startswith("train:algo-")]
    assert len(hosts) == 2 and all(r.returncode == 0 for r in hosts)
    risk = next(r for r in flow.runs if r.step == "risk").result or {}
    assert risk["notified"] > 0 and flow.notifications, "the risk Lambda published nothing to the alerts topic"
    publishes = [c for r, c in flow.calls if c["service"] == "sns" and c["operation"] == "Publish"]
    assert [c["params"]["TopicArn"] for c in publishes] == [flow.topic] and publishes[0]["status"] == 200


def test_the_pulled_instances_reach_metrics_daily(flow: Flow, cloud_moto: str) -> None:
    """The puller's object, through the ETL on its Object Created event: every tagged instance's CPU (and the
    agent's memory where it was put) in metrics_daily, the untagged instance nowhere."""
    flow.require()
    pulled = next(r for r in flow.runs if r.step == "pull_cloudwatch").result or {}
    assert pulled["instances"] == len(flow.pulled) and pulled["series_mem_used_percent"] == 1, pulled
    etl = next(r for r in flow.runs if r.step == "etl:cloudwatch").result or {}
    assert etl["trigger"] == str(pulled["written"][0]).removeprefix(f"s3://{flow.bucket}/"), etl
    daily = _lake(flow, cloud_moto).read_table(schema.METRICS_DAILY)
    observed = daily[~daily["imputed"]]
    series = set(zip(observed["server_id"], observed["metric"], strict=True))
    assert {(i, "cpu") for i in flow.pulled} | {(flow.pulled[0], "mem")} <= series, sorted(series)
    assert not set(daily["server_id"]) & set(flow.untagged), "the untagged instance was pulled"


def test_the_risk_run_writes_the_report_and_names_it_in_the_summary(flow: Flow, provisioned: Provisioned) -> None:
    """The report and its exports under reports/run_date=<run date>/, each with its content type, and the run
    summary on the alerts topic naming the report's s3:// key."""
    flow.require()
    s3 = provisioned.clients["s3"]
    prefix = f"reports/run_date={flow.run_date}/"
    listed = s3.list_objects_v2(Bucket=flow.bucket, Prefix=prefix).get("Contents", [])
    types = {o["Key"]: s3.head_object(Bucket=flow.bucket, Key=o["Key"])["ContentType"] for o in listed}
    assert Counter(key.rsplit(".", 1)[-1] for key in types) == {"html": 1, "csv": 2, "xlsx": 1}, types
    assert all(REPORT_TYPES[key.rsplit(".", 1)[-1]] == kind for key, kind in types.items()), types
    [html] = [key for key in types if key.endswith(".html")]
    report = f"s3://{flow.bucket}/{html}"
    risk = next(r for r in flow.runs if r.step == "risk").result or {}
    assert risk["report"] == report, risk
    messages = [str(n.get("Message", n)) for n in flow.notifications]
    assert len(messages) == 1 and f"Report: {report}" in messages[0], messages


def test_the_views_resource_creates_every_view_in_the_workgroup(flow: Flow, provisioned: Provisioned) -> None:
    """The Custom::AthenaViews handler started each view's statement, in the resource's order, in the
    template's workgroup and database, and each succeeded."""
    flow.require()
    athena = provisioned.clients["athena"]
    [resource] = provisioned.resolver.of_type("Custom::AthenaViews").values()
    props = provisioned.resolver.resolve(resource["Properties"])
    ids = athena.list_query_executions(WorkGroup=props["WorkGroup"])["QueryExecutionIds"]
    ran = [athena.get_query_execution(QueryExecutionId=i)["QueryExecution"] for i in ids]
    ran.sort(key=lambda q: q["Status"]["SubmissionDateTime"])
    assert flow.views == [v["Name"] for v in props["Views"]] and flow.views
    assert [q["Query"] for q in ran] == [v["Sql"] for v in props["Views"]]
    assert {q["QueryExecutionContext"]["Database"] for q in ran} == {props["Database"]}
    assert {q["Status"]["State"] for q in ran} == {"SUCCEEDED"}


def test_nothing_is_loaded_from_outside_each_image(flow: Flow) -> None:
    flow.require()
    leaks = {}
    for run in flow.runs:
        if run.step in flow.allowed_paths:
            outside = outside_image(run.modules, flow.allowed_paths[run.step])
            if outside:
                leaks[run.step] = outside
    assert leaks == {}, "modules loaded from outside the image's folders"


def test_every_recorded_call_is_allowed_by_the_synthesized_policies(flow: Flow) -> None:
    decisions = [flow.policies.evaluate(r) for r in _requests(flow)]
    denied = _denied(decisions)
    functions = sorted({r.step.split(":")[0] for r in flow.runs})
    by_step = Counter(r.step for r, _ in flow.calls)
    print(
        f"\ncloud flow: {len(flow.runs)} runs ({', '.join(functions)}), {len(flow.calls)} calls recorded "
        f"({dict(by_step)}), {len(decisions)} IAM requests, {len(denied)} denied, {flow.seconds:.1f} s wall"
    )
    for decision in denied:
        print(f"  {decision}  [{decision.request.call}]")
    flow.require()
    assert len(flow.calls) > 0
    assert not denied, "\n".join(f"{d} [{d.request.call}]" for d in denied)


def test_the_puller_and_the_views_handler_are_checked_against_their_own_roles(flow: Flow) -> None:
    """The puller's EC2 and CloudWatch calls and the views handler's Athena calls (with the Glue calls and the
    result write Athena makes for them) are evaluated as requests of their own function's role."""
    flow.require()
    requests = _requests(flow)
    for step, wanted in (
        ("pull_cloudwatch", {*CLOUDWATCH_PULL_ACTIONS, "s3:PutObject"}),
        ("views", {"athena:StartQueryExecution", "athena:GetQueryExecution", "glue:CreateTable", "s3:PutObject"}),
    ):
        run = next(r for r in flow.runs if r.step == step)
        role = flow.resolver.logical_id_of(run.principal)
        assert role is not None and flow.resolver.resources[role]["Type"] == "AWS::IAM::Role", run.principal
        actions = {r.action for r in requests if r.principal == run.principal}
        assert wanted <= actions, f"{step}: {sorted(actions)}"


def test_removing_one_grant_denies_a_recorded_call(flow: Flow, cloud_stack: CloudStack) -> None:
    """Drop the ETL role's s3:DeleteObject statement in a copy of the template: the upload's move is denied."""
    flow.require()
    from infra.names import HANDLER_COMMANDS

    etl = next(r for r in flow.runs if r.step == "etl:upload")
    template = copy.deepcopy(cloud_stack.template)
    resolver = Resolver(template, refs=flow.resolver.refs, attrs=flow.resolver.attrs)
    function = next(
        name
        for name, res in template["Resources"].items()
        if (res["Properties"].get("ImageConfig") or {}).get("Command") == [HANDLER_COMMANDS["etl"]]
    )
    role = resolver.role_of(function)
    dropped = None
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in resource["Properties"]["Roles"]:
            statements = resource["Properties"]["PolicyDocument"]["Statement"]
            index = next((i for i, s in enumerate(statements) if s.get("Action") == "s3:DeleteObject"), None)
            if index is not None:
                dropped = statements.pop(index)
    assert dropped is not None, "the ETL role has no s3:DeleteObject statement to drop"
    weaker = policy_set(resolver)
    requests = [r for r in _requests(flow) if r.principal == etl.principal]
    denied = _denied([weaker.evaluate(r) for r in requests])
    assert denied, "removing the ETL's delete grant denied none of its recorded calls"
    assert {d.request.action for d in denied} == {"s3:DeleteObject"}
    assert any(d.request.resource.endswith(UNREADABLE_KEY) for d in denied)
    assert all(flow.policies.evaluate(d.request).allowed for d in denied)


def test_removing_the_puller_or_views_grants_denies_their_calls(flow: Flow, cloud_stack: CloudStack) -> None:
    """Drop the puller's EC2/CloudWatch statement and the views handler's Glue statement in a copy of the
    template: exactly those calls of theirs are denied."""
    flow.require()
    template = copy.deepcopy(cloud_stack.template)
    resolver = Resolver(template, refs=flow.resolver.refs, attrs=flow.resolver.attrs)
    cases = {"pull_cloudwatch": "ec2:DescribeInstances", "views": "glue:CreateTable"}
    principals, removed = {}, {}

    def grants(statement: dict[str, Any], action: str) -> bool:
        actions = statement.get("Action", [])
        return action in (actions if isinstance(actions, list) else [actions])

    for step, action in cases.items():
        run = next(r for r in flow.runs if r.step == step)
        role = resolver.logical_id_of(run.principal)
        principals[step] = run.principal
        dropped = []
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in resource["Properties"]["Roles"]:
                statements = resource["Properties"]["PolicyDocument"]["Statement"]
                dropped += [st for st in statements if grants(st, action)]
                statements[:] = [st for st in statements if not grants(st, action)]
        assert len(dropped) == 1, f"{step}: {len(dropped)} statements grant {action}"
        removed[step] = set(dropped[0]["Action"])
    weaker = policy_set(resolver)
    for step, actions in removed.items():
        requests = [r for r in _requests(flow) if r.principal == principals[step]]
        denied = {d.request.action for d in _denied([weaker.evaluate(r) for r in requests])}
        recorded = {r.action for r in requests} & actions
        assert recorded and denied == recorded, f"{step}: denied {sorted(denied)}, recorded {sorted(recorded)}"


def test_every_alarm_can_publish_to_its_topic(provisioned: Provisioned) -> None:
    """Principal cloudwatch.amazonaws.com, aws:SourceAccount = the account: the topic policy and the topic
    key's policy must both allow each alarm's action."""
    resolver, facts = provisioned.resolver, provisioned.facts
    requests = []
    for name, alarm in resolver.of_type("AWS::CloudWatch::Alarm").items():
        context = facts.base_context("cloudwatch.amazonaws.com") | {"aws:SourceArn": resolver.arn(name)}
        for action in resolver.resolve(alarm["Properties"].get("AlarmActions", [])):
            if not str(action).startswith("arn:aws:sns:"):
                continue
            requests.append(Request("cloudwatch.amazonaws.com", "sns:Publish", action, context, name))
            key = facts.topic_keys.get(action)
            if key:
                requests += [
                    Request("cloudwatch.amazonaws.com", a, key, context, name)
                    for a in ("kms:GenerateDataKey", "kms:Decrypt")
                ]
    if not requests:
        raise LookupError("no alarm of the template notifies an SNS topic")
    denied = _denied([provisioned.policies.evaluate(r) for r in requests])
    assert not denied, "\n".join(f"{d} [{d.request.call}]" for d in denied)


WRITES = ("PutObject", "CreateMultipartUpload", "CopyObject")


def _unencrypted_writes(flow: Flow, *, training: bool) -> list[str]:
    """Objects written to a bucket with a default KMS key that did not end up under that key."""
    out = []
    for run, call in flow.calls:
        if run.step.startswith("train:algo-") != training or call["operation"] not in WRITES:
            continue
        key = flow.facts.bucket_keys.get(call["params"].get("Bucket", ""))
        response = call.get("response") or {}
        if key and (response.get("ServerSideEncryption") != "aws:kms" or response.get("SSEKMSKeyId") != key):
            out.append(f"{run.step}: {call['params'].get('Key')} ({response.get('ServerSideEncryption')})")
    return out


def test_every_function_writes_with_the_lake_key(flow: Flow) -> None:
    flow.require()
    assert _unencrypted_writes(flow, training=False) == []


def test_the_training_job_writes_with_the_lake_key(flow: Flow) -> None:
    flow.require()
    assert _unencrypted_writes(flow, training=True) == []
