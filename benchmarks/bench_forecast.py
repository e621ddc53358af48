"""Benchmark: the product's forecasts on data it was not built on, against statsforecast's peers, same splits.

Sources (``--sources``; each is scored on its own):

- ``bitbrains``: real CPU traces of 50 Bitbrains VMs (``../shared/data/bitbrains-small/cpu_5min.csv.gz``, 5-minute
  samples over a month), aggregated to the hourly P95 as the ETL does (``etl.aggregate_hourly``), clipped to
  0..100; the last 168 hours of the trace are held out and forecast from one common cut. VMs not observed at the
  cut, with under a week of history before it or under 90% of the held-out week are skipped (the count is printed).
- ``generator-SEED``: the project's generator (``generate_fleet``), cpu, mem and disk, three years daily; its true
  future (the 90 days after the history) is the held-out truth. One source per ``--seeds`` seed.
- ``scenarios-hourly`` / ``scenarios-daily``: shapes the models were not designed around (``scenarios.py``:
  diurnal web load, nightly batch windows, memory leaks with restarts, deploy steps, weekly backups, idle servers
  that wake up), 2 to 4 weeks hourly with a week ahead, and 1 to 3 years daily with 90 days ahead.

Methods, fitted in the same run on the same splits: every registered product model alone (the whole training
pipeline with that one model, and what it delivers: the pipeline's fallback where the model has no forecast, e.g.
a history under ``min_history_hours``; Prophet on ``--prophet-series`` series of each source), the product's champion
pipeline with the default models (``TrainingSettings().models``), a combination (per step, the median of the
product models' P10, P50 and P90 that exist for the series) and the peers statsforecast AutoETS, AutoTheta and MSTL
(seasons 7 and [7, 365] daily, 24 and [24, 168] hourly; MSTL keeps the seasons the history holds twice) with
their 80% intervals as P10-P90. The product is called through one adapter, :func:`product_forecasts`, with the
training job's own arguments (``forecasting.job.TrainingParams``), so the benchmark measures whatever the
training stage does.

Metrics per source and method: mean over series of the MAE of the P50 and of MASE (against the in-sample seasonal
naive at the grain's season), mean P10-P90 coverage, CPU seconds per series (this process and its children:
Prophet runs CmdStan as child processes; one worker, ``n_jobs=1``) and the series count. Targets (issue 15):
champion MAE <= 0.90 x the best statsforecast peer, <= the best single product model (of those run on every
series) and <= the combination; coverage 75-85%; champion pipeline <= 0.5 CPU s per series.

Needs the benchmark extras: ``.venv/bin/pip install --no-deps -r benchmarks/requirements-bench.txt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make ``benchmarks.scenarios`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scenarios import make_scenarios
from capacity_forecaster.etl import aggregate_hourly
from capacity_forecaster.forecasting.baselines import registered_models
from capacity_forecaster.forecasting.metrics import coverage, mae, seasonal_naive_scale
from capacity_forecaster.generate import FleetSpec, generate_fleet
from capacity_forecaster.settings import EtlSettings, Settings, TrainingSettings

BITBRAINS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bitbrains-small" / "cpu_5min.csv.gz"
GENERATOR_METRICS = ("cpu", "mem", "disk")
END = date(2026, 11, 22)
KEYS = ["server_id", "metric"]
CHAMPION = "champion"
COMBINATION = "combination"
PEERS = ("AutoETS", "AutoTheta", "MSTL")
SEASONS = {"daily": (7, (7, 365)), "hourly": (24, (24, 168))}
MIN_HISTORY_HOURS = 168
"""Bitbrains VMs with less history before the cut are skipped (a week: the shortest the issue asks to model)."""
MIN_TRUTH_SHARE = 0.9
TARGET_VS_PEER = 0.90
TARGET_COVERAGE = (0.75, 0.85)
TARGET_CPU = 0.5


# ----------------------------------------------------------------------------------------------- the sources


@dataclass
class Source:
    """One data set split into history and held-out truth."""

    name: str
    grain: str
    history: pd.DataFrame
    """server_id, metric, dt, p95."""
    truth: pd.DataFrame
    """server_id, metric, ds, actual."""
    run_date: date
    note: str = ""

    @property
    def season(self) -> int:
        return SEASONS[self.grain][0]

    @property
    def horizon(self) -> int:
        return horizon_of(self.grain)

    def keys(self) -> list[tuple[str, str]]:
        return sorted({(str(s), str(m)) for s, m in self.history[KEYS].drop_duplicates().itertuples(index=False)})

    def subset(self, keys: Iterable[tuple[str, str]]) -> Source:
        index = pd.MultiIndex.from_tuples(list(keys), names=KEYS)

        def pick(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[pd.MultiIndex.from_frame(frame[KEYS]).isin(index)].reset_index(drop=True)

        return dataclasses.replace(self, history=pick(self.history), truth=pick(self.truth))


def horizon_of(grain: str) -> int:
    """The product's default forecast horizon at ``grain``, in steps."""
    return TrainingSettings().horizon_hours if grain == "hourly" else Settings().horizon_days


