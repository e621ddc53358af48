"""Risk Lambda: when a training job completes, publish its staged forecasts, then build the risk register, the
consolidation plan and the report (``reports/run_date=.../``), and send the run summary to the alerts topic.

All of it runs under the ``risk`` lease in the lake (``state/locks/risk.json``), shared with ``capacity-forecaster
risk`` on the same lake, instead of reserved concurrency. An invocation that finds the lease held raises (one line
in the log, counted as ``LeaseBusy``), so Lambda's asynchronous retry runs it again later: this event names a
training run nothing else would publish.
"""

from __future__ import annotations

import os
import re
from datetime import date
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from capacity_forecaster.access import NOTIFY_TOPIC_ENV
from capacity_forecaster.errors import InputError
from capacity_forecaster.forecasting.job import is_run_id, publish_training_run
from capacity_forecaster.outputs import build_outputs, notify_run
from capacity_forecaster.stages import RISK_LEASE
from capacity_forecaster.storage.lease import Lease, LeaseHeld
from common.runtime import (
    as_eventbridge,
    event_time,
    is_kind,
    lake_from,
    powertools,
    publish_counts,
    reject,
    settings_from_env,
    shown,
)

STATE_CHANGE = ("aws.sagemaker", "SageMaker Training Job State Change")

_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

logger, metrics, tracer = powertools()


def completed_run(detail: dict[str, Any]) -> tuple[str, date] | None:
    """(run_id, run_date) of a Completed training job; None for other states; InputError for a malformed one."""
    status = detail.get("TrainingJobStatus")
    if not isinstance(status, str) or not status:
        raise InputError(f"training job state change without a TrainingJobStatus string (got {shown(status)})")
    if status != "Completed":
        return None
    job = shown(detail.get("TrainingJobName"))
    params = detail.get("HyperParameters", {})
    if not isinstance(params, dict):
        raise InputError(f"training job {job} HyperParameters must be an object, not {type(params).__name__}")
    run_id, run_date = params.get("run_id"), params.get("run_date")
    if not run_id or not run_date:
        raise InputError(f"training job {job} has no run_id/run_date hyperparameters")
    if not isinstance(run_id, str) or not is_run_id(run_id):
        raise InputError(f"hyperparameter run_id={shown(run_id)} is not a run id (1 to 128 of A-Z, a-z, 0-9, - and _)")
    try:
        if not isinstance(run_date, str) or not _ISO_DAY.fullmatch(run_date):
            raise ValueError(run_date)
        return run_id, date.fromisoformat(run_date)
    except ValueError:
        raise InputError(f"hyperparameter run_date={shown(run_date)} is not YYYY-MM-DD") from None


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        change = as_eventbridge(event)
        if not is_kind(change, *STATE_CHANGE):
            kind = f"{shown(change.detail_type)} from {shown(change.source)}"
            raise InputError(f"expected a SageMaker Training Job State Change, got {kind}")
        event_time(change)  # unused, but every EventBridge event has an ISO 8601 time: this one is forged
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
            outputs = build_outputs(lake, settings, run_date=run_date, grain=published.grain, held=lease)
            topic_arn = os.environ.get(NOTIFY_TOPIC_ENV)  # the run summary goes there when the stack sets it
            notified = notify_run(outputs, run_id=run_id, topic_arn=topic_arn)
            if topic_arn:
                logger.info("run summary notified", extra={"run_id": run_id, "new_critical": notified})
    except LeaseHeld as exc:
        logger.warning("another risk run holds the lease; the event is retried", extra={"reason": str(exc)})
        metrics.add_metric(name="LeaseBusy", unit=MetricUnit.Count, value=1)
        raise
    counts = outputs.counts
    publish_counts(
        metrics,
        counts,
        {"severity_critical": "CriticalRisks", "severity_high": "HighRisks", "servers_freed": "ServersFreed"},
    )
    logger.info("risk register, consolidation plan and report written", extra={"run_id": run_id, **counts})
    return {"status": "succeeded", "run_id": run_id, "series": published.series, "notified": notified, **counts}
