"""Every handler fed events of every wrong shape (hypothesis): each is rejected in one line and counted.

A data handler or the launcher answers ``{"status": "rejected", "reason": <one line>}``, emits the
``RejectedEvents`` metric (Powertools' embedded-metric line on stdout) and makes no AWS call: a spy on botocore
records every API call the handler makes against the moto server, so a rejection that came after touching S3 or
SageMaker fails the test. The views custom resource says no by raising its ``RequestError`` (the Provider fails
the resource with that one line), after the same metric and before any Athena call.

The events are the recorded samples (tests/events) with one thing wrong: not an object at all, a top-level key
missing or of the wrong type, ``detail`` not an object, a nested field of the wrong type (S3 bucket and key,
SageMaker status and hyperparameters), a time that is not ISO 8601, a foreign source or detail type, or the
well-formed event of another handler.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.lambda_modules import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
RAW_KEY = "raw/uploads/tenants/default/2026/11/23/20261123T060000Z_export.csv"
EXAMPLES = 80
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

SCHEDULED = ("aws.events", "Scheduled Event")
OBJECT_CREATED = ("aws.s3", "Object Created")
STATE_CHANGE = ("aws.sagemaker", "SageMaker Training Job State Change")
SAMPLE_FILES = {
    SCHEDULED: "scheduled_event.json",
    OBJECT_CREATED: "s3_object_created.json",
    STATE_CHANGE: "sagemaker_training_job_state_change.json",
}
ACCEPTS: dict[str, tuple[tuple[str, str], ...]] = {
    "generate": (SCHEDULED,),
    "pull_cloudwatch": (SCHEDULED,),
    "launch_training": (SCHEDULED,),
    "etl": (SCHEDULED, OBJECT_CREATED),
    "risk": (STATE_CHANGE,),
}
"""The kinds of event each handler acts on (the others are foreign to it)."""


def sample(kind: tuple[str, str], bucket: str) -> dict[str, Any]:
    text = (EVENTS / SAMPLE_FILES[kind]).read_text()
    text = text.replace("BUCKET", bucket).replace("KEY", RAW_KEY).replace("RUN_ID", "capacity-forecaster-20261123")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


# -- values of the wrong shape ---------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True))
not_a_str = st.one_of(scalars, st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5), scalars))
not_a_dict = st.one_of(scalars, st.text(max_size=20), st.lists(scalars, max_size=3))
not_a_list_of_str = st.one_of(
    scalars, st.text(max_size=20), st.lists(st.one_of(scalars, st.lists(scalars)), min_size=1)
)
not_an_event = st.one_of(scalars, st.text(max_size=40), st.lists(st.dictionaries(st.text(max_size=5), scalars)))
controls = st.text(st.characters(codec="utf-8", categories=["Cc"]), min_size=1, max_size=3)
not_iso = st.one_of(
    st.sampled_from(
        [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30T06:00:00Z",
            "2026-11-23",  # no time, so no time zone
            "2026-11-23T06:00:00",  # no time zone
            "23/11/2026 06:00",
            "2026-11-23T06:00:00Z\n",
            "1795420800",
        ]
    ),
    st.text(max_size=30).filter(lambda t: bool(t) and not t[:1].isdigit()),  # ISO 8601 starts with the year
)
bad_keys = st.one_of(
    st.sampled_from(["", "..", "raw/../curated/a.csv", "raw/./a.csv", "/raw/a.csv", "raw//a.csv", "raw\\a.csv"]),
    st.just("raw/" + "x" * 2000),  # over S3's 1024 bytes
    st.tuples(st.text(max_size=8), controls).map(lambda t: f"raw/{t[0]}{t[1]}.csv"),
    st.text(max_size=40).filter(lambda t: not t.startswith("raw/")),  # outside the raw zone
    not_a_str,
)
bad_buckets = st.one_of(
    st.sampled_from(["", "someone-elses-bucket", "x" * 300]), controls, not_a_str, st.text(max_size=20)
)
bad_run_ids = st.one_of(
    st.sampled_from(["../../curated", "a/b", "run id", "x" * 129, ".", "run\x00id"]),
    controls,
    st.integers(),
    st.lists(st.text(max_size=3), min_size=1),
)
bad_run_dates = st.one_of(
    st.sampled_from(["20261123", "2026-02-30", "2026-11-23T00:00:00Z", "yesterday", "23/11/2026"]),
    st.integers(),
    st.lists(st.text(max_size=3), min_size=1),
)


def foreign_kinds(handler: str) -> st.SearchStrategy[tuple[str, str]]:
    """(source, detail-type) pairs the handler does not act on: random ones and the other handlers' kinds."""
    known = st.sampled_from([k for k in SAMPLE_FILES if k not in ACCEPTS[handler]])
    made_up = st.tuples(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=40))
    swapped = st.sampled_from([(t, s) for s, t in ACCEPTS[handler]])
    return st.one_of(known, made_up, swapped).filter(lambda kind: kind not in ACCEPTS[handler])