def evenly(keys: Sequence[tuple[str, str]], n: int | None) -> list[tuple[str, str]]:
    """``n`` keys spread evenly over the sorted ``keys`` (all of them when ``n`` is None or not smaller)."""
    keys = sorted(keys)
    if n is None or n >= len(keys):
        return keys
    if n <= 0:
        return []
    return [keys[int(i)] for i in np.linspace(0, len(keys) - 1, n).round().astype(int)]


def bitbrains_split(samples: pd.DataFrame, horizon: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Hourly P95 (as the ETL aggregates) of 5-minute samples, split at ``horizon`` hours before the last hour.

    Returns (history, truth, skipped counts by reason). A VM is kept when its last history hour is the cut, it
    has at least ``MIN_HISTORY_HOURS`` hours of history and ``MIN_TRUTH_SHARE`` of the held-out hours."""
    frame = samples.assign(value=samples["value"].clip(0, 100))
    hourly = aggregate_hourly(frame, min_coverage=EtlSettings().min_coverage)[["server_id", "metric", "dt", "p95"]]
    hourly["p95"] = hourly["p95"].clip(0, 100)
    cut = hourly["dt"].max() - pd.Timedelta(hours=horizon)
    history, truth = hourly[hourly["dt"] <= cut], hourly[hourly["dt"] > cut]
    skipped = {"not observed at the cut": 0, f"under {MIN_HISTORY_HOURS} h of history": 0, "truth missing": 0}
    keep = []
    truth_n = truth.groupby(KEYS).size()
    for key, g in history.groupby(KEYS):
        if g["dt"].max() != cut:
            skipped["not observed at the cut"] += 1
        elif (g["dt"].max() - g["dt"].min()) / pd.Timedelta(hours=1) + 1 < MIN_HISTORY_HOURS:
            skipped[f"under {MIN_HISTORY_HOURS} h of history"] += 1
        elif truth_n.get(key, 0) < MIN_TRUTH_SHARE * horizon:
            skipped["truth missing"] += 1
        else:
            keep.append(key)
    index = pd.MultiIndex.from_tuples(keep, names=KEYS)
    history = history[pd.MultiIndex.from_frame(history[KEYS]).isin(index)]
    truth = truth[pd.MultiIndex.from_frame(truth[KEYS]).isin(index)].rename(columns={"dt": "ds", "p95": "actual"})
    return history.reset_index(drop=True), truth.reset_index(drop=True), skipped


def load_bitbrains(path: Path) -> Source:
    if not path.exists():
        raise SystemExit(f"{path} is missing (see ../shared/data/README.md); leave bitbrains out of --sources")
    samples = pd.read_csv(path)
    samples["timestamp"] = pd.to_datetime(samples["timestamp"], utc=True)
    history, truth, skipped = bitbrains_split(samples, horizon_of("hourly"))
    n_all = samples["server_id"].nunique()
    kept = history["server_id"].nunique()
    why = ", ".join(f"{v} {k}" for k, v in skipped.items() if v)
    note = f"{kept} of {n_all} VMs, cut {history['dt'].max():%Y-%m-%d %H:%M}; skipped: {why or 'none'}"
    return Source("bitbrains", "hourly", history, truth, history["dt"].max().date(), note)


def load_generator(seed: int, servers: int, days: int) -> Source:
    horizon = horizon_of("daily")
    fleet = generate_fleet(FleetSpec(servers=servers, days=days, end_date=END, horizon_days=horizon, seed=seed))
    daily = fleet.daily[fleet.daily["metric"].isin(GENERATOR_METRICS)][["server_id", "metric", "dt", "p95"]]
    future = fleet.future[fleet.future["metric"].isin(GENERATOR_METRICS)]
    truth = future.assign(ds=pd.to_datetime(future["dt"]))[["server_id", "metric", "ds"]].assign(
        actual=future["p95"].to_numpy()
    )
    note = f"{servers} servers x {', '.join(GENERATOR_METRICS)}, {days} days, seed {seed}"
    return Source(f"generator-{seed}", "daily", daily.reset_index(drop=True), truth.reset_index(drop=True), END, note)


def load_scenarios(grain: str, n_series: int, seed: int) -> Source:
    s = make_scenarios(grain, n_series, seed, end=END, horizon=horizon_of(grain))
    kinds = pd.Series(s.kinds).value_counts()
    note = f"{n_series} series, seed {seed}: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    return Source(f"scenarios-{grain}", grain, s.history, s.truth, s.last.date(), note)


# ---------------------------------------------------------------------------------- the product (one adapter)


def product_forecasts(source: Source, models: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training job's computation on ``source``'s history with ``models``, on one core: (forecasts,
    model_metrics) as the job writes them. The only place the benchmark calls the product's forecasting."""
    from capacity_forecaster.forecasting.engine import forecast_fleet
    from capacity_forecaster.forecasting.job import TrainingParams

    training = dataclasses.replace(TrainingSettings(), models=tuple(models), grain=source.grain, n_jobs=1)
    params = TrainingParams(
        run_date=source.run_date, run_id="bench", lake_uri="bench", settings=Settings(training=training)
    )
    return forecast_fleet(
        source.history,
        run_date=params.run_date,
        horizon_days=params.horizon,
        models=params.models,
        n_origins=params.backtest_origins,
        score=params.score,
        min_history_days=params.min_history,
        n_jobs=params.n_jobs,
        backtest_horizon=params.backtest_horizon,
        backtest_step=params.backtest_step,
        model_settings=params.model_settings(),
        grain=params.grain,
        champion_override=params.champion_override,
        backtest_sample=params.backtest_sample,
        runaway_guard=params.runaway_guard,
    )


# ------------------------------------------------------------------------------------------------ the peers


def series_arrays(history: pd.DataFrame, grain: str) -> dict[tuple[str, str], tuple[np.ndarray, pd.Timestamp]]:
    """Each series on a regular index (gaps linearly interpolated, as the engine does): (values, last stamp)."""
    freq = "h" if grain == "hourly" else "D"
    out = {}
    for (server, metric), g in history.groupby(KEYS, sort=True):
        s = g.set_index(pd.to_datetime(g["dt"]).dt.floor(freq))["p95"].dropna().sort_index()
        s = s[~s.index.duplicated()]
        full = s.reindex(pd.date_range(s.index[0], s.index[-1], freq=freq)).interpolate()
        out[(str(server), str(metric))] = (full.to_numpy(dtype=float), pd.Timestamp(full.index[-1]))
    return out


def peer_model(name: str, grain: str, n: int) -> Any:
    """A statsforecast model for a history of ``n`` steps (MSTL keeps the seasons it holds twice)."""
    from statsforecast.models import MSTL, AutoETS, AutoTheta

    season, seasons = SEASONS[grain]
    if name == "AutoETS":
        return AutoETS(season_length=season)
    if name == "AutoTheta":
        return AutoTheta(season_length=season)
    fitting = [s for s in seasons if n >= 2 * s] or [season]
    return MSTL(season_length=fitting if len(fitting) > 1 else fitting[0])


def peer_forecasts(name: str, source: Source) -> tuple[pd.DataFrame, int]:
    """``name``'s forecasts of every series (P10/P90 from its 80% interval, clipped to 0..100) and how many fits
    failed (those series get the last season repeated, with no band)."""
    freq = "h" if source.grain == "hourly" else "D"
    h = source.horizon
    parts, failed = [], 0
    for (server, metric), (y, last) in series_arrays(source.history, source.grain).items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = peer_model(name, source.grain, y.size).forecast(y=y, h=h, level=[80])
            p50, p10, p90 = out["mean"], out["lo-80"], out["hi-80"]
        except Exception:  # a peer that cannot fit a series gets the naive forecast; counted
            failed += 1
            p50 = np.resize(y[-min(source.season, y.size) :], h)
            p10 = p90 = p50
        step = pd.Timedelta(hours=1) if source.grain == "hourly" else pd.Timedelta(days=1)
        ds = pd.date_range(last + step, periods=h, freq=freq)
        parts.append(
            pd.DataFrame(
                {
                    "server_id": server,
                    "metric": metric,
                    "ds": ds.astype("datetime64[ns]"),
                    "p10": np.clip(p10, 0, 100),
                    "p50": np.clip(p50, 0, 100),
                    "p90": np.clip(p90, 0, 100),
                }
            )
        )
    return pd.concat(parts, ignore_index=True), failed


# ---------------------------------------------------------------------------------------------- measurement


def cpu_seconds() -> float:
    """CPU time of this process and its terminated children (user + system)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measured(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, CPU seconds)."""
    start = cpu_seconds()
    result = fn()
    return result, cpu_seconds() - start


def combine(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per series and step, the median of the frames' P10, P50 and P90 (of the frames that have the series)."""
    stacked = pd.concat([f[[*KEYS, "ds", "p10", "p50", "p90"]] for f in frames], ignore_index=True)
    return stacked.groupby([*KEYS, "ds"], sort=True)[["p10", "p50", "p90"]].median().reset_index()


def per_series_scores(
    forecasts: pd.DataFrame, truth: pd.DataFrame, scales: Mapping[tuple[str, str], float]
) -> pd.DataFrame:
    """server_id, metric, mae, mase, coverage, steps: each series' forecast scored on the truth's steps."""
    joined = forecasts[[*KEYS, "ds", "p10", "p50", "p90"]].merge(truth, on=[*KEYS, "ds"], how="inner")
    rows = []
    for (server, metric), g in joined.groupby(KEYS, sort=True):
        actual = g["actual"].to_numpy(dtype=float)
        err = mae(actual, g["p50"].to_numpy(dtype=float))
        scale = scales.get((str(server), str(metric)), float("nan"))
        rows.append(
            {
                "server_id": server,
                "metric": metric,
                "mae": err,
                "mase": err / scale if scale > 0 else float("nan"),
                "coverage": coverage(actual, g["p10"].to_numpy(dtype=float), g["p90"].to_numpy(dtype=float)),
                "steps": len(g),
            }
        )
    return pd.DataFrame(rows, columns=[*KEYS, "mae", "mase", "coverage", "steps"])


def summary(scores: pd.DataFrame) -> dict[str, float]:
    """Means over series of a method's per-series scores (MASE over series with a non-zero scale)."""
    if scores.empty:
        return {"mae": float("nan"), "mase": float("nan"), "coverage": float("nan"), "series": 0}
    return {
        "mae": float(scores["mae"].mean()),
        "mase": float(np.nanmean(scores["mase"])) if scores["mase"].notna().any() else float("nan"),
        "coverage": float(scores["coverage"].mean()),
        "series": len(scores),
    }


@dataclass
class Target:
    key: str
    """Short name, a column of the summary."""
    name: str
    value: float
    bound: str
    met: bool


def targets(results: Mapping[str, Mapping[str, Any]], n_series: int, product_models: Sequence[str]) -> list[Target]:
    """The issue's targets for one source, from its method results (``mae``, ``coverage``, ``cpu``, ``series``)."""
    champ = results[CHAMPION]
    full = [m for m in product_models if m in results and results[m]["series"] == n_series]
    best_model = min(full, key=lambda m: results[m]["mae"]) if full else None
    peers = [p for p in PEERS if p in results]
    best_peer = min(peers, key=lambda p: results[p]["mae"]) if peers else None
    out = []
    if best_peer is not None:
        r = champ["mae"] / results[best_peer]["mae"]
        out.append(
            Target(
                "vs best peer",
                f"champion MAE / best peer ({best_peer})",
                r,
                f"<= {TARGET_VS_PEER:.2f}",
                r <= TARGET_VS_PEER,
            )
        )
    if best_model is not None:
        r = champ["mae"] / results[best_model]["mae"]
        out.append(Target("vs best model", f"champion MAE / best product model ({best_model})", r, "<= 1.00", r <= 1.0))
    if COMBINATION in results:
        r = champ["mae"] / results[COMBINATION]["mae"]
        out.append(Target("vs combination", "champion MAE / combination", r, "<= 1.00", r <= 1.0))
    lo, hi = TARGET_COVERAGE
    c = champ["coverage"]
    out.append(Target("coverage", "champion P10-P90 coverage", c, f"{lo:.2f} to {hi:.2f}", lo <= c <= hi))
    out.append(
        Target(
            "CPU s / series",
            "champion pipeline CPU s / series",
            champ["cpu"],
            f"<= {TARGET_CPU}",
            champ["cpu"] <= TARGET_CPU,
        )
    )
    return out


@dataclass
class SourceResult:
    source: Source
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_series: list[pd.DataFrame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def run_source(source: Source, args: argparse.Namespace) -> SourceResult:
    """Every method on one source, scored on its truth."""
    out = SourceResult(source)
    keys = source.keys()
    arrays = series_arrays(source.history, source.grain)
    scales = {k: seasonal_naive_scale(y, source.season) for k, (y, _) in arrays.items()}

    def record(method: str, forecasts: pd.DataFrame, cpu: float | None, n_run: int) -> None:
        scores = per_series_scores(forecasts, source.truth, scales)
        if cpu is not None:
            print(f"    {source.name} {method}: {n_run} series, {cpu:.1f} CPU s", file=sys.stderr, flush=True)
        out.results[method] = summary(scores) | {"cpu": cpu / n_run if cpu is not None and n_run else float("nan")}
        out.per_series.append(scores.assign(source=source.name, method=method))

    product = list(registered_models())
    alone: list[pd.DataFrame] = []
    for model in product:
        part = source
        if model == "prophet" and args.prophet_series is not None and args.prophet_series < len(keys):
            part = source.subset(evenly(keys, args.prophet_series))
            out.notes.append(f"prophet on {args.prophet_series} of {len(keys)} series (--prophet-series)")
        (forecasts, _), cpu = measured(functools.partial(product_forecasts, part, [model]))
        delivered = forecasts[forecasts["is_champion"]]  # the model's, or the pipeline's fallback where it has none
        fallback = delivered.loc[delivered["model"] != model, "server_id"].nunique()
        if fallback:
            out.notes.append(f"{model} alone: the pipeline's fallback forecast on {fallback} series")
        alone.append(delivered)
        record(model, delivered, cpu, len(part.keys()))
    record(COMBINATION, combine(alone), None, len(keys))

    defaults = TrainingSettings().models
    (forecasts, metrics), cpu = measured(lambda: product_forecasts(source, defaults))
    record(CHAMPION, forecasts[forecasts["is_champion"]], cpu, len(keys))
    picks = metrics[metrics["is_champion"]]["model"].value_counts()
    statuses = metrics.drop_duplicates([*KEYS, "status"])["status"].value_counts()
    out.notes.append(
        f"champion ({', '.join(defaults)}) picks: "
        + ", ".join(f"{m} {c}" for m, c in picks.items())
        + "; statuses: "
        + ", ".join(f"{s} {c}" for s, c in statuses.items())
    )

    for peer in PEERS:
        (forecasts, failed), cpu = measured(functools.partial(peer_forecasts, peer, source))
        record(peer, forecasts, cpu, len(keys))
        if failed:
            out.notes.append(f"{peer} failed on {failed} series (naive forecast there)")
    out.targets = targets(out.results, len(keys), product)
    return out


# ----------------------------------------------------------------------------------------------- reporting


def method_table(res: SourceResult) -> str:
    lines = [f"{'method':<16}{'MAE':>8}{'MASE':>8}{'coverage':>10}{'CPU s/series':>14}{'series':>8}"]
    for name, r in res.results.items():
        cpu = "" if np.isnan(r["cpu"]) else f"{r['cpu']:.4f}"
        lines.append(f"{name:<16}{r['mae']:8.3f}{r['mase']:8.3f}{r['coverage']:10.3f}{cpu:>14}{r['series']:>8}")
    return "\n".join(lines)


def target_lines(res: SourceResult) -> str:
    return "\n".join(f"  {t.name:<52}{t.value:8.3f}  ({t.bound})  {'MET' if t.met else 'MISSED'}" for t in res.targets)


def print_source(res: SourceResult) -> None:
    s = res.source
    print(f"\n== {s.name} ({s.grain}, {s.horizon} {'hours' if s.grain == 'hourly' else 'days'} ahead): {s.note}")
    for note in res.notes:
        print(f"   {note}")
    print(method_table(res))
    print(target_lines(res), flush=True)


def print_summary(all_results: Sequence[SourceResult]) -> None:
    """One line per source: each target's value and MET or MISSED."""
    print("\n== summary: the champion against the targets")
    columns = list(dict.fromkeys(t.key for r in all_results for t in r.targets))
    print(f"{'source':<20}" + "".join(f"{c:>20}" for c in columns))
    for res in all_results:
        by_key = {t.key: t for t in res.targets}
        cells = "".join(
            f"{by_key[c].value:>13.3f} {'MET' if by_key[c].met else 'MISSED':>6}" if c in by_key else f"{'':>20}"
            for c in columns
        )
        print(f"{res.source.name:<20}{cells}")
    missed = sum(not t.met for r in all_results for t in r.targets)
    total = sum(len(r.targets) for r in all_results)
    print(f"{total - missed} of {total} targets met")


def finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def as_json(all_results: Sequence[SourceResult], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "arguments": {k: v for k, v in vars(args).items() if k not in ("json", "per_series")},
        "default_models": list(TrainingSettings().models),
        "sources": {
            r.source.name: {
                "grain": r.source.grain,
                "horizon": r.source.horizon,
                "note": r.source.note,
                "notes": r.notes,
                "methods": r.results,
                "targets": [dataclasses.asdict(t) for t in r.targets],
            }
            for r in all_results
        },
    }


# ------------------------------------------------------------------------------------------------------ main

ALL_SOURCES = ("bitbrains", "generator", "scenarios-hourly", "scenarios-daily")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sources", default=",".join(ALL_SOURCES), help="comma-separated, of " + ", ".join(ALL_SOURCES)
    )
    parser.add_argument("--seeds", default="42,7,3", help="generator seeds (one source each)")
    parser.add_argument("--servers", type=int, default=16, help="generator servers per seed (x cpu, mem, disk)")
    parser.add_argument("--days", type=int, default=1095, help="generator days of history")
    parser.add_argument("--scenario-series", type=int, default=36, help="series of each scenario set")
    parser.add_argument("--scenario-seed", type=int, default=1)
    parser.add_argument("--series", type=int, default=None, help="subsample every source to N series")
    parser.add_argument("--prophet-series", type=int, default=15, help="series per source Prophet runs on alone")
    parser.add_argument("--bitbrains", type=Path, default=BITBRAINS)
    parser.add_argument("--quick", action="store_true", help="small sizes for CI: a minute or two")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    parser.add_argument("--per-series", type=Path, default=None, help="write per-series scores to this CSV")
    parser.add_argument(
        "--cost-servers",
        type=int,
        default=0,
        help="also measure the champion pipeline's CPU s per series on a generated fleet of N servers x cpu, mem, "
        "disk (a fleet larger than training.backtest_sample per metric, as production runs); 0: skip",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.servers, args.scenario_series = "42", 4, 12
        args.series = min(args.series or 12, 12)
        args.prophet_series = min(args.prophet_series, 3)
    args.source_list = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(args.source_list) - set(ALL_SOURCES))
    if unknown:
        parser.error(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(ALL_SOURCES)}")
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be integers separated by commas, got {args.seeds!r}")
    return args


def load_sources(args: argparse.Namespace) -> list[Source]:
    sources = []
    for name in args.source_list:
        if name == "bitbrains":
            sources.append(load_bitbrains(args.bitbrains))
        elif name == "generator":
            sources.extend(load_generator(seed, args.servers, args.days) for seed in args.seed_list)
        else:
            sources.append(load_scenarios(name.split("-")[1], args.scenario_series, args.scenario_seed))
    if args.series is not None:
        sources = [
            dataclasses.replace(s.subset(evenly(s.keys(), args.series)), note=f"{s.note}; subsampled to {args.series}")
            if args.series < len(s.keys())
            else s
            for s in sources
        ]
    return sources


def warm_up() -> None:
    """Import and run each method once on a tiny series so imports and JIT compiles are not charged to a source."""
    tiny = load_scenarios("hourly", 1, 0)
    for model in registered_models():
        product_forecasts(tiny, [model])
    for peer in PEERS:
        peer_forecasts(peer, tiny)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        raise SystemExit(
            "statsforecast is missing: .venv/bin/pip install --no-deps -r benchmarks/requirements-bench.txt"
        ) from None
    started = time.perf_counter()
    sources = load_sources(args)
    print(
        f"forecast benchmark: sources {', '.join(s.name for s in sources)}; default models "
        f"{', '.join(TrainingSettings().models)}; registered {', '.join(registered_models())}; "
        f"{os.cpu_count()} CPUs visible, one worker"
    )
    warm_up()
    all_results = []
    for source in sources:
        t0 = time.perf_counter()
        all_results.append(run_source(source, args))
        print_source(all_results[-1])
        print(f"({len(source.keys())} series in {time.perf_counter() - t0:.0f} s wall)", flush=True)
        if args.json is not None:  # after every source, so a long run's figures survive an interruption
            args.json.write_text(json.dumps(finite(as_json(all_results, args)), indent=2, default=str) + "\n")
        if args.per_series is not None:
            frames = [p for r in all_results for p in r.per_series]
            pd.concat(frames, ignore_index=True).to_csv(args.per_series, index=False)
    print_summary(all_results)
    if args.cost_servers > 0:
        print_fleet_cost(fleet_cost(args.cost_servers, args.days))
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


def fleet_cost(servers: int, days: int) -> dict[str, float]:
    """The champion pipeline with the default models on ``servers`` generated servers: series, CPU s and CPU s
    per series (the fits past the backtest sample cost only their final fit)."""
    source = load_generator(1000 + servers, servers, days)
    (_, metrics), cpu = measured(lambda: product_forecasts(source, TrainingSettings().models))
    n = len(source.keys())
    backtested = int(metrics.loc[metrics["n_origins"] > 0, ["server_id", "metric"]].drop_duplicates().shape[0])
    return {"servers": servers, "series": n, "backtested": backtested, "cpu_s": cpu, "cpu_per_series": cpu / n}


def print_fleet_cost(cost: Mapping[str, float]) -> None:
    per = cost["cpu_per_series"]
    print(
        f"\n== champion pipeline at fleet scale: {cost['series']:.0f} series ({cost['servers']:.0f} servers x "
        f"{', '.join(GENERATOR_METRICS)}; {cost['backtested']:.0f} backtested, training.backtest_sample "
        f"{TrainingSettings().backtest_sample} per metric), {cost['cpu_s']:.0f} CPU s on one worker: "
        f"{per:.3f} CPU s / series, {per / TARGET_CPU:.3f} of the {TARGET_CPU} target "
        f"({'MET' if per <= TARGET_CPU else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
