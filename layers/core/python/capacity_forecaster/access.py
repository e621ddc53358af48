"""What each pipeline stage touches: the one declaration the cloud grants are built from.

Each stage names the lake prefixes it lists and reads, writes and deletes under, and the other AWS actions it
calls. ``infra/`` turns these into IAM statements (a function's role gets the union of the stages its handler
runs); nothing else lists prefixes. The tests run every function against a moto server, record each AWS call
it makes and evaluate it against the synthesized policies, so a declaration that misses a call fails there.

Prefixes are lake-relative and end with ``/``; a prefix covers every key under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from capacity_forecaster.schema import (
    CONSOLIDATION,
    ETL_FILES,
    ETL_RUNS,
    FORECASTS,
    FORECASTS_HOURLY,
    GROUND_TRUTH,
    LATEST_RUN,
    METRICS_DAILY,
    METRICS_HOURLY,
    MODEL_METRICS,
    MODEL_METRICS_HOURLY,
    QUARANTINE,
    RAW_SAMPLES,
    RISK_REGISTER,
    SERVER_ATTRIBUTES,
    SERVERS,
    TableSchema,
)

RAW_PREFIX: Final = "raw/"
UPLOADS_PREFIX: Final = "raw/uploads/"
"""User uploads and CloudWatch pulls, ``raw/uploads/tenants/<tenant>/YYYY/MM/DD/<timestamp>_<name>``."""
QUARANTINED_FILES_PREFIX: Final = "quarantine/files/"
"""Whole raw files the ETL cannot read, moved here (``dt=<run day>/<original key>``) with a reason."""
STAGING_TRAINING_PREFIX: Final = "staging/training/"
"""Where training hosts stage their parts until the risk stage publishes them."""
TRAINING_OUTPUT_PREFIX: Final = "training/output/"
"""SageMaker's model artifacts (model.tar.gz) of each job."""
TRAINING_CHECKPOINT_PREFIX: Final = "training/checkpoints/"
"""SageMaker's spot-training checkpoints."""
REPORTS_PREFIX: Final = "reports/"
"""The HTML capacity report and its CSV/Excel exports of each run."""
LOCKS_PREFIX: Final = "state/locks/"
"""Lease objects that keep two runs writing the same tables from interleaving."""
PROCESSING_SUMMARY_PREFIX: Final = "state/processing/"
"""Where SageMaker uploads each processing job's summary (``<job name>/<stage>.json``, scale.engine sagemaker)."""
DEMO_FLEET_PREFIX: Final = "state/demo/"
ETL_SAMPLES_PREFIX: Final = "state/etl_samples/"
"""The ETL's day store: each processed raw file's valid samples per UTC day, re-aggregated with a day's new files."""
"""The demo generator's record of the fleet it writes (``fleet.json``): its first and last day and shape."""


CLOUDWATCH_PULL_ACTIONS: Final = ("ec2:DescribeInstances", "cloudwatch:ListMetrics", "cloudwatch:GetMetricData")
"""What the CloudWatch puller calls besides the lake (capacity_forecaster.cloudwatch_pull)."""
NOTIFY_ACTIONS: Final = ("sns:Publish",)
"""What sending the run summary calls: ``infra/`` scopes it to the alerts topic (and its key)."""
NOTIFY_TOPIC_ENV: Final = "CF_NOTIFY_TOPIC_ARN"
"""The variable naming the alerts topic, set by the stack for every function or job whose stages hold
NOTIFY_ACTIONS (``capacity_forecaster.outputs.notify_run``)."""
ACCOUNT_WIDE_ACTIONS: Final = frozenset(CLOUDWATCH_PULL_ACTIONS)
"""Actions that support no resource-level permissions: ``infra/`` grants them on ``*``."""


def table_prefix(table: TableSchema) -> str:
    """A table's lake prefix with its trailing slash: ``curated/metrics_daily/``."""
    return table.prefix.rstrip("/") + "/"


