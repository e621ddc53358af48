"""Global models: one model fitted on many series at once, then asked for each series' forecast.

The per-series :class:`~capacity_forecaster.forecasting.baselines.Model` protocol fits on one history. A
:class:`GlobalModel` also offers :meth:`GlobalModel.fit_predict`, which fits once on a list of histories (one
metric's series) and forecasts every one of them. The engine calls it once per backtest origin and once for the
final forecast, on the histories cut where the per-series backtest cuts them, so nothing after an origin is
seen when forecasting from it. The answers are handed to the per-series backtest as :class:`Precomputed`
models that look the forecast up by the history's length; backtest scoring, the champion choice and the
fallbacks then work exactly as for every other model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from capacity_forecaster.forecasting.baselines import FloatArray, Model, QuantileForecast

History = tuple[FloatArray, np.datetime64]
"""A series' values (oldest first, one a day) and the day of its last value."""


@runtime_checkable
class GlobalModel(Model, Protocol):
    """A model fitted across series. ``forecast`` on one series must still work (a fleet of one)."""

    def fit_predict(self, histories: Sequence[History], horizon: int) -> list[QuantileForecast | str]:
        """Fit on every history, forecast each ``horizon`` days ahead: a forecast, or why there is none."""
        ...


@dataclass(frozen=True)
class Precomputed:
    """A global model's forecasts for one series, keyed by the length of the history they start from."""

    name: str
    forecasts: Mapping[int, QuantileForecast | str] = field(default_factory=dict)

    def params(self) -> dict[str, object]:
        return {"precomputed_origins": sorted(self.forecasts)}

    def forecast(self, y: FloatArray, horizon: int) -> QuantileForecast:
        found = self.forecasts.get(int(np.size(y)))
        if found is None:
            raise ValueError(f"{self.name} made no forecast from a history of {np.size(y)} days")
        if isinstance(found, str):
            raise ValueError(found)
        if found.horizon < horizon:
            raise ValueError(f"{self.name} forecast {found.horizon} days, {horizon} asked")
        return QuantileForecast(p10=found.p10[:horizon], p50=found.p50[:horizon], p90=found.p90[:horizon])
