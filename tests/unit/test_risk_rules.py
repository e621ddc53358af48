"""Risk rules on hand-made forecasts: boundary dates, saturation, severity, findings."""

from __future__ import annotations

import itertools
from datetime import date
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.risk import UPPER_Z, breach_probability, build_risk_register, run_probability, severity
from capacity_forecaster.schema import RISK_REGISTER

RUN = date(2026, 1, 1)
THRESHOLDS = {"cpu": 80.0, "mem": 80.0, "disk": 80.0, "net": 80.0}


def forecast(server: str, metric: str, p50: list[float], spread: float = 5.0) -> pd.DataFrame:
    ds = pd.date_range(pd.Timestamp(RUN), periods=len(p50), freq="D")
    mid = np.array(p50)
    return pd.DataFrame(
        {
            "server_id": server,
            "metric": metric,
            "model": "linear_trend",
            "ds": ds,
            "p10": mid - spread,
            "p50": mid,
            "p90": mid + spread,
            "is_champion": True,
        }
    )


def history(server: str, metric: str, values: list[float]) -> pd.DataFrame:
    dt = pd.date_range(end=pd.Timestamp(RUN) - pd.Timedelta(days=1), periods=len(values), freq="D")
    return pd.DataFrame({"server_id": server, "metric": metric, "dt": dt, "p95": values, "imputed": False})


RULES: dict[str, Any] = {
    "run_date": RUN,
    "thresholds": THRESHOLDS,
    "critical_days": 30,
    "saturation_days": 7,
    "overprovisioned_ratio": 0.5,
}
"""The register's settings in these tests (each test overrides what it is about)."""


def register(forecasts: list[pd.DataFrame], daily: list[pd.DataFrame], critical_days: int = 30) -> pd.DataFrame:
    reg = build_risk_register(
        pd.concat(forecasts, ignore_index=True),
        pd.concat(daily, ignore_index=True),
        **(RULES | {"critical_days": critical_days}),
    )
    return reg.set_index(["server_id", "metric"])


def test_breach_dates_at_the_boundary() -> None:
    # Day k (k = 0 is the run date) has P50 = 30 + k: exactly 80 on day 50; P90 = P50 + 5 reaches 80 on day 45.
    p50 = [30.0 + k for k in range(61)]
    reg = register([forecast("a", "cpu", p50)], [history("a", "cpu", [30.0] * 30)])
    row = reg.loc[("a", "cpu")]
    assert row["breach_date_p50"] == pd.Timestamp("2026-02-20")
    assert row["days_to_breach_p50"] == 50
    assert row["breach_date_p90"] == pd.Timestamp("2026-02-15")
    assert row["days_to_breach_p90"] == 45
    assert row["peak_p50"] == pytest.approx(90.0)
    assert row["severity"] == "high"
    assert row["finding"] == "under-provisioned"


def test_just_under_threshold_never_breaches() -> None:
    reg = register([forecast("b", "mem", [79.999] * 30, spread=0.0)], [history("b", "mem", [70.0] * 30)])
    row = reg.loc[("b", "mem")]
    assert pd.isna(row["breach_date_p50"]) and pd.isna(row["breach_date_p90"])
    assert row["severity"] == "low"
    assert row["finding"] == "optimized"


def test_only_p90_breach_is_medium() -> None:
    # One day at 77 with a band of +-4: P90 crosses, a breach is possible (about 1 in 6) but not likely.
    reg = register([forecast("c", "disk", [70.0] * 29 + [77.0], spread=4.0)], [history("c", "disk", [70.0] * 30)])
    row = reg.loc[("c", "disk")]
    assert pd.isna(row["breach_date_p50"]) and pd.isna(row["likely_breach_date"])
    assert row["days_to_breach_p90"] == 29
    assert 0.1 < row["breach_probability"] < 1 / 3
    assert row["severity"] == "medium"


