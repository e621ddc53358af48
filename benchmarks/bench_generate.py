"""Benchmark the synthetic fleet generator against its targets.

Usage::

    .venv/bin/python benchmarks/bench_generate.py [--servers 1000 --days 1095 --repeat 3]

Reference (the targets this script checks):
- ``generate_fleet``: 1,000 servers x 4 metrics x 1,095 days (3 years) plus a 90-day horizon in <= 5 s
  on 2 cores, for the whole call (arrays and DataFrames).
- ``generate_raw_samples``: 10,000 servers x 4 metrics x 1 day at 5-minute samples (about 11.5 M rows)
  in a few seconds, taken here as <= 5 s.

Timings are wall-clock (``time.perf_counter``), best and median of ``--repeat`` runs. Peak memory is
measured in a separate run under ``tracemalloc`` (numpy and pandas report their buffers to it), so tracing
does not slow the timed runs; the process's maximum RSS is printed as well.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd

from capacity_forecaster.generate import FleetSpec, generate_fleet, generate_raw_samples
from capacity_forecaster.schema import METRICS

END = date(2025, 12, 31)


def _timed[T](fn: Callable[[], T], repeat: int) -> tuple[list[float], T]:
    """Wall-clock seconds of ``repeat`` calls, and the last call's result."""
    times: list[float] = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def _runs(times: list[float]) -> str:
    listed = ", ".join(f"{t:.3f}" for t in times)
    return f"  runs {len(times)}: best {min(times):.3f} s, median {statistics.median(times):.3f} s ({listed})"


def _peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _verdict(best: float, target: float) -> str:
    return f"best/target = {best / target:.2f} ({'PASS' if best <= target else 'OVER TARGET'})"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def bench_fleet(servers: int, days: int, horizon: int, repeat: int, target: float) -> bool:
    spec = FleetSpec(servers=servers, days=days, horizon_days=horizon, end_date=END)
    times, fleet = _timed(lambda: generate_fleet(spec), repeat)
    best = min(times)
    rows = len(fleet.daily) + len(fleet.future) + len(fleet.ground_truth) + len(fleet.servers)
    simulated = servers * len(METRICS) * (days + horizon)
    del fleet
    peak = _peak_mib(lambda: generate_fleet(spec))
    print(f"generate_fleet: {servers:,} servers x {len(METRICS)} metrics x {days:,} days + {horizon} horizon")
    print(_runs(times))
    print(f"  rows out: {rows:,} (daily + future + ground_truth + servers); {rows / best / 1e6:.2f} M rows/s")
    print(f"  series-days simulated: {simulated:,}; {simulated / best / 1e6:.2f} M series-days/s")
    print(f"  peak traced memory: {peak:,.0f} MiB (tracemalloc, separate run)")
    print(f"  reference: <= {target:g} s for the whole call on 2 cores -> {_verdict(best, target)}")
    return best <= target


def bench_raw(servers: int, interval: int, repeat: int, target: float) -> bool:
    fleet = generate_fleet(FleetSpec(servers=servers, days=28, horizon_days=1, end_date=END))
    times, raw = _timed(lambda: generate_raw_samples(fleet, [END], interval_minutes=interval), repeat)
    best = min(times)
    rows = len(raw)
    del raw
    peak = _peak_mib(lambda: generate_raw_samples(fleet, [END], interval_minutes=interval))
    print(f"generate_raw_samples: {servers:,} servers x {len(METRICS)} metrics x 1 day, {interval}-min samples")
    print(_runs(times))
    print(f"  rows out: {rows:,}; {rows / best / 1e6:.2f} M rows/s")
    print(f"  peak traced memory: {peak:,.0f} MiB (tracemalloc, separate run)")
    print(f"  reference: 'a few seconds', taken as <= {target:g} s -> {_verdict(best, target)}")
    return best <= target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=1095)
    parser.add_argument("--horizon", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--target", type=float, default=5.0, help="seconds for generate_fleet (default 5)")
    parser.add_argument("--raw-servers", type=int, default=10_000)
    parser.add_argument("--raw-interval", type=int, default=5, help="minutes between samples")
    parser.add_argument("--raw-target", type=float, default=5.0, help="seconds for generate_raw_samples")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}; "
        f"{_cores()} usable cores ({os.cpu_count()} online), {platform.machine()}, {platform.system()}"
    )
    ok = bench_fleet(args.servers, args.days, args.horizon, args.repeat, args.target)
    if not args.skip_raw:
        ok = bench_raw(args.raw_servers, args.raw_interval, args.repeat, args.raw_target) and ok
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"process max RSS: {max_rss:,.0f} MiB")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
