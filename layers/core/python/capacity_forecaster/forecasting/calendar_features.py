"""Calendar features shared by the models that know the dates: bank holidays, month end, quarter end.

Every model gets each history with the stamp of its last value (``baselines.History``); a model that needs the
dates derives them from it with :func:`day_range` or :func:`stamp_range`, and its features with the helpers here.
Dates are ``numpy.datetime64[D]``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import holidays
import numpy as np

from capacity_forecaster.forecasting.baselines import FloatArray

MONTH_END_DAYS = 3
"""The last 3 days of a month count as month end (closing, billing and reporting runs)."""
QUARTER_END_DAYS = 7
"""The last 7 days of March, June, September and December count as quarter end."""

DayArray = np.ndarray[Any, np.dtype[np.datetime64]]


def day_range(last_day: np.datetime64, n: int, *, ahead: int = 0) -> DayArray:
    """The ``n`` days ending on ``last_day`` (``ahead=0``), or the ``ahead`` days after it (``n`` ignored)."""
    last = np.datetime64(last_day, "D")
    if ahead:
        return last + np.arange(1, ahead + 1).astype("timedelta64[D]")
    return last - np.arange(n - 1, -1, -1).astype("timedelta64[D]")


def stamp_range(last: np.datetime64, n: int, *, ahead: int = 0) -> DayArray:
    """Like :func:`day_range` in the unit of ``last`` (days or hours): the ``n`` steps ending on ``last``, or
    the ``ahead`` steps after it."""
    unit = np.datetime_data(last.dtype)[0]
    if ahead:
        return last + np.arange(1, ahead + 1).astype(f"timedelta64[{unit}]")
    return last - np.arange(n - 1, -1, -1).astype(f"timedelta64[{unit}]")


def days_to_month_end(days: DayArray) -> np.ndarray:
    """0 on the last day of the month, 1 the day before, and so on."""
    month = days.astype("datetime64[M]")
    next_first = (month + np.timedelta64(1, "M")).astype("datetime64[D]")
    return (next_first - days).astype(np.int64) - 1


def month_end_flag(days: DayArray) -> FloatArray:
    """1.0 on the last :data:`MONTH_END_DAYS` days of each month, else 0.0."""
    return (days_to_month_end(days) < MONTH_END_DAYS).astype(np.float64)


def quarter_end_flag(days: DayArray) -> FloatArray:
    """1.0 on the last :data:`QUARTER_END_DAYS` days of each quarter, else 0.0."""
    month_number = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return ((month_number % 3 == 0) & (days_to_month_end(days) < QUARTER_END_DAYS)).astype(np.float64)


def check_country(country: str) -> str:
    """The country code if the holidays package knows it; ``ValueError`` otherwise."""
    if country not in holidays.list_supported_countries():
        raise ValueError(f"country {country!r} is not an ISO code known to the holidays package")
    return country


@lru_cache(maxsize=64)
def _holiday_days(country: str, first_year: int, last_year: int) -> tuple[np.ndarray, tuple[str, ...]]:
    table = holidays.country_holidays(check_country(country), years=range(first_year, last_year + 1))
    ordered = sorted(table.items())
    return np.array([d for d, _ in ordered], dtype="datetime64[D]"), tuple(name for _, name in ordered)


def bank_holidays(country: str, first: np.datetime64, last: np.datetime64) -> tuple[DayArray, tuple[str, ...]]:
    """The bank holidays of ``country`` between ``first`` and ``last`` (inclusive) and their names."""
    y0 = int(str(np.datetime64(first, "Y")))
    y1 = int(str(np.datetime64(last, "Y")))
    days, names = _holiday_days(country, y0, y1)
    keep = (days >= np.datetime64(first, "D")) & (days <= np.datetime64(last, "D"))
    return days[keep], tuple(n for n, k in zip(names, keep, strict=True) if k)


def holiday_flag(days: DayArray, country: str) -> FloatArray:
    """1.0 on the bank holidays of ``country``, else 0.0."""
    if days.size == 0:
        return np.zeros(0)
    found, _ = bank_holidays(country, days.min(), days.max())
    return np.isin(days, found).astype(np.float64)
