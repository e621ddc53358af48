"""``scale.engine: sagemaker`` on moto: the ``outputs`` processing job sends the run summary to the alerts topic.

The stack is synthesized with ``tests/infra/settings.sagemaker.yaml`` and provisioned on a moto server of this
module's own (its keys, roles, queue, topic and bucket). A tiny lake is prepared there directly (generate, ETL,
one training host's staged parts: not what is checked). Then the processing launcher's own ``job_request``, built
from its environment in the template, for the training run's Completed event, is laid out as the job's
``/opt/ml`` (``config/processingjobconfig.json``) and ``python -m capacity_forecaster.processing`` runs under it
in a subprocess with only the data image's packages (the image the job runs, ``tests/images.py``) and the
request's environment, as SageMaker runs the container, every AWS call recorded (``tests/cloud/bootstrap.py``).
An SQS queue subscribed to the topic receives the summary; every recorded call is evaluated against the outputs
job role's synthesized policies (``tests/cloud/iam.py``), and dropping the role's ``sns:Publish`` statement in a
copy of the template denies exactly the publish.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.cloud.conftest import CloudStack, _clients, function_environment, load_event, synthesize
from tests.cloud.iam import AccountFacts, PolicySet, Request, UnmappedCall, requests_for
from tests.cloud.runner import Run, base_environment, run
from tests.cloud.template import Resolver, account_facts, policy_set, provision
from tests.images import image_path, images, outside_image

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cloud-processing")]

RUN_DATE = date(2026, 11, 23)
RUN_ID = "capacity-forecaster-20261123-5e1ab2c3"
SETTINGS = {"fleet.servers": "8", "fleet.days": "120", "horizon_days": "30", "training.models": "seasonal_naive"}
"""The flow's tiny fleet (critical series among them): the lake is built with these, and the job gets them as
``CF_*`` variables on top of the template's (as the flow adds its FLEET to the functions')."""


@dataclass
class SummaryRun:
    stack: CloudStack
    resolver: Resolver
    policies: PolicySet
    facts: AccountFacts
    launcher: str
    """Logical id of the processing launcher."""
    topic: str
    bucket: str
    request: dict[str, Any]
    job: Run
    path: list[Path]
    """The folders of the data image the job ran with."""
    summary: dict[str, Any]
    messages: list[dict[str, Any]]


def _variables() -> dict[str, str]:
    return {"CF_" + k.replace(".", "_").upper(): v for k, v in SETTINGS.items()}


def _launcher_id(template: Mapping[str, Any]) -> str:
    [found] = [
        name
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function"
        and "CF_PROCESSING_ENVIRONMENT" in ((r["Properties"].get("Environment") or {}).get("Variables") or {})
    ]
    return str(found)


def _prepare_lake(endpoint: str, lake_uri: str, key: str, tmp: Path) -> None:
    """What the ETL job and the training job leave in the lake before the outputs job: curated metrics and one
    host's staged forecasts of RUN_ID."""
    from capacity_forecaster.forecasting.job import run_training_job
    from capacity_forecaster.schema import METRICS_DAILY
    from capacity_forecaster.settings import load_settings
    from capacity_forecaster.stages import run_etl, run_generate, training_hyperparameters
    from capacity_forecaster.storage.lake import open_lake
    from capacity_forecaster.storage.s3_client import S3Config

    settings = load_settings(environ={}, overrides={"lake": lake_uri, **SETTINGS})
    lake = open_lake(lake_uri, S3Config(endpoint_url=endpoint, region="us-east-1", sse="aws:kms", kms_key_id=key))
    run_generate(lake, settings, run_date=RUN_DATE)
    run_etl(lake, settings)
    root = tmp / "train"
    params = training_hyperparameters(settings, run_date=RUN_DATE, run_id=RUN_ID, lake_uri=lake_uri)
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(params), encoding="utf-8")
    channel = root / "input" / "data" / "curated"
    for info in lake.store.list(METRICS_DAILY.prefix + "/"):
        lake.store.download_file(info.key, channel / info.key[len(METRICS_DAILY.prefix) + 1 :])
    assert run_training_job(root, lake=lake) == 0


