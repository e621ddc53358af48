"""Benchmark the daily ETL increment on a lake that already holds years of daily history.

Usage::

    .venv/bin/python benchmarks/bench_etl_increment.py [--servers 10000 --history-days 1095 --files 10 --runs 1]
    .venv/bin/python benchmarks/bench_etl_increment.py --file-sizes 100,1000   # memory per byte of one CSV

Targets (issue 14): one day of 5-minute samples for ``--servers`` servers x 4 metrics (10,000: 11.5 million
rows) processed by ``stages.run_etl`` in at most 3 GB peak RSS and 5 minutes on 2 cores; any single input file
processed in at most 2 x its size.

The lake is built directly, as years of daily ETL runs leave it: ``metrics_daily`` partitions for
``--history-days`` days before the new day (one P95 per server, metric and day), and an ``etl_files`` manifest
recording one processed raw file per day. The new day arrives as ``--files`` long CSV uploads (the fleet split by
server; the generator's 5-minute samples, ``generate_raw_samples``), processed in ``--runs`` ETL runs (the files
split between them in order: with 2 or more, later runs add files to a day that earlier runs already
aggregated, as hourly CloudWatch pulls do). Each run is a child process; its wall time, CPU time (user + system)
and peak resident set (``VmHWM`` of the child, which runs DuckDB in-process and starts no process; ``ru_maxrss``
would count the pages the child shared with this process at the fork) are printed
with their ratios against the limits, and the baseline RSS of a child that only imports the modules (and opens
DuckDB).

``--file-sizes 100,1000`` instead writes, for each size, one CSV of about that many MB (one day of enough
servers) into an empty lake, raises ``ingest.max_file_mb`` above it, and prints the ETL's peak RSS above the base
of an idle child (imports and DuckDB opened), its ratio to the file's size and to the 2 x target, and the wall
and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from capacity_forecaster.generate import FleetSpec, generate_fleet, generate_raw_samples
from capacity_forecaster.schema import ETL_FILES, METRICS, METRICS_DAILY
from capacity_forecaster.storage.lake import open_lake

DAY = date(2026, 11, 30)
RUN_AT = "2026-12-01T06:00:00+00:00"
MEMORY_LIMIT_MB = 3 * 1024
TIME_LIMIT_S = 300.0
BYTES_PER_ROW = 42  # a long CSV row: "2026-11-30T00:05:00Z,srv-00001,cpu,12.3457\n"

CHILD = """
import json, sys, time
from datetime import datetime
t0 = time.perf_counter()
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import run_etl
from capacity_forecaster.storage.lake import open_lake
root, max_mb, only_import = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if not only_import:
    settings = load_settings(environ={}, overrides={"lake": root, "ingest.max_file_mb": int(max_mb)})
    result = run_etl(open_lake(root), settings, now=datetime.fromisoformat(sys.argv[4]))
    counts = {k: v for k, v in result.counts.items() if isinstance(v, int | str)}
else:  # the modules and connections any ETL run holds, whatever its input
    import duckdb, pyarrow.parquet, pyarrow.csv
    from capacity_forecaster import etl_stream
    duckdb.connect().execute("SELECT 1").fetchall()
    counts = {}
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"counts": counts, "seconds": time.perf_counter() - t0, "hwm_kb": hwm}))
"""


def run_child(root: Path, *, max_mb: int = 200, only_import: bool = False) -> dict[str, Any]:
    """Run the ETL (or only its imports) in a child; wall, CPU and peak RSS from ``wait4``."""
    env = dict(os.environ)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(max_mb), "1" if only_import else "0", RUN_AT],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the ETL child failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        # VmHWM of the child itself: ru_maxrss would count the parent's pages at the fork
        "peak_rss_mb": result.get("hwm_kb", usage.ru_maxrss) / 1024,
        **result,
    }


def day_samples(servers: int, day: date = DAY) -> pd.DataFrame:
    """One day of the generator's 5-minute samples for ``servers`` servers (timestamp, server_id, metric, value)."""
    fleet = generate_fleet(FleetSpec(servers=servers, days=28, horizon_days=1, end_date=day, missing_rate=0.0))
    raw = generate_raw_samples(fleet, [day], interval_minutes=5)
    return raw[["timestamp", "server_id", "metric", "value"]]


