"""Prophet on one daily series: weekly and yearly seasonality, bank holidays, month-end and quarter-end effects.

The fit is Prophet's MAP estimate (L-BFGS through cmdstanpy; MCMC costs hundreds of times more and is not for a
fleet). Only the future is predicted, with ``uncertainty_samples`` simulated paths (100 by default) whose 10th
and 90th percentiles are P10 and P90: Prophet's band from trend changes plus observation noise. Forecasts and
bands are clipped to the metric range. Yearly seasonality is switched on only with over two years of history (less
cannot tell a yearly wave from a trend).

History: a daily fit sees only the last ``history_days`` days (400 by default; 0 fits everything). Most of a
fit's cost is fixed overhead per row of history (Prophet's pandas feature building, cmdstanpy writing the data
as JSON, L-BFGS over every row), so 400 days instead of three years costs about half as much, and on the
backtest of a generated fleet (series' own history, never the held-out days) it was more accurate at 28 days
and about as accurate at 90 (the recent trend weighs more than old years). The price: 400 days are too few for
a yearly wave (see ``yearly_min_days``); set ``history_days`` above that, or 0, where yearly peaks matter.
Bank holidays come from a table built once per country and year range (``prophet.make_holidays``), not from
``add_country_holidays``, which rebuilds fifty years of holidays on every fit and prediction.

With ``grain="hourly"`` the values are hours: daily seasonality, weekly seasonality from two weeks of history, no
yearly wave; holidays and the month- and quarter-end flags go by each hour's day.

Logs: cmdstanpy prints two INFO lines per fit and resets its logger's level on the first fit, and importing
prophet without plotly logs an ERROR; :func:`silence_prophet_logs` disables those loggers (which holds) and runs
before every import of prophet, so it covers joblib worker processes too (they import this module to unpickle
the model).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from capacity_forecaster.forecasting.baselines import (
    FloatArray,
    QuantileForecast,
    SeriesModel,
    as_series,
    check_horizon,
    make_forecast,
    register_model,
)
from capacity_forecaster.forecasting.calendar_features import (
    check_country,
    month_end_flag,
    quarter_end_flag,
    stamp_range,
)

_QUIET_LOGGERS = ("cmdstanpy", "prophet.plot")
MIN_HISTORY_DAYS = 56
"""The shortest ``history_days`` cap (eight weeks: enough for a weekly pattern and a trend)."""
REFERENCE_LAST_DAY = np.datetime64("2026-01-04", "D")
"""Dates used by :meth:`ProphetModel.forecast` when the caller gives none (a Sunday; only for tests and tools)."""


def silence_prophet_logs() -> None:
    """Disable the cmdstanpy and prophet.plot loggers and keep prophet's own at ERROR (its warnings are advice
    for a single interactive fit, repeated for every series of a fleet)."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).disabled = True
    logging.getLogger("prophet").setLevel(logging.ERROR)


def _prophet_class() -> Any:
    silence_prophet_logs()
    from prophet import Prophet

    silence_prophet_logs()
    return Prophet


