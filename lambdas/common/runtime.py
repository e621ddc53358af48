"""What every data handler needs: settings and the lake from the environment, and event checks.

Handlers stay thin: they validate the event here, call one stage of the domain package, and return a summary.
A malformed or foreign event is rejected with a one-line reason (and not retried: it can never succeed).
"""

from __future__ import annotations

import os
from datetime import date, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

from capacity_forecaster.errors import InputError
from capacity_forecaster.settings import Settings, load_settings
from capacity_forecaster.storage.lake import Lake, open_lake

SCHEDULED = ("aws.events", "Scheduled Event")


def settings_from_env() -> Settings:
    """Settings from ``CF_*`` variables; the lake must be an S3 URI in a Lambda."""
    settings = load_settings(environ=os.environ)
    if not str(settings.lake).startswith("s3://"):
        raise InputError(f"CF_LAKE must be s3://bucket[/prefix] in Lambda, not {settings.lake!r}")
    return settings


def lake_from(settings: Settings) -> Lake:
    return open_lake(settings.lake, settings.s3_config())


def as_eventbridge(event: Any) -> EventBridgeEvent:
    """The event as an EventBridge event, or an InputError saying what is missing."""
    if not isinstance(event, dict):
        raise InputError(f"expected an EventBridge event object, got {type(event).__name__}")
    missing = [k for k in ("source", "detail-type", "detail", "time") if k not in event]
    if missing:
        raise InputError(f"not an EventBridge event: missing {', '.join(missing)}")
    if not isinstance(event["detail"], dict):
        raise InputError("EventBridge event 'detail' must be an object")
    return EventBridgeEvent(event)


def is_kind(event: EventBridgeEvent, source: str, detail_type: str) -> bool:
    return event.source == source and event.detail_type == detail_type


def event_date(event: EventBridgeEvent) -> date:
    """The UTC day of the event's time (EventBridge times are ISO 8601 with a Z)."""
    return event_time(event).date()


def event_time(event: EventBridgeEvent) -> datetime:
    """The event's time, timezone-aware (EventBridge times are ISO 8601 with a Z)."""
    try:
        when = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"event time {event.time!r} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        raise InputError(f"event time {event.time!r} has no time zone")
    return when


def reject(logger: Logger, metrics: Metrics, reason: str) -> dict[str, Any]:
    """Log a rejected event in one line and count it; the summary says why."""
    logger.error("event rejected", extra={"reason": reason})
    metrics.add_metric(name="RejectedEvents", unit=MetricUnit.Count, value=1)
    return {"status": "rejected", "reason": reason}


def publish_counts(metrics: Metrics, counts: dict[str, Any], names: dict[str, str]) -> None:
    """Emit the numeric counts named in ``names`` (count key -> metric name)."""
    for key, metric in names.items():
        value = counts.get(key)
        if isinstance(value, int | float):
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=float(value))
