"""What every data handler needs: settings and the lake from the environment, and event checks.

Handlers stay thin: they validate the event here, call one stage of the domain package, and return a summary.
A malformed or foreign event is rejected with a one-line reason (and not retried: it can never succeed).
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

from capacity_forecaster.errors import InputError, single_line
from capacity_forecaster.redact import redacting_formatter
from capacity_forecaster.settings import Settings, load_settings
from capacity_forecaster.storage.lake import Lake, open_lake

SCHEDULED = ("aws.events", "Scheduled Event")
MAX_REASON = 300
"""The longest reason a rejection carries (a value quoted in it is cut first, by :func:`shown`)."""


def powertools() -> tuple[Logger, Metrics, Tracer]:
    """A handler's Powertools logger (its lines redacted: ``capacity_forecaster.redact``), metrics and tracer."""
    return Logger(logger_formatter=redacting_formatter()), Metrics(), Tracer()


def settings_from_env() -> Settings:
    """Settings from ``CF_*`` variables; the lake must be an S3 URI in a Lambda."""
    settings = load_settings(environ=os.environ)
    if not str(settings.lake).startswith("s3://"):
        raise InputError(f"CF_LAKE must be s3://bucket[/prefix] in Lambda, not {settings.lake!r}")
    return settings


def lake_from(settings: Settings) -> Lake:
    return open_lake(settings.lake, settings.s3_config())


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a reason quotes what it got, in one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_eventbridge(event: Any) -> EventBridgeEvent:
    """The event as an EventBridge event, or an InputError saying what is missing or of the wrong type."""
    if not isinstance(event, dict):
        raise InputError(f"expected an EventBridge event object, got {type(event).__name__}")
    missing = [k for k in ("source", "detail-type", "detail", "time") if k not in event]
    if missing:
        raise InputError(f"not an EventBridge event: missing {', '.join(missing)}")
    for key in ("source", "detail-type", "time"):
        if not isinstance(event[key], str) or not event[key]:
            raise InputError(f"EventBridge event {key!r} must be a non-empty string, not {shown(event[key])}")
    if not isinstance(event["detail"], dict):
        raise InputError(f"EventBridge event 'detail' must be an object, not {type(event['detail']).__name__}")
    if "id" in event and not isinstance(event["id"], str):
        raise InputError(f"EventBridge event 'id' must be a string, not {shown(event['id'])}")
    resources = event.get("resources", [])
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise InputError(f"EventBridge event 'resources' must be a list of ARNs, not {shown(resources)}")
    return EventBridgeEvent(event)


def scheduled_event(event: Any) -> EventBridgeEvent:
    """The event as an EventBridge Scheduled Event, or an InputError saying what it is instead."""
    scheduled = as_eventbridge(event)
    if not is_kind(scheduled, *SCHEDULED):
        raise InputError(
            f"expected a Scheduled Event, got {shown(scheduled.detail_type)} from {shown(scheduled.source)}"
        )
    return scheduled


def is_kind(event: EventBridgeEvent, source: str, detail_type: str) -> bool:
    return event.source == source and event.detail_type == detail_type


def event_date(event: EventBridgeEvent) -> date:
    """The UTC day of the event's time (EventBridge times are ISO 8601 with a Z)."""
    return event_time(event).astimezone(UTC).date()


def event_time(event: EventBridgeEvent) -> datetime:
    """The event's time, timezone-aware (EventBridge times are ISO 8601 with a Z)."""
    try:
        when = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"event time {shown(event.time)} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        raise InputError(f"event time {shown(event.time)} has no time zone")
    return when


def reject(logger: Logger, metrics: Metrics, reason: str) -> dict[str, Any]:
    """Log a rejected event in one line and count it; the summary says why (whitespace of any kind, line breaks
    included, becomes one space, and a long reason is cut to :data:`MAX_REASON` characters)."""
    reason = single_line(reason)
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 3] + "..."
    logger.error("event rejected", extra={"reason": reason})
    metrics.add_metric(name="RejectedEvents", unit=MetricUnit.Count, value=1)
    return {"status": "rejected", "reason": reason}


def publish_counts(metrics: Metrics, counts: dict[str, Any], names: dict[str, str]) -> None:
    """Emit the numeric counts named in ``names`` (count key -> metric name)."""
    for key, metric in names.items():
        value = counts.get(key)
        if isinstance(value, int | float):
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=float(value))
