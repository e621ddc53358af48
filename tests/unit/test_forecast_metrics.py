"""Accuracy metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from capacity_forecaster.forecasting.metrics import (
    SCORES,
    coverage,
    mae,
    mase,
    rmse,
    seasonal_naive_scale,
    smape,
)

Y = np.array([1.0, 2.0, 3.0])
F = np.array([2.0, 2.0, 5.0])  # errors 1, 0, 2


def test_mae() -> None:
    assert mae(Y, F) == pytest.approx(1.0)  # (1 + 0 + 2) / 3


def test_rmse() -> None:
    assert rmse(Y, F) == pytest.approx(math.sqrt(5 / 3))  # sqrt((1 + 0 + 4) / 3)


def test_smape_with_a_zero_zero_term() -> None:
    y = np.array([100.0, 0.0, 50.0])
    f = np.array([50.0, 0.0, 100.0])
    # 2*50/150, 0 (0/0 counts as perfect), 2*50/150 -> mean 4/9 -> 44.44 %
    assert smape(y, f) == pytest.approx(100 * 4 / 9)


def test_smape_bounds() -> None:
    assert smape(np.array([0.0, 10.0]), np.array([5.0, 0.0])) == pytest.approx(200.0)
    assert smape(Y, Y) == 0.0


def test_seasonal_naive_scale_and_mase() -> None:
    insample = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0])
    # lag-7 differences: 8 - 1 = 7 and 10 - 2 = 8 -> scale 7.5
    assert seasonal_naive_scale(insample, 7) == pytest.approx(7.5)
    assert mase(Y, F, insample, 7) == pytest.approx(1.0 / 7.5)


def test_mase_short_history_uses_lag_one() -> None:
    insample = np.array([1.0, 3.0, 6.0])  # shorter than a season: |3-1|, |6-3| -> 2.5
    assert seasonal_naive_scale(insample, 7) == pytest.approx(2.5)
    assert mase(Y, F, insample, 7) == pytest.approx(1.0 / 2.5)


def test_mase_undefined_for_flat_or_tiny_history() -> None:
    assert math.isnan(mase(Y, F, np.full(20, 4.0), 7))
    assert math.isnan(mase(Y, F, np.array([4.0]), 7))


def test_coverage_counts_the_edges_as_inside() -> None:
    y = np.array([1.0, 5.0, 10.0])
    lower = np.array([0.0, 6.0, 10.0])
    upper = np.array([2.0, 7.0, 10.0])
    assert coverage(y, lower, upper) == pytest.approx(2 / 3)


def test_empty_arrays_give_nan() -> None:
    empty = np.array([])
    for fn in (mae, rmse, smape):
        assert math.isnan(fn(empty, empty))
    assert math.isnan(coverage(empty, empty, empty))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="equal length"):
        mae(np.array([1.0, 2.0]), np.array([1.0]))


def test_scores_are_the_documented_ones() -> None:
    assert SCORES == ("mae", "rmse", "smape", "mase")


def test_coverage_tolerates_floating_point_noise_on_a_zero_width_band() -> None:
    y = np.array([0.1 + 0.2, 5.0])
    band = np.array([0.3, 5.0 - 1e-12])
    assert coverage(y, band, band) == 1.0
