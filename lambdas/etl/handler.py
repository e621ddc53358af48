"""ETL Lambda: on its daily schedule, or when an object lands under raw/, process the new raw objects.

ETL runs are serialised by the ``etl`` lease in the lake (``state/locks/etl.json``), shared with CLI runs on
the same lake, not by reserved concurrency. An invocation that finds the lease held returns ``busy`` (counted
as ``LeaseBusy``, not an error, not retried): the run holding the lease processes, before it ends, every raw
object that landed while it ran, so the object of this event is not lost.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from capacity_forecaster.errors import InputError
from capacity_forecaster.stages import run_etl
from capacity_forecaster.storage.errors import InvalidKeyError
from capacity_forecaster.storage.keys import parse_s3_uri, validate_key
from capacity_forecaster.storage.lease import LeaseHeld
from common.runtime import (
    SCHEDULED,
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

OBJECT_CREATED = ("aws.s3", "Object Created")
END_MARGIN_S = 60.0
"""Seconds kept free at the function's end: the lease's release, the metrics and the log line."""

logger, metrics, tracer = powertools()


def _field(detail: dict[str, Any], part: str, name: str) -> str:
    """``detail[part][name]`` as a non-empty string, or an InputError naming what is wrong."""
    section = detail.get(part)
    if not isinstance(section, dict):
        raise InputError(f"Object Created event 'detail.{part}' must be an object, not {shown(section)}")
    value = section.get(name)
    if not isinstance(value, str) or not value:
        raise InputError(f"Object Created event 'detail.{part}.{name}' must be a non-empty string, not {shown(value)}")
    return value


def check_object_created(detail: dict[str, Any], lake_uri: str) -> str:
    """The new object's key, checked to be in the lake's bucket and under its raw/ prefix."""
    bucket, key = _field(detail, "bucket", "name"), _field(detail, "object", "key")
    lake_bucket, prefix = parse_s3_uri(lake_uri)
    raw_prefix = f"{prefix}/raw/" if prefix else "raw/"
    try:
        validate_key(key)
    except InvalidKeyError as exc:
        raise InputError(str(exc)) from None
    if bucket != lake_bucket or not key.startswith(raw_prefix):
        raise InputError(f"s3://{bucket}/{key[:80]} is not under the lake's raw zone s3://{lake_bucket}/{raw_prefix}")
    return key


def deadline_of(context: LambdaContext) -> float:
    """The ``time.monotonic`` time the run must end by: the invocation's remaining time less a margin."""
    return time.monotonic() + context.get_remaining_time_in_millis() / 1000 - END_MARGIN_S


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        received = as_eventbridge(event)
        settings = settings_from_env()
        if is_kind(received, *OBJECT_CREATED):
            trigger = check_object_created(received.detail, settings.lake)
        elif is_kind(received, *SCHEDULED):
            trigger = "schedule"
        else:
            kind = f"{shown(received.detail_type)} from {shown(received.source)}"
            raise InputError(f"expected a Scheduled or Object Created event, got {kind}")
        event_time(received)  # unused, but every EventBridge event has an ISO 8601 time: this one is forged
    except InputError as exc:
        return reject(logger, metrics, str(exc))
    try:
        result = run_etl(lake_from(settings), settings, deadline=deadline_of(context))
    except LeaseHeld as exc:
        logger.info("another ETL run holds the lease; it processes this event's objects", extra={"reason": str(exc)})
        metrics.add_metric(name="LeaseBusy", unit=MetricUnit.Count, value=1)
        return {"status": "busy", "trigger": trigger, "reason": str(exc)}
    publish_counts(
        metrics,
        result.counts,
        {"rows_in": "RowsIn", "rows_written": "RowsWritten", "rows_quarantined": "RowsQuarantined"},
    )
    logger.info("etl run", extra={"trigger": trigger, **result.counts})
    return {"status": "succeeded", "trigger": trigger, **result.counts}
