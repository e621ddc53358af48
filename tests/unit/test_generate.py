"""The synthetic fleet generator: schema, determinism, planted behaviour and the ground truth."""

from __future__ import annotations

import pickle
from datetime import date, datetime, timedelta

import holidays
import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.generate import (
    APPLICATIONS,
    BREACH_RUN_DAYS,
    Fleet,
    FleetSpec,
    daily_as_raw_samples,
    generate_fleet,
    generate_raw_samples,
)
from capacity_forecaster.schema import GROUND_TRUTH, METRICS, RAW_SAMPLES, SERVERS

END = date(2025, 6, 30)
SPEC = FleetSpec(servers=80, days=730, end_date=END, horizon_days=90, seed=11)
LONG_COLUMNS = ["server_id", "metric", "dt", "p95"]
STR = pd.Series(["x"]).dtype  # pandas' default string dtype


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return generate_fleet(SPEC)


@pytest.fixture(scope="module")
def daily(fleet: Fleet) -> pd.DataFrame:
    """fleet.daily with the server attributes and the planted truth joined on."""
    attrs = fleet.servers[["server_id", "application"]]
    truth = fleet.ground_truth[["server_id", "metric", "pattern", "is_idle"]]
    out = fleet.daily.merge(attrs, on="server_id").merge(truth, on=["server_id", "metric"])
    out["business"] = out["application"].map(lambda a: APPLICATIONS[a].business).astype(bool)
    return out


# ------------------------------------------------------------------------------------------ shape and schema


def test_frames_have_the_schema_columns_and_dtypes(fleet: Fleet) -> None:
    assert list(fleet.servers.columns) == SERVERS.column_names
    assert list(fleet.ground_truth.columns) == GROUND_TRUTH.column_names
    assert list(fleet.daily.columns) == LONG_COLUMNS
    assert list(fleet.future.columns) == LONG_COLUMNS
    for frame, cols in [
        (fleet.servers, ["server_id", "application", "environment", "datacenter", "instance_type"]),
        (fleet.daily, ["server_id", "metric"]),
        (fleet.ground_truth, ["server_id", "metric", "pattern"]),
    ]:
        for col in cols:
            assert frame[col].dtype == STR, col
    assert fleet.servers["cores"].dtype == np.int32
    for frame, col in [(fleet.daily, "dt"), (fleet.future, "dt"), (fleet.ground_truth, "breach_date")]:
        assert pd.api.types.is_datetime64_dtype(frame[col]) and frame[col].dt.tz is None
        assert (frame[col].dropna() == frame[col].dropna().dt.normalize()).all()
    assert fleet.ground_truth["will_breach"].dtype == bool
    assert fleet.ground_truth["is_idle"].dtype == bool


def test_shapes_and_date_ranges(fleet: Fleet) -> None:
    n = SPEC.servers
    assert len(fleet.servers) == n
    assert fleet.servers["server_id"].is_unique
    assert fleet.servers["server_id"].iloc[0] == "srv-0001"
    assert len(fleet.ground_truth) == n * len(METRICS)
    assert len(fleet.future) == n * len(METRICS) * SPEC.horizon_days
    assert len(fleet.daily) <= n * len(METRICS) * SPEC.days
    assert fleet.daily.groupby(["server_id", "metric"]).ngroups == n * len(METRICS)
    assert fleet.daily["dt"].min() >= pd.Timestamp(SPEC.start_date)
    assert fleet.daily["dt"].max() == pd.Timestamp(END)
    assert fleet.future["dt"].min() == pd.Timestamp(END + timedelta(days=1))
    assert fleet.future["dt"].max() == pd.Timestamp(END + timedelta(days=SPEC.horizon_days))
    assert set(fleet.daily["metric"]) == set(METRICS)
    assert fleet.servers["monthly_cost"].gt(0).all()
    assert set(fleet.servers["environment"]) <= {"prod", "staging", "dev"}


def test_same_spec_gives_identical_frames_and_another_seed_does_not(fleet: Fleet) -> None:
    again = generate_fleet(SPEC)
    for name in ("servers", "daily", "future", "ground_truth", "expected"):
        pd.testing.assert_frame_equal(getattr(fleet, name), getattr(again, name))
    other = generate_fleet(FleetSpec(servers=SPEC.servers, days=SPEC.days, end_date=END, seed=SPEC.seed + 1))
    assert not fleet.future["p95"].equals(other.future["p95"])
    assert not fleet.servers.equals(other.servers)


