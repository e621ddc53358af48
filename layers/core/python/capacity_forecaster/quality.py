"""Series quality: outlier and anomaly flags on the daily P95, and a per-series profile with a stationarity test.

Pure functions (DataFrame in, DataFrame out). Nothing is ever deleted or changed: values are flagged.

- ``outlier_z``: the value is more than ``z_threshold`` standard deviations from the mean of the ``window`` days
  before it (rolling z-score; the day itself excluded, at least half the window observed);
- ``outlier_iqr``: the value is outside [Q1 - k x IQR, Q3 + k x IQR] of the same trailing window (Tukey fences);
- ``anomaly``: both rules agree, the conservative flag to alert on.
"""

from __future__ import annotations

import warnings
from typing import Final

import numpy as np
import pandas as pd

SERIES_KEY: Final[list[str]] = ["server_id", "metric"]
FLAG_COLUMNS: Final[list[str]] = ["server_id", "metric", "dt", "p95", "zscore", "outlier_z", "outlier_iqr", "anomaly"]
PROFILE_COLUMNS: Final[list[str]] = [
    "server_id",
    "metric",
    "first_day",
    "last_day",
    "n_days",
    "n_imputed",
    "mean",
    "std",
    "adf_stat",
    "adf_pvalue",
    "stationary",
    "n_outliers_z",
    "n_outliers_iqr",
    "n_anomalies",
    "last_anomaly",
]
MIN_ADF_DAYS: Final[int] = 20
ADF_MAX_LAG: Final[int] = 7


def flag_outliers(daily: pd.DataFrame, *, window: int, z_threshold: float, iqr_k: float) -> pd.DataFrame:
    """Flag each day of each series against its trailing ``window`` days (see the module docstring)."""
    frame = daily.sort_values([*SERIES_KEY, "dt"], ignore_index=True)
    frame["dt"] = pd.to_datetime(frame["dt"]).astype("datetime64[ns]")
    rolling = (
        frame.set_index("dt")
        .groupby(SERIES_KEY, sort=False)["p95"]
        .rolling(f"{window}D", closed="left", min_periods=max(2, (window + 1) // 2))
    )
    stats = pd.DataFrame(
        {
            "mean": rolling.mean(),
            "std": rolling.std(),
            "q1": rolling.quantile(0.25),
            "q3": rolling.quantile(0.75),
        }
    ).reset_index()
    frame = frame.merge(stats, on=[*SERIES_KEY, "dt"], how="left")
    value = frame["p95"].to_numpy(dtype="float64")
    std = frame["std"].to_numpy(dtype="float64")
    mean = frame["mean"].to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (value - mean) / std
        # A flat window (std 0) makes any change infinitely surprising: count it only when the value moved.
        z = np.where(std == 0, np.where(np.isclose(value, mean), 0.0, np.sign(value - mean) * np.inf), z)
    iqr = frame["q3"] - frame["q1"]
    frame["zscore"] = z
    frame["outlier_z"] = np.nan_to_num(np.abs(z), nan=0.0) > z_threshold
    low, high = frame["q1"] - iqr_k * iqr, frame["q3"] + iqr_k * iqr
    frame["outlier_iqr"] = ((frame["p95"] < low) | (frame["p95"] > high)).fillna(False).astype(bool)
    frame["anomaly"] = frame["outlier_z"] & frame["outlier_iqr"]
    frame["zscore"] = frame["zscore"].replace([np.inf, -np.inf], np.nan)
    return frame[FLAG_COLUMNS]


def adf_test(values: np.ndarray) -> tuple[float, float]:
    """Augmented Dickey-Fuller statistic and p-value (constant, up to 7 lags chosen by AIC); NaN when the
    series is too short (fewer than 20 values) or constant."""
    clean = values[~np.isnan(values)]
    if len(clean) < MIN_ADF_DAYS or np.ptp(clean) == 0:
        return float("nan"), float("nan")
    from statsmodels.tsa.stattools import adfuller

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = adfuller(clean, maxlag=min(ADF_MAX_LAG, len(clean) // 3), autolag="AIC")
    return float(result[0]), float(result[1])


def profile_series(flags: pd.DataFrame, daily: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """One row per series: span, counts, mean and std, ADF test (``stationary`` when p < ``alpha``) and flag counts.

    ``daily`` has server_id, metric, dt, p95 and imputed; ``flags`` is :func:`flag_outliers`' output.
    """
    rows = []
    imputed = daily.groupby(SERIES_KEY)["imputed"].sum() if "imputed" in daily.columns else None
    for (server, metric), group in flags.groupby(SERIES_KEY, sort=True):
        values = group["p95"].to_numpy(dtype="float64")
        stat, pvalue = adf_test(values)
        anomalies = group.loc[group["anomaly"], "dt"]
        rows.append(
            {
                "server_id": server,
                "metric": metric,
                "first_day": group["dt"].min(),
                "last_day": group["dt"].max(),
                "n_days": len(group),
                "n_imputed": int(imputed.get((server, metric), 0)) if imputed is not None else 0,
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                "adf_stat": stat,
                "adf_pvalue": pvalue,
                "stationary": bool(pvalue < alpha) if not np.isnan(pvalue) else False,
                "n_outliers_z": int(group["outlier_z"].sum()),
                "n_outliers_iqr": int(group["outlier_iqr"].sum()),
                "n_anomalies": len(anomalies),
                "last_anomaly": anomalies.max() if len(anomalies) else pd.NaT,
            }
        )
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PROFILE_COLUMNS})
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)