@dataclass(frozen=True, kw_only=True)
class StageAccess:
    """The lake prefixes a stage lists and reads, writes and deletes under, and its other AWS actions."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    """Other IAM actions, on the resources ``infra/`` scopes them to (``sns:Publish`` on the alerts topic...)."""

    def __post_init__(self) -> None:
        for prefix in (*self.read, *self.write, *self.delete):
            if not prefix.endswith("/") or prefix.startswith("/") or "*" in prefix:
                raise ValueError(f"lake prefix {prefix!r} must be relative, end with '/' and hold no wildcard")

    def union(self, other: StageAccess) -> StageAccess:
        """What two stages run by one function touch together."""

        def merged(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(dict.fromkeys((*a, *b)))

        return StageAccess(
            read=merged(self.read, other.read),
            write=merged(self.write, other.write),
            delete=merged(self.delete, other.delete),
            actions=merged(self.actions, other.actions),
        )


def _tables(*tables: TableSchema) -> tuple[str, ...]:
    return tuple(table_prefix(t) for t in tables)


STAGE_ACCESS: Final[dict[str, StageAccess]] = {
    # the synthetic demo fleet: raw exports, the inventory and what was planted
    "generate": StageAccess(
        read=(RAW_PREFIX, *_tables(SERVERS, GROUND_TRUTH), DEMO_FLEET_PREFIX),
        write=(*_tables(RAW_SAMPLES, SERVERS, GROUND_TRUTH), DEMO_FLEET_PREFIX),
    ),
    # new raw objects -> curated daily (and hourly) metrics, quarantine, reconciliation, processed-file list;
    # unreadable uploads are moved under quarantine/files/ (copied, then deleted from raw/)
    "etl": StageAccess(
        read=(
            RAW_PREFIX,
            *_tables(METRICS_DAILY, METRICS_HOURLY, QUARANTINE, ETL_RUNS, ETL_FILES, SERVER_ATTRIBUTES),
            LOCKS_PREFIX,
            ETL_SAMPLES_PREFIX,
        ),
        write=(
            *_tables(METRICS_DAILY, METRICS_HOURLY, QUARANTINE, ETL_RUNS, ETL_FILES, SERVER_ATTRIBUTES),
            QUARANTINED_FILES_PREFIX,
            LOCKS_PREFIX,
            ETL_SAMPLES_PREFIX,
        ),
        delete=(UPLOADS_PREFIX, LOCKS_PREFIX, ETL_SAMPLES_PREFIX),
    ),
    # the SageMaker training job: the curated channel in, staged parts and the model artifact out
    "train": StageAccess(
        read=(*_tables(METRICS_DAILY, METRICS_HOURLY), TRAINING_CHECKPOINT_PREFIX),
        write=(STAGING_TRAINING_PREFIX, TRAINING_OUTPUT_PREFIX, TRAINING_CHECKPOINT_PREFIX),
        delete=(TRAINING_CHECKPOINT_PREFIX,),
    ),
    # a completed training run's staged parts -> forecasts and model metrics (the staging objects removed)
    "publish": StageAccess(
        read=(STAGING_TRAINING_PREFIX,),
        write=(STAGING_TRAINING_PREFIX, *_tables(FORECASTS, MODEL_METRICS, FORECASTS_HOURLY, MODEL_METRICS_HOURLY)),
        delete=(STAGING_TRAINING_PREFIX,),
    ),
    # forecasts, their champions' status and the recent history -> the risk register (the previous one tells which
    # risks are new)
    "risk": StageAccess(
        read=(
            *_tables(
                FORECASTS,
                FORECASTS_HOURLY,
                MODEL_METRICS,
                MODEL_METRICS_HOURLY,
                METRICS_DAILY,
                RISK_REGISTER,
                LATEST_RUN,
            ),
            LOCKS_PREFIX,
        ),
        write=(*_tables(RISK_REGISTER, LATEST_RUN), LOCKS_PREFIX),
        delete=(LOCKS_PREFIX,),
    ),
    # the register, the history and the inventory -> the consolidation plan
    "consolidation": StageAccess(
        read=_tables(RISK_REGISTER, METRICS_DAILY, SERVERS, SERVER_ATTRIBUTES),
        write=(table_prefix(CONSOLIDATION),),
    ),
    # the register, the plan, the champion forecasts and recent history -> the HTML report and its exports
    "report": StageAccess(
        read=_tables(RISK_REGISTER, CONSOLIDATION, SERVERS, FORECASTS, FORECASTS_HOURLY, METRICS_DAILY),
        write=(REPORTS_PREFIX,),
    ),
    # the run summary (counts, new critical risks, the report's key) to the alerts topic
    "notify": StageAccess(actions=NOTIFY_ACTIONS),
    # a SageMaker Processing job of the fleet-wide stages (scale.engine sagemaker): its summary, uploaded at the end
    "processing_summary": StageAccess(write=(PROCESSING_SUMMARY_PREFIX,)),
    # the tagged EC2 instances' CloudWatch metrics -> one raw upload per GetMetricData request; their instance
    # types, zones and tags merged into the inventory
    "pull_cloudwatch": StageAccess(
        read=_tables(SERVERS), write=(UPLOADS_PREFIX, *_tables(SERVERS)), actions=CLOUDWATCH_PULL_ACTIONS
    ),
}
"""Stage -> what it touches. A change to what a stage reads or writes is one edit here."""


def function_access(*stages: str) -> StageAccess:
    """What a function that runs ``stages`` touches: the union of their declarations."""
    access = StageAccess()
    for stage in stages:
        access = access.union(STAGE_ACCESS[stage])
    return access
