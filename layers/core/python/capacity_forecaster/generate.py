"""Deterministic synthetic fleet: inventory, daily P95 utilisation, intraday samples and the planted truth.

Pure (no I/O) and vectorised: every metric is a ``servers x days`` numpy array built from per-server
amplitudes times per-day calendar features, so 1,000 servers x 4 metrics x 3 years take about a second.

How a series is made (values in percent, clipped to 0..100, rounded to 0.01)::

    true[s, t] = level[s, t] * (1 + seasonal[s, t]) + noise[s, t]

- ``level`` follows the planted pattern of the (server, metric): ``steady``; ``growing`` (a linear ramp from
  a floor); ``saturating`` (a steep ramp that crosses the threshold between 60 days before the end of history
  and 30 days after the horizon; already-saturated series sit at 100); ``seasonal_peak`` (steady, with strong
  quarter-end and yearly peaks); ``sawtooth`` (disk filling up, then cleaned up every 3 to 17 weeks);
  ``level_shift`` (memory jumping up or down 1 to 3 times); ``idle`` (every metric of an idle server, low).
- ``seasonal`` is relative: business applications are lower on weekends and on the country's bank holidays
  (the ``holidays`` package); consumer applications are a little higher on weekends; month-end (last 3 days)
  and quarter-end (last 7 days of Mar, Jun, Sep, Dec) peaks; a yearly wave.
- ``noise`` is Gaussian, a few points for cpu and net, less for mem and disk.

The observed history (``Fleet.daily``) is the true series plus occasional upward spikes (incidents; never on
idle servers), clipped again, with missing days removed: a (server, day) is missing for all metrics with
probability ``missing_rate``. ``Fleet.future`` holds the true series for the ``horizon_days`` after
``end_date``: no spikes and no gaps. It is what forecasts are scored on.

A fleet is laid out on its *design period*, the ``days`` days from its first day (``FleetSpec.start_date``)
plus the horizon: the ramps pivot on the period's last history day and the level shifts fall inside it. The
history can run on past that period (``FleetSpec.first_day``, for a demo lake that grows by a day at a time):
ramps keep their slope, disks keep filling and being cleaned up, levels stay. Every random draw that spans
days is made day by day (one block of draws per day, in day order, from a stream of its own), so a day's
values depend on the seed, the fleet's first day, ``days`` and that day only: generating up to a later
``end_date`` gives the same values on the days both cover.

Ground truth (``Fleet.ground_truth``, one row per server and metric):

- A *sustained breach* is a run of at least 3 consecutive days whose true daily P95 is at or over the
  metric's threshold (the whole horizon when it is shorter than 3 days). Single-day blips do not count.
- ``will_breach`` is True when a sustained breach lies entirely inside the horizon, or when the series is
  already breaching: its last 3 true history days (spikes excluded) are all at or over the threshold.
- ``breach_date`` is the first horizon day when the series is already breaching, otherwise the first day of
  the first sustained breach in the horizon; null when ``will_breach`` is False. Both are computed from the
  values in ``Fleet.future`` (and, for the already-breaching case, the last 3 true history days).
- ``is_idle`` is True on every row of a server planted idle (about 10% of the fleet, chosen more often in dev
  and staging). On every day, history and horizon, an idle server's cpu and net stay under 12%, mem under 30%
  and disk under 35%. With the default thresholds, every non-idle server reaches a cpu p95 of 15% or more
  on some day of its last 30 history days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Final

import holidays
import numpy as np
import pandas as pd
import pyarrow as pa

from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.schema import GROUND_TRUTH, METRICS, RAW_SAMPLES, SERVERS

FloatArray = np.ndarray
BREACH_RUN_DAYS: Final[int] = 3
"""Consecutive days at or over the threshold that make a sustained breach."""
IDLE_SHARE: Final[float] = 0.10
DEFAULT_THRESHOLD: Final[float] = 80.0
HOURS_PER_MONTH: Final[float] = 730.0
RAW_SEED: Final[int] = 20_240_101
"""Seed of the intraday samples when none is given (combined with each day, so results do not depend on
which other days are generated in the same call)."""

_STR = pd.StringDtype(storage="pyarrow", na_value=np.nan)


@dataclass(frozen=True)
class AppProfile:
    """How an application behaves: instance family, office-hours (business) or consumer load, peaks."""

    family: str
    business: bool
    peak_hour: float
    """Local hour of the intraday peak."""
    yearly_peak_doy: int
    """Day of the year of the yearly wave's top."""


APPLICATIONS: Final[Mapping[str, AppProfile]] = MappingProxyType(
    {
        "billing": AppProfile("m5", True, 14.0, 335),
        "erp": AppProfile("r5", True, 11.0, 350),
        "crm": AppProfile("r5", True, 15.0, 90),
        "payroll": AppProfile("m5", True, 10.0, 360),
        "reporting": AppProfile("m5", True, 9.0, 5),
        "web-storefront": AppProfile("c5", False, 20.0, 330),
        "search-api": AppProfile("c5", False, 19.0, 330),
        "batch-etl": AppProfile("m5", False, 2.0, 180),
    }
)
ENVIRONMENTS: Final[Mapping[str, float]] = MappingProxyType({"prod": 0.6, "staging": 0.2, "dev": 0.2})
"""Environment -> share of the fleet."""
_IDLE_WEIGHT: Final[Mapping[str, float]] = MappingProxyType({"prod": 1.0, "staging": 2.0, "dev": 3.0})