def test_values_are_percentages(fleet: Fleet) -> None:
    for frame in (fleet.daily, fleet.future):
        assert frame["p95"].notna().all()
        assert frame["p95"].between(0.0, 100.0).all()
    assert (fleet.future["p95"] == 100.0).any(), "some series should sit saturated at 100"


def test_missing_days_are_whole_server_days_at_about_the_rate() -> None:
    spec = FleetSpec(servers=60, days=365, end_date=END, missing_rate=0.05)
    fleet = generate_fleet(spec)
    share = 1 - len(fleet.daily) / (spec.servers * len(METRICS) * spec.days)
    assert share == pytest.approx(0.05, abs=0.01)
    assert (fleet.daily.groupby(["server_id", "dt"]).size() == len(METRICS)).all()
    complete = generate_fleet(FleetSpec(servers=5, days=60, end_date=END, missing_rate=0.0))
    assert len(complete.daily) == 5 * len(METRICS) * 60


# ------------------------------------------------------------------------------------------ planted behaviour


def test_business_cpu_is_higher_on_weekdays_than_on_weekends(daily: pd.DataFrame) -> None:
    cpu = daily[(daily["metric"] == "cpu") & daily["business"] & ~daily["is_idle"]]
    weekend = cpu["dt"].dt.day_of_week >= 5
    assert cpu.loc[~weekend, "p95"].mean() > cpu.loc[weekend, "p95"].mean() + 5


def test_business_cpu_is_lower_on_bank_holidays(daily: pd.DataFrame) -> None:
    cpu = daily[(daily["metric"] == "cpu") & daily["business"] & ~daily["is_idle"]]
    cpu = cpu[cpu["dt"].dt.day_of_week < 5]
    bank = pd.to_datetime(list(holidays.country_holidays("US", years=range(2023, 2026))))
    on_holiday = cpu["dt"].isin(bank)
    assert on_holiday.sum() > 0
    assert cpu.loc[on_holiday, "p95"].mean() < cpu.loc[~on_holiday, "p95"].mean() - 5


def test_quarter_end_peak_is_visible(daily: pd.DataFrame) -> None:
    cpu = daily[(daily["metric"] == "cpu") & (daily["pattern"] == "seasonal_peak")]
    in_quarter_month = cpu["dt"].dt.month.isin([3, 6, 9, 12])
    last_days = in_quarter_month & (cpu["dt"].dt.days_in_month - cpu["dt"].dt.day < 3)
    mid_month = in_quarter_month & cpu["dt"].dt.day.between(8, 20)
    assert cpu.loc[last_days, "p95"].mean() > cpu.loc[mid_month, "p95"].mean() + 8


def test_disk_sawtooth_has_clean_ups(daily: pd.DataFrame) -> None:
    disk = daily[(daily["metric"] == "disk") & (daily["pattern"] == "sawtooth")]
    assert disk["server_id"].nunique() >= 10
    drops = disk.groupby("server_id")["p95"].diff().lt(-10).groupby(disk["server_id"]).sum()
    assert (drops >= 2).all()


def test_mem_level_shifts_move_the_level(daily: pd.DataFrame) -> None:
    mem = daily[(daily["metric"] == "mem") & (daily["pattern"] == "level_shift")]
    by_server = mem.groupby("server_id")["p95"]
    spread = by_server.quantile(0.9) - by_server.quantile(0.1)
    assert spread.median() > 5


def test_idle_servers_are_low_and_only_they_are(fleet: Fleet) -> None:
    truth = fleet.ground_truth
    idle_ids = set(truth.loc[truth["is_idle"], "server_id"])
    assert len(idle_ids) == round(0.1 * SPEC.servers)
    assert truth.groupby("server_id")["is_idle"].nunique().eq(1).all()
    assert (truth.loc[truth["is_idle"], "pattern"] == "idle").all()
    both = pd.concat([fleet.daily, fleet.future])
    peak = both[both["server_id"].isin(idle_ids)].groupby("metric")["p95"].max()
    assert peak["cpu"] < 12 and peak["net"] < 12 and peak["mem"] < 30 and peak["disk"] < 35
    recent = fleet.daily[fleet.daily["dt"] > pd.Timestamp(END - timedelta(days=30))]
    busy_cpu = recent[(recent["metric"] == "cpu") & ~recent["server_id"].isin(idle_ids)]
    assert busy_cpu.groupby("server_id")["p95"].max().ge(15).all()


