"""Outlier and anomaly flags (never deleting values) and the series profile with the ADF test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster import quality


def daily(values: np.ndarray, server: str = "a", start: str = "2026-01-01") -> pd.DataFrame:
    days = pd.date_range(start, periods=len(values), freq="D")
    return pd.DataFrame({"server_id": server, "metric": "cpu", "dt": days, "p95": values, "imputed": False})


def test_a_spike_is_flagged_by_both_rules_and_kept() -> None:
    rng = np.random.default_rng(3)
    values = 40 + rng.uniform(-1, 1, 60)  # bounded noise: |z| stays under 2 without the spike
    values[45] = 70.0
    frame = daily(values)
    flags = quality.flag_outliers(frame, window=28, z_threshold=3.0, iqr_k=1.5)
    assert len(flags) == len(frame)
    np.testing.assert_array_equal(flags["p95"].to_numpy(), values)  # nothing changed or dropped
    spike = flags.iloc[45]
    assert spike["outlier_z"] and spike["outlier_iqr"] and spike["anomaly"] and spike["zscore"] > 10
    assert flags["anomaly"].sum() == 1
    # Not enough history for the first days: never flagged.
    assert not flags.iloc[:14][["outlier_z", "outlier_iqr"]].to_numpy().any()
    assert flags.iloc[:14]["zscore"].isna().all()


def test_thresholds_change_what_is_flagged() -> None:
    values = np.array([10.0, 11.0, 10.0, 11.0, 10.0, 11.0, 10.0, 11.0, 14.0])
    loose = quality.flag_outliers(daily(values), window=8, z_threshold=10.0, iqr_k=10.0)
    strict = quality.flag_outliers(daily(values), window=8, z_threshold=2.0, iqr_k=1.5)
    assert not loose["outlier_z"].any() and not loose["outlier_iqr"].any()
    assert strict["outlier_z"].iloc[-1] and strict["outlier_iqr"].iloc[-1]


def test_flat_window_then_a_change() -> None:
    values = np.array([5.0] * 10 + [6.0])
    flags = quality.flag_outliers(daily(values), window=7, z_threshold=3.0, iqr_k=1.5)
    assert flags["outlier_z"].tolist() == [False] * 10 + [True]
    assert np.isnan(flags["zscore"].iloc[-1])  # infinite z is stored as missing, the flag carries it


def test_adf_tells_random_walk_from_noise() -> None:
    rng = np.random.default_rng(11)
    noise = rng.normal(50, 5, 300)
    walk = 50 + np.cumsum(rng.normal(0.2, 1, 300))  # a random walk with drift
    assert quality.adf_test(noise)[1] < 0.01
    assert quality.adf_test(walk)[1] > 0.05
    assert np.isnan(quality.adf_test(noise[:10])[0])
    assert np.isnan(quality.adf_test(np.full(50, 3.0))[1])


def test_profile_series_rows_and_counts() -> None:
    rng = np.random.default_rng(5)
    a = 40 + rng.uniform(-1, 1, 90)
    a[60] = 90.0
    b = 50 + np.cumsum(rng.normal(0.3, 1, 90))
    frame = pd.concat([daily(a, "a"), daily(b, "b")], ignore_index=True)
    frame.loc[3, "imputed"] = True
    flags = quality.flag_outliers(frame, window=28, z_threshold=3.0, iqr_k=1.5)
    profile = quality.profile_series(flags, frame).set_index("server_id")
    assert profile.columns.tolist() == quality.PROFILE_COLUMNS[1:]
    assert profile.loc["a", "n_days"] == 90 and profile.loc["a", "n_imputed"] == 1
    assert profile.loc["a", "n_anomalies"] >= 1
    assert profile.loc["a", "last_anomaly"] == pd.Timestamp("2026-01-01") + pd.Timedelta(days=60)
    assert bool(profile.loc["a", "stationary"]) and not bool(profile.loc["b", "stationary"])
    assert profile.loc["a", "mean"] == pytest.approx(a.mean())