@dataclass(frozen=True)
class Datacenter:
    """A region or on-premises site: its share of the fleet, UTC offset (hours) and price factor."""

    share: float
    utc_offset: float
    price_factor: float


DATACENTERS: Final[Mapping[str, Datacenter]] = MappingProxyType(
    {
        "us-east-1": Datacenter(0.45, -5.0, 1.0),
        "eu-west-1": Datacenter(0.35, 0.0, 1.115),
        "dc-london": Datacenter(0.20, 0.0, 0.85),  # on-premises: amortised hardware, power and space
    }
)


@dataclass(frozen=True)
class InstanceType:
    """A size: vCPUs, memory and the Linux on-demand price in us-east-1 (USD per hour)."""

    cores: int
    memory_gib: float
    hourly_usd: float


INSTANCE_TYPES: Final[Mapping[str, InstanceType]] = MappingProxyType(
    {
        "m5.large": InstanceType(2, 8.0, 0.096),
        "m5.xlarge": InstanceType(4, 16.0, 0.192),
        "m5.2xlarge": InstanceType(8, 32.0, 0.384),
        "m5.4xlarge": InstanceType(16, 64.0, 0.768),
        "r5.large": InstanceType(2, 16.0, 0.126),
        "r5.xlarge": InstanceType(4, 32.0, 0.252),
        "r5.2xlarge": InstanceType(8, 64.0, 0.504),
        "r5.4xlarge": InstanceType(16, 128.0, 1.008),
        "c5.large": InstanceType(2, 4.0, 0.085),
        "c5.xlarge": InstanceType(4, 8.0, 0.17),
        "c5.2xlarge": InstanceType(8, 16.0, 0.34),
        "c5.4xlarge": InstanceType(16, 32.0, 0.68),
    }
)
_SIZES: Final[tuple[str, ...]] = ("large", "xlarge", "2xlarge", "4xlarge")
_SIZE_WEIGHTS: Final[tuple[float, ...]] = (0.30, 0.35, 0.25, 0.10)

PATTERNS: Final[tuple[str, ...]] = (
    "steady",
    "growing",
    "saturating",
    "seasonal_peak",
    "sawtooth",
    "level_shift",
    "idle",
)


@dataclass(frozen=True)
class MetricProfile:
    """Per-metric generation parameters. Ranges are (low, high) of a uniform draw per series."""

    shares: Mapping[str, float]
    """Pattern -> probability, for series of non-idle servers."""
    base: tuple[float, float]
    idle: tuple[float, float]
    noise: tuple[float, float]
    """Standard deviation of the day-to-day noise, points."""
    weekly: tuple[float, float]
    """Relative drop on weekends and bank holidays for business applications."""
    month_end: tuple[float, float]
    quarter_end: tuple[float, float]
    """Relative quarter-end peak of seasonal_peak series (other series get 15% of it)."""
    yearly: tuple[float, float]
    spike_rate: float
    """Probability that an observed day of a non-idle series carries a spike."""
    intraday_amplitude: float
    """Relative amplitude of the diurnal shape in intraday samples."""
    intraday_noise: float


METRIC_PROFILES: Final[Mapping[str, MetricProfile]] = MappingProxyType(
    {
        "cpu": MetricProfile(
            shares={"steady": 0.30, "seasonal_peak": 0.30, "growing": 0.25, "saturating": 0.15},
            base=(25.0, 60.0),
            idle=(2.0, 6.0),
            noise=(1.0, 2.5),
            weekly=(0.20, 0.40),
            month_end=(0.03, 0.10),
            quarter_end=(0.25, 0.55),
            yearly=(0.03, 0.10),
            spike_rate=0.004,
            intraday_amplitude=0.6,
            intraday_noise=0.06,
        ),
        "mem": MetricProfile(
            shares={
                "steady": 0.25,
                "level_shift": 0.30,
                "growing": 0.22,
                "saturating": 0.13,
                "seasonal_peak": 0.10,
            },
            base=(35.0, 68.0),
            idle=(8.0, 22.0),
            noise=(0.4, 1.0),
            weekly=(0.03, 0.08),
            month_end=(0.01, 0.04),
            quarter_end=(0.08, 0.20),
            yearly=(0.01, 0.04),
            spike_rate=0.002,
            intraday_amplitude=0.08,
            intraday_noise=0.01,
        ),
        "disk": MetricProfile(
            shares={"sawtooth": 0.50, "growing": 0.27, "steady": 0.10, "saturating": 0.13},
            base=(20.0, 60.0),
            idle=(5.0, 25.0),
            noise=(0.15, 0.5),
            weekly=(0.0, 0.01),
            month_end=(0.0, 0.01),
            quarter_end=(0.0, 0.02),
            yearly=(0.0, 0.01),
            spike_rate=0.001,
            intraday_amplitude=0.02,
            intraday_noise=0.003,
        ),
        "net": MetricProfile(
            shares={"steady": 0.35, "seasonal_peak": 0.30, "growing": 0.22, "saturating": 0.13},
            base=(15.0, 55.0),
            idle=(1.0, 5.0),
            noise=(1.0, 3.0),
            weekly=(0.25, 0.50),
            month_end=(0.03, 0.08),
            quarter_end=(0.25, 0.60),
            yearly=(0.05, 0.12),
            spike_rate=0.004,
            intraday_amplitude=0.7,
            intraday_noise=0.08,
        ),
    }
)
_IDLE_DAMPING: Final[float] = 0.3
"""Idle series get this fraction of the seasonal amplitudes and of the noise."""


