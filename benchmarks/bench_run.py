"""Benchmark: the end-to-end `make run` default (generate -> etl -> train -> risk) on a fresh lake.

Target: at most 3 minutes after install on a 2-core machine. Prints each stage's time and the total against
the target, for the default settings (100 servers, 730 days, 90-day horizon) unless flags say otherwise.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import date

from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import run_etl, run_generate, run_risk, run_train
from capacity_forecaster.storage.lake import open_lake

TARGET_SECONDS = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=None, help="fleet size (default: the settings default)")
    parser.add_argument("--days", type=int, default=None, help="days of history (default: the settings default)")
    args = parser.parse_args()
    run_date = date(2026, 11, 23)
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        lake = open_lake(tmp)
        settings = load_settings(
            environ={}, overrides={"lake": tmp, "fleet.servers": args.servers, "fleet.days": args.days}
        )
        timings: list[tuple[str, float]] = []
        total_start = time.perf_counter()
        for name, stage in (
            ("generate", lambda: run_generate(lake, settings, run_date=run_date)),
            ("etl", lambda: run_etl(lake, settings)),
            ("train", lambda: run_train(lake, settings, run_date=run_date)),
            ("risk", lambda: run_risk(lake, settings, run_date=run_date)),
        ):
            start = time.perf_counter()
            stage()
            timings.append((name, time.perf_counter() - start))
        total = time.perf_counter() - total_start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"end-to-end pipeline: {settings.fleet.servers} servers x 4 metrics x {settings.fleet.days} days, "
        f"horizon {settings.horizon_days} days, models {', '.join(settings.training.models)}"
    )
    for name, seconds in timings:
        print(f"  {name:<9} {seconds:7.2f} s")
    print(
        f"  total     {total:7.2f} s   (reference: target {TARGET_SECONDS:.0f} s; ratio {total / TARGET_SECONDS:.3f})"
    )
    print(f"  peak RSS  {peak_mib:7.0f} MiB")


if __name__ == "__main__":
    main()
