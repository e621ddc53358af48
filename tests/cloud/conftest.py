"""The deployed pipeline on moto: the synthesized template provisioned there, every function run in its image.

``cloud_stack`` synthesizes the app once per session with :data:`FLOW_CONTEXT` (the demo switch on and a
CloudWatch tag filter, so the generator and the puller are deployed); ``flow`` provisions the template's keys,
roles, queue, topic, bucket, workgroup and Glue database on a moto server of its own and runs, each in its own
subprocess with only its image's packages, in order: the views custom resource's handler on the Create event of
``Custom::AthenaViews`` (what ``cdk deploy`` does first), the scheduled generate, the scheduled ETL, the ETL on an
S3 Object Created event for an upload with an extra column (plus an unreadable file), the CloudWatch puller on
its schedule against tagged moto EC2 instances and their metrics, the ETL on the object it wrote, the launcher,
the training job on 2 hosts under the /opt/ml contract, and the risk Lambda on the job's Completed event (risk
register, consolidation plan, report and the run summary on the alerts topic). Every AWS call of every step is
recorded for :mod:`tests.cloud.iam`.

The fleet is kept tiny through the functions' own settings variables (:data:`FLEET`), so the flow takes a
minute or two once the image packages are cached (see :mod:`tests.images`).
"""

from __future__ import annotations

import copy
import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cloud import bootstrap
from tests.cloud.iam import AccountFacts, PolicySet
from tests.cloud.runner import Run, base_environment, finish, lambda_environment, read_lines, run, start
from tests.cloud.template import REGION, Resolver, account_facts, policy_set, provision
from tests.conftest import loopback_moto_server
from tests.images import ROOT, image_path, images