# ----------------------------------------------------------------------------------------------- ground truth


def _first_sustained_breach(values: np.ndarray, threshold: float) -> int | None:
    """Index of the first day of the first run of BREACH_RUN_DAYS days at or over the threshold."""
    run = 0
    for i, v in enumerate(values):
        run = run + 1 if v >= threshold else 0
        if run == BREACH_RUN_DAYS:
            return i - BREACH_RUN_DAYS + 1
    return None


def test_ground_truth_matches_the_future_by_the_documented_rule(fleet: Fleet) -> None:
    truth = fleet.ground_truth
    assert (truth["will_breach"] == truth["breach_date"].notna()).all()
    first_day = pd.Timestamp(END + timedelta(days=1))
    history_tail = fleet.daily[fleet.daily["dt"] > pd.Timestamp(END - timedelta(days=BREACH_RUN_DAYS))]
    tail = history_tail.groupby(["server_id", "metric"])["p95"].min().to_dict()
    future = {key: group.sort_values("dt") for key, group in fleet.future.groupby(["server_id", "metric"])}
    already = matched = 0
    for server, metric, threshold, breach_date in truth[["server_id", "metric", "threshold", "breach_date"]].itertuples(
        index=False
    ):
        values = future[(server, metric)]
        start = _first_sustained_breach(values["p95"].to_numpy(), threshold)
        if pd.isna(breach_date):
            assert start is None, (server, metric)
        elif start is not None and breach_date == values["dt"].iloc[start]:
            matched += 1
        else:
            # Already breaching at the end of history: observed values there are the true ones or higher
            # (spikes only go up), so the observed tail must be at or over the threshold.
            assert breach_date == first_day, (server, metric)
            assert tail.get((server, metric), np.inf) >= threshold, (server, metric)
            already += 1
    assert already + matched == truth["will_breach"].sum()
    assert matched > already > 0  # both cases are exercised


def test_expected_is_the_future_without_its_noise(fleet: Fleet) -> None:
    """The noise-free horizon lines up with ``future`` row for row, and what ``future`` adds to it is the
    documented Gaussian noise: about one ``noise_sd`` wide, centred on zero (away from the 0 and 100 clips)."""
    expected = fleet.expected
    assert list(expected.columns) == [*LONG_COLUMNS, "noise_sd"]
    assert len(expected) == len(fleet.future)
    pd.testing.assert_frame_equal(expected[["server_id", "metric", "dt"]], fleet.future[["server_id", "metric", "dt"]])
    assert expected["p95"].between(0.0, 100.0).all() and (expected["noise_sd"] > 0).all()
    assert (expected.groupby(["server_id", "metric"])["noise_sd"].nunique() == 1).all()
    inside = expected["p95"].between(10.0, 90.0)
    z = ((fleet.future["p95"] - expected["p95"]) / expected["noise_sd"])[inside]
    assert abs(float(z.mean())) < 0.02
    assert 0.97 < float(z.std()) < 1.03


def test_breach_share_is_realistic() -> None:
    shares = []
    for seed, end in [(1, date(2025, 12, 31)), (2, date(2025, 8, 15)), (3, date(2026, 2, 10))]:
        truth = generate_fleet(FleetSpec(servers=150, days=400, end_date=end, seed=seed)).ground_truth
        shares.append(truth["will_breach"].mean())
        by_pattern = truth.groupby("pattern")["will_breach"].mean()
        assert by_pattern["saturating"] > 0.6
        assert by_pattern["idle"] == 0
        assert by_pattern["steady"] < 0.1
    assert all(0.12 <= s <= 0.32 for s in shares), shares


