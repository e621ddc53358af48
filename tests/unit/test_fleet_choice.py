"""The champion per metric across the fleet and the calibrated bands, on held-out data the backtest never saw."""

from __future__ import annotations

import functools
from datetime import date

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.forecasting.backtest import COMBINATION
from capacity_forecaster.forecasting.engine import forecast_fleet
from capacity_forecaster.forecasting.fleet_choice import (
    MIN_RESIDUALS,
    SeriesBacktest,
    band_offsets,
    choose,
    largest_moves,
    runaway,
)

HORIZON = 30
RUN_DATE = date(2026, 1, 1)


def noisy_fleet(n: int, days: int, seed: int, kind: str) -> dict[str, np.ndarray]:
    """``n`` series of ``days`` days: ``weekly`` (a weekly cycle plus noise) or ``walk`` (a random walk)."""
    rng = np.random.default_rng(seed)
    out = {}
    t = np.arange(days)
    for i in range(n):
        if kind == "weekly":
            y = 40 + 10 * np.sin(2 * np.pi * t / 7 + i) + rng.normal(0, 2 + i % 3, days)
        else:
            y = 50 + np.cumsum(rng.normal(0, 1.0, days))
        out[f"srv-{i:02d}"] = np.clip(y, 0, 100)
    return out


def frame_of(series: dict[str, np.ndarray], metric: str, end: date) -> pd.DataFrame:
    parts = []
    for server, y in series.items():
        dt = pd.date_range(end=pd.Timestamp(end), periods=y.size, freq="D")
        parts.append(pd.DataFrame({"server_id": server, "metric": metric, "dt": dt, "p95": y}))
    return pd.concat(parts, ignore_index=True)


