"""Pull EC2 CloudWatch metrics of tagged instances into the lake's raw zone, where the ETL picks them up.

``pull_cloudwatch`` finds the instances carrying a tag (``ec2:DescribeInstances``), discovers which CloudWatch
agent metrics each one publishes (``cloudwatch:ListMetrics``), fetches CPUUtilization and those metrics with
``cloudwatch:GetMetricData`` and writes the responses, unchanged apart from their timestamps written as UTC ISO
8601 text, as CloudWatch JSON under ``raw/uploads/tenants/<tenant>/YYYY/MM/DD/`` (the key scheme of ``ingest``).
Each result's ``Label`` is ``"<instance id> <metric name>"``, which :mod:`capacity_forecaster.raw_formats` reads.

The query building (:func:`build_queries`) and the window and period choice are pure functions; the AWS calls
go through boto3's paginators and botocore's retry modes (from the S3 settings: ``CF_S3_RETRY_MODE``,
``CF_S3_MAX_ATTEMPTS``), and their failures become one-line :class:`CloudWatchPullError` messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from capacity_forecaster.access import CLOUDWATCH_PULL_ACTIONS
from capacity_forecaster.errors import CapacityForecasterError, ConfigError, InputError, single_line

EC2_NAMESPACE: Final = "AWS/EC2"
CPU_METRIC: Final = "CPUUtilization"
AGENT_NAMESPACE: Final = "CWAgent"
AGENT_METRICS: Final[tuple[str, ...]] = ("mem_used_percent", "disk_used_percent")
"""The CloudWatch agent's memory and disk metrics, fetched for the instances that publish them."""
IGNORED_FSTYPES: Final = frozenset({"squashfs", "iso9660", "udf", "tmpfs", "devtmpfs", "ramfs"})
"""Disk series left out: read-only images (snap packages are squashfs, always 100% used) and memory-backed
filesystems, which would hide the real disks' usage in the fullest-filesystem maximum."""
MAX_QUERIES_PER_CALL: Final = 500  # GetMetricData's limit on MetricDataQueries
MAX_POINTS_PER_CALL: Final = 100_800  # data points one GetMetricData response returns at most
STAT: Final = "Average"
# Instances that are gone or going have nothing left to plan for.
LIVE_STATES: Final[tuple[str, ...]] = ("pending", "running", "stopping", "stopped")
# CloudWatch keeps 5-minute data points 63 days and hourly ones 455 days (15 months); a window ends at today's
# midnight, so it reaches back up to one day more than it covers.
RETENTION: Final[tuple[tuple[int, int], ...]] = ((63, 300), (455, 3600))
MAX_DAYS: Final = RETENTION[-1][0] - 1
IAM_ACTIONS: Final = ", ".join(CLOUDWATCH_PULL_ACTIONS[:-1]) + " and " + CLOUDWATCH_PULL_ACTIONS[-1]

_TAG_KEY = re.compile(r"[^=\s][^=]{0,127}")
_CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
_ACCESS_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "OptInRequired"})
_THROTTLE_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded", "LimitExceededException"})


class CloudWatchPullError(CapacityForecasterError):
    """EC2 or CloudWatch refused or failed a request; the message says what to do."""


# --- pure parts --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagFilter:
    """``Key=Value``: instances carrying this tag (the value may use EC2's ``*`` and ``?`` wildcards)."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> TagFilter:
        """``"Team=web"`` -> ``TagFilter("Team", "web")``; :class:`InputError` on anything else."""
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _TAG_KEY.fullmatch(key) or not value or len(value) > 256:
            raise InputError(
                f"--tag {text!r} is not Key=Value: give a tag key (1 to 128 characters) and a value, e.g. Team=web"
            )
        return cls(key, value)

    def ec2_filter(self) -> dict[str, Any]:
        return {"Name": f"tag:{self.key}", "Values": [self.value]}

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


def parse_tag_filters(text: str) -> list[TagFilter]:
    """``"Team=web,Env=prod"`` -> both filters (an instance must carry every one); [] for an empty text."""
    return [TagFilter.parse(part) for part in text.split(",") if part.strip()] if text.strip() else []


@dataclass(frozen=True)
class MetricSeries:
    """One CloudWatch metric of one instance: namespace, name and its full set of dimensions."""

    instance_id: str
    namespace: str
    metric_name: str
    dimensions: tuple[tuple[str, str], ...]

    @classmethod
    def cpu(cls, instance_id: str) -> MetricSeries:
        return cls(instance_id, EC2_NAMESPACE, CPU_METRIC, (("InstanceId", instance_id),))

    def metric(self) -> dict[str, Any]:
        return {
            "Namespace": self.namespace,
            "MetricName": self.metric_name,
            "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions],
        }


def choose_period(days: int) -> int:
    """The GetMetricData period for a window of ``days``: 5 minutes up to 62 days, an hour up to 454.

    The window starts at most ``days + 1`` days ago, which must be within CloudWatch's retention of that period.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InputError(f"--days must be a whole number of at least 1, got {days!r}")
    for kept, period in RETENTION:
        if days + 1 <= kept:
            return period
    raise InputError(
        f"--days {days} reaches back further than CloudWatch keeps data ({RETENTION[0][0]} days of 5-minute and "
        f"{RETENTION[-1][0]} days of hourly points); ask for at most {MAX_DAYS}"
    )