@st.composite
def malformed_events(draw: st.DrawFn, handler: str, bucket: str) -> Any:
    """One event the handler must reject, labelled (hypothesis ``event``) with what is wrong with it."""
    base = sample(draw(st.sampled_from(ACCEPTS[handler])), bucket)
    wrong = draw(
        st.sampled_from(["not an object", "missing key", "wrong-typed key", "time not ISO", "foreign kind", "other"])
    )
    if wrong == "other" and handler in ("etl", "risk"):
        wrong = "nested field"
    elif wrong == "other":
        wrong = "other handler's event"
    event(wrong)
    if wrong == "not an object":
        return draw(not_an_event)
    received = copy.deepcopy(base)
    if wrong == "missing key":
        required = ["source", "detail-type", "detail", "time"] + (["id"] if handler == "launch_training" else [])
        del received[draw(st.sampled_from(required))]
    elif wrong == "wrong-typed key":
        key = draw(st.sampled_from(["source", "detail-type", "detail", "time", "id", "resources"]))
        strategy = {"detail": not_a_dict, "resources": not_a_list_of_str}.get(key, not_a_str)
        received[key] = draw(strategy)
    elif wrong == "time not ISO":
        received["time"] = draw(not_iso)
    elif wrong == "foreign kind":
        received["source"], received["detail-type"] = draw(foreign_kinds(handler))
    elif wrong == "other handler's event":
        received = sample(draw(foreign_kinds(handler).filter(lambda k: k in SAMPLE_FILES)), bucket)
    elif handler == "etl":
        received = sample(OBJECT_CREATED, bucket)
        part = draw(st.sampled_from(["bucket", "object"]))
        field = {"bucket": "name", "object": "key"}[part]
        if draw(st.booleans()):
            received["detail"][part] = draw(not_a_dict)
        elif draw(st.booleans()):
            del received["detail"][part][field]
        else:
            received["detail"][part][field] = draw(bad_buckets if part == "bucket" else bad_keys)
    else:  # risk: Completed with a wrong hyperparameter, or a status of the wrong type
        detail = received["detail"]
        what = draw(st.sampled_from(["TrainingJobStatus", "HyperParameters", "run_id", "run_date"]))
        if what == "TrainingJobStatus":
            detail[what] = draw(st.one_of(not_a_str, st.just("")))
        elif what == "HyperParameters":
            detail[what] = draw(st.one_of(not_a_dict.filter(lambda v: v is not None), st.lists(st.text(max_size=5))))
        else:
            detail["HyperParameters"][what] = draw(bad_run_ids if what == "run_id" else bad_run_dates)
    return received


