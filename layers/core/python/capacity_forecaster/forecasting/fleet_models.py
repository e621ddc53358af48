"""The engine's cache of fleet-scope answers (models with ``scope = "fleet"``, fitted across one metric's series).

The engine fits each fleet-scope model once per metric at every backtest origin and at the end, on the
histories cut where the per-series backtest cuts them, so nothing after an origin is seen when forecasting from
it. Each series then gets a :class:`Precomputed` stand-in that answers ``fit_predict`` by looking its answer up
by the history's length; backtest scoring, the champion choice and the fallbacks then work exactly as for every
other model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from capacity_forecaster.forecasting.baselines import Answer, History, QuantileForecast, Scope


@dataclass(frozen=True)
class Precomputed:
    """A fleet-scope model's answers for one series, keyed by the length of the history they start from."""

    name: str
    forecasts: Mapping[int, Answer] = field(default_factory=dict)
    scope: ClassVar[Scope] = "series"

    def params(self) -> dict[str, object]:
        return {"precomputed_origins": sorted(self.forecasts)}

    def fit_predict(self, histories: Sequence[History], horizon: int) -> list[Answer]:
        return [self._answer(int(np.size(y)), horizon) for y, _ in histories]

    def _answer(self, n: int, horizon: int) -> Answer:
        found = self.forecasts.get(n)
        if found is None:
            return f"{self.name} made no forecast from a history of {n} days"
        if isinstance(found, str) or found.horizon == horizon:
            return found
        if found.horizon < horizon:
            return f"{self.name} forecast {found.horizon} days, {horizon} asked"
        return QuantileForecast(p10=found.p10[:horizon], p50=found.p50[:horizon], p90=found.p90[:horizon])
