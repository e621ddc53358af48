"""A global RandomForest for one metric's series: direct multi-horizon forecasts relative to the recent level.

One training row is (series, origin ``o``, step ``h``): features known at the origin plus the calendar of the
target day ``o + h``, and the target ``y[o + h] - level``, where ``level`` is the mean of the 28 days up to
the origin. Predicting the change from a recent level (not the value itself) lets trees, which cannot
extrapolate, follow series that trend; having ``h`` as a feature makes one model for every step (direct,
not recursive, so errors do not feed back). Rows are sampled at random (a seed) from every valid
(series, origin, step) up to ``max_rows``: the fit's cost follows that cap, not the size of the fleet.

Features: the level; the last 7 days, the same weekday in the last observed week and the same day 52 weeks
earlier, each minus the level; the 7- and 91-day means and the previous 28 days' mean minus the level; the
28-day standard deviation; the step; and the target day's weekday, day of month, days to month end,
month-end, quarter-end and bank-holiday flags and day of the year (as cosine and sine).

Trees are light (35 trees, at least 5 rows a leaf, half the features per split, 35% of the rows per tree): on
benchmarks/bench_forecast.py's six sources (2026-12-02) they cost 0.52 to 0.55 of the 50 trees on half the rows
each, the forest alone 0.7% better to 3.4% worse in MAE (better on the real Bitbrains traces) and the champion
unchanged on four sources, 0.1% worse and 0.6% better on the other two. A third of the features per split or 10
rows a leaf lost more accuracy for less saving, and so did half the rows a fit (``max_rows``, docs/forecasting.md).
P50 is the forest's mean; P10 and P90 are the 10th and 90th percentiles of the single trees' predictions.
That spread measures how much the trees disagree, which is narrower than the full predictive uncertainty (a
leaf averages at least 5 targets): it is cheap, needs no second model, and its coverage is measured by the
backtest like every other model's, so the champion choice can see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from capacity_forecaster.forecasting.baselines import (
    LOWER_Q,
    UPPER_Q,
    Answer,
    FloatArray,
    History,
    Scope,
    as_series,
    check_horizon,
    make_forecast,
    register_model,
)
from capacity_forecaster.forecasting.calendar_features import (
    check_country,
    days_to_month_end,
    holiday_flag,
    month_end_flag,
    quarter_end_flag,
)
from capacity_forecaster.forecasting.grain import StepUnit

LEVEL_DAYS = 28
YEAR_LAG = 364  # 52 weeks: the same weekday a year earlier
FEATURES: tuple[str, ...] = (
    "level",
    *(f"lag{j}" for j in range(7)),
    "same_weekday",
    "year_ago",
    "mean7",
    "mean91",
    "mean_prev28",
    "std28",
    "step",
    "weekday",
    "day_of_month",
    "days_to_month_end",
    "month_end",
    "quarter_end",
    "holiday",
    "year_cos",
    "year_sin",
)
REFERENCE_LAST_DAY = np.datetime64("2026-01-04", "D")

HOURLY_LEVEL = 168
"""Hours in the level window of the hourly grain (a week, so every hour of the day and week weighs the same)."""
HOURLY_FEATURES: tuple[str, ...] = (
    "level",
    *(f"lag{j}" for j in range(6)),
    "same_hour",
    "same_hour_week",
    "mean24",
    "mean_prev168",
    "std168",
    "step",
    "hour",
    "weekday",
    "weekend",
    "holiday",
    "month_end",
    "quarter_end",
)
"""Hourly grain: the last 6 hours, the same hour in the last observed day and week, the last day's mean and the
previous week's mean (minus the level), the week's spread, the step, and the target hour's hour of day, weekday,
weekend, bank-holiday, month-end and quarter-end flags."""


@dataclass(frozen=True)
class RandomForestModel:
    """Global RandomForest (scikit-learn). ``max_rows``: cap on the training rows of one fit."""

    country: str = "US"
    max_rows: int = 20_000
    n_estimators: int = 35
    min_samples_leaf: int = 5
    max_features: float = 0.5
    max_samples: float = 0.35
    seed: int = 0
    n_jobs: int = 1
    grain: str = "daily"
    """``hourly``: steps are hours, with :data:`HOURLY_FEATURES` and a :data:`HOURLY_LEVEL`-hour level."""
    name: str = "random_forest"
    scope: ClassVar[Scope] = "fleet"
    """Fitted once across a metric's series at each origin (the engine does it before the workers)."""

    def __post_init__(self) -> None:
        check_country(self.country)
        if self.grain not in ("daily", "hourly"):
            raise ValueError(f"grain must be daily or hourly, got {self.grain!r}")
        if self.max_rows < 100:
            raise ValueError(f"max_rows must be at least 100, got {self.max_rows}")

    def params(self) -> dict[str, object]:
        return asdict(self)

    def fit_predict(self, histories: Sequence[History], horizon: int) -> list[Answer]:
        """One fit on every history (a fleet of one works too); a history without a stamp is taken to end on
        :data:`REFERENCE_LAST_DAY` (its last hour when hourly)."""
        from sklearn.ensemble import RandomForestRegressor

        check_horizon(horizon)
        hourly = self.grain == "hourly"
        window, steps_name = (HOURLY_LEVEL, "hours") if hourly else (LEVEL_DAYS, "days")
        unit: StepUnit = "h" if hourly else "D"
        reference = np.datetime64(REFERENCE_LAST_DAY, "h") + np.timedelta64(23, "h") if hourly else REFERENCE_LAST_DAY
        panel = _Panel(
            [as_series(y) for y, _ in histories],
            [np.datetime64(reference if last is None else last, unit) for _, last in histories],
            window,
        )
        features = panel.hourly_features if hourly else panel.features
        usable = panel.lengths >= window
        rng = np.random.default_rng(self.seed)
        rows = panel.sample_rows(rng, horizon, self.max_rows)
        if rows is None:
            why = f"random_forest: no series has {window + 1} {steps_name} to learn from"
            return [why] * len(histories)
        series, origin, step = rows
        x = features(series, origin, step, self.country)
        target = panel.values(series, origin + step) - panel.level(series, origin)
        forest = RandomForestRegressor(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            max_samples=self.max_samples,
            random_state=self.seed,
            n_jobs=self.n_jobs,
        )
        forest.fit(x, target)

        ids = np.flatnonzero(usable)
        p_series = np.repeat(ids, horizon)
        p_origin = panel.lengths[p_series] - 1
        p_step = np.tile(np.arange(1, horizon + 1), ids.size)
        px = features(p_series, p_origin, p_step, self.country)
        per_tree = np.stack([tree.predict(px) for tree in forest.estimators_])
        level = panel.level(p_series, p_origin)
        point = per_tree.mean(axis=0) + level
        low = np.quantile(per_tree, LOWER_Q, axis=0) + level
        high = np.quantile(per_tree, UPPER_Q, axis=0) + level
        out: list[Answer] = [f"random_forest: {window} {steps_name} of history needed, got {n}" for n in panel.lengths]
        for k, i in enumerate(ids):
            part = slice(k * horizon, (k + 1) * horizon)
            p = point[part]
            out[i] = make_forecast(p, np.minimum(low[part] - p, 0.0), np.maximum(high[part] - p, 0.0))
        return out


