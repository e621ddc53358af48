"""Forecast grains: one value a day (``daily``) or one value an hour (``hourly``).

Models see plain arrays, one value a step; the grain says how long a step is, which season the baselines
repeat and MASE scales by and how long the backtest windows are. Which fields of each model change with the
grain is part of the model's registration (``register_model(grains=...)``). A series' timestamps are
``numpy.datetime64`` in the grain's unit (``D`` or ``h``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from capacity_forecaster.errors import ConfigError
from capacity_forecaster.forecasting.baselines import grain_settings
from capacity_forecaster.schema import FORECASTS

StepUnit = Literal["D", "h"]


@dataclass(frozen=True)
class Grain:
    """How long a step is and what the models do with it."""

    name: str
    unit: StepUnit
    """numpy datetime unit of one step: ``D`` or ``h``."""
    step_name: str
    """Plural noun of a step, for messages: ``days`` or ``hours``."""
    season: int
    """Steps in the main season: 7 days a week, 24 hours a day."""
    min_train: int
    """Steps of history an origin needs before it to be scored."""
    backtest_horizon: int | None = None
    """Default steps scored per backtest origin (capped by the horizon); None: the whole horizon."""
    backtest_step: int | None = None
    """Default steps between backtest origins; None: back to back (the backtest horizon)."""

    @property
    def model_settings(self) -> dict[str, dict[str, Any]]:
        """Field overrides of the registered models for this grain (under the job's own settings)."""
        return grain_settings(self.name)


DAILY = Grain(name="daily", unit="D", step_name="days", season=7, min_train=14)
HOURLY = Grain(
    name="hourly",
    unit="h",
    step_name="hours",
    season=24,
    # A week of level for the random forest plus a day to learn from; origins 4 days apart (overlapping
    # week-long windows at the same hour of the day), so a 3-week trace still holds 2 origins.
    min_train=192,
    backtest_step=96,
)
GRAINS: Mapping[str, Grain] = MappingProxyType({g.name: g for g in (DAILY, HOURLY)})


def get_grain(name: str) -> Grain:
    """The grain called ``name``; a :class:`ConfigError` for anything else."""
    try:
        return GRAINS[name]
    except KeyError:
        raise ConfigError(f"grain {name!r} must be one of {', '.join(GRAINS)}") from None


def unit_of(stamp: np.datetime64) -> StepUnit:
    """The numpy unit of a timestamp (``D`` for a day, ``h`` for an hour)."""
    return cast(StepUnit, np.datetime_data(stamp.dtype)[0])


def steps_before(stamp: np.datetime64, n: int) -> np.datetime64:
    """The timestamp ``n`` steps (of the stamp's own unit) before ``stamp``."""
    return stamp - np.timedelta64(n, unit_of(stamp))


def merged_settings(grain: Grain, settings: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The grain's model overrides with ``settings`` on top, model by model."""
    out = {name: dict(values) for name, values in grain.model_settings.items()}
    for name, values in (settings or {}).items():
        out.setdefault(name, {}).update(values)
    return out


def daily_peaks(hourly: pd.DataFrame) -> pd.DataFrame:
    """Hourly forecasts as daily ones: per series, model and UTC day, the highest P10, P50 and P90 of its hours.

    The risk rules work on days: a day's peak hour crossing the threshold makes that day the breach date (so
    the breach hour becomes its date). ``horizon_step`` becomes the day's position in the horizon (1, 2, ...).
    Columns as the ``forecasts`` table, plus ``run_date`` when the input has it.
    """
    keys = ["server_id", "metric", "model"]
    frame = hourly.assign(ds=pd.to_datetime(hourly["ds"], utc=True).dt.tz_convert(None).dt.floor("D"))
    extra = ["run_date"] if "run_date" in frame.columns else []
    daily = (
        frame.groupby([*keys, "ds", *extra], sort=True)
        .agg(p10=("p10", "max"), p50=("p50", "max"), p90=("p90", "max"), is_champion=("is_champion", "any"))
        .reset_index()
    )
    daily["horizon_step"] = (daily.groupby(keys, sort=False).cumcount() + 1).astype(np.int32)
    return daily[[*FORECASTS.column_names, *extra]]