EVENTS = ROOT / "tests" / "events"
HERE = Path(__file__).resolve().parent
TAG_FILTER = "Team=web"
FLOW_CONTEXT = {"capacity-forecaster:demo": True, "capacity-forecaster:cloudwatchTagFilter": TAG_FILTER}
"""The flow's stack: the demo's generator and the CloudWatch puller (for the instances tagged Team=web) on."""
FLEET = {"CF_FLEET_SERVERS": "8", "CF_FLEET_DAYS": "120"}
"""A tiny fleet: settings variables added to the data functions' template environment (the flow checks the
generator read them)."""
TRAINING_HOSTS = 2
LAUNCHER = {"CF_TRAINING_INSTANCE_COUNT": str(TRAINING_HOSTS)}
"""Added to the launcher's environment (the flow checks the launched job has this many hosts)."""
UPLOAD_KEY = "raw/uploads/tenants/acme/2026/11/23/20261123T061000Z_inventory.csv"
UNREADABLE_KEY = "raw/uploads/tenants/acme/2026/11/23/20261123T061500Z_broken.parquet"
SUCCESS = frozenset({"succeeded", "launched"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The cloud tests install the image packages and synthesize the app: slow, on one xdist worker."""
    for item in items:
        if HERE in item.path.parents and {"flow", "cloud_stack"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("image-packages"))


# ------------------------------------------------------------------------------------------------- synth


@dataclass(frozen=True)
class CloudStack:
    template: dict[str, Any]
    launcher: str
    """Logical id of the training launcher function."""
    demo: bool
    context: dict[str, Any]


def _commands(template: Mapping[str, Any]) -> dict[str, str]:
    """Image command (handler) -> logical id of each container-image function."""
    out = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            command = (resource["Properties"].get("ImageConfig") or {}).get("Command") or []
            if command:
                out[command[0]] = name
    return out


def synthesize(context: Mapping[str, Any], outdir: Path) -> CloudStack:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from app import build_app

    app, stack = build_app(context=dict(context), outdir=str(outdir))
    app.synth()
    template = dict(Template.from_stack(stack).to_json())
    function = stack.training.launcher.node.default_child
    assert isinstance(function, cdk.CfnElement)
    launcher = stack.resolve(stack.get_logical_id(function))
    return CloudStack(template, str(launcher), bool(context.get("capacity-forecaster:demo")), dict(context))


@pytest.fixture(scope="session")
def cloud_stack(tmp_path_factory: pytest.TempPathFactory) -> CloudStack:
    """The stack synthesized once with the project's context and :data:`FLOW_CONTEXT` on top."""
    from app import load_cdk_context

    context = {**load_cdk_context(), "@aws-cdk/core:failSynthOnValidationErrors": False, **FLOW_CONTEXT}
    return synthesize(context, tmp_path_factory.mktemp("cloud-cdk.out"))


# -------------------------------------------------------------------------------------------------- flow


class FlowFailed(Exception):
    """A step of the flow failed (not the expected failure an xfail test waits for)."""


@dataclass
class Flow:
    """The moto lake after the whole pipeline ran, with every step's run and calls."""

    resolver: Resolver
    policies: PolicySet
    facts: AccountFacts
    bucket: str
    topic: str
    runs: list[Run] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    allowed_paths: dict[str, list[Path]] = field(default_factory=dict)
    """Step -> the folders its image has on its path."""
    seconds: float = 0.0
    failure: str | None = None
    views: list[str] = field(default_factory=list)
    """The views the Custom::AthenaViews resource lists, in its order."""
    pulled: list[str] = field(default_factory=list)
    """The moto EC2 instances carrying the puller's tags (an untagged one is in ``untagged``)."""
    untagged: list[str] = field(default_factory=list)
    run_date: str = ""
    """The run date of the training job the risk Lambda completed."""

    def require(self) -> None:
        """Raise :class:`FlowFailed` when a step failed."""
        if self.failure is not None:
            raise FlowFailed(self.failure)

    @property
    def calls(self) -> list[tuple[Run, dict[str, Any]]]:
        return [(r, c) for r in self.runs for c in r.calls]


def load_event(name: str, **replace: str) -> dict[str, Any]:
    text = (EVENTS / name).read_text(encoding="utf-8")
    for placeholder, value in replace.items():
        text = text.replace(placeholder, value)
    event: dict[str, Any] = json.loads(text)
    return event


def _clients(endpoint: str) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing", region_name=REGION
    )
    config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "total_max_attempts": 2})
    services: tuple[Any, ...] = ("kms", "iam", "sqs", "sns", "s3", "sagemaker", "athena", "glue", "ec2", "cloudwatch")
    return {s: session.client(s, endpoint_url=endpoint, config=config) for s in services}