def _default_thresholds() -> Mapping[str, float]:
    return dict.fromkeys(METRICS, DEFAULT_THRESHOLD)


@dataclass(frozen=True, kw_only=True)
class FleetSpec:
    """What to generate (keyword-only). ``end_date`` is the last observed day; the horizon follows it.

    ``thresholds`` maps metric -> percent (metrics left out get 80); the ground truth is computed for them.
    ``first_day`` None: the history is the ``days`` days ending on ``end_date``. A date: the fleet started that
    day, its design period is the ``days`` days from it, and the history runs on to ``end_date`` (at least
    ``days`` days): what a demo lake extended day by day holds.
    """

    servers: int = 100
    days: int = 730
    end_date: date
    horizon_days: int = 90
    seed: int = 42
    country: str = "US"
    thresholds: Mapping[str, float] = field(default_factory=_default_thresholds, hash=False)
    missing_rate: float = 0.01
    first_day: date | None = None

    def __post_init__(self) -> None:
        _check_int("servers", self.servers, 1, None)
        _check_int("days", self.days, 28, None)
        _check_int("horizon_days", self.horizon_days, 1, 730)
        _check_int("seed", self.seed, 0, None)
        if isinstance(self.end_date, datetime):
            object.__setattr__(self, "end_date", self.end_date.date())
        elif not isinstance(self.end_date, date):
            raise ConfigError(f"end_date must be a date, got {self.end_date!r}")
        if not isinstance(self.country, str) or self.country not in holidays.list_supported_countries():
            raise ConfigError(f"country {self.country!r} is not an ISO code known to the holidays package")
        if not isinstance(self.missing_rate, int | float) or not 0.0 <= self.missing_rate <= 0.5:
            raise ConfigError(f"missing_rate must be between 0 and 0.5, got {self.missing_rate!r}")
        object.__setattr__(self, "thresholds", _checked_thresholds(self.thresholds))
        if self.first_day is not None:
            if isinstance(self.first_day, datetime) or not isinstance(self.first_day, date):
                raise ConfigError(f"first_day must be a date, got {self.first_day!r}")
            if self.history_days < self.days:
                raise ConfigError(
                    f"end_date {self.end_date} is before the last day of the fleet's {self.days}-day design period "
                    f"from {self.first_day}"
                )

    @property
    def start_date(self) -> date:
        """The first observed day."""
        return self.first_day if self.first_day is not None else self.end_date - timedelta(days=self.days - 1)

    @property
    def history_days(self) -> int:
        """Observed days, ``start_date`` to ``end_date``: ``days`` unless ``first_day`` starts earlier."""
        return (self.end_date - self.start_date).days + 1


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be an integer {bound}, got {value!r}")


def _checked_thresholds(thresholds: Mapping[str, float]) -> Mapping[str, float]:
    if not isinstance(thresholds, Mapping):
        raise ConfigError(f"thresholds must map metric names to percentages, got {thresholds!r}")
    unknown = sorted(set(thresholds) - set(METRICS))
    if unknown:
        raise ConfigError(f"thresholds name unknown metrics {unknown}; known: {', '.join(METRICS)}")
    out = dict.fromkeys(METRICS, DEFAULT_THRESHOLD)
    for metric, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 100.0:
            raise ConfigError(f"threshold for {metric} must be in (0, 100], got {value!r}")
        out[metric] = float(value)
    return out  # a plain dict copy (picklable, unlike a mappingproxy); treat it as read-only


@dataclass
class Fleet:
    """A generated fleet: inventory, observed daily P95s, the true future and the planted truth."""

    servers: pd.DataFrame
    """SERVERS columns, one row per server."""
    daily: pd.DataFrame
    """server_id, metric, dt, p95: observed days (gaps removed, spikes included), by server, metric, dt."""
    future: pd.DataFrame
    """server_id, metric, dt, p95: the true values of the horizon days, no gaps, no spikes."""
    ground_truth: pd.DataFrame
    """GROUND_TRUTH columns, one row per server and metric."""
    expected: pd.DataFrame
    """server_id, metric, dt, p95, noise_sd: the horizon days without the day-to-day noise (the level with its
    weekly, calendar and yearly effects, clipped to 0..100), and the standard deviation of the noise that
    ``future`` adds to them. What a forecaster that knew how the fleet was made would forecast: the
    benchmarks score it as the ceiling of what forecasts can do against the noisy truth."""