class _Panel:
    """Series laid end to end in one array, with running sums for window means."""

    def __init__(self, ys: list[FloatArray], last_days: list[np.datetime64], level_window: int = LEVEL_DAYS) -> None:
        self.level_window = level_window
        self.lengths = np.array([y.size for y in ys], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.y = np.concatenate(ys) if ys else np.zeros(0)
        self.sums = np.concatenate([[0.0], np.cumsum(self.y)])
        self.squares = np.concatenate([[0.0], np.cumsum(self.y * self.y)])
        unit = np.datetime_data(last_days[0].dtype)[0] if last_days else "D"
        self.last_days = np.array(last_days, dtype=f"datetime64[{unit}]")

    def values(self, series: np.ndarray, index: np.ndarray) -> FloatArray:
        """``y[index]`` of each series; NaN where the index is negative."""
        ok = index >= 0
        return np.where(ok, self.y[self.starts[series] + np.maximum(index, 0)], np.nan)

    def window_mean(self, series: np.ndarray, end: np.ndarray, days: int) -> FloatArray:
        """Mean of the ``days`` values ending at ``end`` (inclusive); shorter at the start; NaN if none."""
        first = np.maximum(end - days + 1, 0)
        count = end - first + 1
        base = self.starts[series]
        total = self.sums[base + np.maximum(end, -1) + 1] - self.sums[base + first]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def level(self, series: np.ndarray, origin: np.ndarray) -> FloatArray:
        return self.window_mean(series, origin, self.level_window)

    def window_std(self, series: np.ndarray, end: np.ndarray, days: int) -> FloatArray:
        first = np.maximum(end - days + 1, 0)
        count = np.maximum(end - first + 1, 1)
        base = self.starts[series]
        mean = (self.sums[base + end + 1] - self.sums[base + first]) / count
        square = (self.squares[base + end + 1] - self.squares[base + first]) / count
        return np.sqrt(np.maximum(square - mean * mean, 0.0))

    def sample_rows(
        self, rng: np.random.Generator, horizon: int, max_rows: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Random (series, origin, step) with a full level window at the origin and the target observed."""
        # Origins o = level_window - 1 .. n - 2 of each series; the step may not pass the last value.
        first = self.level_window - 1
        per_series = np.maximum(self.lengths - self.level_window, 0)
        total = int(per_series.sum())
        if total == 0:
            return None
        pick = rng.integers(0, total, size=min(max_rows, total * horizon))
        series = np.searchsorted(np.cumsum(per_series), pick, side="right")
        origin = first + pick - (np.cumsum(per_series) - per_series)[series]
        room = np.minimum(self.lengths[series] - 1 - origin, horizon)
        step = 1 + np.floor(rng.random(pick.size) * room).astype(np.int64)
        return series, origin, step

    def features(self, series: np.ndarray, origin: np.ndarray, step: np.ndarray, country: str) -> FloatArray:
        level = self.level(series, origin)
        lags = [self.values(series, origin - j) - level for j in range(7)]
        weeks_back = 7 * np.ceil(step / 7).astype(np.int64)
        same_weekday = self.values(series, origin + step - weeks_back) - level
        year_ago = self.values(series, origin + step - YEAR_LAG) - level
        mean_prev = np.where(origin >= 2 * LEVEL_DAYS - 1, self.window_mean(series, origin - LEVEL_DAYS, 28), np.nan)
        target_day = self.last_days[series] - (self.lengths[series] - 1 - origin) + step
        day_of_year = (target_day - target_day.astype("datetime64[Y]")).astype(np.int64)
        angle = 2 * np.pi * day_of_year / 365.25
        weekday = (target_day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        day_of_month = (target_day - target_day.astype("datetime64[M]")).astype(np.int64) + 1
        columns = [
            level,
            *lags,
            same_weekday,
            year_ago,
            self.window_mean(series, origin, 7) - level,
            self.window_mean(series, origin, 91) - level,
            mean_prev - level,
            self.window_std(series, origin, LEVEL_DAYS),
            step.astype(np.float64),
            weekday,
            day_of_month,
            days_to_month_end(target_day),
            month_end_flag(target_day),
            quarter_end_flag(target_day),
            holiday_flag(target_day, country),
            np.cos(angle),
            np.sin(angle),
        ]
        return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])

    def hourly_features(self, series: np.ndarray, origin: np.ndarray, step: np.ndarray, country: str) -> FloatArray:
        """:data:`HOURLY_FEATURES` of each (series, origin, step); the panel's stamps are hours."""
        window = self.level_window
        level = self.level(series, origin)
        lags = [self.values(series, origin - j) - level for j in range(6)]
        same_hour = self.values(series, origin + step - 24 * np.ceil(step / 24).astype(np.int64)) - level
        same_hour_week = self.values(series, origin + step - 168 * np.ceil(step / 168).astype(np.int64)) - level
        mean_prev = np.where(origin >= 2 * window - 1, self.window_mean(series, origin - window, window), np.nan)
        target = self.last_days[series] - (self.lengths[series] - 1 - origin) + step
        day = target.astype("datetime64[D]")
        weekday = (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        columns = [
            level,
            *lags,
            same_hour,
            same_hour_week,
            self.window_mean(series, origin, 24) - level,
            mean_prev - level,
            self.window_std(series, origin, window),
            step.astype(np.float64),
            target.astype(np.int64) % 24,
            weekday,
            weekday >= 5,
            holiday_flag(day, country),
            month_end_flag(day),
            quarter_end_flag(day),
        ]
        return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])


register_model(
    "random_forest",
    RandomForestModel,
    settings={"country": "country", "max_rows": "rf_max_rows", "seed": "seed", "n_jobs": "n_jobs"},
    grains={"hourly": {"grain": "hourly"}},
)