def function_environment(resolver: Resolver, logical_id: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """The function's Environment Variables from the template, resolved, with ``overrides`` on top."""
    props = resolver.resources[logical_id]["Properties"]
    variables = {k: str(v) for k, v in resolver.resolve((props.get("Environment") or {}).get("Variables", {})).items()}
    return variables | dict(overrides)


class Steps:
    """Runs the steps of the flow one after the other on one moto lake."""

    def __init__(self, flow: Flow, endpoint: str, workdir: Path, clients: Mapping[str, Any]):
        self.flow, self.endpoint, self.workdir, self.clients = flow, endpoint, workdir, clients
        self.images = images()

    def function(
        self, step: str, logical_id: str, image: str, event: Mapping[str, Any], overrides: Mapping[str, str]
    ) -> Run:
        resolver = self.flow.resolver
        props = resolver.resources[logical_id]["Properties"]
        env = function_environment(resolver, logical_id, overrides)
        name = resolver.ref(logical_id)
        path = image_path(image, self.images[image])
        folder = self.workdir / step
        folder.mkdir(parents=True)
        (folder / "event.json").write_text(json.dumps(event), encoding="utf-8")
        memory = int(props.get("MemorySize", 128))
        handler = props.get("Handler") or (props.get("ImageConfig") or {}).get("Command", [""])[0]
        environment = (
            base_environment(self.endpoint, folder / "home") | lambda_environment(name, memory, path[-1]) | env
        )
        spec = {
            "handler": handler,
            "event": str(folder / "event.json"),
            "context": {
                "function_name": name,
                "function_arn": resolver.arn(logical_id),
                "memory_mb": memory,
                "timeout_s": int(props.get("Timeout", 900)),
            },
        }
        principal = resolver.arn(resolver.role_of(logical_id))
        result = run(step, principal=principal, path=path, env=environment, spec=spec, workdir=folder)
        self.flow.allowed_paths[step] = path
        self.flow.runs.append(result)
        return result

    def job_environment(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """The Environment SageMaker passes to the containers: moto's DescribeTrainingJob leaves it out, so it
        is read from the recorded CreateTrainingJob request of the job."""
        if "Environment" in job:
            return dict(job["Environment"])
        for _, call in self.flow.calls:
            params = call["params"]
            if call["operation"] == "CreateTrainingJob" and params.get("TrainingJobName") == job["TrainingJobName"]:
                return dict(params.get("Environment") or {})
        return {}

    def training(self, job_name: str) -> list[Run]:
        """The launched job as SageMaker runs it: the channel downloaded, one container per host, the model
        uploaded; the downloads and upload are recorded as the job role's calls too."""
        job = self.clients["sagemaker"].describe_training_job(TrainingJobName=job_name)
        role = str(job["RoleArn"])
        hosts = [f"algo-{k}" for k in range(1, int(job["ResourceConfig"]["InstanceCount"]) + 1)]
        folder = self.workdir / "train"
        folder.mkdir(parents=True)
        platform_calls = folder / "sagemaker-calls.jsonl"
        s3 = _recorded_s3(self.endpoint, platform_calls, "train:sagemaker")
        channel = folder / "channel"
        uri = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                target = channel / item["Key"][len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        path = image_path("training", self.images["training"])
        processes = []
        for host in hosts:
            root = folder / host / "opt-ml"
            config = root / "input" / "config"
            config.mkdir(parents=True)
            (config / "hyperparameters.json").write_text(json.dumps(job["HyperParameters"]), encoding="utf-8")
            (config / "resourceconfig.json").write_text(
                json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "eth0"}), encoding="utf-8"
            )
            data = root / "input" / "data" / job["InputDataConfig"][0]["ChannelName"]
            data.parent.mkdir(parents=True)
            _copy_tree(channel, data)
            (root / "model").mkdir()
            (root / "output").mkdir()
            env = base_environment(self.endpoint, folder / host / "home") | {
                "SM_CONTRACT_ROOT": str(root),
                "TRAINING_JOB_NAME": job_name,
                "TRAINING_JOB_ARN": str(job["TrainingJobArn"]),
                **{str(k): str(v) for k, v in self.job_environment(job).items()},
            }
            spec = {"script": str(path[-1] / "train.py")}
            started = time.perf_counter()
            process, full = start(f"train:{host}", path=path, env=env, spec=spec, workdir=folder / host)
            processes.append((host, process, full, started))
        runs = [finish(f"train:{h}", role, p, s, t, 900) for h, p, s, t in processes]
        for host_run in runs:
            self.flow.allowed_paths[host_run.step] = path
        self.flow.runs.extend(runs)
        if all(r.returncode == 0 for r in runs):
            output = job["OutputDataConfig"]
            out_bucket, _, out_prefix = output["S3OutputPath"].removeprefix("s3://").partition("/")
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w:gz") as tar:
                tar.add(folder / hosts[0] / "opt-ml" / "model", arcname=".")
            extra = (
                {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": output["KmsKeyId"]} if output.get("KmsKeyId") else {}
            )
            s3.put_object(
                Bucket=out_bucket,
                Key=f"{out_prefix.rstrip('/')}/{job_name}/output/model.tar.gz",
                Body=archive.getvalue(),
                **extra,
            )
        platform = Run("train:sagemaker", role, 0, {"exit_code": 0}, "", read_lines(platform_calls))
        self.flow.runs.append(platform)
        return runs


def _copy_tree(source: Path, target: Path) -> None:
    """SageMaker's copy of the channel (an empty folder when the prefix holds nothing)."""
    import shutil

    if source.exists():
        shutil.copytree(source, target)
    else:
        target.mkdir(parents=True)


def _recorded_s3(endpoint: str, calls: Path, source: str) -> Any:
    import boto3
    from botocore.config import Config

    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing", region_name=REGION
    ).client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
    bootstrap.register(client.meta.events, str(calls), source)
    return client


def _status_ok(result: Run) -> str | None:
    """Why a run failed, or None."""
    if result.returncode != 0:
        return f"{result.step} exited {result.returncode}:\n{result.tail()}"
    status = (result.result or {}).get("status")
    if result.result is None or ("exit_code" not in result.result and status not in SUCCESS):
        return f"{result.step} returned {result.result}:\n{result.tail()}"
    return None


@dataclass
class Provisioned:
    """The template on a fresh moto account: names, policies, and the functions by the handler they run."""

    resolver: Resolver
    policies: PolicySet
    facts: AccountFacts
    functions: dict[str, str]
    """Image command (handler) -> logical id of the container-image function running it."""
    clients: dict[str, Any]


@pytest.fixture(scope="module")
def cloud_moto(moto_server: str) -> Iterator[str]:
    """A moto server of the flow's own (the session's server, shared with other tests, is left alone); the fake
    credentials are those ``moto_server`` set."""
    with loopback_moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def provisioned(cloud_stack: CloudStack, cloud_moto: str) -> Provisioned:
    """The synthesized template's keys, roles, queues, topics and bucket created on the flow's moto server."""
    clients = _clients(cloud_moto)
    resolver = provision(cloud_stack.template, clients)
    return Provisioned(
        resolver, policy_set(resolver), account_facts(resolver), _commands(cloud_stack.template), clients
    )


@pytest.fixture(scope="module")
def flow(
    cloud_stack: CloudStack, provisioned: Provisioned, cloud_moto: str, tmp_path_factory: pytest.TempPathFactory
) -> Flow:
    """The whole pipeline run once on the provisioned moto account; the first failing step stops the flow and
    is reported in ``Flow.failure`` (the tests that need the flow raise :class:`FlowFailed` with it)."""
    from infra.names import HANDLER_COMMANDS

    started = time.perf_counter()
    resolver, functions, clients = provisioned.resolver, provisioned.functions, provisioned.clients
    missing = [h for h in ("generate", "etl", "risk", "pull_cloudwatch") if HANDLER_COMMANDS[h] not in functions]
    assert not missing, f"the template has no function running {missing}"
    generate_env = function_environment(resolver, functions[HANDLER_COMMANDS["generate"]], {})
    bucket = generate_env["CF_LAKE"].removeprefix("s3://").split("/", 1)[0]
    risk_env = function_environment(resolver, functions[HANDLER_COMMANDS["risk"]], {})
    topic = next(v for v in risk_env.values() if v.startswith("arn:aws:sns:"))
    sqs = clients["sqs"]
    inbox = sqs.create_queue(QueueName="cloud-test-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    clients["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)

    result = Flow(resolver, provisioned.policies, provisioned.facts, bucket, topic)
    steps = Steps(result, cloud_moto, tmp_path_factory.mktemp("cloud-flow"), clients)
    try:
        _run_steps(steps, result, cloud_stack, functions, clients, inbox)
    finally:
        result.seconds = time.perf_counter() - started
    return result


def _run_steps(
    steps: Steps, result: Flow, stack: CloudStack, functions: Mapping[str, str], clients: Mapping[str, Any], inbox: str
) -> None:
    """The steps in order; the first that fails stops the flow (``result.failure`` says why)."""
    from infra.names import HANDLER_COMMANDS

    scheduled = load_event("scheduled_event.json")
    etl, bucket = functions[HANDLER_COMMANDS["etl"]], result.bucket

    def ok(run_: Run) -> bool:
        result.failure = _status_ok(run_)
        return result.failure is None

    if not _create_views(steps, result, clients):
        return
    generated = steps.function("generate", functions[HANDLER_COMMANDS["generate"]], "lambdas", scheduled, FLEET)
    if not ok(generated):
        return
    if (generated.result or {}).get("servers") != int(FLEET["CF_FLEET_SERVERS"]):
        result.failure = f"the generator did not read {FLEET} (it returned {generated.result}): update FLEET"
        return
    if not ok(steps.function("etl:schedule", etl, "lambdas", scheduled, FLEET)):
        return
    _upload(clients["s3"], bucket)
    created = load_event("s3_object_created.json", BUCKET=bucket, KEY=UPLOAD_KEY)
    if not ok(steps.function("etl:upload", etl, "lambdas", created, FLEET)):
        return
    puller = functions[HANDLER_COMMANDS["pull_cloudwatch"]]
    puller_env = function_environment(result.resolver, puller, {})
    result.pulled, result.untagged = _instances_in_cloudwatch(clients, puller_env)
    pulled = steps.function("pull_cloudwatch", puller, "lambdas", scheduled, {})
    if not ok(pulled):
        return
    written = [str(uri).removeprefix(f"s3://{bucket}/") for uri in (pulled.result or {}).get("written", [])]
    if len(written) != 1:
        result.failure = f"the puller wrote {written}, not one object:\n{pulled.tail()}"
        return
    created = load_event("s3_object_created.json", BUCKET=bucket, KEY=written[0])
    if not ok(steps.function("etl:cloudwatch", etl, "lambdas", created, FLEET)):
        return
    launched = steps.function("launch", stack.launcher, "launcher", scheduled, LAUNCHER)
    if not ok(launched):
        return
    job_name = str((launched.result or {})["training_job_name"])
    job = clients["sagemaker"].describe_training_job(TrainingJobName=job_name)
    if job["ResourceConfig"]["InstanceCount"] != TRAINING_HOSTS:
        result.failure = f"the launcher did not read {LAUNCHER} (job {job['ResourceConfig']}): update LAUNCHER"
        return
    if not all(ok(host) for host in steps.training(job_name)):
        return
    completed = _completed_event(job, bucket)
    result.run_date = str(job["HyperParameters"]["run_date"])
    if not ok(steps.function("risk", functions[HANDLER_COMMANDS["risk"]], "lambdas", completed, FLEET)):
        return
    messages = clients["sqs"].receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    result.notifications = [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def _create_views(steps: Steps, result: Flow, clients: Mapping[str, Any]) -> bool:
    """The views handler on the Create event CDK's Provider framework passes it for the ``Custom::AthenaViews``
    resource (the framework function's ``USER_ON_EVENT_FUNCTION_ARN`` names the handler); False when it failed."""
    resolver = result.resolver
    [(logical_id, resource)] = resolver.of_type("Custom::AthenaViews").items()
    properties = resolver.resolve(resource["Properties"])
    framework = resolver.logical_id_of(properties["ServiceToken"])
    assert framework is not None, f"{logical_id}: its ServiceToken names no function of the template"
    user_handler = function_environment(resolver, framework, {})["USER_ON_EVENT_FUNCTION_ARN"]
    handler = resolver.logical_id_of(user_handler)
    assert handler is not None, f"{framework}: its onEvent handler {user_handler} is not a function of the template"
    event = {
        "RequestType": "Create",
        "ServiceToken": properties["ServiceToken"],
        "ResponseURL": "...",  # the framework answers CloudFormation itself
        "StackId": resolver.pseudo()["AWS::StackId"],
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": logical_id,
        "ResourceType": resource["Type"],
        "ResourceProperties": properties,
    }
    result.views = [str(v["Name"]) for v in properties["Views"]]
    ran = steps.function("views", handler, "views", event, {})
    expected, answer = {"Views": ",".join(result.views)}, ran.result or {}
    if ran.returncode != 0 or not answer.get("PhysicalResourceId") or answer.get("Data") != expected:
        result.failure = f"the views handler returned {ran.result}, not the views {expected}:\n{ran.tail()}"
        return False
    return True


def _instances_in_cloudwatch(clients: Mapping[str, Any], puller_env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Two moto EC2 instances carrying the puller's tags and one that does not, with CPUUtilization over the
    window the puller's Scheduled Event covers (and the agent's mem_used_percent for the first one); the ids of
    the tagged and of the untagged instances."""
    from capacity_forecaster.cloudwatch_pull import AGENT_NAMESPACE, parse_tag_filters, pull_window

    ec2, cloudwatch = clients["ec2"], clients["cloudwatch"]
    tags = [{"Key": t.key, "Value": t.value} for t in parse_tag_filters(puller_env["CF_CLOUDWATCH_TAGS"])]
    other = [{"Key": "Team", "Value": "not-" + "-".join(t["Value"] for t in tags)}]

    def launch(count: int, instance_tags: list[dict[str, str]]) -> list[str]:
        spec = [{"ResourceType": "instance", "Tags": instance_tags}]
        response = ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count, TagSpecifications=spec)
        return sorted(i["InstanceId"] for i in response["Instances"])

    tagged, untagged = launch(2, tags), launch(1, other)
    now = datetime.fromisoformat(load_event("scheduled_event.json")["time"].replace("Z", "+00:00"))
    start, end = pull_window(int(puller_env.get("CF_CLOUDWATCH_DAYS", "1")), now)
    times = [start + timedelta(minutes=30 * k) for k in range(int((end - start) / timedelta(minutes=30)))]
    series = [("AWS/EC2", "CPUUtilization", i, {"InstanceId": i}, 20 + 10 * n) for n, i in enumerate(tagged + untagged)]
    series.append((AGENT_NAMESPACE, "mem_used_percent", tagged[0], {"InstanceId": tagged[0]}, 55))
    for namespace, name, _, dimensions, level in series:
        for batch in range(0, len(times), 500):
            data = [
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                    "Timestamp": t,
                    "Value": float(level + (k % 12)),
                }
                for k, t in enumerate(times[batch : batch + 500])
            ]
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=data)
    return tagged, untagged


def _upload(s3: Any, bucket: str) -> None:
    """A user's upload with an extra column (team) and an unreadable file beside it."""
    lines = ["timestamp,server_id,metric,value,team"]
    for day in (20, 21, 22):
        for hour in (0, 6, 12, 18):
            for server, team in (("up-web-1", "web"), ("up-db-1", "data")):
                for metric, value in (("cpu", 30 + hour), ("mem", 50 + day - 20)):
                    lines.append(f"2026-11-{day}T{hour:02d}:00:00Z,{server},{metric},{value},{team}")
    s3.put_object(Bucket=bucket, Key=UNREADABLE_KEY, Body=b"PAR1 this is not a parquet file")
    s3.put_object(Bucket=bucket, Key=UPLOAD_KEY, Body=("\n".join(lines) + "\n").encode())


def _completed_event(job: Mapping[str, Any], bucket: str) -> dict[str, Any]:
    """The Completed state change of the job, with the job's own name, hyperparameters and configuration."""
    event = load_event("sagemaker_training_job_state_change.json", BUCKET=bucket)
    detail = event["detail"]
    for key in (
        "TrainingJobName",
        "TrainingJobArn",
        "HyperParameters",
        "RoleArn",
        "InputDataConfig",
        "OutputDataConfig",
        "ResourceConfig",
        "StoppingCondition",
    ):
        if key in job:
            detail[key] = copy.deepcopy(job[key])
    detail["AlgorithmSpecification"]["TrainingImage"] = job["AlgorithmSpecification"]["TrainingImage"]
    detail["TrainingJobStatus"] = detail["SecondaryStatus"] = "Completed"
    event["resources"] = [job["TrainingJobArn"]]
    return json.loads(json.dumps(event, default=str))