def _completed_event(bucket: str) -> dict[str, Any]:
    event = load_event("sagemaker_training_job_state_change.json", BUCKET=bucket)
    event["detail"]["TrainingJobName"] = RUN_ID
    event["detail"]["HyperParameters"].update({"run_id": RUN_ID, "run_date": RUN_DATE.isoformat()})
    return event


def _contract(root: Path, request: Mapping[str, Any]) -> None:
    """The job's /opt/ml as SageMaker lays it out: the request as the job config, one host."""
    from capacity_forecaster.processing import ProcessingPaths

    paths = ProcessingPaths(root)
    paths.job_config.parent.mkdir(parents=True)
    paths.job_config.write_text(json.dumps(request), encoding="utf-8")
    paths.resource_config.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}), encoding="utf-8")
    paths.summary.mkdir(parents=True)


@pytest.fixture(scope="module")
def process_moto(moto_server: str) -> Iterator[str]:
    """A moto server in a process of its own: in-process moto servers share one set of backends, so a stack
    provisioned by another module in the same worker (the flow's: the same role names) would collide with this
    one. ``moto_server`` puts the fake credentials in the environment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the moto server process did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def summary_run(process_moto: str, tmp_path_factory: pytest.TempPathFactory) -> SummaryRun:
    from app import load_cdk_context
    from capacity_forecaster.processing import ProcessingPaths
    from tests.lambda_modules import load_handler

    context = {
        **load_cdk_context(),
        "@aws-cdk/core:failSynthOnValidationErrors": False,
        "capacity-forecaster:settingsFile": "tests/infra/settings.sagemaker.yaml",
    }
    tmp = tmp_path_factory.mktemp("cloud-processing")
    stack = synthesize(context, tmp / "cdk.out")
    clients = _clients(process_moto)
    resolver = provision(stack.template, clients)
    launcher_id = _launcher_id(stack.template)
    launcher_env = function_environment(resolver, launcher_id, {})
    bucket = launcher_env["CF_LAKE"].removeprefix("s3://")
    topic = json.loads(launcher_env["CF_PROCESSING_ENVIRONMENT"])["CF_NOTIFY_TOPIC_ARN"]

    sqs = clients["sqs"]
    inbox = sqs.create_queue(QueueName="processing-summary-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    clients["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)

    _prepare_lake(process_moto, f"s3://{bucket}", launcher_env["CF_S3_KMS_KEY_ID"], tmp)

    # what the launcher asks SageMaker for on the training run's Completed event (no AWS call: its own functions)
    launcher = load_handler("launch_processing")
    launch = launcher.launch_for(_completed_event(bucket))
    assert launch is not None and launch.stage == "outputs"
    request: dict[str, Any] = launcher.job_request(launcher.ProcessingConfig.from_env(launcher_env), launch)
    request["Environment"] = {**request["Environment"], **_variables()}
    root = tmp / "job" / "opt-ml"
    _contract(root, request)
    environment = base_environment(process_moto, tmp / "job" / "home") | request["Environment"]
    environment["SM_CONTRACT_ROOT"] = str(root)
    path = image_path("lambdas", images()["lambdas"])
    job = run(
        "processing:outputs",
        principal=str(request["RoleArn"]),
        path=path,
        env=environment,
        spec={"module": "capacity_forecaster.processing"},
        workdir=tmp / "job",
    )
    summary_file = ProcessingPaths(root).summary / "outputs.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.exists() else {}
    received = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    messages = [json.loads(m["Body"]) for m in received.get("Messages", [])]
    return SummaryRun(
        stack,
        resolver,
        policy_set(resolver),
        account_facts(resolver),
        launcher_id,
        topic,
        bucket,
        request,
        job,
        path,
        summary,
        messages,
    )


def _requests(result: SummaryRun) -> list[Request]:
    out, unmapped = [], []
    for call in result.job.calls:
        try:
            out += requests_for(call, result.job.principal, result.facts)
        except UnmappedCall as exc:
            unmapped.append(str(exc))
    assert not unmapped, "calls the IAM evaluator cannot map:\n" + "\n".join(unmapped)
    return out


def test_the_outputs_job_sends_the_run_summary_to_the_alerts_topic(summary_run: SummaryRun) -> None:
    job = summary_run.job
    assert job.returncode == 0 and job.result == {"exit_code": 0}, job.tail()
    summary = summary_run.summary
    assert summary["stage"] == "outputs" and summary["publish"]["series"] == 32, summary
    [message] = summary_run.messages
    assert message["TopicArn"] == summary_run.topic
    new = summary["notified"]
    assert new == summary["risk"]["severity_critical"] > 0, summary  # the first run: every critical series is new
    assert message["Subject"] == f"Capacity Forecaster {RUN_DATE}: {new} new critical risk(s)"
    body = str(message["Message"])
    assert body.startswith(f"Run {RUN_ID} ({RUN_DATE}): {new} critical series, {new} new since the previous run.")
    assert "New critical series:\n- " in body and "Athena: SELECT * FROM risk_register" in body
    report = str(summary["report"]["report"])
    assert report.startswith(f"s3://{summary_run.bucket}/reports/run_date={RUN_DATE}/") and f"Report: {report}" in body
    publishes = [c for c in job.calls if (c["service"], c["operation"]) == ("sns", "Publish")]
    assert [(c["params"]["TopicArn"], c["status"]) for c in publishes] == [(summary_run.topic, 200)]
    assert outside_image(job.modules, summary_run.path) == {}, "modules loaded from outside the data image"


def test_the_job_runs_as_the_outputs_role_with_the_topic_from_the_template(summary_run: SummaryRun) -> None:
    resolver, request = summary_run.resolver, summary_run.request
    role = resolver.logical_id_of(str(request["RoleArn"]))
    launcher_env = function_environment(resolver, summary_run.launcher, {})
    assert request["RoleArn"] == launcher_env["CF_PROCESSING_OUTPUTS_ROLE_ARN"]
    assert role is not None and resolver.resources[role]["Type"] == "AWS::IAM::Role"
    assert request["Environment"]["CF_NOTIFY_TOPIC_ARN"] == summary_run.topic
    assert resolver.resources[str(resolver.logical_id_of(summary_run.topic))]["Type"] == "AWS::SNS::Topic"


def test_every_call_of_the_outputs_job_is_allowed_by_its_role(summary_run: SummaryRun) -> None:
    requests = _requests(summary_run)
    denied = [d for d in map(summary_run.policies.evaluate, requests) if not d.allowed]
    assert not denied, "\n".join(f"{d} [{d.request.call}]" for d in denied)
    actions = {r.action for r in requests}
    assert {"sns:Publish", "kms:GenerateDataKey", "s3:PutObject", "s3:GetObject"} <= actions, sorted(actions)


def test_without_the_publish_statement_the_summary_is_denied(summary_run: SummaryRun) -> None:
    """The outputs role's sns:Publish comes from the 'notify' stage's grant: dropped in a copy of the template,
    the recorded publish (and nothing else) is denied."""
    template = copy.deepcopy(summary_run.stack.template)
    resolver = Resolver(template, refs=summary_run.resolver.refs, attrs=summary_run.resolver.attrs)
    role = resolver.logical_id_of(summary_run.job.principal)
    dropped = []
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in resource["Properties"]["Roles"]:
            statements = resource["Properties"]["PolicyDocument"]["Statement"]
            dropped += [s for s in statements if s.get("Action") == "sns:Publish"]
            statements[:] = [s for s in statements if s.get("Action") != "sns:Publish"]
    assert len(dropped) == 1, f"the outputs role has {len(dropped)} sns:Publish statements"
    weaker = policy_set(resolver)
    denied = [d for d in map(weaker.evaluate, _requests(summary_run)) if not d.allowed]
    assert [(d.request.action, d.request.resource) for d in denied] == [("sns:Publish", summary_run.topic)]