def write_csv(frame: pd.DataFrame, path: Path) -> int:
    """A long CSV (ISO 8601 timestamps with Z); returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(_csv_table(frame), path, pacsv.WriteOptions(quoting_style="none"))
    return path.stat().st_size


def _csv_table(frame: pd.DataFrame) -> pa.Table:
    """The long CSV's columns: ISO 8601 timestamps with Z, ids, metric, the value to 4 decimals."""
    return pa.table(
        {
            "timestamp": pa.array(frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy(dtype=object)),
            "server_id": pa.array(frame["server_id"].astype(str).to_numpy(dtype=object)),
            "metric": pa.array(frame["metric"].astype(str).to_numpy(dtype=object)),
            "value": pa.array(frame["value"].round(4).to_numpy()),
        }
    )


def write_history(root: Path, servers: list[str], days: int) -> None:
    """``metrics_daily`` for the ``days`` days before DAY and a manifest of one processed file per day."""
    lake = open_lake(root)
    rng = np.random.default_rng(7)
    n_series = len(servers) * len(METRICS)
    server_col = np.repeat(np.array(servers, dtype=object), len(METRICS))
    metric_col = np.tile(np.array(METRICS, dtype=object), len(servers))
    level = rng.uniform(10, 70, n_series)
    first = DAY - timedelta(days=days)
    chunk = 30
    for start in range(0, days, chunk):
        span = [first + timedelta(days=d) for d in range(start, min(days, start + chunk))]
        frame = pd.DataFrame(
            {
                "server_id": np.tile(server_col, len(span)),
                "metric": np.tile(metric_col, len(span)),
                "dt": np.repeat(np.array(span, dtype="datetime64[D]").astype("datetime64[ns]"), n_series),
                "p95": np.clip(np.tile(level, len(span)) + rng.normal(0, 3, n_series * len(span)), 0, 100),
                "n_samples": np.int32(288),
                "imputed": False,
                "expected_samples": np.int32(288),
                "low_coverage": False,
            }
        )
        lake.write_table(METRICS_DAILY, frame)
    manifest = pd.DataFrame(
        {
            "key": [f"raw/samples/dt={first + timedelta(days=d)}/data.parquet" for d in range(days)],
            "fingerprint": "1000:history",
            "first_day": [pd.Timestamp(first + timedelta(days=d)) for d in range(days)],
            "last_day": [pd.Timestamp(first + timedelta(days=d)) for d in range(days)],
            "rows": n_series,
            "status": "processed",
            "etl_run_id": "etl-history",
        }
    )
    lake.write_table(ETL_FILES, manifest)


def increment(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cf-bench-etl-", dir=args.tmp) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        samples = day_samples(args.servers)
        servers = sorted(samples["server_id"].astype(str).unique())
        write_history(root, servers, args.history_days)
        groups = np.array_split(np.arange(len(servers)), args.files)
        staged = root.parent / f"{root.name}-staged"
        sizes = []
        by_server = samples["server_id"].astype(str)
        for i, idx in enumerate(groups):
            chosen = set(servers[j] for j in idx)
            sizes.append(write_csv(samples[by_server.isin(chosen)], staged / f"part-{i:03d}.csv"))
        rows = len(samples)
        del samples, by_server
        print(
            f"lake: {args.servers:,} servers x {len(METRICS)} metrics, {args.history_days} days of daily history; "
            f"new day: {rows:,} rows in {args.files} CSV files ({sum(sizes) / 2**20:,.0f} MB); "
            f"built in {time.perf_counter() - t0:.0f} s"
        )
        base = run_child(root, only_import=True)
        print(f"baseline (imports only): {base['peak_rss_mb']:,.0f} MB")
        parts = np.array_split(np.arange(args.files), args.runs)
        worst: dict[str, float] = {}
        try:
            for r, files in enumerate(parts):
                for i in files:
                    target = root / "raw" / "uploads" / "bench" / f"part-{i:03d}.csv"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staged / f"part-{i:03d}.csv", target)
                m = run_child(root)
                for k in ("wall_s", "cpu_s", "peak_rss_mb"):
                    worst[k] = max(worst.get(k, 0.0), m[k])
                c = m.get("counts", {})
                print(
                    f"run {r + 1}/{args.runs} ({len(files)} files, {c.get('rows_in', 0):,} rows in, "
                    f"{c.get('rows_written', 0):,} written, {c.get('partitions_written', 0)} daily partitions): "
                    f"wall {m['wall_s']:.1f} s ({m['wall_s'] / TIME_LIMIT_S:.2f} of 300 s), "
                    f"CPU {m['cpu_s']:.1f} s, peak RSS {m['peak_rss_mb']:,.0f} MB "
                    f"({m['peak_rss_mb'] / MEMORY_LIMIT_MB:.2f} of 3 GB)"
                )
        finally:
            for leftover in staged.glob("*"):
                leftover.unlink()
            staged.rmdir()
        print(json.dumps({"servers": args.servers, "files": args.files, "runs": args.runs, **worst}))


