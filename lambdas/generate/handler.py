"""Generation Lambda (demo stacks only): on its daily schedule, append the synthetic fleet's days up to yesterday.

The first run writes the whole history, the inventory and the ground truth; later runs write only the days
after the last one the lake holds, continuing the same fleet, and rewrite nothing. A lake holding user uploads
is refused (status rejected), so synthetic servers never mix with a user's fleet.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from capacity_forecaster.errors import InputError
from capacity_forecaster.stages import run_generate
from common.runtime import (
    event_date,
    lake_from,
    powertools,
    publish_counts,
    reject,
    scheduled_event,
    settings_from_env,
)

logger, metrics, tracer = powertools()


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        scheduled = scheduled_event(event)
        run_date = event_date(scheduled)
        settings = settings_from_env()
        result = run_generate(lake_from(settings), settings, run_date=run_date, append=True)
    except InputError as exc:
        return reject(logger, metrics, str(exc))
    publish_counts(metrics, result.counts, {"servers": "GeneratedServers", "raw_rows": "GeneratedRows"})
    logger.info("generated fleet", extra=result.counts)
    return {"status": "succeeded", "run_date": run_date.isoformat(), **result.counts}
