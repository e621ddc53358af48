"""The risk benchmark's scoring on a hand-made register and ground truth (what counts as flagged, hit, dated)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_risk import AT_RISK, PREDICTED, perfect_forecasts, score


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    day = pd.Timestamp
    truth = pd.DataFrame(
        {
            "server_id": ["a", "b", "c", "d", "e"],
            "metric": "cpu",
            "pattern": ["saturating", "sawtooth", "growing", "steady", "seasonal_peak"],
            "will_breach": [True, True, False, False, True],
            "breach_date": [day("2027-01-10"), day("2027-01-20"), pd.NaT, pd.NaT, day("2027-01-01")],
            "is_idle": False,
        }
    )
    register = pd.DataFrame(
        {
            "server_id": ["a", "b", "c", "d", "e"],
            "metric": "cpu",
            "severity": ["critical", "low", "medium", "low", "medium"],
            "breach_date_p50": [day("2027-01-12"), pd.NaT, pd.NaT, pd.NaT, pd.NaT],
            "breach_date_p90": [day("2027-01-05"), pd.NaT, day("2027-01-03"), pd.NaT, day("2026-12-25")],
            "likely_breach_date": [day("2027-01-11"), pd.NaT, pd.NaT, pd.NaT, pd.NaT],
        }
    )
    return register, truth


def test_at_risk_means_critical_high_or_medium_and_dates_prefer_p50() -> None:
    register, truth = frames()
    result = score(register, truth, tiers=AT_RISK)
    assert result.flagged == 3  # a, c, e
    assert result.recall == pytest.approx(2 / 3)  # a and e of a, b, e
    assert result.precision == pytest.approx(2 / 3)  # c is a false alarm
    # a: P50 Jan 12 vs Jan 10 -> 2 days; e: no P50, P90 Dec 25 vs Jan 1 -> 7 days.
    assert result.median_date_error == pytest.approx(4.5)
    assert result.misses == {"sawtooth": 1}
    assert result.false_alarms == {"growing": 1}


def test_predicted_reading_is_critical_and_high_dated_by_p50() -> None:
    register, truth = frames()
    result = score(register, truth, tiers=PREDICTED)
    assert (result.flagged, result.recall, result.precision, result.median_date_error) == (1, 1 / 3, 1.0, 2.0)
    assert result.misses == {"sawtooth": 1, "seasonal_peak": 1} and result.false_alarms == {}


def test_a_breach_flagged_as_likely_without_a_p50_crossing_is_dated_by_its_likely_date() -> None:
    register, truth = frames()
    register.loc[1, ["severity", "likely_breach_date"]] = ["high", pd.Timestamp("2027-01-17")]
    result = score(register, truth, tiers=PREDICTED)
    assert (result.flagged, result.recall, result.precision) == (2, 2 / 3, 1.0)
    # a: P50 Jan 12 vs Jan 10 (its likely date is not used) -> 2 days; b: likely Jan 17 vs Jan 20 -> 3 days.
    assert result.median_date_error == pytest.approx(2.5)


def test_perfect_forecasts_are_the_noise_free_horizon_with_the_noise_band() -> None:
    """P50 = the expected value; P10/P90 = the normal 10th/90th percentiles of the planted noise, clipped."""
    expected = pd.DataFrame(
        {
            "server_id": ["a", "a", "b"],
            "metric": "cpu",
            "dt": pd.to_datetime(["2026-11-23", "2026-11-24", "2026-11-23"]),
            "p95": [50.0, 99.0, 2.0],
            "noise_sd": [2.0, 2.0, 3.0],
        }
    )
    out = perfect_forecasts(expected, date(2026, 11, 23))
    np.testing.assert_allclose(out["p50"], [50.0, 99.0, 2.0])
    np.testing.assert_allclose(out["p90"], [50.0 + 2.0 * 1.2815515655446004, 100.0, 2.0 + 3.0 * 1.2815515655446004])
    np.testing.assert_allclose(out["p10"], [50.0 - 2.0 * 1.2815515655446004, 99.0 - 2.0 * 1.2815515655446004, 0.0])
    assert out["horizon_step"].tolist() == [1, 2, 1]
    assert out["is_champion"].all()