# --------------------------------------------------------------------------------------------- calendar


@dataclass(frozen=True)
class _Calendar:
    """Per-day features over history + horizon (length T); ``n_hist`` first days are observed."""

    days: np.ndarray  # datetime64[D]
    n_hist: int
    n_design: int
    """Days of the design period (the fleet's ``days`` plus the horizon); its day ``n_design - horizon - 1``
    is the pivot of the ramps. Equal to T unless the history runs on past the design period."""
    horizon: int
    features: FloatArray
    """(6, T): offwork (weekend or bank holiday), weekend, month_end, quarter_end, cos and sin of the year."""


def _calendar(spec: FleetSpec) -> _Calendar:
    days = np.datetime64(spec.start_date, "D") + np.arange(spec.history_days + spec.horizon_days)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    weekend = weekday >= 5
    years = range(int(str(days[0])[:4]), int(str(days[-1])[:4]) + 1)
    bank = np.array(sorted(holidays.country_holidays(spec.country, years=years)), dtype="datetime64[D]")
    offwork = weekend | np.isin(days, bank)
    month = days.astype("datetime64[M]")
    days_left = ((month + np.timedelta64(1, "M")).astype("datetime64[D]") - days).astype(np.int64) - 1
    month_end = np.clip(1.0 - days_left / 3.0, 0.0, None)
    is_quarter_month = (month.astype(np.int64) % 12 + 1) % 3 == 0
    quarter_end = np.where(is_quarter_month, np.clip(1.0 - days_left / 7.0, 0.0, None), 0.0)
    doy = (days - days.astype("datetime64[Y]")).astype(np.int64)
    angle = 2.0 * np.pi * doy / 365.25
    features = np.vstack([offwork, weekend, month_end, quarter_end, np.cos(angle), np.sin(angle)]).astype(float)
    n_design = spec.days + spec.horizon_days
    return _Calendar(
        days=days, n_hist=spec.history_days, n_design=n_design, horizon=spec.horizon_days, features=features
    )


# -------------------------------------------------------------------------------------------- inventory


@dataclass(frozen=True)
class _Inventory:
    frame: pd.DataFrame
    app: np.ndarray  # index into APPLICATIONS
    business: np.ndarray  # bool
    idle: np.ndarray  # bool


def _server_ids(n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"srv-{i:0{width}d}" for i in range(1, n + 1)]


def _choice(rng: np.random.Generator, weights: Sequence[float], n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum())


def _inventory(rng: np.random.Generator, n: int) -> _Inventory:
    apps = list(APPLICATIONS)
    envs = list(ENVIRONMENTS)
    dcs = list(DATACENTERS)
    app = rng.integers(0, len(apps), n)
    env = _choice(rng, list(ENVIRONMENTS.values()), n)
    dc = _choice(rng, [d.share for d in DATACENTERS.values()], n)
    size = _choice(rng, _SIZE_WEIGHTS, n)
    types = [f"{APPLICATIONS[apps[a]].family}.{_SIZES[s]}" for a, s in zip(app, size, strict=True)]
    specs = [INSTANCE_TYPES[t] for t in types]
    factor = np.array([DATACENTERS[dcs[d]].price_factor for d in dc])
    cost = np.round(np.array([s.hourly_usd for s in specs]) * HOURS_PER_MONTH * factor, 2)
    frame = pd.DataFrame(
        {
            "server_id": pd.array(_server_ids(n), dtype=_STR),
            "application": pd.array([apps[a] for a in app], dtype=_STR),
            "environment": pd.array([envs[e] for e in env], dtype=_STR),
            "datacenter": pd.array([dcs[d] for d in dc], dtype=_STR),
            "instance_type": pd.array(types, dtype=_STR),
            "cores": np.array([s.cores for s in specs], dtype=np.int32),
            "memory_gib": np.array([s.memory_gib for s in specs], dtype=float),
            "monthly_cost": cost,
            "availability_zone": pd.array([None] * n, dtype=_STR),
            "tags": pd.array([None] * n, dtype=_STR),
            "cost_source": pd.array(["inventory"] * n, dtype=_STR),
        }
    )[SERVERS.column_names]
    business = np.array([APPLICATIONS[apps[a]].business for a in app], dtype=bool)
    idle_weight = np.array([_IDLE_WEIGHT[envs[e]] for e in env])
    idle = np.zeros(n, dtype=bool)
    n_idle = round(IDLE_SHARE * n)
    if n_idle:
        idle[rng.choice(n, size=n_idle, replace=False, p=idle_weight / idle_weight.sum())] = True
    return _Inventory(frame=frame, app=app, business=business, idle=idle)


# ----------------------------------------------------------------------------------------------- series


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> FloatArray:
    return rng.uniform(bounds[0], bounds[1], n)


def _assign_patterns(rng: np.random.Generator, profile: MetricProfile, idle: np.ndarray) -> np.ndarray:
    """Pattern code (index into PATTERNS) per server."""
    names = list(profile.shares)
    codes = np.array([PATTERNS.index(p) for p in names])
    drawn = codes[_choice(rng, list(profile.shares.values()), len(idle))]
    return np.where(idle, PATTERNS.index("idle"), drawn)


