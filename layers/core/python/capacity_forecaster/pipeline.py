"""The whole pipeline on one lake: generate -> etl -> train -> risk -> consolidation, then the summary of what is
at risk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import pandas as pd

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
    raw_days: Sequence[date] = (),
    progress: ProgressReporter | None = None,
) -> PipelineResult:
    """Run every stage for ``run_date`` on ``lake``. Re-running for the same date replaces the same partitions."""
    reporter: ProgressReporter = progress or NullProgress()
    stages = [
        run_generate(lake, settings, run_date=run_date, raw_days=raw_days, progress=reporter),
        run_etl(lake, settings, progress=reporter),
        run_train(lake, settings, run_date=run_date, progress=reporter),
        run_risk(lake, settings, run_date=run_date, progress=reporter),
        run_consolidation(lake, settings, run_date=run_date, progress=reporter),
    ]
    register = lake.read_table(RISK_REGISTER, where={"run_date": run_date})
    top = top_risks(register, lake.read_table(SERVERS), top=settings.risk.top)
    outputs = {t.name: lake.store.uri_for(t.prefix) for t in OUTPUT_TABLES}
    return PipelineResult(run_date, stages, register, top, outputs)