def test_p50_just_under_the_threshold_for_weeks_is_a_likely_breach() -> None:
    """P50 77 for 30 days with a band of +-4: each day is over 80 with chance q = 1 - Phi(3 / (4 / 1.2816)),
    so some day is over with chance 1 - (1 - q)^30, and the chance reaches 1/3 by the third day."""
    reg = register([forecast("c", "disk", [77.0] * 30, spread=4.0)], [history("c", "disk", [70.0] * 30)])
    row = reg.loc[("c", "disk")]
    q = 1.0 - NormalDist().cdf(3.0 / (4.0 / UPPER_Z))
    assert pd.isna(row["breach_date_p50"])
    assert row["breach_probability"] == pytest.approx(1.0 - (1.0 - q) ** 30)
    assert 1.0 - (1.0 - q) ** 2 < 1 / 3 <= 1.0 - (1.0 - q) ** 3
    assert row["likely_breach_date"] == pd.Timestamp("2026-01-03")
    assert row["severity"] == "high"
    assert row["finding"] == "under-provisioned"
    certain = build_risk_register(
        forecast("c", "disk", [77.0] * 30, spread=4.0), history("c", "disk", [70.0] * 30), likely=1.0, **RULES
    ).iloc[0]
    assert certain["severity"] == "medium" and pd.isna(certain["likely_breach_date"])


