"""Benchmark the ETL's daily P95 aggregation against DuckDB doing the same aggregation on the same data.

Usage::

    .venv/bin/python benchmarks/bench_etl_aggregate.py [--servers 10000 --interval 5 --repeat 3]

Reference (the target this script checks): one day of raw 5-minute samples for 10,000 servers x 4 metrics
(11.5 M rows, from ``generate_raw_samples``) aggregated to daily P95 with the sample count by
``etl.aggregate_daily`` in at most 1.5 times the time DuckDB takes for
``quantile_cont(value, 0.95) ... GROUP BY server_id, metric, day`` on the same DataFrame, measured in the same
run, and at most 3 GB peak memory. The reference takes the day of the UTC wall time (``CAST(CAST(ts AS
TIMESTAMP) AS DATE)`` with the session in UTC), its fastest form: casting a TIMESTAMPTZ straight to DATE goes
through ICU's time zone code and takes about 1.7 times as long.

Each variant runs in its own subprocess (the same samples, generated there from the same seed), so the memory
peaks are separate: the peak resident set during the aggregation alone is read from ``VmHWM`` after resetting
it through ``/proc/self/clear_refs`` once the samples are built (the process's lifetime peak, samples included,
is printed too). Times are wall-clock, best and median of ``--repeat`` runs. Both variants' results are compared
(same groups, same P95 to 1e-9, same counts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from capacity_forecaster import etl
from capacity_forecaster.generate import FleetSpec, generate_fleet, generate_raw_samples

END = date(2025, 12, 31)
DUCKDB_SQL = """
SELECT server_id, metric, CAST(CAST("timestamp" AS TIMESTAMP) AS DATE) AS dt,
       quantile_cont(value, 0.95) AS p95, CAST(count(*) AS INTEGER) AS n_samples
FROM samples GROUP BY ALL ORDER BY server_id, metric, dt
"""


def samples_for(servers: int, interval: int) -> pd.DataFrame:
    """Validated-sample shape (timestamp UTC, server_id, metric, value) of one generated day."""
    fleet = generate_fleet(FleetSpec(servers=servers, days=28, horizon_days=1, end_date=END))
    raw = generate_raw_samples(fleet, [END], interval_minutes=interval)
    return raw[["timestamp", "server_id", "metric", "value"]]


def duckdb_daily(samples: pd.DataFrame) -> pd.DataFrame:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("samples", samples)
        return con.sql(DUCKDB_SQL).to_arrow_table().to_pandas()
    finally:
        con.close()


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_variant(variant: str, servers: int, interval: int, repeat: int, out: Path) -> dict[str, Any]:
    samples = samples_for(servers, interval)
    fn = etl.aggregate_daily if variant == "etl" else duckdb_daily
    rss_before = _status_mib("VmRSS")
    reset = _reset_peak()
    times, result = [], pd.DataFrame()
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = fn(samples)
        times.append(time.perf_counter() - start)
    peak = _status_mib("VmHWM") if reset else float("nan")
    result.to_parquet(out)
    return {
        "variant": variant,
        "rows": len(samples),
        "groups": len(result),
        "times": times,
        "rss_before_mib": rss_before,
        "aggregation_peak_mib": peak,
        "process_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _spawn(variant: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--variant", variant, "--servers", str(args.servers)]
    cmd += ["--interval", str(args.interval), "--repeat", str(args.repeat), "--out", str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _line(stats: dict[str, Any]) -> str:
    times = [float(t) for t in stats["times"]]
    listed = ", ".join(f"{t:.3f}" for t in times)
    return (
        f"  best {min(times):.3f} s, median {statistics.median(times):.3f} s ({listed}); "
        f"peak RSS during aggregation {float(stats['aggregation_peak_mib']):,.0f} MiB "
        f"(samples alone {float(stats['rss_before_mib']):,.0f} MiB; "
        f"process lifetime peak {float(stats['process_peak_mib']):,.0f} MiB)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=5, help="minutes between samples")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ratio-target", type=float, default=1.5)
    parser.add_argument("--memory-target-mib", type=float, default=3 * 1024)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--variant", choices=["etl", "duckdb"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.servers, args.interval, args.repeat, args.out)))
        return 0

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"python {platform.python_version()}, pandas {pd.__version__}, duckdb {duckdb.__version__}; "
        f"{cores} usable cores, {platform.machine()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        stats = {v: _spawn(v, args, Path(tmp) / f"{v}.parquet") for v in ("etl", "duckdb")}
        ours, ref = (pd.read_parquet(Path(tmp) / f"{v}.parquet") for v in ("etl", "duckdb"))
    print(
        f"daily P95 of {int(stats['etl']['rows']):,} samples ({args.servers:,} servers x 4 metrics x 1 day, "
        f"{args.interval}-min) -> {int(stats['etl']['groups']):,} rows"
    )
    print("etl.aggregate_daily:")
    print(_line(stats["etl"]))
    print("DuckDB quantile_cont(value, 0.95) on the same DataFrame:")
    print(_line(stats["duckdb"]))
    same = (
        len(ours) == len(ref)
        and ours["server_id"].tolist() == ref["server_id"].tolist()
        and ours["n_samples"].tolist() == ref["n_samples"].tolist()
        and bool(np.allclose(ours["p95"].to_numpy(), ref["p95"].to_numpy(), rtol=0, atol=1e-9))
    )
    print(f"results identical (groups, counts, P95 to 1e-9): {same}")
    best_ours = min(float(t) for t in stats["etl"]["times"])
    best_ref = min(float(t) for t in stats["duckdb"]["times"])
    ratio = best_ours / best_ref
    peak = float(stats["etl"]["aggregation_peak_mib"])
    ok_time, ok_mem = ratio <= args.ratio_target, peak <= args.memory_target_mib
    print(
        f"ratio etl/duckdb = {ratio:.2f} (target <= {args.ratio_target:g}: {'PASS' if ok_time else 'OVER TARGET'}); "
        f"etl peak {peak:,.0f} MiB (target <= {args.memory_target_mib:,.0f} MiB: {'PASS' if ok_mem else 'OVER TARGET'})"
    )
    return 1 if args.strict and not (ok_time and ok_mem and same) else 0


if __name__ == "__main__":
    sys.exit(main())
