"""Benchmark: forecast accuracy and cost of every model and of the champion, against statsforecast's AutoTheta.

A generated fleet (default 100 servers x cpu, mem, disk, three years of daily history); the 90 days after the
last observed day are held out (the generator's true future) and every forecast is scored on them: MAE, MASE
(against the in-sample seasonal naive, season 7) and P10-P90 coverage (0.8 is ideal). The reference,
statsforecast's AutoTheta (season 7, 80% interval), is measured in the same run.

CPU seconds count this process and its children (Prophet's CmdStan runs are child processes). The champion
pipeline is the whole training computation, backtest included, on one core (``n_jobs=1``); the per-model cost
is each model run alone through the same pipeline (Prophet on a subset of series, see ``--prophet-series``).
The champion is measured with all four models and without Prophet (whose fits dominate the cost).
Scaling: the champion pipeline's wall time with 1 and 2 worker processes.

Targets: champion MAE <= 0.95 x AutoTheta's and <= 0.80 x seasonal naive's; champion pipeline <= 0.5 CPU s per
series. Needs the benchmark extras: ``.venv/bin/pip install --no-deps -r benchmarks/requirements-bench.txt``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from capacity_forecaster.forecasting.engine import forecast_fleet, prepare_series
from capacity_forecaster.forecasting.metrics import coverage, mae, seasonal_naive_scale
from capacity_forecaster.forecasting.prophet_model import ProphetModel
from capacity_forecaster.generate import FleetSpec, generate_fleet
from capacity_forecaster.settings import TrainingSettings

ALL_MODELS = ("seasonal_naive", "linear_trend", "prophet", "random_forest")
FAST_MODELS = ("seasonal_naive", "linear_trend", "random_forest")
METRICS = ("cpu", "mem", "disk")
HORIZON = 90
END = date(2026, 11, 22)
TARGET_VS_THETA = 0.95
TARGET_VS_NAIVE = 0.80
TARGET_CPU = 0.5


def cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, CPU seconds, wall seconds)."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    result = fn()
    return result, cpu_seconds() - cpu, time.perf_counter() - wall


def run_pipeline(daily: pd.DataFrame, models: Sequence[str], n_jobs: int, args: argparse.Namespace) -> pd.DataFrame:
    forecasts, _ = forecast_fleet(
        daily,
        run_date=END,
        horizon_days=HORIZON,
        models=models,
        n_origins=2,
        score="mae",
        min_history_days=56,
        n_jobs=n_jobs,
        backtest_horizon=args.backtest_horizon,
        model_settings={
            "random_forest": {"max_rows": args.rf_max_rows, "n_jobs": n_jobs},
            "prophet": {"history_days": args.prophet_history_days},
        },
    )
    return forecasts


def alone_cpu(daily: pd.DataFrame, model: str, args: argparse.Namespace) -> float:
    _, cpu, _ = measured(lambda: run_pipeline(daily, [model], 1, args))
    return cpu


def scores(forecasts: pd.DataFrame, truth: pd.DataFrame, scales: pd.Series) -> dict[str, float]:
    """Mean over series of MAE, MASE and coverage of ``forecasts`` (one model or the champion) on ``truth``."""
    joined = forecasts.merge(truth, on=["server_id", "metric", "ds"], how="inner")
    rows = []
    for (server, metric), g in joined.groupby(["server_id", "metric"], sort=False):
        actual = g["actual"].to_numpy()
        err = mae(actual, g["p50"].to_numpy())
        scale = scales.get((server, metric), np.nan)
        rows.append(
            (err, err / scale if scale > 0 else np.nan, coverage(actual, g["p10"].to_numpy(), g["p90"].to_numpy()))
        )
    arr = np.array(rows)
    return {
        "mae": float(np.nanmean(arr[:, 0])),
        "mase": float(np.nanmean(arr[:, 1])),
        "coverage": float(np.nanmean(arr[:, 2])),
        "series": len(rows),
    }


def auto_theta(daily: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    from statsforecast.models import AutoTheta

    parts = []
    cpu = cpu_seconds()
    for s in prepare_series(daily, run_date=END):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = AutoTheta(season_length=7).forecast(y=s.y, h=HORIZON, level=[80])
        ds = pd.to_datetime((s.last_day + np.arange(1, HORIZON + 1).astype("timedelta64[D]")).astype("datetime64[ns]"))
        parts.append(
            pd.DataFrame(
                {
                    "server_id": s.server_id,
                    "metric": s.metric,
                    "ds": ds,
                    "p10": np.clip(out["lo-80"], 0, 100),
                    "p50": np.clip(out["mean"], 0, 100),
                    "p90": np.clip(out["hi-80"], 0, 100),
                }
            )
        )
    return pd.concat(parts, ignore_index=True), cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--days", type=int, default=1095, help="days of history")
    parser.add_argument("--prophet-series", type=int, default=30, help="series for Prophet's own cost")
    parser.add_argument("--scaling-series", type=int, default=0, help="series for the 1 vs 2 core run (0: all)")
    parser.add_argument("--rf-max-rows", type=int, default=TrainingSettings().rf_max_rows)
    parser.add_argument(
        "--prophet-history-days",
        type=int,
        default=ProphetModel().history_days,
        help="days of recent history each Prophet fit sees (0: all)",
    )
    parser.add_argument("--backtest-horizon", type=int, default=28, help="days scored per origin (pipeline default)")
    args = parser.parse_args()
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        raise SystemExit(
            "statsforecast is missing: .venv/bin/pip install --no-deps -r benchmarks/requirements-bench.txt"
        ) from None

    fleet = generate_fleet(FleetSpec(servers=args.servers, days=args.days, end_date=END, horizon_days=HORIZON))
    daily = fleet.daily[fleet.daily["metric"].isin(METRICS)].reset_index(drop=True)
    truth = fleet.future[fleet.future["metric"].isin(METRICS)].rename(columns={"p95": "actual"})
    truth = truth.assign(ds=pd.to_datetime(truth["dt"]))[["server_id", "metric", "ds", "actual"]]
    series = prepare_series(daily, run_date=END)
    n_series = len(series)
    scales = pd.Series({(s.server_id, s.metric): seasonal_naive_scale(s.y, 7) for s in series}, dtype=float)
    print(
        f"forecast benchmark: {args.servers} servers x {', '.join(METRICS)} = {n_series} series, {args.days} days "
        f"of history, last {HORIZON} days held out; {os.cpu_count()} CPUs visible; prophet_history_days "
        f"{args.prophet_history_days}, rf_max_rows {args.rf_max_rows}"
    )

    # The champion pipeline on one core: backtest with 2 origins, champion per series; with and without Prophet.
    everything, champ_cpu, champ_wall = measured(lambda: run_pipeline(daily, ALL_MODELS, 1, args))
    results: dict[str, dict[str, float]] = {}
    for model in ALL_MODELS:
        results[model] = scores(everything[everything["model"] == model], truth, scales)
    results["champion (all 4)"] = scores(everything[everything["is_champion"]], truth, scales)
    results["champion (all 4)"]["cpu"] = champ_cpu / n_series
    fast, fast_cpu, _ = measured(lambda: run_pipeline(daily, FAST_MODELS, 1, args))
    results["champion (no prophet)"] = scores(fast[fast["is_champion"]], truth, scales)
    results["champion (no prophet)"]["cpu"] = fast_cpu / n_series

    # Each model alone, for its own cost (Prophet on a subset: its cost is per series).
    step = max(1, n_series // max(args.prophet_series, 1))
    keys = pd.MultiIndex.from_frame(daily[["server_id", "metric"]])
    for model in ALL_MODELS:
        data = daily
        if model == "prophet":
            data = daily[keys.isin([(s.server_id, s.metric) for s in series[::step]])]
        count = len(prepare_series(data, run_date=END))
        results[model]["cpu"] = alone_cpu(data, model, args) / count

    theta, theta_cpu = auto_theta(daily)
    results["AutoTheta (ref)"] = scores(theta, truth, scales) | {"cpu": theta_cpu / n_series}

    print(f"\n{'model':<22}{'MAE':>8}{'MASE':>8}{'coverage':>10}{'CPU s/series':>14}")
    for name, r in results.items():
        print(f"{name:<22}{r['mae']:8.3f}{r['mase']:8.3f}{r['coverage']:10.3f}{r['cpu']:14.4f}")
    theta_r, naive = results["AutoTheta (ref)"], results["seasonal_naive"]
    for name, frame in (("champion (all 4)", everything), ("champion (no prophet)", fast)):
        champion = results[name]
        print(f"\n{name}:")
        print(f"  MAE / AutoTheta MAE      = {champion['mae'] / theta_r['mae']:.3f}  (target <= {TARGET_VS_THETA})")
        print(f"  MAE / seasonal naive MAE = {champion['mae'] / naive['mae']:.3f}  (target <= {TARGET_VS_NAIVE})")
        print(
            f"  pipeline CPU per series  = {champion['cpu']:.3f} s (target <= {TARGET_CPU}; "
            f"ratio {champion['cpu'] / TARGET_CPU:.2f}); AutoTheta alone {theta_r['cpu']:.3f} s"
        )
        winners = frame[frame["is_champion"]].drop_duplicates(["server_id", "metric"])["model"].value_counts()
        print("  champions: " + ", ".join(f"{m} {c}" for m, c in winners.items()))

    # Scaling of the champion pipeline over worker processes (wall time).
    scale_data = daily
    if args.scaling_series:
        ids = {(s.server_id, s.metric) for s in series[: args.scaling_series]}
        scale_data = daily[keys.isin(list(ids))]
    count = len(prepare_series(scale_data, run_date=END))
    if scale_data is daily:
        wall1 = champ_wall
    else:
        _, _, wall1 = measured(lambda: run_pipeline(scale_data, ALL_MODELS, 1, args))
    _, _, wall2 = measured(lambda: run_pipeline(scale_data, ALL_MODELS, 2, args))
    speedup = wall1 / wall2
    print(
        f"scaling ({count} series, wall): 1 core {wall1:.1f} s, 2 cores {wall2:.1f} s; speedup {speedup:.2f}x, "
        f"efficiency {speedup / 2:.0%} (cores shared with other work on this machine)"
    )


if __name__ == "__main__":
    main()
