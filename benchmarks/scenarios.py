"""A second scenario set for the forecast benchmark: server shapes the product's models were not designed around.

The project's generator (``capacity_forecaster.generate``) plants what ``recent_trend`` was built to read
(month and quarter ends, bank holidays, a yearly wave, disk clean-ups). These scenarios are drawn from other
common operational shapes instead:

- ``diurnal_web``: business-hours web load (a daily bump peaking at a random hour, quieter weekends), slow growth;
- ``nightly_batch``: a quiet server with a batch window every night (sometimes skipped, sometimes overrunning);
- ``memory_leak``: memory that climbs steadily until a restart (at irregular intervals) drops it back;
- ``deploy_steps``: a level that moves up or down by a step after each deploy, with a mild daily cycle;
- ``weekly_backup``: a low base with a plateau on one night of the week;
- ``idle_wakes``: a server idle near zero that wakes up (late in the history or inside the horizon) and gets busy.

Every series is simulated hour by hour on one UTC clock with Gaussian noise and occasional spikes, clipped to
0..100. The ``hourly`` variant keeps the hourly values (2 to 4 weeks of history, a week ahead by default); the
``daily`` variant takes each day's P95 of the hours, as the ETL takes a day's P95 of its samples (1 to 3 years of
history, 90 days ahead). Time scales (leak cycles, deploy intervals) follow the variant. Deterministic in the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

KINDS: tuple[str, ...] = ("diurnal_web", "nightly_batch", "memory_leak", "deploy_steps", "weekly_backup", "idle_wakes")
METRIC_OF: dict[str, str] = {
    "diurnal_web": "cpu",
    "nightly_batch": "cpu",
    "memory_leak": "mem",
    "deploy_steps": "mem",
    "weekly_backup": "disk",
    "idle_wakes": "cpu",
}
GRAINS: dict[str, dict[str, int]] = {
    # history range in steps, horizon in steps, hours per step, time scale of slow events in hours
    "hourly": {"min_history": 14 * 24, "max_history": 28 * 24, "horizon": 168, "hours": 1, "scale": 24},
    "daily": {"min_history": 365, "max_history": 1095, "horizon": 90, "hours": 24, "scale": 24 * 15},
}


@dataclass(frozen=True)
class ScenarioSet:
    """Observed history and held-out truth of a scenario fleet.

    ``history``: server_id, metric, dt, p95 (the product's metrics_daily / metrics_hourly columns);
    ``truth``: server_id, metric, ds, actual for the ``horizon`` steps after ``last`` (the last observed step,
    the same for every series); ``kinds``: server_id -> scenario kind.
    """

    grain: str
    horizon: int
    last: pd.Timestamp
    history: pd.DataFrame
    truth: pd.DataFrame
    kinds: dict[str, str]


def make_scenarios(
    grain: str, n_series: int, seed: int, *, end: date = date(2026, 11, 22), horizon: int | None = None
) -> ScenarioSet:
    """``n_series`` series (kinds in turn) of ``grain`` (``hourly`` or ``daily``) whose history ends on ``end``
    (its last hour, at the hourly grain) and whose truth covers the ``horizon`` steps after it (default: the
    grain's, a week hourly and 90 days daily)."""
    if grain not in GRAINS:
        raise ValueError(f"grain must be one of {', '.join(GRAINS)}, got {grain!r}")
    if n_series < 1:
        raise ValueError(f"n_series must be at least 1, got {n_series}")
    g = GRAINS[grain] | ({} if horizon is None else {"horizon": horizon})
    if g["horizon"] < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    steps_total = g["max_history"] + g["horizon"]
    hours_total = steps_total * g["hours"]
    last_hour = pd.Timestamp(end) + pd.Timedelta(hours=23)
    first_hour = last_hour - pd.Timedelta(hours=g["max_history"] * g["hours"] - 1)
    clock = pd.date_range(first_hour, periods=hours_total, freq="h")
    hour_of_day = clock.hour.to_numpy()
    weekday = clock.day_of_week.to_numpy()
    unit = "h" if grain == "hourly" else "D"
    stamps = clock if grain == "hourly" else clock[:: g["hours"]].normalize()
    n_hist_max = g["max_history"]
    hist_parts, truth_parts, kinds = [], [], {}
    for i in range(n_series):
        kind = KINDS[i % len(KINDS)]
        rng = np.random.default_rng([seed, i])
        hourly = SHAPES[kind](rng, hours_total, hour_of_day, weekday, g["scale"], g["max_history"] * g["hours"])
        hourly = hourly + rng.normal(0.0, rng.uniform(0.5, 3.0), hours_total)
        spikes = rng.random(hours_total) < 0.003
        hourly[spikes] += rng.uniform(10, 40, int(spikes.sum()))
        hourly = np.clip(hourly, 0.0, 100.0)
        values = hourly if grain == "hourly" else np.percentile(hourly.reshape(-1, 24), 95, axis=1)
        n_hist = int(rng.integers(g["min_history"], g["max_history"] + 1))
        server = f"scn-{grain[0]}{i:04d}"
        kinds[server] = kind
        metric = METRIC_OF[kind]
        start = n_hist_max - n_hist
        hist_parts.append(
            pd.DataFrame(
                {"server_id": server, "metric": metric, "dt": stamps[start:n_hist_max], "p95": values[start:n_hist_max]}
            )
        )
        truth_parts.append(
            pd.DataFrame(
                {"server_id": server, "metric": metric, "ds": stamps[n_hist_max:], "actual": values[n_hist_max:]}
            )
        )
    history = pd.concat(hist_parts, ignore_index=True)
    truth = pd.concat(truth_parts, ignore_index=True)
    for frame, col in ((history, "dt"), (truth, "ds")):
        frame[col] = frame[col].astype("datetime64[ns]")
    last = pd.Timestamp(stamps[n_hist_max - 1]).floor(unit)
    return ScenarioSet(grain=grain, horizon=g["horizon"], last=last, history=history, truth=truth, kinds=kinds)


# ------------------------------------------------------------------------------------------------ the shapes
# Each takes (rng, hours, hour_of_day, weekday, scale, history_hours) and returns the noise-free hourly values;
# ``scale`` is the time scale of slow events in hours (a day at the hourly grain, about two weeks at the daily).

Shape = Callable[[np.random.Generator, int, np.ndarray, np.ndarray, int, int], np.ndarray]


def _bump(hour_of_day: np.ndarray, peak: float, width: float) -> np.ndarray:
    """A smooth daily bump (0..1) centred on ``peak`` o'clock, wrapping around midnight."""
    d = np.minimum(np.abs(hour_of_day - peak), 24 - np.abs(hour_of_day - peak))
    return np.exp(-0.5 * (d / width) ** 2)


def diurnal_web(rng: np.random.Generator, n: int, hod: np.ndarray, wd: np.ndarray, scale: int, hist: int) -> np.ndarray:
    base = rng.uniform(5, 25)
    amp = rng.uniform(15, 40)
    weekend = np.where(wd >= 5, rng.uniform(0.4, 0.9), 1.0)
    growth = rng.uniform(-0.2, 0.6) * amp * np.arange(n) / max(hist, 1)  # up to +0.6 amp over the history
    return base + growth + amp * weekend * _bump(hod, rng.uniform(11, 20), rng.uniform(2.5, 4.5))


def nightly_batch(
    rng: np.random.Generator, n: int, hod: np.ndarray, wd: np.ndarray, scale: int, hist: int
) -> np.ndarray:
    base = rng.uniform(3, 15)
    start, length = int(rng.integers(0, 4)), int(rng.integers(2, 5))
    height = rng.uniform(50, 90)
    day = np.arange(n) // 24
    n_days = int(day[-1]) + 1
    runs = rng.random(n_days) > 0.08  # a night skipped now and then
    overrun = rng.integers(0, 3, n_days) * (rng.random(n_days) < 0.15)  # some nights run long
    in_window = (hod >= start) & (hod < start + length + overrun[day])
    weekdays_only = rng.random() < 0.5
    active = runs[day] & ((wd < 5) if weekdays_only else True)
    return base + np.where(in_window & active, height, 0.0)


def memory_leak(rng: np.random.Generator, n: int, hod: np.ndarray, wd: np.ndarray, scale: int, hist: int) -> np.ndarray:
    floor = rng.uniform(20, 40)
    out = np.empty(n)
    t = 0
    while t < n:
        cycle = int(rng.uniform(2, 8) * scale)  # hours until the next restart
        rise = rng.uniform(25, 55)  # points gained over a cycle
        seg = min(cycle, n - t)
        out[t : t + seg] = floor + rise * np.arange(seg) / cycle
        t += seg
    return out + 2.0 * _bump(hod, 14, 4)


def deploy_steps(
    rng: np.random.Generator, n: int, hod: np.ndarray, wd: np.ndarray, scale: int, hist: int
) -> np.ndarray:
    level = np.full(n, rng.uniform(25, 50))
    t = int(rng.uniform(1, 6) * scale)
    while t < n:
        level[t:] += rng.choice([-1, 1], p=[0.4, 0.6]) * rng.uniform(4, 15)
        t += int(rng.uniform(2, 7) * scale)
    level = np.clip(level, 5, 80)
    return level + rng.uniform(2, 8) * _bump(hod, rng.uniform(10, 18), 4)


def weekly_backup(
    rng: np.random.Generator, n: int, hod: np.ndarray, wd: np.ndarray, scale: int, hist: int
) -> np.ndarray:
    base = rng.uniform(5, 20)
    day, start, length = int(rng.integers(0, 7)), int(rng.integers(0, 4)), int(rng.integers(3, 7))
    window = (wd == day) & (hod >= start) & (hod < start + length)
    trend = rng.uniform(0, 10) * np.arange(n) / max(hist, 1)  # the data to back up grows
    return base + trend + np.where(window, rng.uniform(45, 75), 0.0)


def idle_wakes(rng: np.random.Generator, n: int, hod: np.ndarray, wd: np.ndarray, scale: int, hist: int) -> np.ndarray:
    idle = rng.uniform(0.5, 3)
    # Wakes in the last quarter of the history (60%) or inside the horizon (40%).
    wake = int(rng.uniform(0.75, 1.0) * hist) if rng.random() < 0.6 else int(rng.uniform(hist, n))
    busy = rng.uniform(20, 45) + rng.uniform(10, 30) * _bump(hod, rng.uniform(10, 18), 4)
    return np.where(np.arange(n) >= wake, busy, idle)


SHAPES: dict[str, Shape] = {
    "diurnal_web": diurnal_web,
    "nightly_batch": nightly_batch,
    "memory_leak": memory_leak,
    "deploy_steps": deploy_steps,
    "weekly_backup": weekly_backup,
    "idle_wakes": idle_wakes,
}