def test_run_probability_matches_every_outcome_counted() -> None:
    """Chance of 3 consecutive days over within 7 independent days, against all 2^7 outcomes."""
    p = np.array([[0.2, 0.7, 0.9, 0.4, 0.8, 0.95, 0.3], [0.5] * 7, [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    got = run_probability(p, 3)
    for row in range(p.shape[0]):
        for steps in range(1, 8):
            exact = 0.0
            for outcome in itertools.product([False, True], repeat=steps):
                chance = float(np.prod([p[row, t] if over else 1.0 - p[row, t] for t, over in enumerate(outcome)]))
                run = max((len(list(g)) for k, g in itertools.groupby(outcome) if k), default=0)
                exact += chance if run >= 3 else 0.0
            assert got[row, steps - 1] == pytest.approx(exact, abs=1e-12)


def test_breach_probability_with_a_widening_band_matches_a_simulation() -> None:
    """The band widens from +-2 to +-8 over 40 days: the widening is a level error shared by every day, the
    first day's spread independent noise. 400,000 simulated paths of that model agree with the quadrature."""
    steps, p50 = 40, np.linspace(70.0, 78.0, 40)
    half = np.linspace(2.0, 8.0, steps)
    fc = forecast("w", "cpu", p50.tolist()).assign(p10=p50 - half, p90=p50 + half)
    got = breach_probability(fc, THRESHOLDS, breach_days=3).iloc[0]
    rng = np.random.default_rng(7)
    noise, spread = half[0] / UPPER_Z, half / UPPER_Z
    carried = np.sqrt(spread**2 - noise**2)
    paths = p50 + rng.standard_normal((400_000, 1)) * carried + rng.standard_normal((400_000, steps)) * noise
    over = paths >= 80.0
    runs = over[:, :-2] & over[:, 1:-1] & over[:, 2:]
    assert got["breach_probability"] == pytest.approx(runs.any(axis=1).mean(), abs=0.004)


def test_without_a_band_the_chance_is_whether_p50_has_the_run() -> None:
    two = forecast("a", "cpu", [70.0, 81.0, 82.0, 70.0, 81.0], spread=0.0)
    three = forecast("b", "cpu", [70.0, 81.0, 82.0, 80.0, 70.0], spread=0.0)
    out = breach_probability(pd.concat([two, three]), THRESHOLDS, breach_days=3).set_index("server_id")
    assert out.loc["a", "breach_probability"] == 0.0 and pd.isna(out.loc["a", "likely_breach_date"])
    assert out.loc["b", "breach_probability"] == 1.0
    assert out.loc["b", "likely_breach_date"] == pd.Timestamp("2026-01-02")


def test_saturated_series_is_breaching_now_not_forecast_past_the_cap() -> None:
    # At 100 for the last 7 days; the champion forecast (wrongly) drops: the series still breaches now.
    reg = register([forecast("d", "cpu", [60.0] * 30)], [history("d", "cpu", [50.0] * 20 + [100.0] * 7)])
    row = reg.loc[("d", "cpu")]
    assert row["already_breaching"]
    assert row["days_to_breach_p50"] == 0 and row["days_to_breach_p90"] == 0
    assert row["breach_probability"] == 1.0
    assert row["severity"] == "critical"


def test_imputed_days_do_not_count_as_saturation() -> None:
    daily = history("e", "cpu", [50.0] * 20 + [100.0] * 7)
    daily.loc[daily.index[-1], "imputed"] = True
    reg = register([forecast("e", "cpu", [60.0] * 30)], [daily])
    assert not reg.loc[("e", "cpu"), "already_breaching"]


def test_critical_window_and_findings_per_server() -> None:
    near = [70.0] * 10 + [85.0] * 20  # breach on day 10 -> critical
    idle = [10.0] * 30
    reg = register(
        [
            forecast("f", "cpu", near),
            forecast("f", "mem", idle),
            forecast("g", "cpu", idle),
            forecast("g", "mem", idle),
        ],
        [history(s, m, [20.0] * 10) for s in "fg" for m in ("cpu", "mem")],
    )
    assert reg.loc[("f", "cpu"), "severity"] == "critical"
    assert reg.loc[("f", "mem"), "finding"] == "under-provisioned"  # finding is per server
    assert (reg.loc["g", "finding"] == "over-provisioned").all()
    assert list(reg.reset_index().columns) == [*RISK_REGISTER.column_names, "run_date"]
    # Sorted by urgency.
    assert reg.reset_index()["severity"].iloc[0] == "critical"


def test_only_champion_rows_are_used() -> None:
    champion = forecast("h", "cpu", [50.0] * 30)
    loser = forecast("h", "cpu", [95.0] * 30).assign(model="seasonal_naive", is_champion=False)
    reg = register([champion, loser], [history("h", "cpu", [50.0] * 10)])
    assert reg.loc[("h", "cpu"), "severity"] == "low"
    assert reg.loc[("h", "cpu"), "model"] == "linear_trend"


def test_severity_tiers_boundaries() -> None:
    tiers = severity(
        pd.Series([False, False, False, False, True]),
        pd.Series([30, 31, None, None, None], dtype="Int32"),
        pd.Series([10, 10, 5, None, None], dtype="Int32"),
        critical_days=30,
    )
    assert tiers.tolist() == ["critical", "high", "medium", "low", "critical"]


def test_tier_boundaries_from_config() -> None:
    tiers = severity(
        pd.Series([False] * 5),
        pd.Series([30, 31, 60, 61, None], dtype="Int32"),
        pd.Series([5, 5, 5, 5, 45], dtype="Int32"),
        critical_days=30,
        high_days=60,
        medium_days=40,
    )
    # Day 61 is past the high window, but its P90 (day 5) is within the medium window; day 45 is past both.
    assert tiers.tolist() == ["critical", "high", "high", "medium", "low"]


def test_headroom_decides_over_provisioned() -> None:
    # Peak P90 35 on every metric; over-provisioned needs P90 x (1 + headroom) < 80 x 0.5 = 40.
    frames = [forecast("k", m, [30.0] * 30) for m in ("cpu", "mem")]
    daily = [history("k", m, [30.0] * 10) for m in ("cpu", "mem")]
    fc, hist = pd.concat(frames, ignore_index=True), pd.concat(daily, ignore_index=True)

    def finding(headroom: float) -> str:
        reg = build_risk_register(fc, hist, **RULES, headroom={"cpu": headroom, "mem": headroom})
        return str(reg["finding"].iloc[0])

    assert finding(0.0) == "over-provisioned"
    assert finding(14.0) == "over-provisioned"  # 35 x 1.14 = 39.9
    assert finding(15.0) == "optimized"  # 35 x 1.15 = 40.25


def _with_peaks(base: float, peak_days: list[str], peak: float, days: int = 120) -> list[float]:
    ds = pd.date_range(pd.Timestamp(RUN), periods=days, freq="D")
    wanted = {pd.Timestamp(d) for d in peak_days}
    return [peak if d in wanted else base for d in ds]


def test_quarter_end_peak_is_flagged_with_its_dates() -> None:
    p50 = _with_peaks(60.0, ["2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30", "2026-03-31"], 85.0)
    p50[88] = 88.0  # 2026-03-30: the highest day of the episode
    reg = register([forecast("p", "cpu", p50)], [history("p", "cpu", [60.0] * 30)])
    row = reg.loc[("p", "cpu")]
    assert row["breach_date_p50"] == pd.Timestamp("2026-03-27")
    assert row["seasonal_peak"]
    assert row["seasonal_peak_kind"] == "quarter-end"
    assert row["seasonal_peak_dates"] == "2026-03-30"
    assert row["peak_p90"] == pytest.approx(93.0)


def test_month_end_peaks_list_every_episode() -> None:
    p50 = _with_peaks(60.0, ["2026-01-30", "2026-01-31", "2026-02-27", "2026-02-28", "2026-03-01"], 82.0, days=70)
    reg = register([forecast("q", "mem", p50)], [history("q", "mem", [60.0] * 30)])
    row = reg.loc[("q", "mem")]
    assert row["seasonal_peak"] and row["seasonal_peak_kind"] == "month-end"
    assert row["seasonal_peak_dates"] == "2026-01-30,2026-02-27"


def test_trend_breach_and_saturation_are_not_seasonal() -> None:
    trend = [30.0 + k for k in range(61)]
    reg = register(
        [forecast("r", "cpu", trend), forecast("s", "cpu", _with_peaks(60.0, ["2026-01-30"], 90.0, days=40))],
        [history("r", "cpu", [30.0] * 30), history("s", "cpu", [50.0] * 20 + [100.0] * 7)],
    )
    assert not reg.loc[("r", "cpu"), "seasonal_peak"]
    assert reg.loc[("r", "cpu"), "seasonal_peak_dates"] == ""
    assert reg.loc[("s", "cpu"), "already_breaching"]
    assert not reg.loc[("s", "cpu"), "seasonal_peak"]


def test_breach_days_needs_that_many_consecutive_days_over() -> None:
    # P50: a 2-day excursion over 80 (days 5-6), then 80+ from day 20 for good; P90 = P50 + 5.
    p50 = [70.0] * 5 + [81.0, 82.0] + [70.0] * 13 + [85.0] * 20
    daily = history("b", "cpu", [60.0] * 30)
    single = build_risk_register(forecast("b", "cpu", p50), daily, **RULES).iloc[0]
    sustained = build_risk_register(forecast("b", "cpu", p50), daily, breach_days=3, **RULES).iloc[0]
    assert single["breach_date_p50"] == pd.Timestamp("2026-01-06")
    assert sustained["breach_date_p50"] == pd.Timestamp("2026-01-21")
    assert sustained["days_to_breach_p50"] == 20
    # P90 = 75 outside the excursions: still only the sustained run counts.
    assert sustained["breach_date_p90"] == pd.Timestamp("2026-01-21")


def test_breach_days_run_must_end_inside_the_horizon_and_short_horizons_need_every_day() -> None:
    rules = RULES | {"breach_days": 3}
    daily = pd.concat([history(s, "cpu", [60.0] * 30) for s in ("e", "f", "g")], ignore_index=True)
    forecasts = pd.concat(
        [
            forecast("e", "cpu", [70.0] * 8 + [85.0, 85.0], spread=0.0),  # the run is cut by the horizon's end
            forecast("f", "cpu", [85.0, 85.0], spread=0.0),  # a 2-day horizon: both days over is a breach
            forecast("g", "cpu", [85.0, 70.0], spread=0.0),
        ],
        ignore_index=True,
    )
    reg = build_risk_register(forecasts, daily, **rules).set_index("server_id")
    assert pd.isna(reg.loc["e", "breach_date_p50"]) and reg.loc["e", "severity"] == "low"
    assert reg.loc["f", "breach_date_p50"] == pd.Timestamp(RUN)
    assert pd.isna(reg.loc["g", "breach_date_p50"])


def test_breach_days_drops_one_day_peaks_from_the_seasonal_flag() -> None:
    p50 = _with_peaks(60.0, ["2026-01-31", "2026-02-28", "2026-03-31"], 82.0)  # one day each month end
    daily = history("m", "cpu", [60.0] * 30)
    one_day = build_risk_register(forecast("m", "cpu", p50, spread=0.0), daily, **RULES).iloc[0]
    three = build_risk_register(forecast("m", "cpu", p50, spread=0.0), daily, breach_days=3, **RULES).iloc[0]
    assert one_day["seasonal_peak"] and one_day["seasonal_peak_kind"] == "month-end"
    assert not three["seasonal_peak"] and three["seasonal_peak_dates"] == ""
    assert pd.isna(three["breach_date_p50"]) and three["severity"] == "low"
