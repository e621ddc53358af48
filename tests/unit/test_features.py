"""Feature builder: calendar-day lags, leakage-free rolling statistics, calendar flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.errors import InputError
from capacity_forecaster.features import build_features


def series(server: str, start: str, values: list[float], drop: tuple[int, ...] = ()) -> pd.DataFrame:
    days = pd.date_range(start, periods=len(values), freq="D")
    frame = pd.DataFrame({"server_id": server, "metric": "cpu", "dt": days, "p95": values, "n_samples": 288})
    return frame.drop(index=list(drop)).reset_index(drop=True)


def test_lags_count_calendar_days_and_gaps_stay_missing() -> None:
    values = [float(i) for i in range(20)]
    out = build_features(series("a", "2026-01-01", values, drop=(10,)), lags=(1, 7), windows=(7,))
    by_day = out.set_index(out["dt"].dt.day)
    assert by_day.loc[2, "lag_1"] == 0.0
    assert np.isnan(by_day.loc[1, "lag_1"])
    assert np.isnan(by_day.loc[12, "lag_1"])  # the day before (the 11th, index 10) is missing
    assert np.isnan(by_day.loc[18, "lag_7"])  # the 11th again
    assert by_day.loc[19, "lag_7"] == 11.0 and by_day.loc[19, "lag_1"] == 17.0
    assert "n_samples" in out.columns  # other columns pass through


def test_rolling_uses_only_earlier_days() -> None:
    values = [1.0] * 7 + [100.0] + [1.0] * 6
    out = build_features(series("a", "2026-01-01", values), lags=(1,), windows=(7,))
    spike = out.loc[out["p95"] == 100.0].iloc[0]
    assert spike["roll_mean_7"] == 1.0 and spike["roll_max_7"] == 1.0 and spike["roll_std_7"] == 0.0
    after = out.iloc[8]
    assert after["roll_max_7"] == 100.0
    assert after["roll_mean_7"] == pytest.approx((6 + 100) / 7)
    # Fewer than half the window observed: NaN.
    assert out["roll_mean_7"].iloc[:4].isna().all() and out["roll_mean_7"].iloc[4:].notna().all()


def test_series_do_not_leak_into_each_other() -> None:
    frame = pd.concat([series("a", "2026-01-01", [1.0] * 10), series("b", "2026-01-01", [50.0] * 10)])
    out = build_features(frame.sample(frac=1, random_state=1), lags=(1,), windows=(7,))
    assert out["server_id"].tolist() == ["a"] * 10 + ["b"] * 10
    assert set(out.loc[out["server_id"] == "a", "roll_max_7"].dropna()) == {1.0}
    assert set(out.loc[out["server_id"] == "b", "lag_1"].dropna()) == {50.0}


def test_calendar_flags() -> None:
    out = build_features(series("a", "2025-12-29", [1.0] * 100), lags=(1,), windows=(7,)).set_index("dt")
    assert bool(out.loc["2026-01-01", "is_holiday"]) and not bool(out.loc["2026-01-02", "is_holiday"])
    assert out.loc["2026-01-03", "day_of_week"] == 5 and bool(out.loc["2026-01-03", "is_weekend"])
    assert bool(out.loc["2026-01-29", "is_month_end"]) and not bool(out.loc["2026-01-28", "is_month_end"])
    assert bool(out.loc["2026-03-31", "is_quarter_end"]) and not bool(out.loc["2026-02-27", "is_quarter_end"])
    assert bool(out.loc["2025-12-31", "is_quarter_end"])
    assert not build_features(series("a", "2026-01-01", [1.0] * 3), country=None)["is_holiday"].any()


def test_bad_input_is_one_line_error() -> None:
    with pytest.raises(InputError, match="needs columns p95"):
        build_features(pd.DataFrame({"server_id": [], "metric": [], "dt": []}))
    dup = pd.concat([series("a", "2026-01-01", [1.0])] * 2)
    with pytest.raises(InputError, match="one row per server"):
        build_features(dup)
    with pytest.raises(InputError, match="no public holiday calendar"):
        build_features(series("a", "2026-01-01", [1.0]), country="XX")
