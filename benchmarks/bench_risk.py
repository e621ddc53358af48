"""Benchmark: how well the risk register and idle detection match a generated fleet's planted ground truth.

Runs the whole pipeline (generate -> etl -> train -> risk -> consolidation) on a fresh temporary lake, then
scores the register against ``reference/ground_truth``:

- a *planted breach* is a series the generator marks ``will_breach``: its true daily P95 is at or over the
  threshold on 3 consecutive days (``generate.BREACH_RUN_DAYS``) inside the horizon, or on its last 3 history
  days (already breaching);
- a *flagged* series is one the register puts in the critical, high or medium tier: breaching now, or its P50
  or P90 forecast crosses the threshold inside the horizon (with the default tier windows, every tier but low).
  Medium counts because the P90 crossing is the register's warning that a breach is likely enough to plan
  for; the P50-only reading (critical and high) is printed as well;
- breach recall = planted breaches flagged / planted breaches (target >= 95%); breach precision = flagged
  series that were planted to breach / flagged series (target >= 90%);
- median breach-date error = median of |register date - planted breach date| in days over the planted
  breaches the register flags, the register date being the P50 breach date, or the P90 one when the P50 stays
  under the threshold (target <= 7 days);
- idle precision = servers the rightsizing stage's idle rule (``rightsizing.idle_servers`` with the settings'
  idle thresholds) calls idle that were planted idle / servers it calls idle (target >= 90%).

The register is scored twice from the same forecasts: as configured by default (``risk.breach_days`` 1: the
first forecast day over the threshold is the breach) and with ``risk.breach_days`` set to the ground truth's
own definition of a breach (3 consecutive days over), the figures the targets are checked against. Misses and
false alarms are broken down by the planted pattern. Defaults are the settings' (100 servers, 730 days, 90-day
horizon, seed 42, the default models); flags change the fleet, the seed and the models.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import date

import pandas as pd

from capacity_forecaster.generate import BREACH_RUN_DAYS
from capacity_forecaster.pipeline import run_pipeline
from capacity_forecaster.rightsizing import idle_servers
from capacity_forecaster.risk import build_risk_register
from capacity_forecaster.schema import FORECASTS, GROUND_TRUTH, METRICS_DAILY
from capacity_forecaster.settings import RiskSettings, Settings, load_settings
from capacity_forecaster.storage.lake import open_lake

TARGETS = {"breach recall": 0.95, "breach precision": 0.90, "median breach-date error": 7.0, "idle precision": 0.90}
AT_RISK = frozenset({"critical", "high", "medium"})
P50_ONLY = frozenset({"critical", "high"})
RUN_DATE = date(2026, 11, 23)


def register_for(forecasts: pd.DataFrame, daily: pd.DataFrame, risk: RiskSettings, run_date: date) -> pd.DataFrame:
    """The risk register the risk stage would build with these risk settings."""
    return build_risk_register(
        forecasts,
        daily,
        run_date=run_date,
        thresholds=risk.thresholds,
        critical_days=risk.critical_days,
        saturation_days=risk.saturation_days,
        overprovisioned_ratio=risk.overprovisioned_ratio,
        high_days=risk.high_days or None,
        medium_days=risk.medium_days or None,
        headroom=risk.headroom,
        breach_days=risk.breach_days,
    )


@dataclass(frozen=True)
class BreachScore:
    """How one register's flags compare with the planted breaches."""

    recall: float
    precision: float
    median_date_error: float
    flagged: int
    misses: dict[str, int]
    """Planted pattern -> planted breaches not flagged."""
    false_alarms: dict[str, int]
    """Planted pattern -> flagged series not planted to breach."""


def score(register: pd.DataFrame, truth: pd.DataFrame, *, tiers: frozenset[str]) -> BreachScore:
    """Breach recall, precision and median date error of one register; a series is flagged when its severity
    is in ``tiers``."""
    merged = truth.merge(register, on=["server_id", "metric"], how="left", validate="one_to_one")
    flagged = merged["severity"].isin(tiers)
    planted = merged["will_breach"].astype(bool)
    hits = flagged & planted
    predicted = merged["breach_date_p50"].fillna(merged["breach_date_p90"])
    dated = hits & predicted.notna()
    errors = (predicted[dated] - pd.to_datetime(merged.loc[dated, "breach_date"])).dt.days.abs()
    return BreachScore(
        recall=float(hits.sum() / max(int(planted.sum()), 1)),
        precision=float(hits.sum() / max(int(flagged.sum()), 1)),
        median_date_error=float(errors.median()) if len(errors) else float("nan"),
        flagged=int(flagged.sum()),
        misses={str(k): int(v) for k, v in merged.loc[planted & ~flagged, "pattern"].value_counts().items()},
        false_alarms={str(k): int(v) for k, v in merged.loc[flagged & ~planted, "pattern"].value_counts().items()},
    )


