"""Checks every model's forecast must pass, shared by the forecasting tests."""

from __future__ import annotations

import numpy as np

from capacity_forecaster.forecasting.baselines import QuantileForecast


def assert_valid(fc: QuantileForecast, horizon: int) -> None:
    """``horizon`` finite values in 0..100 for each quantile, and P10 <= P50 <= P90."""
    for arr in (fc.p10, fc.p50, fc.p90):
        assert arr.shape == (horizon,)
        assert np.all(np.isfinite(arr))
        assert np.all((arr >= 0.0) & (arr <= 100.0))
    assert np.all(fc.p10 <= fc.p50)
    assert np.all(fc.p50 <= fc.p90)