FILE_TARGET = 2.0
"""Issue 14: any single input file is processed in at most 2 x its size (above the base of an idle process)."""
SERVERS_PER_BATCH = 2_000


def write_day_csv(servers: int, path: Path) -> int:
    """One day of 5-minute samples of ``servers`` servers as one long CSV, written ``SERVERS_PER_BATCH``
    servers at a time (a 1 GB file is never held whole here either); returns its size in bytes."""
    fleet = generate_fleet(FleetSpec(servers=servers, days=28, horizon_days=1, end_date=DAY, missing_rate=0.0))
    ids = fleet.servers["server_id"].astype(str).to_numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for start in range(0, len(ids), SERVERS_PER_BATCH):
            chosen = fleet.daily["server_id"].astype(str).isin(set(ids[start : start + SERVERS_PER_BATCH]))
            raw = generate_raw_samples(replace(fleet, daily=fleet.daily[chosen]), [DAY], interval_minutes=5)
            table = _csv_table(raw)
            if writer is None:
                writer = pacsv.CSVWriter(path, table.schema, write_options=pacsv.WriteOptions(quoting_style="none"))
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return path.stat().st_size


def file_ratio(size_mb: int, tmp: str | None) -> dict[str, float]:
    """The ETL of one CSV of about ``size_mb`` MB in an empty lake: its peak RSS above the idle base, per byte."""
    servers = max(1, round(size_mb * 2**20 / (BYTES_PER_ROW * len(METRICS) * 288)))
    with tempfile.TemporaryDirectory(prefix="cf-bench-etl-file-", dir=tmp) as folder:
        root = Path(folder)
        size = write_day_csv(servers, root / "raw" / "uploads" / "bench" / "one.csv")
        base = run_child(root, only_import=True)
        m = run_child(root, max_mb=int(size / 2**20) + 2)
        c = m.get("counts", {})
        if c.get("files_rejected"):
            raise SystemExit("the file was refused")
        above = (m["peak_rss_mb"] - base["peak_rss_mb"]) * 2**20 / size
        print(
            f"one CSV of {size / 2**20:,.0f} MB ({c.get('rows_in', 0):,} rows, {servers:,} servers): "
            f"peak RSS {m['peak_rss_mb']:,.0f} MB, {m['peak_rss_mb'] - base['peak_rss_mb']:,.0f} MB above the "
            f"{base['peak_rss_mb']:,.0f} MB base = {above:.2f} x the file ({above / FILE_TARGET:.2f} of the "
            f"{FILE_TARGET:g} x target); wall {m['wall_s']:.1f} s, CPU {m['cpu_s']:.1f} s "
            f"({m['cpu_s'] / (size / 2**20):.3f} CPU-s a MB)",
            flush=True,
        )
        return {
            "file_mb": size / 2**20,
            "rows": c.get("rows_in", 0),
            "base_mb": base["peak_rss_mb"],
            "peak_rss_mb": m["peak_rss_mb"],
            "above_base_per_byte": above,
            "target_ratio": above / FILE_TARGET,
            "wall_s": m["wall_s"],
            "cpu_s": m["cpu_s"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--history-days", type=int, default=1095)
    parser.add_argument("--files", type=int, default=10, help="CSV files the new day arrives in")
    parser.add_argument("--runs", type=int, default=1, help="ETL runs the files are split between")
    parser.add_argument(
        "--file-sizes",
        default="",
        help="instead, measure one CSV of each of these sizes in MB (comma-separated, e.g. 100,1000)",
    )
    parser.add_argument("--tmp", default=None, help="folder for the lake (default: the system's temp folder)")
    args = parser.parse_args()
    if args.file_sizes:
        sizes = [int(x) for x in args.file_sizes.split(",") if x.strip()]
        results = [file_ratio(mb, args.tmp) for mb in sizes]
        print(json.dumps(results))
    else:
        increment(args)


if __name__ == "__main__":
    main()
