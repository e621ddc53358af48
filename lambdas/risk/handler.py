"""Risk Lambda: when a training job completes, publish its staged forecasts and build the risk register.

Publishing and the register run under the ``risk`` lease in the lake (``state/locks/risk.json``), shared with
``capacity-forecaster risk`` on the same lake, instead of reserved concurrency. An invocation that finds the
lease held raises (one line in the log, counted as ``LeaseBusy``), so Lambda's asynchronous retry runs it again
later: this event names a training run nothing else would publish.
"""

from __future__ import annotations

import os
from datetime import date
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from capacity_forecaster.errors import InputError
from capacity_forecaster.forecasting.job import publish_training_run
from capacity_forecaster.schema import RISK_REGISTER
from capacity_forecaster.stages import RISK_LEASE, run_risk
from capacity_forecaster.storage.lake import Lake
from capacity_forecaster.storage.lease import Lease, LeaseHeld
from common.runtime import as_eventbridge, is_kind, lake_from, publish_counts, reject, settings_from_env

if TYPE_CHECKING:
    import pandas as pd

STATE_CHANGE = ("aws.sagemaker", "SageMaker Training Job State Change")
NOTIFY_TOPIC_ENV = "CF_NOTIFY_TOPIC_ARN"
"""When set, new critical risks are published to this SNS topic."""
MAX_LISTED = 10

logger = Logger()
metrics = Metrics()
tracer = Tracer()


def completed_run(detail: dict[str, Any]) -> tuple[str, date] | None:
    """(run_id, run_date) of a Completed training job; None for other states."""
    status = detail.get("TrainingJobStatus")
    if status != "Completed":
        return None
    params = detail.get("HyperParameters") or {}
    run_id, run_date = params.get("run_id"), params.get("run_date")
    if not run_id or not run_date:
        raise InputError(f"training job {detail.get('TrainingJobName')!r} has no run_id/run_date hyperparameters")
    try:
        return str(run_id), date.fromisoformat(str(run_date))
    except ValueError:
        raise InputError(f"hyperparameter run_date={run_date!r} is not YYYY-MM-DD") from None


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        change = as_eventbridge(event)
        if not is_kind(change, *STATE_CHANGE):
            raise InputError(f"expected a SageMaker Training Job State Change, got {change.detail_type!r}")
        run = completed_run(change.detail)
        settings = settings_from_env()
    except InputError as exc:
        return reject(logger, metrics, str(exc))
    if run is None:
        status = change.detail.get("TrainingJobStatus")
        logger.info("training job not completed; nothing to do", extra={"status": status})
        metrics.add_metric(name="SkippedEvents", unit=MetricUnit.Count, value=1)
        return {"status": "skipped", "training_job_status": status}
    run_id, run_date = run
    lake = lake_from(settings)
    try:
        with Lease(lake.store, RISK_LEASE) as lease:
            published = publish_training_run(lake, run_id=run_id, run_date=run_date)
            result = run_risk(lake, settings, run_date=run_date, held=lease)
            notified = notify_new_critical(
                lake, run_id=run_id, run_date=run_date, topic_arn=os.environ.get(NOTIFY_TOPIC_ENV)
            )
    except LeaseHeld as exc:
        logger.warning("another risk run holds the lease; the event is retried", extra={"reason": str(exc)})
        metrics.add_metric(name="LeaseBusy", unit=MetricUnit.Count, value=1)
        raise
    publish_counts(metrics, result.counts, {"severity_critical": "CriticalRisks", "severity_high": "HighRisks"})
    logger.info("risk register written", extra={"run_id": run_id, **result.counts})
    return {"status": "succeeded", "run_id": run_id, "series": published.series, "notified": notified, **result.counts}


def new_critical(register: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """Critical series of this run that were not critical in the previous run (all of them without one)."""
    critical = register[register["severity"] == "critical"]
    if previous is not None and not previous.empty:
        was = previous[previous["severity"] == "critical"]
        before = set(zip(was["server_id"], was["metric"], strict=True))
        keep = [(s, m) not in before for s, m in zip(critical["server_id"], critical["metric"], strict=True)]
        critical = critical[keep]
    return critical.sort_values(["days_to_breach_p50", "server_id", "metric"], na_position="last")


def summary(new: pd.DataFrame, *, run_id: str, run_date: date, critical: int) -> tuple[str, str]:
    """(subject, message) of the notification: counts, then the most urgent new critical series."""
    subject = f"Capacity Forecaster {run_date}: {len(new)} new critical risk(s)"
    lines = [f"Run {run_id} ({run_date}): {critical} critical series, {len(new)} new since the previous run.", ""]
    for row in new.head(MAX_LISTED).itertuples():
        days = row.days_to_breach_p50
        when = "breaching now" if days == 0 else f"P50 crosses {row.threshold:.0f}% on {row.breach_date_p50}"
        lines.append(f"- {row.server_id} {row.metric}: last P95 {row.last_p95:.1f}%, {when}")
    if len(new) > MAX_LISTED:
        lines.append(f"... and {len(new) - MAX_LISTED} more.")
    lines += ["", f"Athena: SELECT * FROM risk_register WHERE run_date = DATE '{run_date}' AND severity = 'critical'"]
    return subject, "\n".join(lines)


def notify_new_critical(lake: Lake, *, run_id: str, run_date: date, topic_arn: str | None) -> int:
    """Publish the new critical risks of the run to the topic; the number published about (0: nothing sent)."""
    if not topic_arn:
        return 0
    register = lake.read_table(RISK_REGISTER, where={"run_date": run_date})
    earlier = [p["run_date"] for p in lake.list_partitions(RISK_REGISTER) if p["run_date"] < run_date.isoformat()]
    previous = lake.read_table(RISK_REGISTER, where={"run_date": date.fromisoformat(max(earlier))}) if earlier else None
    new = new_critical(register, previous)
    if new.empty:
        return 0
    import boto3

    critical = int((register["severity"] == "critical").sum())
    subject, message = summary(new, run_id=run_id, run_date=run_date, critical=critical)
    boto3.client("sns").publish(TopicArn=topic_arn, Subject=subject, Message=message)
    logger.info("new critical risks notified", extra={"run_id": run_id, "new_critical": len(new)})
    return len(new)