def held_out_fleet(n: int, seed: int, kind: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    full = noisy_fleet(n, 400 + HORIZON, seed, kind)
    history = {k: v[:-HORIZON] for k, v in full.items()}
    truth = {k: v[-HORIZON:] for k, v in full.items()}
    return frame_of(history, "cpu", RUN_DATE), truth


def run(frame: pd.DataFrame, **kwargs: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    args: dict[str, object] = {
        "run_date": RUN_DATE,
        "horizon_days": HORIZON,
        "models": ["seasonal_naive", "linear_trend"],
        "n_origins": 2,
        "score": "mae",
        "min_history_days": 56,
    }
    args.update(kwargs)
    return forecast_fleet(frame, **args)  # type: ignore[arg-type]


def coverage_of(forecasts: pd.DataFrame, truth: dict[str, np.ndarray]) -> float:
    champion = forecasts[forecasts["is_champion"]].sort_values(["server_id", "ds"])
    inside = []
    for server, rows in champion.groupby("server_id"):
        actual = truth[str(server)]
        inside.append((rows["p10"].to_numpy() <= actual) & (actual <= rows["p90"].to_numpy()))
    return float(np.mean(np.concatenate(inside)))


def test_one_champion_per_metric_even_where_a_series_was_lucky_in_its_own_backtest() -> None:
    weekly, _ = held_out_fleet(24, seed=1, kind="weekly")
    _, metrics = run(weekly)
    champions = metrics[metrics["is_champion"]]
    assert champions["model"].nunique() == 1 and len(champions) == 24
    # Pooled over the fleet, the weekly cycle wins (alone or in the median), never the straight line.
    assert champions["model"].iloc[0] in {"seasonal_naive", COMBINATION}
    own = metrics.loc[metrics.groupby("server_id")["mae"].idxmin(), "model"]
    chosen = champions["model"].iloc[0]
    means = metrics.groupby("model")["mae"].mean()
    assert means[chosen] == means.min()
    # Whatever each series' own hindsight winner was, the fleet's choice is used (override off by default).
    assert set(own) <= {"seasonal_naive", "linear_trend", COMBINATION}


def test_the_override_keeps_a_series_own_winner_only_by_a_wide_margin() -> None:
    def series(name: str, naive: float, line: float) -> SeriesBacktest:
        rows = np.zeros((2, 5), dtype=np.float32)
        return SeriesBacktest(
            server_id=name,
            metric="cpu",
            scale=1.0,
            own_champion="seasonal_naive" if naive < line else "linear_trend",
            scores={"seasonal_naive": naive, "linear_trend": line},
            residuals={"seasonal_naive": rows, "linear_trend": rows},
            forecastable=frozenset({"seasonal_naive", "linear_trend"}),
        )

    fleet = [series(f"s{i}", 1.0, 2.0) for i in range(8)] + [series("close", 1.0, 0.9), series("far", 1.0, 0.3)]
    assert set(choose(fleet, 5).series.values()) == {"seasonal_naive"}
    picked = choose(fleet, 5, override=0.6).series
    assert picked[("far", "cpu")] == "linear_trend" and picked[("close", "cpu")] == "seasonal_naive"
    assert choose(fleet, 5).metrics["cpu"].scores == {"linear_trend": 1.72, "seasonal_naive": 1.0}


def test_calibrated_bands_cover_about_80_percent_of_what_came_next() -> None:
    for kind, seed in (("weekly", 2), ("walk", 3)):
        frame, truth = held_out_fleet(40, seed=seed, kind=kind)
        forecasts, _ = run(frame)
        share = coverage_of(forecasts, truth)
        assert 0.7 <= share <= 0.9, (kind, share)
        champion = forecasts[forecasts["is_champion"]]
        assert (champion["p10"] <= champion["p50"]).all() and (champion["p50"] <= champion["p90"]).all()


def test_a_short_series_gets_the_metric_champion_with_a_band_from_its_own_noise() -> None:
    frame, _ = held_out_fleet(12, seed=4, kind="weekly")
    short = frame_of({"srv-new": noisy_fleet(1, 20, 9, "weekly")["srv-00"]}, "cpu", RUN_DATE)
    forecasts, metrics = run(pd.concat([frame, short], ignore_index=True))
    champions = metrics[metrics["is_champion"]].set_index("server_id")["model"]
    assert champions["srv-new"] == champions["srv-00"]
    new = forecasts[(forecasts["server_id"] == "srv-new") & forecasts["is_champion"]]
    width = new["p90"] - new["p10"]
    assert len(new) == HORIZON and (width > 0).all() and (width < 60).all()
    assert metrics.loc[metrics["server_id"] == "srv-new", "status"].eq("insufficient_history").all()


def test_band_offsets_widen_past_the_window_and_need_enough_residuals() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(0, 1, (200, 10)).astype(np.float32)
    lower, upper = band_offsets([rows], 40)
    assert lower is not None and upper is not None and lower.size == upper.size == 40
    assert np.all(lower <= 0) and np.all(upper >= 0)
    np.testing.assert_allclose(upper[:10], 1.28, atol=0.25)  # the normal's 90th percentile
    np.testing.assert_allclose(upper[39], upper[9] * 2, rtol=1e-6)  # sqrt(40 / 10)
    few = rng.normal(0, 1, (2, (MIN_RESIDUALS - 1) // 2)).astype(np.float32)
    assert band_offsets([few], 10) == (None, None)
    assert band_offsets([], 10) == (None, None)


def test_a_backtest_sample_chooses_and_calibrates_for_the_whole_metric() -> None:
    frame, truth = held_out_fleet(40, seed=5, kind="walk")
    forecasts, metrics = run(frame, backtest_sample=12)
    scored = metrics[metrics["n_origins"] > 0]
    assert scored.groupby("metric")["server_id"].nunique().tolist() == [12]
    unscored = metrics[metrics["n_origins"] == 0]
    assert unscored["server_id"].nunique() == 28 and unscored["mae"].isna().all()
    assert (unscored["status"] == "ok").all()
    champions = metrics[metrics["is_champion"]]
    assert champions["model"].nunique() == 1 and len(champions) == 40
    # The same choice as backtesting all 40, and bands as honest on the series that were only fitted.
    _, everything = run(frame)
    assert set(everything.loc[everything["is_champion"], "model"]) == set(champions["model"])
    only_fitted = set(unscored["server_id"])
    share = coverage_of(forecasts[forecasts["server_id"].isin(only_fitted)], truth)
    assert 0.7 <= share <= 0.9


def test_a_forecast_leaving_the_range_faster_than_the_series_ever_moved_runs_away() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(400)
    steady = 50 + 8 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 1, t.size)
    moves = largest_moves(steady, HORIZON, 7)
    repeat = np.tile(steady[-7:], 5)[:HORIZON]
    ramp = steady[-1] + np.linspace(1, 45, HORIZON)
    assert not runaway(repeat, steady, 7, moves)
    assert runaway(ramp, steady, 7, moves)
    assert runaway(np.full(HORIZON, 5.0), steady, 7, moves)  # a collapse below anything seen
    growing = 20 + 0.1 * t + rng.normal(0, 1, t.size)
    grown = largest_moves(growing, 90, 7)
    assert not runaway(growing[-1] + 0.1 * np.arange(1, 91), growing, 7, grown)  # its own slope: not suspect
    assert runaway(growing[-1] + 0.4 * np.arange(1, 91), growing, 7, grown)  # four times as fast


def test_a_series_whose_champion_runs_away_gets_the_median() -> None:
    rows = np.zeros((1, 5), dtype=np.float32)
    names = frozenset({"recent_trend", "seasonal_naive", COMBINATION})

    def series(name: str, runs: frozenset[str]) -> SeriesBacktest:
        scores = {"recent_trend": 1.0, "seasonal_naive": 2.0, COMBINATION: 1.5}
        return SeriesBacktest(name, "disk", 1.0, "recent_trend", scores, dict.fromkeys(scores, rows), names, runs)

    fleet = [series(f"s{i}", frozenset()) for i in range(5)]
    fleet += [series("peak", frozenset({"recent_trend"})), series("both", frozenset({"recent_trend", COMBINATION}))]
    picked = choose(fleet, 5).series
    assert picked[("s0", "disk")] == "recent_trend"
    assert picked[("peak", "disk")] == COMBINATION and picked[("both", "disk")] == "seasonal_naive"


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_the_runaway_guard_reaches_every_worker(monkeypatch: pytest.MonkeyPatch, n_jobs: int) -> None:
    """The guard is applied inside each chunk of series, so every path (one worker or many) must pass it on."""
    from capacity_forecaster.forecasting import engine

    seen: list[bool] = []
    real = engine.run_chunk

    def recording(*args: object) -> object:
        seen.append(bool(args[4]) if len(args) > 4 else False)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "run_chunk", recording)
    monkeypatch.setattr(engine, "Parallel", functools.partial(engine.Parallel, backend="threading"))
    frame, _ = held_out_fleet(20, 5, "weekly")  # two chunks of at most 16 series
    run(frame, runaway_guard=True, n_jobs=n_jobs)
    assert len(seen) == 2 and all(seen)