# -- what the handlers did -------------------------------------------------------------------------------------


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every AWS API call made through botocore (the calls still reach the moto server)."""
    from botocore.client import BaseClient

    calls: list[str] = []
    original = BaseClient._make_api_call  # type: ignore[attr-defined]  # botocore: every API call goes through it

    def spy(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        calls.append(f"{self.meta.service_model.service_name}.{operation_name}")
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)
    return calls


def emitted_metrics(out: str) -> list[str]:
    """The metric names in the embedded-metric lines of ``out``."""
    lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    return [m["Name"] for line in lines for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]


@pytest.fixture
def handler_env(monkeypatch: pytest.MonkeyPatch, s3_bucket: str, moto_server: str) -> Iterator[str]:
    """The data functions' and the launcher's settings, on the moto server: a well-formed event would run."""
    for key, value in {
        "CF_LAKE": f"s3://{s3_bucket}",
        "CF_S3_ENDPOINT_URL": moto_server,
        "AWS_ENDPOINT_URL_SAGEMAKER": moto_server,
        "AWS_ENDPOINT_URL_EC2": moto_server,
        "AWS_ENDPOINT_URL_CLOUDWATCH": moto_server,
        "CF_CLOUDWATCH_TAGS": "team=capacity",
        "CF_S3_KMS_KEY_ID": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "CF_TRAINING_IMAGE_URI": "capacity-forecaster-training:test",
        "CF_TRAINING_ROLE_ARN": "arn:aws:iam::123456789012:role/capacity-forecaster-training",
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster",
        "POWERTOOLS_METRICS_NAMESPACE": "CapacityForecaster",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    yield s3_bucket


Outcome = Callable[[Any], dict[str, Any]]


def invoker(module: ModuleType, capsys: pytest.CaptureFixture[str], calls: list[str]) -> Outcome:
    def call(received: Any) -> dict[str, Any]:
        capsys.readouterr()
        calls.clear()
        result: dict[str, Any] = module.handler(copy.deepcopy(received), LambdaContext())
        return {"result": result, "metrics": emitted_metrics(capsys.readouterr().out), "aws": list(calls)}

    return call


@pytest.mark.parametrize("name", sorted(ACCEPTS))
def test_every_wrong_shape_is_rejected_in_one_line_counted_and_before_any_aws_call(
    name: str, handler_env: str, capsys: pytest.CaptureFixture[str], aws_calls: list[str]
) -> None:
    invoke = invoker(load_handler(name), capsys, aws_calls)

    @FUZZ
    @given(received=malformed_events(name, handler_env))
    def rejected(received: Any) -> None:
        seen = invoke(received)
        result = seen["result"]
        assert result["status"] == "rejected", (received, result)
        assert isinstance(result["reason"], str) and len(result["reason"].splitlines()) == 1, result
        assert len(result["reason"]) <= 300
        assert seen["metrics"] == ["RejectedEvents"]
        assert seen["aws"] == []

    rejected()


def test_risk_skips_well_formed_state_changes_of_jobs_not_completed(
    handler_env: str, capsys: pytest.CaptureFixture[str], aws_calls: list[str]
) -> None:
    invoke = invoker(load_handler("risk"), capsys, aws_calls)

    @FUZZ
    @given(
        status=st.sampled_from(["InProgress", "Stopping", "Stopped", "Failed"]),
        params=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.text(max_size=8))),
    )
    def skipped(status: str, params: dict[str, str] | None) -> None:
        received = sample(STATE_CHANGE, handler_env)
        received["detail"]["TrainingJobStatus"] = status
        received["detail"]["HyperParameters"] = params  # of no interest when the job did not complete
        seen = invoke(received)
        assert seen["result"] == {"status": "skipped", "training_job_status": status}
        assert (seen["metrics"], seen["aws"]) == (["SkippedEvents"], [])

    skipped()


def test_the_spy_sees_the_calls_a_well_formed_event_makes(
    handler_env: str, capsys: pytest.CaptureFixture[str], aws_calls: list[str]
) -> None:
    """The checks above could not pass by a spy that sees nothing: an accepted event's calls are recorded."""
    etl = invoker(load_handler("etl"), capsys, aws_calls)(sample(SCHEDULED, handler_env))
    assert etl["result"]["status"] == "succeeded" and "RejectedEvents" not in etl["metrics"]
    assert any(call.startswith("s3.") for call in etl["aws"])
    launched = invoker(load_handler("launch_training"), capsys, aws_calls)(
        {**sample(SCHEDULED, handler_env), "id": "d1e2f3a4-malformed-events-sanity"}
    )
    assert launched["result"]["status"] in ("launched", "already-launched")
    assert "sagemaker.DescribeTrainingJob" in launched["aws"]


# -- the views custom resource ---------------------------------------------------------------------------------

