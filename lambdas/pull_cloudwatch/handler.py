"""CloudWatch puller Lambda: on its schedule, pull the tagged EC2 instances' metrics into the lake's raw uploads.

Each object it writes under ``raw/uploads/`` starts the ETL (the Object Created rule). The window is the last
``CF_CLOUDWATCH_DAYS`` complete UTC days before the event's time, so a retried event writes the same keys;
windows of successive days overlap, and the ETL drops the exact duplicates.
"""

from __future__ import annotations

import os
from typing import Any, Final

from aws_lambda_powertools.utilities.typing import LambdaContext

from capacity_forecaster.cloudwatch_pull import AwsClients, choose_period, parse_tag_filters, pull_cloudwatch
from capacity_forecaster.errors import InputError
from common.runtime import (
    event_time,
    lake_from,
    powertools,
    publish_counts,
    reject,
    scheduled_event,
    settings_from_env,
)

TAGS_ENV: Final = "CF_CLOUDWATCH_TAGS"
"""``Key=Value[,Key2=Value2]``: the instances pulled carry every one of these tags."""
DAYS_ENV: Final = "CF_CLOUDWATCH_DAYS"
"""Complete UTC days pulled each run (default 1: yesterday)."""
TENANT: Final = "default"

logger, metrics, tracer = powertools()


def pull_days(text: str) -> int:
    """The days setting as a whole number CloudWatch still holds data for."""
    try:
        days = int(text)
    except ValueError:
        raise InputError(f"{DAYS_ENV}={text!r} must be a whole number of days") from None
    choose_period(days)  # the same limits as `pull-cloudwatch --days`
    return days


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        received = scheduled_event(event)
        now = event_time(received)
        settings = settings_from_env()
        tags = parse_tag_filters(os.environ.get(TAGS_ENV, ""))
        if not tags:
            raise InputError(f"{TAGS_ENV} names no tag: set the stack's cloudwatchTagFilter to Key=Value")
        days = pull_days(os.environ.get(DAYS_ENV, "1"))
        lake = lake_from(settings)
        result = pull_cloudwatch(
            lake,
            AwsClients.create(settings.s3_config()),
            tags=tags,
            days=days,
            tenant=TENANT,
            now=now,
            settings=settings,
        )
    except InputError as exc:  # a bad setting, or no instance carries the tags: a retry cannot help
        return reject(logger, metrics, str(exc))
    counts = {
        "instances": len(result.instances),
        "points": result.points,
        "calls": result.calls,
        "period": result.period,
        "start": result.start.isoformat(),
        "end": result.end.isoformat(),
        **{f"series_{name}": n for name, n in result.series.items()},
    }
    publish_counts(metrics, counts, {"instances": "InstancesPulled", "points": "DataPointsPulled"})
    logger.info("cloudwatch pulled", extra={**counts, "written": result.written})
    return {"status": "succeeded", **counts, "written": result.written}
