"""Benchmark: risk, consolidation and report at fleet scale (issue 14), against 3 GB and 300 s each.

Builds a lake of ``--servers`` servers x 4 metrics with ``--days`` of curated daily history (3 years by default)
and one run's forecasts of the default models (``training.models``: three models x ``--horizon`` days, one
champion per series) written directly from a cheap model: a level, a trend and a weekly wave per series, so
the lake takes seconds to build rather than a training run. Then each stage (``stages.run_risk``,
``run_consolidation``, ``run_report``) runs in its own process, in that order, and the benchmark prints its
wall time, CPU time (user + system) and the peak RSS of the process tree (sampled every 20 ms from /proc, and
the kernel's own peak of the stage's process), each against its limit as a ratio.

``--lake PATH`` keeps (or reuses) the lake in PATH; without it a temporary folder is used and removed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

LIMIT_MB = 3 * 1024
"""Peak RSS limit of each stage, MiB (the issue's 3 GB)."""
LIMIT_S = 300.0
"""Wall-time limit of each stage, seconds (5 minutes on 2 cores)."""
STAGES = ("risk", "consolidation", "report")
RUN_DATE = date(2026, 11, 23)
METRIC_NAMES = ("cpu", "mem", "disk", "net")


# ------------------------------------------------------------------------------------------------ the lake


def build_lake(root: Path, *, servers: int, days: int, horizon: int, seed: int = 0) -> dict[str, int]:
    """Write the servers inventory, ``days`` partitions of metrics_daily ending the day before ``RUN_DATE``
    and the forecasts of ``RUN_DATE`` (every default model; one champion per series). Returns row counts."""
    from capacity_forecaster.generate import HOURS_PER_MONTH, INSTANCE_TYPES
    from capacity_forecaster.schema import FORECASTS, METRICS_DAILY, SERVERS
    from capacity_forecaster.settings import Settings
    from capacity_forecaster.storage.lake import open_lake

    lake = open_lake(root)
    rng = np.random.default_rng(seed)
    ids = np.array([f"srv-{i:06d}" for i in range(servers)], dtype=object)
    types = list(INSTANCE_TYPES)
    chosen = rng.integers(0, len(types), servers)
    inventory = pd.DataFrame(
        {
            "server_id": ids,
            "application": [f"app-{i % 40:02d}" for i in range(servers)],
            "environment": np.array(["prod", "staging", "dev"])[rng.integers(0, 3, servers)],
            "datacenter": np.array(["dc-east", "dc-west", "dc-north"])[rng.integers(0, 3, servers)],
            "instance_type": [types[c] for c in chosen],
            "cores": [INSTANCE_TYPES[types[c]].cores for c in chosen],
            "memory_gib": [INSTANCE_TYPES[types[c]].memory_gib for c in chosen],
            "monthly_cost": [round(INSTANCE_TYPES[types[c]].hourly_usd * HOURS_PER_MONTH, 2) for c in chosen],
        }
    )
    lake.write_partition(SERVERS, inventory)

    n = servers * len(METRIC_NAMES)
    server_col = np.repeat(ids, len(METRIC_NAMES))
    metric_col = np.tile(np.array(METRIC_NAMES, dtype=object), servers)
    idle = rng.random(servers) < 0.1
    level = np.where(np.repeat(idle, len(METRIC_NAMES)), rng.uniform(2, 10, n), rng.uniform(10, 80, n))
    slope = rng.normal(0.0, 0.02, n)  # points a day
    weekly = rng.uniform(0, 6, n)
    noise = rng.uniform(0.5, 3.0, n)
    end = RUN_DATE - timedelta(days=1)
    first = end - timedelta(days=days - 1)
    for i in range(days):
        day = first + timedelta(days=i)
        t = i - days
        value = level + slope * t + weekly * np.sin(2 * np.pi * day.weekday() / 7) + rng.normal(0, 1, n) * noise
        imputed = rng.random(n) < 0.01
        frame = pd.DataFrame(
            {
                "server_id": server_col,
                "metric": metric_col,
                "p95": np.clip(value, 0.0, 100.0),
                "n_samples": np.where(imputed, 0, 288).astype("int32"),
                "imputed": imputed,
                "expected_samples": pd.Series(288, index=range(n), dtype="Int32").mask(imputed),
                "low_coverage": pd.Series(False, index=range(n), dtype="boolean").mask(imputed),
            }
        )
        lake.write_partition(METRICS_DAILY, frame, {"dt": day})

    models = Settings().training.models
    champion = rng.integers(0, len(models), n)
    steps = np.arange(1, horizon + 1)
    ds = pd.to_datetime([end + timedelta(days=int(s)) for s in steps])
    dow = np.sin(2 * np.pi * ds.day_of_week.to_numpy() / 7)
    pieces = []
    for m, model in enumerate(models):
        p50 = level[:, None] + slope[:, None] * steps[None, :] * (1 + 0.2 * m) + weekly[:, None] * dow[None, :]
        spread = 1.2816 * noise[:, None] * np.sqrt(1 + steps[None, :] / 30)
        pieces.append(
            pd.DataFrame(
                {
                    "server_id": np.repeat(server_col, horizon),
                    "metric": np.repeat(metric_col, horizon),
                    "model": model,
                    "ds": np.tile(ds.to_numpy(), n),
                    "horizon_step": np.tile(steps, n).astype("int32"),
                    "p10": np.clip(p50 - spread, 0, 100).ravel(),
                    "p50": np.clip(p50, 0, 100).ravel(),
                    "p90": np.clip(p50 + spread, 0, 100).ravel(),
                    "is_champion": np.repeat(champion == m, horizon),
                }
            )
        )
    forecasts = pd.concat(pieces, ignore_index=True)
    lake.write_partition(FORECASTS, forecasts, {"run_date": RUN_DATE})
    return {"servers": servers, "daily_rows": n * days, "forecast_rows": len(forecasts)}


# ------------------------------------------------------------------------------------------------ measuring


def run_stage(root: Path, stage: str) -> dict[str, Any]:
    """Run one stage on the lake in this process; wall and CPU seconds, the kernel's peak RSS, the counts."""
    from capacity_forecaster.settings import Settings
    from capacity_forecaster.stages import run_consolidation, run_report, run_risk
    from capacity_forecaster.storage.lake import open_lake

    lake = open_lake(root)
    settings = Settings(lake=str(root))
    function = {"risk": run_risk, "consolidation": run_consolidation, "report": run_report}[stage]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = function(lake, settings, run_date=RUN_DATE)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
        "maxrss_mib": usage.ru_maxrss / 1024,
        "counts": {k: v for k, v in result.counts.items() if isinstance(v, int | float | str)},
    }


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, KiB (0 for processes gone meanwhile)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def measure(root: Path, stage: str) -> dict[str, Any]:
    """Run ``stage`` in a child process, sampling its process tree's RSS; its figures and the tree's peak."""
    command = [sys.executable, __file__, "--lake", str(root), "--run-stage", stage]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    peak = 0

    def sample() -> None:
        nonlocal peak
        while child.poll() is None:
            peak = max(peak, _tree_rss_kib(child.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = child.communicate()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"stage {stage} failed (exit {child.returncode})")
    figures = json.loads(out.strip().splitlines()[-1])
    figures["tree_peak_mib"] = max(peak / 1024, float(figures["maxrss_mib"]))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument("--days", type=int, default=1095, help="days of daily history (default 1095: 3 years)")
    parser.add_argument("--horizon", type=int, default=90, help="forecast days (default 90)")
    parser.add_argument("--lake", type=Path, default=None, help="lake folder to build (or reuse when it holds one)")
    parser.add_argument("--stages", default=",".join(STAGES), help="stages to measure, comma-separated")
    parser.add_argument("--run-stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_stage:
        print(json.dumps(run_stage(args.lake, args.run_stage)))
        return
    if args.build_only:
        print(build_lake(args.lake, servers=args.servers, days=args.days, horizon=args.horizon))
        return
    with tempfile.TemporaryDirectory(prefix="cf-bench-risk-") as tmp:
        root = args.lake or Path(tmp)
        from capacity_forecaster.schema import FORECASTS

        if not (root / FORECASTS.prefix).exists():
            # In a process of its own: a child forked from a process that built the lake starts with that
            # process's peak as its own (Linux keeps the high-water mark across exec).
            start = time.perf_counter()
            build = [sys.executable, __file__, "--lake", str(root), "--build-only", "--servers", str(args.servers)]
            build += ["--days", str(args.days), "--horizon", str(args.horizon)]
            subprocess.run(build, check=True)
            print(f"built lake in {time.perf_counter() - start:.1f} s")
        else:
            print(f"reusing lake {root}")
        print(f"{'stage':<14}{'wall s':>9}{'CPU s':>9}{'peak MiB':>10}{'wall/300s':>11}{'RSS/3GB':>9}")
        for stage in args.stages.split(","):
            f = measure(root, stage)
            wall, cpu, rss = float(f["wall_s"]), float(f["cpu_s"]), float(f["tree_peak_mib"])
            print(f"{stage:<14}{wall:9.1f}{cpu:9.1f}{rss:10.0f}{wall / LIMIT_S:11.3f}{rss / LIMIT_MB:9.3f}")
            print(f"  counts: {f['counts']}")


if __name__ == "__main__":
    main()