def _ramp(floor: FloatArray, end_level: FloatArray, slope: FloatArray, t_rel: FloatArray) -> FloatArray:
    """A linear ramp reaching ``end_level`` at the last history day, never below ``floor``."""
    return np.maximum(floor[:, None], end_level[:, None] + slope[:, None] * t_rel[None, :])


def _levels(
    rng: np.random.Generator, profile: MetricProfile, patterns: np.ndarray, cal: _Calendar, thr: float
) -> FloatArray:
    """The de-seasonalised level (servers x days) of every series, by pattern."""
    n_days = cal.days.size
    t = np.arange(n_days, dtype=float)
    t_rel = t - (cal.n_design - cal.horizon - 1)  # 0 on the last history day of the design period
    horizon = cal.horizon
    level = np.empty((patterns.size, n_days))
    for code, name in enumerate(PATTERNS):
        rows = np.flatnonzero(patterns == code)
        k = rows.size
        if k == 0:
            continue
        if name == "steady":
            block = np.repeat(_uniform(rng, profile.base, k)[:, None], n_days, axis=1)
        elif name == "seasonal_peak":
            block = np.repeat(rng.uniform(0.5, 0.78, k)[:, None] * thr, n_days, axis=1)
        elif name == "idle":
            block = np.repeat(_uniform(rng, profile.idle, k)[:, None], n_days, axis=1)
        elif name == "growing":
            end = rng.uniform(0.6, 0.98, k) * thr
            block = _ramp(rng.uniform(0.15, 0.35, k) * thr, end, rng.uniform(0.03, 0.12, k), t_rel)
        elif name == "saturating":
            slope = rng.uniform(0.12, 0.5, k)
            crossing = rng.uniform(-60.0, horizon + 30.0, k)  # days after end_date the level reaches thr
            block = _ramp(rng.uniform(0.3, 0.6, k) * thr, thr - slope * crossing, slope, t_rel)
        elif name == "sawtooth":
            block = _sawtooth(rng, k, thr, t_rel)
        else:  # level_shift
            block = _level_shifts(rng, profile, k, n_days, cal.n_design)
        level[rows] = block
    return level


def _sawtooth(rng: np.random.Generator, k: int, thr: float, t_rel: FloatArray) -> FloatArray:
    """Disk filling linearly from a floor to a peak, cleaned up every ``period`` days; the floor creeps up."""
    floor = rng.uniform(10.0, 35.0, k)
    peak = rng.uniform(0.6, 1.12, k) * thr
    period = rng.integers(21, 121, k).astype(float)
    phase = rng.uniform(0.0, 1.0, k) * period
    creep = rng.uniform(0.0, 0.01, k)
    fill = np.mod(t_rel[None, :] + phase[:, None], period[:, None]) / (period[:, None] - 1.0)
    return floor[:, None] + creep[:, None] * t_rel[None, :] + (peak - floor)[:, None] * fill