@dataclass(frozen=True)
class ProphetModel(SeriesModel):
    """Prophet with the fleet's calendar. ``country``: ISO code for the bank holidays (holidays package)."""

    country: str = "US"
    uncertainty_samples: int = 100
    interval_width: float = 0.8
    yearly_min_days: int = 730
    changepoint_prior_scale: float = 0.05
    seed: int = 0
    grain: str = "daily"
    """``hourly``: one value an hour, with daily seasonality (and weekly from two weeks of history), no yearly."""
    history_days: int = 400
    """Days of the most recent history a daily fit sees (0: all); hourly fits always see every hour."""
    name: str = "prophet"

    def __post_init__(self) -> None:
        check_country(self.country)
        if self.grain not in ("daily", "hourly"):
            raise ValueError(f"grain must be daily or hourly, got {self.grain!r}")
        if self.uncertainty_samples < 10:
            raise ValueError(f"uncertainty_samples must be at least 10, got {self.uncertainty_samples}")
        if self.history_days != 0 and self.history_days < MIN_HISTORY_DAYS:
            raise ValueError(f"history_days must be 0 (all) or at least {MIN_HISTORY_DAYS}, got {self.history_days}")

    def params(self) -> dict[str, object]:
        return asdict(self)

    def forecast(self, y: FloatArray, horizon: int, last: np.datetime64 | None = None) -> QuantileForecast:
        """From ``last``, the stamp of ``y[-1]``; without one the history is taken to end on
        :data:`REFERENCE_LAST_DAY` (its last hour when hourly)."""
        if last is None:
            reference = np.datetime64(REFERENCE_LAST_DAY, "h") + np.timedelta64(23, "h")
            last = reference if self.grain == "hourly" else REFERENCE_LAST_DAY
        y = as_series(y)
        check_horizon(horizon)
        hourly = self.grain == "hourly"
        if y.size < 3:
            raise ValueError(f"prophet needs at least 3 {'hours' if hourly else 'days'} of history, got {y.size}")
        if not hourly and self.history_days:
            y = y[-self.history_days :]
        last = np.datetime64(last, "h" if hourly else "D")
        history = _frame(stamp_range(last, y.size))
        history["y"] = y
        future = _frame(stamp_range(last, 0, ahead=horizon))

        model = _prophet_class()(
            growth="linear",
            weekly_seasonality=y.size >= 2 * 168 if hourly else True,
            # Prophet wants a span of yearly_min_days for a yearly wave; hourly traces are weeks long.
            yearly_seasonality=not hourly and y.size > self.yearly_min_days,
            daily_seasonality=hourly,
            changepoint_prior_scale=self.changepoint_prior_scale,
            interval_width=self.interval_width,
            uncertainty_samples=self.uncertainty_samples,
            holidays=holiday_table(self.country, _year(history["ds"].iloc[0]), _year(future["ds"].iloc[-1])),
        )
        for column in ("month_end", "quarter_end"):
            if history[column].nunique() > 1:  # a constant regressor cannot be fitted
                model.add_regressor(column, standardize=False)
        state = np.random.get_state()
        try:
            np.random.seed(self.seed)  # Prophet draws its uncertainty paths from numpy's global generator
            model.fit(history, algorithm="LBFGS", seed=self.seed)
            predicted = model.predict(future)
        finally:
            np.random.set_state(state)
        point = predicted["yhat"].to_numpy(dtype=np.float64)
        below = np.minimum(predicted["yhat_lower"].to_numpy(dtype=np.float64) - point, 0.0)
        above = np.maximum(predicted["yhat_upper"].to_numpy(dtype=np.float64) - point, 0.0)
        return make_forecast(point, below, above)


@lru_cache(maxsize=64)
def holiday_table(country: str, first_year: int, last_year: int) -> pd.DataFrame:
    """The country's bank holidays from ``first_year`` to ``last_year`` as Prophet's ``holidays`` frame (the
    table ``add_country_holidays`` would build on every call). Cached: callers must not modify it."""
    silence_prophet_logs()
    from prophet.make_holidays import make_holidays_df

    silence_prophet_logs()
    table = make_holidays_df(year_list=list(range(first_year, last_year + 1)), country=country)
    return table[["ds", "holiday"]].reset_index(drop=True)


def _year(stamp: pd.Timestamp) -> int:
    return int(stamp.year)


def _frame(stamps: np.ndarray) -> pd.DataFrame:
    days = stamps.astype("datetime64[D]")
    return pd.DataFrame(
        {"ds": pd.to_datetime(stamps), "month_end": month_end_flag(days), "quarter_end": quarter_end_flag(days)}
    )


register_model(
    "prophet",
    ProphetModel,
    settings={"country": "country", "seed": "seed", "history_days": "prophet_history_days"},
    grains={"hourly": {"grain": "hourly"}},
)
