"""The whole pipeline on one lake: etl -> train -> risk -> consolidation, then the summary of what is at risk.

``run`` works on the lake's own data (the exports ``ingest`` and ``pull-cloudwatch`` put in its raw zone, the
inventory of ``inventory``) and never generates; the demo (``demo=True``) writes the synthetic fleet first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import pandas as pd

from capacity_forecaster.errors import InputError
from capacity_forecaster.progress import NullProgress, ProgressReporter
from capacity_forecaster.report import top_risks
from capacity_forecaster.schema import (
    CONSOLIDATION,
    ETL_RUNS,
    FORECASTS,
    METRICS_DAILY,
    MODEL_METRICS,
    QUARANTINE,
    RAW_SAMPLES,
    RISK_REGISTER,
    SERVERS,
)
from capacity_forecaster.settings import Settings
from capacity_forecaster.stages import (
    StageResult,
    run_consolidation,
    run_etl,
    run_generate,
    run_risk,
    run_train,
)
from capacity_forecaster.storage.lake import Lake

EMPTY_LAKE_HINT = (
    "ingest your monitoring exports first (`capacity-forecaster ingest FILE...`, or `pull-cloudwatch`), "
    "or try the synthetic demo fleet with `capacity-forecaster demo`"
)

OUTPUT_TABLES = (
    RAW_SAMPLES,
    METRICS_DAILY,
    QUARANTINE,
    ETL_RUNS,
    FORECASTS,
    MODEL_METRICS,
    RISK_REGISTER,
    CONSOLIDATION,
)


@dataclass
class PipelineResult:
    """What one run produced."""

    run_date: date
    stages: list[StageResult]
    register: pd.DataFrame
    top: pd.DataFrame
    outputs: dict[str, str]


def run_pipeline(
    lake: Lake,
    settings: Settings,
    *,
    run_date: date,
    demo: bool = False,
    raw_days: Sequence[date] = (),
    progress: ProgressReporter | None = None,
) -> PipelineResult:
    """Run every stage for ``run_date`` on the lake's own data: the ETL of new raw files, training, the risk
    register and the consolidation plan. With ``demo`` the synthetic fleet is generated into the lake first
    (``raw_days``: days of 5-minute samples). Re-running for the same date replaces the same partitions.
    :class:`InputError` (one line saying what to do) when the lake holds no monitoring data."""
    reporter: ProgressReporter = progress or NullProgress()
    stages = [run_generate(lake, settings, run_date=run_date, raw_days=raw_days, progress=reporter)] if demo else []
    if not demo and not has_monitoring_data(lake):
        raise InputError(f"no monitoring data in {lake.uri}: {EMPTY_LAKE_HINT}")
    stages.append(run_etl(lake, settings, progress=reporter))
    if not lake.list_partitions(METRICS_DAILY):
        raise InputError(f"no valid samples in {lake.uri} (see the quarantine table): {EMPTY_LAKE_HINT}")
    stages += [
        run_train(lake, settings, run_date=run_date, progress=reporter),
        run_risk(lake, settings, run_date=run_date, progress=reporter),
        run_consolidation(lake, settings, run_date=run_date, progress=reporter),
    ]
    register = lake.read_table(RISK_REGISTER, where={"run_date": run_date})
    top = top_risks(register, lake.read_table(SERVERS), top=settings.risk.top)
    outputs = {t.name: lake.store.uri_for(t.prefix) for t in OUTPUT_TABLES}
    return PipelineResult(run_date, stages, register, top, outputs)


def has_monitoring_data(lake: Lake) -> bool:
    """True when the lake holds raw files (uploads, pulls, the demo's exports) or curated daily metrics."""
    from capacity_forecaster.stages import is_raw_input

    if lake.list_partitions(METRICS_DAILY):
        return True
    return any(is_raw_input(o.key) for o in lake.store.list("raw/"))