def test_thresholds_are_per_metric() -> None:
    spec = FleetSpec(servers=40, days=120, end_date=END, thresholds={"cpu": 50.0})
    truth = generate_fleet(spec).ground_truth
    assert truth.groupby("metric")["threshold"].first().to_dict() == {
        "cpu": 50.0,
        "disk": 80.0,
        "mem": 80.0,
        "net": 80.0,
    }
    assert spec.thresholds["mem"] == 80.0
    assert pickle.loads(pickle.dumps(spec)) == spec  # specs travel to worker processes
    assert hash(spec) == hash(FleetSpec(servers=40, days=120, end_date=END))


# ------------------------------------------------------------------------------------------------ raw samples


def test_raw_samples_have_the_daily_p95(fleet: Fleet) -> None:
    days = [END, END - timedelta(days=200)]
    raw = generate_raw_samples(fleet, days)
    assert list(raw.columns) == [*RAW_SAMPLES.column_names, "dt"]
    assert str(raw["timestamp"].dt.tz) == "UTC"
    assert raw["server_id"].dtype == STR and raw["metric"].dtype == STR
    assert raw["value"].between(0.0, 100.0).all()
    assert (raw["timestamp"].dt.tz_localize(None).dt.normalize() == raw["dt"]).all()
    p95 = raw.groupby(["server_id", "metric", "dt"])["value"].quantile(0.95)
    observed = fleet.daily[fleet.daily["dt"].isin(pd.to_datetime(days))]
    expected = observed.set_index(["server_id", "metric", "dt"])["p95"]
    assert len(p95) == len(expected)  # missing days have no samples
    assert raw.groupby(["server_id", "metric", "dt"]).size().eq(288).all()
    assert np.abs(p95 - expected.reindex(p95.index)).max() < 1e-6
    samples_per_series = raw.groupby(["server_id", "metric", "dt"])["value"]
    assert (samples_per_series.max() - samples_per_series.min()).median() > 1  # a diurnal shape, not a line


def test_raw_samples_are_deterministic_per_day(fleet: Fleet) -> None:
    one = generate_raw_samples(fleet, [END], interval_minutes=60)
    two = generate_raw_samples(fleet, [END - timedelta(days=1), END], interval_minutes=60)
    later = two[two["dt"] == pd.Timestamp(END)].reset_index(drop=True)
    pd.testing.assert_frame_equal(one, later)
    assert not generate_raw_samples(fleet, [END], 60, seed=5)["value"].equals(one["value"])


def test_raw_samples_reject_bad_arguments(fleet: Fleet) -> None:
    with pytest.raises(InputError):
        generate_raw_samples(fleet, [END], interval_minutes=7)
    with pytest.raises(InputError):
        generate_raw_samples(fleet, [END + timedelta(days=1)])
    assert generate_raw_samples(fleet, []).empty


def test_daily_as_raw_samples(fleet: Fleet) -> None:
    raw = daily_as_raw_samples(fleet.daily)
    assert list(raw.columns) == [*RAW_SAMPLES.column_names, "dt"]
    assert len(raw) == len(fleet.daily)
    assert str(raw["timestamp"].dt.tz) == "UTC"
    assert (raw["timestamp"].dt.tz_localize(None) == fleet.daily["dt"]).all()
    assert raw["value"].equals(fleet.daily["p95"].rename("value"))


# ------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "changes",
    [
        {"servers": 0},
        {"days": 27},
        {"horizon_days": 0},
        {"horizon_days": 731},
        {"seed": -1},
        {"country": "XX"},
        {"thresholds": {"cpu": 0.0}},
        {"thresholds": {"cpu": 100.5}},
        {"thresholds": {"gpu": 80.0}},
        {"missing_rate": 0.9},
        {"end_date": "2025-06-30"},
        {"servers": 2.5},
    ],
)
def test_invalid_spec_is_a_config_error(changes: dict[str, object]) -> None:
    kwargs: dict[str, object] = {"end_date": END, **changes}
    with pytest.raises(ConfigError) as err:
        FleetSpec(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_spec_accepts_a_datetime_end_date_and_a_short_horizon() -> None:
    spec = FleetSpec(servers=3, days=28, end_date=datetime(2025, 6, 30, 12), horizon_days=1, country="GB")
    assert spec.end_date == END
    fleet = generate_fleet(spec)
    assert len(fleet.future) == 3 * len(METRICS)
    assert len(fleet.ground_truth) == 3 * len(METRICS)
