"""Model features from the daily P95 series: lags, trailing rolling statistics and calendar flags.

A pure function (DataFrame in, DataFrame out) for the forecasting models. Every feature of day ``d`` uses only
values observed before ``d`` (no leakage), and lags and windows count calendar days, so a missing day is a
missing lag rather than a shift of the series.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import holidays
import numpy as np
import pandas as pd

from capacity_forecaster.errors import InputError

SERIES_KEY: Final[list[str]] = ["server_id", "metric"]
DEFAULT_LAGS: Final[tuple[int, ...]] = (1, 7, 14, 28)
DEFAULT_WINDOWS: Final[tuple[int, ...]] = (7, 28)
PERIOD_END_DAYS: Final[int] = 3
"""The last N days of a month (or quarter) count as its end, when batch jobs and reports peak."""


def build_features(
    daily: pd.DataFrame,
    *,
    lags: Sequence[int] = DEFAULT_LAGS,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    country: str | None = "US",
) -> pd.DataFrame:
    """Add features to ``daily`` (server_id, metric, dt, p95 and any other columns, kept as they are).

    - ``lag_<k>``: the series' p95 k calendar days earlier (NaN when that day is missing);
    - ``roll_mean_<w>``, ``roll_std_<w>``, ``roll_max_<w>``: over the w calendar days before ``dt`` (the day
      itself excluded), NaN when fewer than half of those days are observed;
    - ``day_of_week`` (0 = Monday), ``is_weekend``, ``day_of_month``, ``month``, ``is_month_end`` and
      ``is_quarter_end`` (the last 3 days), ``is_holiday`` (public holidays of ``country``; all False when None).

    Rows come back sorted by server_id, metric, dt.
    """
    missing = [c for c in [*SERIES_KEY, "dt", "p95"] if c not in daily.columns]
    if missing:
        raise InputError(f"build_features needs columns {', '.join(missing)}")
    if any(k < 1 for k in lags) or any(w < 2 for w in windows):
        raise InputError("lags must be at least 1 day and windows at least 2 days")
    if daily.duplicated([*SERIES_KEY, "dt"]).any():
        raise InputError("build_features needs one row per server, metric and day")
    out = daily.sort_values([*SERIES_KEY, "dt"], ignore_index=True)
    dt = pd.to_datetime(out["dt"]).astype("datetime64[ns]")
    out["dt"] = dt
    base = out[[*SERIES_KEY, "dt", "p95"]]
    for k in lags:
        shifted = base.assign(dt=base["dt"] + pd.Timedelta(days=k)).rename(columns={"p95": f"lag_{k}"})
        out = out.merge(shifted, on=[*SERIES_KEY, "dt"], how="left")
    grouped = base.set_index("dt").groupby(SERIES_KEY, sort=False)["p95"]
    for w in windows:
        rolling = grouped.rolling(f"{w}D", closed="left", min_periods=(w + 1) // 2)
        stats = pd.DataFrame({"mean": rolling.mean(), "std": rolling.std(), "max": rolling.max()}).reset_index()
        stats.columns = [*SERIES_KEY, "dt", f"roll_mean_{w}", f"roll_std_{w}", f"roll_max_{w}"]
        out = out.merge(stats, on=[*SERIES_KEY, "dt"], how="left")
    return _calendar(out, country)


def _calendar(out: pd.DataFrame, country: str | None) -> pd.DataFrame:
    dt = out["dt"].dt
    days_left = (dt.days_in_month - dt.day).to_numpy()
    out["day_of_week"] = dt.day_of_week.astype("int8")
    out["is_weekend"] = dt.day_of_week >= 5
    out["day_of_month"] = dt.day.astype("int8")
    out["month"] = dt.month.astype("int8")
    out["is_month_end"] = days_left < PERIOD_END_DAYS
    out["is_quarter_end"] = (days_left < PERIOD_END_DAYS) & np.isin(dt.month.to_numpy(), [3, 6, 9, 12])
    if country is None or out.empty:
        out["is_holiday"] = False
    else:
        years = range(int(dt.year.min()), int(dt.year.max()) + 1)
        try:
            calendar = holidays.country_holidays(country, years=years)
        except NotImplementedError:
            raise InputError(f"no public holiday calendar for country {country!r}") from None
        out["is_holiday"] = dt.date.isin(set(calendar))
    return out