VIEWS_REQUEST: dict[str, Any] = {
    "RequestType": "Create",
    "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider",
    "ResponseURL": "https://cloudformation-custom-resource-response.example/",
    "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/cf/1",
    "RequestId": "2b7ba5a1-0000-4000-8000-000000000001",
    "LogicalResourceId": "Views",
    "ResourceType": "Custom::AthenaViews",
    "ResourceProperties": {
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider",
        "Database": "capacity_forecaster",
        "WorkGroup": "capacity-forecaster",
        "Views": [{"Name": "risk_servers", "Sql": "CREATE OR REPLACE VIEW risk_servers AS SELECT 1 AS x"}],
    },
}


@st.composite
def malformed_requests(draw: st.DrawFn) -> Any:
    """A custom resource request the views handler must refuse."""
    wrong = draw(
        st.sampled_from(
            ["not an object", "request type", "physical id", "properties", "property", "views", "old views", "event"]
        )
    )
    event(wrong)
    request: dict[str, Any] = copy.deepcopy(VIEWS_REQUEST)
    props: dict[str, Any] = request["ResourceProperties"]
    if wrong == "not an object":
        return draw(not_an_event)
    if wrong == "request type":
        request["RequestType"] = draw(
            st.one_of(not_a_str, st.text(max_size=10).filter(lambda t: t not in ("Create", "Update", "Delete")))
        )
    elif wrong == "physical id":
        request["RequestType"] = draw(st.sampled_from(["Update", "Delete"]))
        request["OldResourceProperties"] = copy.deepcopy(props)
        if draw(st.booleans()):
            request["PhysicalResourceId"] = draw(st.one_of(not_a_str, st.just("")))
    elif wrong == "properties":
        request["ResourceProperties"] = draw(not_a_dict)
    elif wrong == "property":
        key = draw(st.sampled_from(["Database", "WorkGroup"]))
        props[key] = draw(st.one_of(not_a_str, st.sampled_from(["", 'x"; DROP', "a b", "x" * 300]), controls))
    elif wrong in ("views", "old views"):
        if wrong == "old views":
            request |= {"RequestType": "Update", "PhysicalResourceId": "capacity_forecaster/views"}
            request["OldResourceProperties"] = old = copy.deepcopy(props)
            target = old if draw(st.booleans()) else request
            if target is request:
                request["OldResourceProperties"] = draw(not_a_dict)
                return request
            props = old
        shape = draw(st.sampled_from(["not a list", "item", "name", "sql"]))
        if shape == "not a list":
            props["Views"] = draw(st.one_of(not_a_dict.filter(lambda v: not isinstance(v, list)), st.just({})))
        elif shape == "item":
            props["Views"].append(draw(not_a_dict))
        elif shape == "name":
            props["Views"][0]["Name"] = draw(
                st.one_of(not_a_str, st.sampled_from(["", 'risk"; DROP TABLE x; --', "a-b", "1view"]), controls)
            )
        else:
            props["Views"][0]["Sql"] = draw(st.one_of(not_a_str, st.sampled_from(["", "  \n "])))
    else:
        return sample(draw(st.sampled_from(list(SAMPLE_FILES))), "lake-bucket")
    return request


def test_the_views_resource_fails_a_malformed_request_in_one_line_before_any_athena_call(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], aws_calls: list[str]
) -> None:
    from infra.names import POWERTOOLS_NAMESPACE

    monkeypatch.setenv("AWS_ENDPOINT_URL_ATHENA", moto_server)
    handler = load_handler("create_views")
    assert handler.NAMESPACE == POWERTOOLS_NAMESPACE

    @FUZZ
    @given(request=malformed_requests())
    def refused(request: Any) -> None:
        capsys.readouterr()
        aws_calls.clear()
        with pytest.raises(handler.RequestError) as failed:
            handler.on_event(copy.deepcopy(request))
        message = str(failed.value)
        assert message.startswith("request rejected: ") and len(message.splitlines()) == 1
        assert len(message) <= 320
        out = capsys.readouterr().out
        assert emitted_metrics(out) == ["RejectedEvents"]
        assert aws_calls == []

    refused()
