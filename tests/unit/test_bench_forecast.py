"""The forecast benchmark's scenario generator and scoring helpers, on small hand-made inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_forecast import (
    CHAMPION,
    COMBINATION,
    MIN_HISTORY_HOURS,
    bitbrains_split,
    combine,
    evenly,
    per_series_scores,
    series_arrays,
    summary,
    targets,
)
from benchmarks.scenarios import GRAINS, KINDS, make_scenarios


@pytest.mark.parametrize("grain", ["hourly", "daily"])
def test_scenarios_are_deterministic_bounded_and_split_at_one_cut(grain: str) -> None:
    a = make_scenarios(grain, 12, seed=5)
    b = make_scenarios(grain, 12, seed=5)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert not a.history.equals(make_scenarios(grain, 12, seed=6).history)
    g = GRAINS[grain]
    assert set(a.kinds.values()) == set(KINDS)
    assert a.history["p95"].between(0, 100).all() and a.truth["actual"].between(0, 100).all()
    step = pd.Timedelta(1, unit="h" if grain == "hourly" else "D")
    for server, hist in a.history.groupby("server_id"):
        assert g["min_history"] <= len(hist) <= g["max_history"]
        assert (hist["dt"].diff().dropna() == step).all()
        assert hist["dt"].max() == a.last
        future = a.truth[a.truth["server_id"] == server]
        assert len(future) == a.horizon == g["horizon"]
        assert future["ds"].min() == a.last + step


def test_scenario_shapes_show_what_they_are_named_for() -> None:
    s = make_scenarios("hourly", 6, seed=3, horizon=24)
    by_kind = {kind: s.history[s.history["server_id"] == server]["p95"].to_numpy() for server, kind in s.kinds.items()}
    leak = by_kind["memory_leak"]
    assert np.diff(leak).min() < -15  # a restart drops the leaked memory
    batch = by_kind["nightly_batch"]
    assert np.percentile(batch, 95) - np.median(batch) > 30  # a night window far above the quiet base
    idle = by_kind["idle_wakes"]
    assert np.median(idle[:48]) < 5  # idle at the start of its history
    assert s.truth.groupby("server_id").size().eq(24).all()


def test_scenarios_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="grain"):
        make_scenarios("weekly", 3, 0)
    with pytest.raises(ValueError, match="n_series"):
        make_scenarios("daily", 0, 0)


def test_scores_per_series_with_mase_and_coverage() -> None:
    ds = pd.date_range("2026-01-01", periods=4, freq="D")
    truth = pd.DataFrame({"server_id": "a", "metric": "cpu", "ds": ds, "actual": [10.0, 12.0, 14.0, 16.0]})
    forecasts = pd.DataFrame(
        {"server_id": "a", "metric": "cpu", "ds": ds, "p10": [9, 9, 15, 15], "p50": [11, 11, 15, 15], "p90": [12] * 4}
    )
    scores = per_series_scores(forecasts, truth, {("a", "cpu"): 2.0})
    row = scores.iloc[0]
    assert row["mae"] == pytest.approx(1.0)  # |10-11|, |12-11|, |14-15|, |16-15|
    assert row["mase"] == pytest.approx(0.5)
    assert row["coverage"] == pytest.approx(0.5)  # 10 and 12 inside [p10, p90]; 14 and 16 not
    assert row["steps"] == 4
    flat = per_series_scores(forecasts, truth, {("a", "cpu"): 0.0})
    assert np.isnan(flat.iloc[0]["mase"])  # a flat history has no scale
    assert summary(pd.concat([scores, flat]))["mase"] == pytest.approx(0.5)


def test_combination_is_the_median_of_the_models_that_have_the_series() -> None:
    ds = pd.date_range("2026-01-01", periods=2, freq="h")

    def frame(server: str, value: float) -> pd.DataFrame:
        return pd.DataFrame(
            {"server_id": server, "metric": "cpu", "ds": ds, "p10": value - 1, "p50": value, "p90": value + 1}
        )

    combined = combine([frame("a", 10), frame("a", 30), frame("a", 11), frame("b", 50), frame("b", 60)])
    a, b = combined[combined["server_id"] == "a"], combined[combined["server_id"] == "b"]
    assert a["p50"].tolist() == [11.0, 11.0] and a["p90"].tolist() == [12.0, 12.0]
    assert b["p50"].tolist() == [55.0, 55.0]


def test_targets_compare_the_champion_with_peers_models_and_combination() -> None:
    def r(mae: float, cov: float = 0.8, cpu: float = 0.1, series: int = 10) -> dict[str, float]:
        return {"mae": mae, "coverage": cov, "cpu": cpu, "series": series}

    results = {
        "seasonal_naive": r(5.0),
        "prophet": r(2.0, series=3),  # run on a subsample: not comparable, left out of the best model
        "random_forest": r(4.0),
        COMBINATION: r(3.9),
        CHAMPION: r(3.6, cov=0.72, cpu=0.6),
        "AutoETS": r(4.2),
        "MSTL": r(4.0),
    }
    got = {t.name: t for t in targets(results, 10, ["seasonal_naive", "prophet", "random_forest"])}
    assert got["champion MAE / best peer (MSTL)"].value == pytest.approx(0.9)
    assert got["champion MAE / best peer (MSTL)"].met
    assert got["champion MAE / best product model (random_forest)"].met
    assert got["champion MAE / combination"].met
    assert not got["champion P10-P90 coverage"].met
    assert not got["champion pipeline CPU s / series"].met


def test_evenly_spreads_a_subsample() -> None:
    keys = [(f"s{i}", "cpu") for i in range(10)]
    assert evenly(keys, None) == keys and evenly(keys, 20) == keys
    picked = evenly(keys, 3)
    assert len(set(picked)) == 3 and picked[0] == keys[0] and picked[-1] == keys[-1]
    assert evenly(keys, 0) == []


def test_bitbrains_split_cuts_a_week_before_the_end_and_skips_short_vms() -> None:
    end = pd.Timestamp("2013-09-11 12:00", tz="UTC")
    horizon = 24

    def vm(server: str, hours: int, stop_early: int = 0) -> pd.DataFrame:
        stamps = pd.date_range(end=end - pd.Timedelta(hours=stop_early), periods=hours * 12, freq="5min")
        return pd.DataFrame({"timestamp": stamps, "server_id": server, "metric": "cpu", "value": 150.0})

    samples = pd.concat(
        [
            vm("long", MIN_HISTORY_HOURS + horizon + 10),
            vm("short", MIN_HISTORY_HOURS // 2 + horizon),
            vm("gone", MIN_HISTORY_HOURS + horizon, stop_early=horizon + 5),
        ],
        ignore_index=True,
    )
    history, truth, skipped = bitbrains_split(samples, horizon)
    assert set(history["server_id"]) == set(truth["server_id"]) == {"long"}
    assert skipped[f"under {MIN_HISTORY_HOURS} h of history"] == 1 and skipped["not observed at the cut"] == 1
    assert len(truth) == horizon and truth["ds"].min() == history["dt"].max() + pd.Timedelta(hours=1)
    assert history["p95"].max() == 100.0  # clipped to the metric range


def test_series_arrays_fill_gaps_on_a_regular_index() -> None:
    history = pd.DataFrame(
        {
            "server_id": "a",
            "metric": "mem",
            "dt": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-04"]),
            "p95": [10.0, 20.0, 40.0],
        }
    )
    y, last = series_arrays(history, "daily")[("a", "mem")]
    assert y.tolist() == [10.0, 20.0, 30.0, 40.0] and last == pd.Timestamp("2026-01-04")