def idle_precision(daily: pd.DataFrame, truth: pd.DataFrame, settings: Settings) -> tuple[float, int, int]:
    """Share of the servers called idle that were planted idle, servers called idle, servers planted idle."""
    cfg = settings.rightsizing
    idle = idle_servers(daily, days=cfg.idle_days, cpu_p95=cfg.idle_cpu_p95, mem_p95=cfg.idle_mem_p95)
    planted = truth.groupby("server_id")["is_idle"].first().astype(bool)
    called = idle[idle].index
    precision = float(planted.reindex(called).fillna(False).mean()) if len(called) else float("nan")
    return precision, len(called), int(planted.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=None, help="fleet size (default: the settings default)")
    parser.add_argument("--days", type=int, default=None, help="days of history (default: the settings default)")
    parser.add_argument("--seed", type=int, default=None, help="fleet seed (default: the settings default)")
    parser.add_argument("--models", default=None, help="comma-separated training.models (default: the settings')")
    args = parser.parse_args()
    models = args.models.split(",") if args.models else None
    with tempfile.TemporaryDirectory(prefix="cf-bench-risk-") as tmp:
        lake = open_lake(tmp)
        overrides = {
            "lake": tmp,
            "fleet.servers": args.servers,
            "fleet.days": args.days,
            "fleet.seed": args.seed,
            "training.models": models,
        }
        settings = load_settings(environ={}, overrides=overrides)
        start = time.perf_counter()
        run_pipeline(lake, settings, run_date=RUN_DATE)
        seconds = time.perf_counter() - start
        forecasts = lake.read_table(FORECASTS, where={"run_date": RUN_DATE})
        daily = lake.read_table(METRICS_DAILY)
        truth = lake.read_table(GROUND_TRUTH)
    idle = idle_precision(daily, truth, settings)
    rules = {
        f"breach = first day over (risk.breach_days {settings.risk.breach_days}, the default)": settings.risk,
        f"breach = {BREACH_RUN_DAYS} consecutive days over (risk.breach_days {BREACH_RUN_DAYS}, the ground truth's)": (
            replace(settings.risk, breach_days=BREACH_RUN_DAYS)
        ),
    }
    print(
        f"risk vs ground truth: {settings.fleet.servers} servers x 4 metrics x {settings.fleet.days} days, "
        f"seed {settings.fleet.seed}, horizon {settings.horizon_days} days, models "
        f"{', '.join(settings.training.models)} (pipeline {seconds:.1f} s)"
    )
    print(f" planted: {int(truth['will_breach'].sum())} breaching series of {len(truth)}, {idle[2]} idle servers")
    scores: dict[str, BreachScore] = {}
    for rule, risk in rules.items():
        register = register_for(forecasts, daily, risk, RUN_DATE)
        print(f" {rule}:")
        for label, tiers in (
            ("flagged = critical, high, medium", AT_RISK),
            ("flagged = critical, high (P50)", P50_ONLY),
        ):
            result = score(register, truth, tiers=tiers)
            print(
                f"  {label:<34} flagged {result.flagged:3d}  recall {result.recall:6.1%}  "
                f"precision {result.precision:6.1%}  median date error {result.median_date_error:4.1f} days"
            )
            scores[rule] = scores.get(rule, result)
    checked = list(rules)[-1]
    primary = scores[checked]
    print(f" against the targets ({checked}; flagged = critical, high, medium):")
    values = {
        "breach recall": primary.recall,
        "breach precision": primary.precision,
        "median breach-date error": primary.median_date_error,
        "idle precision": idle[0],
    }
    for name, target in TARGETS.items():
        value = values[name]
        if name == "median breach-date error":
            ok = value <= target
            line = f"{value:6.1f} days  (target <= {target:.0f}; ratio {value / target:.2f})"
        else:
            ok = value >= target
            line = f"{value:6.1%}       (target >= {target:.0%}; ratio {value / target:.2f})"
        print(f"  {name:<26} {line}  {'met' if ok else 'MISSED'}")
    print(f"  idle: {idle[1]} servers called idle, {idle[2]} planted idle")
    print(f"  missed breaches by planted pattern: {_counts(primary.misses)}")
    print(f"  false alarms by planted pattern:    {_counts(primary.false_alarms)}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


if __name__ == "__main__":
    main()
