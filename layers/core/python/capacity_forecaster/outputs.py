"""A run's outputs once its forecasts are in the lake: the risk register, the consolidation plan, the HTML report
with its exports (under ``reports/``), and the run summary for the alerts topic.

The risk Lambda (and, with ``scale.engine: sagemaker``, the ``outputs`` processing job) runs :func:`build_outputs`
after publishing a completed training run, then :func:`notify_run`; the local ``run`` can run the same function
after its own training. :func:`run_summary` is pure: frames and counts in, text out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import pandas as pd

from capacity_forecaster.progress import ProgressReporter
from capacity_forecaster.schema import RISK_REGISTER
from capacity_forecaster.settings import Settings
from capacity_forecaster.stages import StageResult, run_consolidation, run_report, run_risk
from capacity_forecaster.storage.lake import Lake
from capacity_forecaster.storage.lease import Lease

MAX_LISTED: Final = 10
"""New critical series listed by name in the summary; the rest are counted."""
SEVERITIES: Final = ("critical", "high", "medium", "low")


@dataclass
class RunOutputs:
    """What :func:`build_outputs` wrote for one run, and what the summary needs."""

    run_date: date
    stages: list[StageResult]
    """risk, consolidation, report."""
    register: pd.DataFrame
    new_critical: pd.DataFrame
    """Critical series of this run that were not critical in the previous run (all of them without one)."""

    def stage(self, name: str) -> StageResult:
        return next(s for s in self.stages if s.stage == name)

    @property
    def report_uri(self) -> str:
        return str(self.stage("report").counts["report"])

    @property
    def counts(self) -> dict[str, Any]:
        """The risk counts, the plan's savings and the report's URI, for a handler's summary."""
        risk, plan = self.stage("risk").counts, self.stage("consolidation").counts
        keep = ("servers_freed", "servers_downsized", "monthly_savings")
        return {**risk, **{k: plan[k] for k in keep}, "new_critical": len(self.new_critical), "report": self.report_uri}


def new_critical(register: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """Critical series of this run that were not critical in the previous run (all of them without one)."""
    critical = register[register["severity"] == "critical"]
    if previous is not None and not previous.empty:
        was = previous[previous["severity"] == "critical"]
        before = set(zip(was["server_id"], was["metric"], strict=True))
        keep = [(s, m) not in before for s, m in zip(critical["server_id"], critical["metric"], strict=True)]
        critical = critical[keep]
    return critical.sort_values(["days_to_breach_p50", "server_id", "metric"], na_position="last")


def previous_register(lake: Lake, run_date: date) -> pd.DataFrame | None:
    """The newest risk register before ``run_date``; None when this is the first run."""
    earlier = [p["run_date"] for p in lake.list_partitions(RISK_REGISTER) if p["run_date"] < run_date.isoformat()]
    if not earlier:
        return None
    return lake.read_table(RISK_REGISTER, where={"run_date": date.fromisoformat(max(earlier))})


def build_outputs(
    lake: Lake,
    settings: Settings,
    *,
    run_date: date,
    grain: str | None = None,
    held: Lease | None = None,
    progress: ProgressReporter | None = None,
) -> RunOutputs:
    """Risk register, consolidation plan and report of the run whose forecasts are published for ``run_date``.

    ``grain`` is the grain the run trained at (its published forecasts' table), when it is known and may differ
    from ``training.grain``. The register is built under the ``risk`` lease unless ``held`` is that lease (see
    ``stages.run_risk``). Re-running for the same date replaces the same partitions and report objects."""
    if grain is not None and grain != settings.training.grain:
        settings = dataclasses.replace(settings, training=dataclasses.replace(settings.training, grain=grain))
    stages = [
        run_risk(lake, settings, run_date=run_date, held=held, progress=progress),
        run_consolidation(lake, settings, run_date=run_date, progress=progress),
        run_report(lake, settings, run_date=run_date, progress=progress),
    ]
    register = lake.read_table(RISK_REGISTER, where={"run_date": run_date})
    fresh = new_critical(register, previous_register(lake, run_date))
    return RunOutputs(run_date=run_date, stages=stages, register=register, new_critical=fresh)


def run_summary(outputs: RunOutputs, *, run_id: str) -> tuple[str, str]:
    """(subject, message) of the run's notification: counts, savings, the report's key, then the most urgent new
    critical series."""
    run_date, new = outputs.run_date, outputs.new_critical
    counts = outputs.counts
    by_severity = ", ".join(f"{counts.get(f'severity_{s}', 0)} {s}" for s in SEVERITIES)
    subject = f"Capacity Forecaster {run_date}: {len(new)} new critical risk(s)"
    lines = [
        f"Run {run_id} ({run_date}): {counts.get('severity_critical', 0)} critical series, "
        f"{len(new)} new since the previous run.",
        f"Risk register: {counts.get('series', 0)} series ({by_severity}).",
        f"Consolidation: {counts['servers_freed']} server(s) to consolidate, {counts['servers_downsized']} to "
        f"downsize, ${counts['monthly_savings']:,.2f} a month.",
        f"Report: {outputs.report_uri}",
        "",
    ]
    if not new.empty:
        lines.append("New critical series:")
    for row in new.head(MAX_LISTED).itertuples():
        days = row.days_to_breach_p50
        when = "breaching now" if days == 0 else f"P50 crosses {row.threshold:.0f}% on {row.breach_date_p50}"
        lines.append(f"- {row.server_id} {row.metric}: last P95 {row.last_p95:.1f}%, {when}")
    if len(new) > MAX_LISTED:
        lines.append(f"... and {len(new) - MAX_LISTED} more.")
    if not new.empty:
        lines.append("")
    lines.append(f"Athena: SELECT * FROM risk_register WHERE run_date = DATE '{run_date}' AND severity = 'critical'")
    return subject, "\n".join(lines)


def notify_run(outputs: RunOutputs, *, run_id: str, topic_arn: str | None, client: Any = None) -> int:
    """Publish the run summary to the topic (nothing without one: ``NOTIFY_TOPIC_ENV`` unset); the number of new
    critical risks it lists. ``client``: an SNS client (boto3's default one when None)."""
    if not topic_arn:
        return 0
    if client is None:
        import boto3

        client = boto3.client("sns")
    subject, message = run_summary(outputs, run_id=run_id)
    client.publish(TopicArn=topic_arn, Subject=subject, Message=message)
    return len(outputs.new_critical)