def _level_shifts(rng: np.random.Generator, profile: MetricProfile, k: int, n_days: int, n_design: int) -> FloatArray:
    """A steady level that jumps by 6 to 18 points, up or down, 1 to 3 times within the design period (kept
    within 20..95)."""
    level = np.repeat(_uniform(rng, profile.base, k)[:, None], n_days, axis=1)
    n_shifts = rng.integers(1, 4, k)
    day = np.arange(n_days)
    for i in range(3):
        when = rng.integers(n_design // 10, n_design, k)
        size = rng.uniform(6.0, 18.0, k) * rng.choice([-1.0, 1.0], k) * (i < n_shifts)
        level += size[:, None] * (day[None, :] >= when[:, None])
    return np.clip(level, 20.0, 95.0, out=level)


def _seasonal(
    rng: np.random.Generator, profile: MetricProfile, patterns: np.ndarray, inv: _Inventory, cal: _Calendar
) -> FloatArray:
    """The relative seasonal factor (servers x days) = amplitudes (servers x features) @ calendar features."""
    n = patterns.size
    seasonal_peak = patterns == PATTERNS.index("seasonal_peak")
    damp = np.where(inv.idle, _IDLE_DAMPING, 1.0)
    weekly = _uniform(rng, profile.weekly, n) * damp
    month_end = _uniform(rng, profile.month_end, n) * np.where(inv.business, 1.0, 0.3) * damp
    quarter_end = _uniform(rng, profile.quarter_end, n) * np.where(seasonal_peak, 1.0, 0.15) * damp
    yearly = _uniform(rng, profile.yearly, n) * np.where(seasonal_peak, 1.5, 1.0) * damp
    peak_doy = np.array([list(APPLICATIONS.values())[a].yearly_peak_doy for a in inv.app]) + rng.normal(0, 15, n)
    peak_angle = 2.0 * np.pi * peak_doy / 365.25
    amplitudes = np.column_stack(
        [
            -weekly * inv.business,  # offwork: weekends and bank holidays, business apps
            0.3 * weekly * ~inv.business,  # weekend: consumer apps a little busier
            month_end,
            quarter_end,
            yearly * np.cos(peak_angle),  # cos(a - p) = cos a cos p + sin a sin p
            yearly * np.sin(peak_angle),
        ]
    )
    return amplitudes @ cal.features


@dataclass(frozen=True)
class _MetricSeries:
    patterns: np.ndarray
    """Pattern code per server."""
    true: FloatArray
    """servers x days, clipped 0..100, rounded to 0.01."""
    expected: FloatArray
    """The same without the day-to-day noise, clipped 0..100."""
    noise_sd: FloatArray
    """Per server."""


def _metric_series(rng: np.random.Generator, metric: str, inv: _Inventory, cal: _Calendar, thr: float) -> _MetricSeries:
    """Planted patterns, the true series and its noise-free part, of one metric."""
    profile = METRIC_PROFILES[metric]
    patterns = _assign_patterns(rng, profile, inv.idle)
    level = _levels(rng, profile, patterns, cal, thr)
    seasonal = _seasonal(rng, profile, patterns, inv, cal)
    noise_sd = _uniform(rng, profile.noise, patterns.size) * np.where(inv.idle, _IDLE_DAMPING, 1.0)
    expected = level * (1.0 + seasonal)
    true = expected + _by_day(rng.standard_normal((level.shape[1], level.shape[0]))) * noise_sd[:, None]
    return _MetricSeries(patterns, np.round(np.clip(true, 0.0, 100.0), 2), np.clip(expected, 0.0, 100.0), noise_sd)


def _by_day(draws: FloatArray) -> FloatArray:
    """Draws made day by day (days x servers, a block of one per server each day) as servers x days.

    A longer history draws more blocks after the same ones, so the values of a day do not depend on how many
    days follow it."""
    return draws.T


def _with_spikes(rng: np.random.Generator, history: FloatArray, rate: float, idle: np.ndarray) -> FloatArray:
    """Add occasional upward spikes of 15 to 45 points (incidents) to non-idle series (drawn day by day)."""
    n_s, n_d = history.shape
    u = rng.random((n_d, 2, n_s))
    hit = (_by_day(u[:, 0]) < rate) & ~idle[:, None]
    size = 15.0 + 30.0 * _by_day(u[:, 1])
    return np.round(np.clip(history + np.where(hit, size, 0.0), 0.0, 100.0), 2)


# ---------------------------------------------------------------------------------------- ground truth


def breach_index(history_tail: FloatArray, future: FloatArray, threshold: float) -> FloatArray:
    """Index in the horizon of the breach date per row (NaN when none), by the rule in the module docstring.

    ``history_tail`` holds the last ``BREACH_RUN_DAYS`` true history days (rows x 3), ``future`` the true
    horizon values (rows x H).
    """
    already = (history_tail >= threshold).all(axis=1)
    over = future >= threshold
    run = min(BREACH_RUN_DAYS, over.shape[1])
    sustained = over[:, : over.shape[1] - run + 1].copy()
    for k in range(1, run):
        sustained &= over[:, k : over.shape[1] - run + 1 + k]
    first = np.where(sustained.any(axis=1), sustained.argmax(axis=1), np.nan)
    return np.where(already, 0.0, first)


# ---------------------------------------------------------------------------------------------- frames


def _str_take(labels: Sequence[str], codes: np.ndarray, repeat: int = 1) -> pd.api.extensions.ExtensionArray:
    """A pandas ``str`` array of ``labels[codes]``, each repeated ``repeat`` times, built as Arrow buffers
    without a Python string per row."""
    encoded = [label.encode() for label in labels]
    codes = np.asarray(codes, dtype=np.int64)
    n = codes.size * repeat
    width = len(encoded[0]) if encoded else 0
    if width and all(len(b) == width for b in encoded):  # fixed width: gather bytes, offsets are a range
        table = np.frombuffer(b"".join(encoded), dtype=np.uint8).reshape(-1, width)
        data = np.take(table, codes, axis=0)
        if repeat > 1:
            data = np.repeat(data, repeat, axis=0)
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
        taken = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    else:
        taken = pa.array(list(labels), type=pa.large_string()).take(np.repeat(codes, repeat))
    return pd.array(taken, dtype=_STR)


def _long_frame(
    server_ids: Sequence[str], values: FloatArray, days: np.ndarray, keep: np.ndarray | None = None
) -> pd.DataFrame:
    """server_id, metric, dt, p95 of ``values`` (servers x metrics x days) where ``keep`` is True."""
    _, n_m, n_d = values.shape
    flat = np.flatnonzero(keep.ravel()) if keep is not None else np.arange(values.size)
    return pd.DataFrame(
        {
            "server_id": _str_take(server_ids, flat // (n_m * n_d)),
            "metric": _str_take(METRICS, flat // n_d % n_m),
            "dt": days.astype("datetime64[us]")[flat % n_d],
            "p95": values.ravel()[flat],
        }
    )


def _ground_truth(
    server_ids: Sequence[str],
    patterns: np.ndarray,
    true: FloatArray,
    cal: _Calendar,
    spec: FleetSpec,
    idle: np.ndarray,
) -> pd.DataFrame:
    """GROUND_TRUTH rows (server x metric) from the true series (servers x metrics x days)."""
    n_s, n_m, _ = true.shape
    thr = np.array([spec.thresholds[m] for m in METRICS])
    index = np.column_stack(
        [
            breach_index(true[:, m, cal.n_hist - BREACH_RUN_DAYS : cal.n_hist], true[:, m, cal.n_hist :], thr[m])
            for m in range(n_m)
        ]
    ).ravel()
    will = ~np.isnan(index)
    horizon_days = cal.days[cal.n_hist :].astype("datetime64[us]")
    breach = np.where(will, horizon_days[np.nan_to_num(index).astype(np.int64)], np.datetime64("NaT", "us"))
    codes = np.arange(n_s * n_m)
    return pd.DataFrame(
        {
            "server_id": _str_take(server_ids, codes // n_m),
            "metric": _str_take(METRICS, codes % n_m),
            "pattern": _str_take(PATTERNS, patterns.ravel()),
            "threshold": np.tile(thr, n_s),
            "will_breach": will,
            "breach_date": breach,
            "is_idle": np.repeat(idle, n_m),
        }
    )[GROUND_TRUTH.column_names]


# ------------------------------------------------------------------------------------------------- API


def generate_fleet(spec: FleetSpec) -> Fleet:
    """Generate a fleet deterministically from ``spec`` (same spec, identical frames)."""
    cal = _calendar(spec)
    inv = _inventory(np.random.default_rng([spec.seed, 0]), spec.servers)
    patterns = np.empty((spec.servers, len(METRICS)), dtype=np.int64)
    true = np.empty((spec.servers, len(METRICS), cal.days.size))
    expected = np.empty((spec.servers, len(METRICS), cal.days.size - cal.n_hist))
    noise_sd = np.empty((spec.servers, len(METRICS)))
    observed = np.empty((spec.servers, len(METRICS), cal.n_hist))
    for m, metric in enumerate(METRICS):
        rng = np.random.default_rng([spec.seed, 1, m])
        series = _metric_series(rng, metric, inv, cal, spec.thresholds[metric])
        patterns[:, m], true[:, m], noise_sd[:, m] = series.patterns, series.true, series.noise_sd
        expected[:, m] = series.expected[:, cal.n_hist :]
        rate = METRIC_PROFILES[metric].spike_rate
        spikes = np.random.default_rng([spec.seed, 3, m])
        observed[:, m] = _with_spikes(spikes, true[:, m, : cal.n_hist], rate, inv.idle)
    gaps = np.random.default_rng([spec.seed, 2]).random((cal.n_hist, spec.servers))
    present = (_by_day(gaps) >= spec.missing_rate)[:, None, :]
    keep = np.broadcast_to(present, observed.shape)
    ids = inv.frame["server_id"].tolist()
    return Fleet(
        servers=inv.frame,
        daily=_long_frame(ids, observed, cal.days[: cal.n_hist], keep),
        future=_long_frame(ids, true[:, :, cal.n_hist :], cal.days[cal.n_hist :]),
        ground_truth=_ground_truth(ids, patterns, true, cal, spec, inv.idle),
        expected=_long_frame(ids, expected, cal.days[cal.n_hist :]).assign(
            noise_sd=np.repeat(noise_sd.ravel(), expected.shape[2])
        ),
    )


def _utc_timestamps(us: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """A ``datetime64[us, UTC]`` array from microseconds since the epoch."""
    return pa.array(us, type=pa.timestamp("us", tz="UTC")).to_pandas().array


def daily_as_raw_samples(daily: pd.DataFrame) -> pd.DataFrame:
    """A daily P95 export as monitoring tools produce it: one sample per day at 00:00 UTC, value = p95."""
    dt = daily["dt"].to_numpy().astype("datetime64[us]")
    return pd.DataFrame(
        {
            "timestamp": _utc_timestamps(dt.astype(np.int64)),
            "server_id": daily["server_id"].astype(_STR).array,
            "metric": daily["metric"].astype(_STR).array,
            "value": daily["p95"].to_numpy(dtype=float),
            "dt": dt,
        },
        copy=False,
    )[[*RAW_SAMPLES.column_names, "dt"]]


def _diurnal(fleet: Fleet, server_idx: np.ndarray, times_h: FloatArray) -> tuple[FloatArray, np.ndarray]:
    """Distinct diurnal shapes (0..1, one per application and datacenter) and each row's shape index."""
    apps = fleet.servers["application"].to_numpy(dtype=object)
    dcs = fleet.servers["datacenter"].to_numpy(dtype=object)
    peak_utc = np.array(
        [
            (APPLICATIONS[a].peak_hour if a in APPLICATIONS else 14.0)
            - (DATACENTERS[d].utc_offset if d in DATACENTERS else 0.0)
            for a, d in zip(apps, dcs, strict=True)
        ]
    )
    distinct, per_server = np.unique(peak_utc, return_inverse=True)
    shapes = 0.5 * (1.0 + np.cos(2.0 * np.pi * (times_h[None, :] - distinct[:, None]) / 24.0))
    return shapes.astype(np.float32), per_server[server_idx]


def _intraday(
    shapes: FloatArray,
    shape_idx: np.ndarray,
    metric_idx: np.ndarray,
    p95: FloatArray,
    rng: np.random.Generator,
) -> FloatArray:
    """Samples (series x samples of the day) whose 95th percentile is ``p95``, clipped to 0..100."""
    amplitude = np.array([METRIC_PROFILES[m].intraday_amplitude for m in METRICS], dtype=np.float32)
    noise = np.array([METRIC_PROFILES[m].intraday_noise for m in METRICS], dtype=np.float32)
    z = rng.standard_normal((p95.size, shapes.shape[1]), dtype=np.float32)
    z *= noise[metric_idx][:, None]
    z += shapes[shape_idx] * amplitude[metric_idx][:, None]
    # The two order statistics numpy's linear 95th percentile interpolates between are set to p95 itself,
    # so the percentile is exact by any interpolation method, and clipping the samples above cannot move it.
    pos = 0.95 * (z.shape[1] - 1)
    ranks = np.argpartition(z, (int(pos), int(np.ceil(pos))), axis=1)[:, [int(pos), int(np.ceil(pos))]]
    series = np.arange(p95.size)[:, None]
    around = z[series, ranks]
    z -= around[:, :1] + (pos - int(pos)) * (around[:, 1:] - around[:, :1])  # the 95th percentile of z
    values = np.multiply(z, p95[:, None], dtype=np.float64)
    values += p95[:, None]
    values[series, ranks] = p95[:, None]
    return np.clip(values, 0.0, 100.0, out=values)


def generate_raw_samples(
    fleet: Fleet, days: Sequence[date], interval_minutes: int = 5, seed: int | None = None
) -> pd.DataFrame:
    """Intraday samples (RAW_SAMPLES columns plus dt) for observed ``days`` of ``fleet``.

    Each (server, metric, day) present in ``fleet.daily`` gets ``1440 / interval_minutes`` samples: a diurnal
    shape peaking in the application's local busy hour, plus noise, scaled around the daily p95 and clipped
    to 0..100. The two samples at the ranks the 95th percentile falls between (linear interpolation, ranks
    floor and ceil of 0.95 * (n - 1)) equal p95, so the day's 95th percentile is exactly the daily p95, by
    any interpolation method. Missing days stay missing. Rows are
    ordered by day, then as in ``fleet.daily``, then by time. Deterministic: the samples of a day depend only
    on ``seed`` (``RAW_SEED`` when None) and that day, not on the other days asked for.
    """
    if isinstance(interval_minutes, bool) or not isinstance(interval_minutes, int) or interval_minutes < 1:
        raise InputError(f"interval_minutes must be a positive integer, got {interval_minutes!r}")
    if 1440 % interval_minutes:
        raise InputError(f"interval_minutes must divide a day (1440 minutes), got {interval_minutes}")
    wanted = np.unique(np.array([np.datetime64(d, "D") for d in days], dtype="datetime64[D]"))
    observed = fleet.daily["dt"].to_numpy().astype("datetime64[D]")
    unknown = np.setdiff1d(wanted, observed)
    if unknown.size:
        raise InputError(f"days not in the fleet's history: {', '.join(str(d) for d in unknown[:5])}")
    chosen = np.isin(observed, wanted)
    rows = fleet.daily[chosen]
    row_day = observed[chosen]
    server_idx = pd.Index(fleet.servers["server_id"]).get_indexer(pd.Index(rows["server_id"]))
    metric_idx = pd.Index(METRICS).get_indexer(pd.Index(rows["metric"]))
    if (server_idx < 0).any() or (metric_idx < 0).any():
        raise InputError("fleet.daily names servers or metrics that fleet.servers and METRICS do not")
    per_day = 1440 // interval_minutes
    offsets_us = np.arange(per_day, dtype=np.int64) * (interval_minutes * 60_000_000)
    shapes, shape_idx = _diurnal(fleet, server_idx, offsets_us / 3.6e9)
    p95 = rows["p95"].to_numpy(dtype=float)
    order = np.argsort(row_day, kind="stable")  # by day, then in fleet.daily's order
    parts = []
    for day in wanted:
        sel = order[row_day[order] == day]
        rng = np.random.default_rng([RAW_SEED if seed is None else seed, int(day.astype(np.int64))])
        parts.append(_intraday(shapes, shape_idx[sel], metric_idx[sel], p95[sel], rng).ravel())
    day_us = row_day[order].astype("datetime64[us]").astype(np.int64)
    stamps = (day_us[:, None] + offsets_us[None, :]).ravel()
    frame = {
        "timestamp": _utc_timestamps(stamps),
        "server_id": _str_take(fleet.servers["server_id"].tolist(), server_idx[order], per_day),
        "metric": _str_take(METRICS, metric_idx[order], per_day),
        "value": parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0),
        "dt": np.repeat(day_us, per_day).view("datetime64[us]"),
    }
    return pd.DataFrame(frame, copy=False)