def pull_window(days: int, now: datetime) -> tuple[datetime, datetime]:
    """The last ``days`` complete UTC days before ``now``: [midnight ``days`` days ago, today's midnight)."""
    if now.tzinfo is None:
        raise ValueError("pull_window needs a timezone-aware datetime")
    end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=days), end


def build_queries(
    series: Sequence[MetricSeries],
    *,
    period: int,
    days: int,
    stat: str = STAT,
    max_queries: int = MAX_QUERIES_PER_CALL,
    max_points: int = MAX_POINTS_PER_CALL,
) -> list[list[dict[str, Any]]]:
    """GetMetricData queries for ``series``, in batches of at most ``max_queries`` (one call each).

    Each instance and metric gives one returned result labelled ``"<instance id> <metric name>"``. When an
    instance has several dimension sets for a metric (the agent's disk_used_percent has one per filesystem), its
    series are fetched without returning them and a ``MAX([...])`` expression returns the fullest at each time.
    A batch also holds at most ``max_points // points per series`` results, so one response carries it whole.
    """
    if not 1 <= max_queries <= MAX_QUERIES_PER_CALL:
        raise ValueError(f"max_queries must be 1 to {MAX_QUERIES_PER_CALL}")
    groups: dict[tuple[str, str], list[MetricSeries]] = {}
    for item in series:
        groups.setdefault((item.instance_id, item.metric_name), []).append(item)
    points_per_result = days * 86_400 // period
    results_per_batch = max(1, max_points // max(1, points_per_result))
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    returned = 0
    for n, ((instance_id, metric_name), members) in enumerate(sorted(groups.items())):
        label = f"{instance_id} {metric_name}"
        members = sorted(set(members), key=lambda m: (m.namespace, m.dimensions))
        if len(members) > max_queries - 1 and len(members) > 1:
            raise InputError(f"{label}: {len(members)} dimension sets, more than one GetMetricData call can combine")
        group = _group_queries(f"q{n}", label, members, period=period, stat=stat)
        if batch and (len(batch) + len(group) > max_queries or returned >= results_per_batch):
            batches.append(batch)
            batch, returned = [], 0
        batch.extend(group)
        returned += 1
    if batch:
        batches.append(batch)
    return batches


def _group_queries(
    query_id: str, label: str, members: Sequence[MetricSeries], *, period: int, stat: str
) -> list[dict[str, Any]]:
    def stat_query(qid: str, item: MetricSeries, *, returned: bool) -> dict[str, Any]:
        query: dict[str, Any] = {
            "Id": qid,
            "MetricStat": {"Metric": item.metric(), "Period": period, "Stat": stat},
            "ReturnData": returned,
        }
        if returned:
            query["Label"] = label
        return query

    if len(members) == 1:
        return [stat_query(query_id, members[0], returned=True)]
    inputs = [stat_query(f"{query_id}_{i}", item, returned=False) for i, item in enumerate(members)]
    ids = ",".join(q["Id"] for q in inputs)
    return [*inputs, {"Id": query_id, "Expression": f"MAX([{ids}])", "Label": label, "ReturnData": True}]


def agent_series(metrics: Sequence[Mapping[str, Any]], instance_ids: Sequence[str]) -> list[MetricSeries]:
    """The ListMetrics entries (``{"Namespace", "MetricName", "Dimensions"}``) that belong to ``instance_ids``,
    without the filesystems of :data:`IGNORED_FSTYPES`."""
    wanted = set(instance_ids)
    found = []
    for entry in metrics:
        dims = tuple((str(d["Name"]), str(d["Value"])) for d in entry.get("Dimensions") or [])
        instance = dict(dims).get("InstanceId")
        if dict(dims).get("fstype") in IGNORED_FSTYPES:
            continue
        if instance in wanted:
            found.append(MetricSeries(instance, str(entry["Namespace"]), str(entry["MetricName"]), dims))
    return found


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def responses_json(pages: Sequence[Mapping[str, Any]]) -> bytes:
    """GetMetricData pages as a JSON list of responses (without ``ResponseMetadata`` and ``NextToken``)."""
    kept = [{k: v for k, v in page.items() if k not in ("ResponseMetadata", "NextToken")} for page in pages]
    return json.dumps(kept, default=_json_default, separators=(",", ":")).encode()


def count_points(pages: Sequence[Mapping[str, Any]]) -> int:
    return sum(len(r.get("Values") or []) for page in pages for r in page.get("MetricDataResults") or [])


def file_name(tags: Sequence[TagFilter], index: int, total: int) -> str:
    """``cloudwatch-<Key>=<Value>.json`` (``-<i>of<n>`` before the suffix when a pull needs several calls)."""
    part = f"-{index}of{total}" if total > 1 else ""
    return f"cloudwatch-{'-'.join(str(t) for t in tags)}{part}.json"


# --- AWS calls ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsClients:
    """The EC2 and CloudWatch clients of one pull."""

    ec2: Any
    cloudwatch: Any

    @classmethod
    def create(cls, s3_config: Any, region: str | None = None) -> AwsClients:
        """Clients with the S3 settings' profile, region, retry mode, attempts and timeouts.

        Endpoints come from botocore's own configuration (``AWS_ENDPOINT_URL_EC2``,
        ``AWS_ENDPOINT_URL_CLOUDWATCH`` or ``AWS_ENDPOINT_URL``), not from the S3 endpoint.
        """
        if region is not None:
            try:
                s3_config = s3_config.with_overrides(region=region)
            except ConfigError:
                raise InputError(f"--region {region!r} is not an AWS region such as 'eu-west-1'") from None
        session = s3_config.session()
        config = s3_config.botocore_config()
        with _translated("creating the EC2 and CloudWatch clients"):  # resolves the credentials: they may fail here
            return cls(session.client("ec2", config=config), session.client("cloudwatch", config=config))


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    """botocore failures of ``operation`` as one-line :class:`CloudWatchPullError` messages."""
    from botocore import exceptions as bce

    try:
        yield
    except bce.NoCredentialsError:
        raise CloudWatchPullError(
            f"{operation}: no AWS credentials found; set AWS_PROFILE, run `aws configure` or `aws sso login`"
        ) from None
    except (bce.PartialCredentialsError, bce.CredentialRetrievalError, bce.TokenRetrievalError, bce.SSOError) as exc:
        raise CloudWatchPullError(f"{operation}: AWS credentials could not be loaded: {exc}") from None
    except bce.ClientError as exc:
        response: dict[str, Any] = dict(exc.response or {})
        error: dict[str, Any] = dict(response.get("Error") or {})
        code = str(error.get("Code") or "Unknown")
        message = single_line(str(error.get("Message") or ""))
        request_id = dict(response.get("ResponseMetadata") or {}).get("RequestId")
        where = f"{operation} ({code}" + (f", request id {request_id})" if request_id else ")")
        if code in _CREDENTIAL_CODES:
            hint = "AWS did not accept the credentials; check AWS_PROFILE (or run `aws sso login`)"
        elif code in _ACCESS_CODES:
            hint = f"access denied; the IAM policy must allow {IAM_ACTIONS}"
        elif code in _THROTTLE_CODES:
            hint = "throttled after the retries; run it again later or raise CF_S3_MAX_ATTEMPTS"
        else:
            hint = message or "the request failed"
        raise CloudWatchPullError(f"{where}: {hint}") from None
    except (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError) as exc:
        raise CloudWatchPullError(f"{operation}: cannot reach AWS ({type(exc).__name__}): {exc}") from None
    except bce.BotoCoreError as exc:
        raise CloudWatchPullError(f"{operation} failed: {exc}") from None


def describe_instances(ec2: Any, tags: Sequence[TagFilter]) -> list[dict[str, Any]]:
    """The live instances carrying every tag in ``tags`` as DescribeInstances gives them, sorted by id."""
    filters = [t.ec2_filter() for t in tags] + [{"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    found: dict[str, dict[str, Any]] = {}
    with _translated("ec2:DescribeInstances"):
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                found.update({i["InstanceId"]: dict(i) for i in reservation.get("Instances", [])})
    return [found[k] for k in sorted(found)]


def find_instances(ec2: Any, tags: Sequence[TagFilter]) -> list[str]:
    """Ids of the live instances carrying every tag in ``tags``, sorted."""
    return [i["InstanceId"] for i in describe_instances(ec2, tags)]


def update_inventory(lake: Any, instances: Sequence[dict[str, Any]], settings: Any) -> str:
    """Merge the instances' type, availability zone, region and tags into the lake's ``servers`` table (what the
    inventory gave otherwise is kept; sizes and costs by instance type come from the price table)."""
    from capacity_forecaster.inventory import ec2_rows, merge_ec2, write_inventory
    from capacity_forecaster.schema import SERVERS

    merged = merge_ec2(lake.read_table(SERVERS), ec2_rows(instances))
    return write_inventory(lake, merged, settings)


def discover_agent_series(cloudwatch: Any, instance_ids: Sequence[str]) -> list[MetricSeries]:
    """The CloudWatch agent's memory and disk series that exist for ``instance_ids`` (ListMetrics)."""
    found: list[MetricSeries] = []
    with _translated("cloudwatch:ListMetrics"):
        paginator = cloudwatch.get_paginator("list_metrics")
        for name in AGENT_METRICS:
            for page in paginator.paginate(Namespace=AGENT_NAMESPACE, MetricName=name):
                found += agent_series(page.get("Metrics", []), instance_ids)
    return found


def fetch_batch(cloudwatch: Any, queries: list[dict[str, Any]], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Every page of one GetMetricData request (NextToken followed by boto3's paginator)."""
    with _translated("cloudwatch:GetMetricData"):
        pages = cloudwatch.get_paginator("get_metric_data").paginate(
            MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending"
        )
        return [dict(page) for page in pages]


@dataclass
class PullResult:
    """What a pull found and wrote."""

    instances: list[str]
    series: dict[str, int]
    start: datetime
    end: datetime
    period: int
    calls: int = 0
    points: int = 0
    written: list[str] = field(default_factory=list)
    inventory: str | None = None
    """The ``servers`` object the instances' types, zones and tags were written to."""


def pull_cloudwatch(
    lake: Any,
    clients: AwsClients,
    *,
    tags: Sequence[TagFilter],
    days: int,
    tenant: str = "default",
    now: datetime | None = None,
    max_queries: int = MAX_QUERIES_PER_CALL,
    inventory: bool = True,
    settings: Any = None,
) -> PullResult:
    """Fetch the tagged instances' metrics for the last ``days`` complete UTC days into the raw zone.

    One object per GetMetricData request (all its pages, as a JSON list of responses); a request that returns no
    data point writes nothing. :class:`InputError` when no live instance carries the tags. With ``inventory``,
    the instances' type, availability zone and tags go into the ``servers`` table (:func:`update_inventory`,
    priced by ``settings``' price table, the defaults' without).
    """
    from capacity_forecaster.ingest import upload_key

    if not tags:
        raise InputError("give at least one --tag Key=Value")
    stamp = now or datetime.now(UTC)
    period = choose_period(days)
    start, end = pull_window(days, stamp)
    upload_key(tenant, "check.json", stamp)  # a bad tenant fails before any AWS call
    described = describe_instances(clients.ec2, tags)
    instances = [i["InstanceId"] for i in described]
    if not instances:
        tag_text = ", ".join(str(t) for t in tags)
        raise InputError(f"no running or stopped EC2 instance carries the tag {tag_text} in this region")
    series = [MetricSeries.cpu(i) for i in instances] + discover_agent_series(clients.cloudwatch, instances)
    names = (CPU_METRIC, *AGENT_METRICS)
    counts = {name: len({s.instance_id for s in series if s.metric_name == name}) for name in names}
    batches = build_queries(series, period=period, days=days, max_queries=max_queries)
    result = PullResult(instances, counts, start, end, period)
    for index, queries in enumerate(batches, start=1):
        pages = fetch_batch(clients.cloudwatch, queries, start, end)
        result.calls += len(pages)
        points = count_points(pages)
        if not points:
            continue
        result.points += points
        name = file_name(tags, index, len(batches))
        result.written.append(
            lake.store.put_bytes(
                upload_key(tenant, name, stamp),
                responses_json(pages),
                content_type="application/json",
                metadata={"source": "pull-cloudwatch", "original_filename": name},
            )
        )
    if inventory:
        from capacity_forecaster.settings import default_settings

        result.inventory = update_inventory(lake, described, settings or default_settings())
    return result
