"""The demo generator appends: a later run writes only the new days, continuing the same fleet, rewrites
nothing, and refuses a lake that holds user uploads (on a local lake, through the CLI, and through the
generate handler against the moto S3 server)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.generate import FleetSpec, generate_fleet
from capacity_forecaster.schema import GROUND_TRUTH, RAW_SAMPLES, SERVERS
from capacity_forecaster.settings import Settings, load_settings
from capacity_forecaster.stages import DEMO_FLEET_KEY, run_generate
from capacity_forecaster.storage.lake import Lake, open_lake, partition_key
from tests.lambda_modules import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[2]
RUN_DATE = date(2026, 11, 23)
LATER = RUN_DATE + timedelta(days=3)
UPLOAD = "raw/uploads/tenants/acme/2026/11/23/20261123T060000Z_export.csv"
SMALL = {"CF_FLEET_SERVERS": "6", "CF_FLEET_DAYS": "60", "CF_HORIZON_DAYS": "30"}


def objects(lake: Lake) -> dict[str, bytes]:
    """Every object of the lake, by key."""
    return {info.key: lake.store.get_bytes(info.key) for info in lake.store.list("")}


def raw_days(lake: Lake) -> list[str]:
    return [v["dt"] for v in lake.list_partitions(RAW_SAMPLES)]


def fresh_daily(settings: Settings, first_day: date, end_date: date) -> pd.DataFrame:
    """What a fresh generation of the whole span, first_day to end_date, gives: the reference."""
    spec = FleetSpec(
        servers=settings.fleet.servers,
        days=settings.fleet.days,
        horizon_days=settings.horizon_days,
        seed=settings.fleet.seed,
        country=settings.fleet.country,
        thresholds=dict(settings.risk.thresholds),
        end_date=end_date,
        first_day=first_day,
    )
    daily = generate_fleet(spec).daily
    return daily.assign(value=daily["p95"], dt=daily["dt"].dt.date.astype(str))


def assert_partitions_continue(lake: Lake, settings: Settings, first_day: date, end_date: date) -> None:
    """Every raw partition holds exactly the values a fresh generation of the whole span gives."""
    reference = fresh_daily(settings, first_day, end_date)
    stored = lake.read_table(RAW_SAMPLES).assign(dt=lambda f: f["dt"].dt.date.astype(str))
    cols = ["dt", "server_id", "metric", "value"]
    got = stored[cols].sort_values(cols[:3]).reset_index(drop=True)
    want = reference[cols].sort_values(cols[:3]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


# ---- the generator --------------------------------------------------------------------------------------


def test_a_days_values_do_not_depend_on_how_far_the_history_runs() -> None:
    end = date(2025, 6, 30)
    first = end - timedelta(days=364)
    short = generate_fleet(FleetSpec(servers=30, days=365, end_date=end, seed=5))
    longer = generate_fleet(FleetSpec(servers=30, days=365, end_date=end + timedelta(days=40), seed=5, first_day=first))
    head = longer.daily[longer.daily["dt"] <= pd.Timestamp(end)].reset_index(drop=True)
    pd.testing.assert_frame_equal(head, short.daily.reset_index(drop=True))
    pd.testing.assert_frame_equal(longer.servers, short.servers)
    # the true future of the shorter history is the longer one's truth on those days (before spikes and gaps)
    overlap = short.future[short.future["dt"] <= pd.Timestamp(end + timedelta(days=40))]
    joined = overlap.merge(longer.daily, on=["server_id", "metric", "dt"], suffixes=("_future", "_observed"))
    assert len(joined) > 0.95 * len(overlap)
    assert (joined["p95_observed"] >= joined["p95_future"]).all()  # equal, or an incident spike on top
    assert (joined["p95_observed"] == joined["p95_future"]).mean() > 0.98


def test_first_day_must_leave_the_whole_design_period() -> None:
    with pytest.raises(ConfigError, match="before the last day of the fleet's 60-day design period"):
        FleetSpec(days=60, end_date=date(2025, 1, 30), first_day=date(2025, 1, 1))


# ---- the stage on a local lake ---------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(environ={"CF_LAKE": str(tmp_path / "lake"), **SMALL})


def test_append_writes_only_the_new_days_and_continues_the_fleet(settings: Settings) -> None:
    lake = open_lake(settings.lake)
    first = run_generate(lake, settings, run_date=RUN_DATE, append=True)
    assert (first.counts["days"], first.counts["last_day"]) == (60, "2026-11-22")
    before = objects(lake)

    later = run_generate(lake, settings, run_date=LATER, append=True)
    after = objects(lake)
    counts = later.counts
    assert (counts["days"], counts["first_day"], counts["last_day"]) == (3, "2026-11-23", "2026-11-25")
    new_keys = {partition_key(RAW_SAMPLES, {"dt": RUN_DATE + timedelta(days=i)}) for i in range(3)}
    assert set(after) - set(before) == new_keys
    changed = {k for k in before if after[k] != before[k]}
    assert changed == {DEMO_FLEET_KEY}  # old partitions, the inventory and the truth byte-identical
    assert json.loads(after[DEMO_FLEET_KEY])["last_day"] == "2026-11-25"
    assert "series_breaching_in_truth" not in later.counts
    assert_partitions_continue(lake, settings, RUN_DATE - timedelta(days=60), LATER - timedelta(days=1))

    again = run_generate(lake, settings, run_date=LATER, append=True)
    assert again.counts["days"] == 0 and objects(lake) == after


def test_the_lakes_fleet_wins_over_changed_settings(settings: Settings, tmp_path: Path) -> None:
    lake = open_lake(settings.lake)
    run_generate(lake, settings, run_date=RUN_DATE, append=True)
    bigger = load_settings(environ={"CF_LAKE": str(tmp_path / "lake"), **SMALL, "CF_FLEET_SERVERS": "9"})
    result = run_generate(lake, bigger, run_date=LATER, append=True)
    assert result.counts["servers"] == 6 and len(lake.read_table(SERVERS)) == 6
    assert_partitions_continue(lake, settings, RUN_DATE - timedelta(days=60), LATER - timedelta(days=1))


def test_a_lake_without_a_record_continues_from_its_first_partition(settings: Settings) -> None:
    lake = open_lake(settings.lake)
    run_generate(lake, settings, run_date=RUN_DATE)  # a whole generation, then the record lost
    lake.store.delete(DEMO_FLEET_KEY)
    result = run_generate(lake, settings, run_date=LATER, append=True)
    assert result.counts["days"] == 3 and len(raw_days(lake)) == 63
    assert_partitions_continue(lake, settings, RUN_DATE - timedelta(days=60), LATER - timedelta(days=1))


def test_the_record_outlives_expired_raw_partitions(settings: Settings) -> None:
    """raw/ objects expire by lifecycle: the record, not the oldest partition left, anchors the fleet."""
    lake = open_lake(settings.lake)
    run_generate(lake, settings, run_date=RUN_DATE, append=True)
    for dt in raw_days(lake)[:40]:
        lake.delete_partition(RAW_SAMPLES, {"dt": dt})
    result = run_generate(lake, settings, run_date=LATER, append=True)
    assert (result.counts["days"], len(raw_days(lake))) == (3, 23)
    reference = fresh_daily(settings, RUN_DATE - timedelta(days=60), LATER - timedelta(days=1))
    new = lake.read_table(RAW_SAMPLES, where={"dt": LATER - timedelta(days=1)})
    want = reference[reference["dt"] == (LATER - timedelta(days=1)).isoformat()]
    assert sorted(new["value"]) == sorted(want["value"])


def test_without_append_the_whole_history_is_rewritten_as_before(settings: Settings) -> None:
    lake = open_lake(settings.lake)
    first = run_generate(lake, settings, run_date=RUN_DATE)
    assert first.counts["days"] == 60 and lake.store.exists(partition_key(GROUND_TRUTH, None))
    assert run_generate(lake, settings, run_date=LATER).counts["days"] == 60


def test_generation_refuses_a_lake_with_user_uploads(settings: Settings) -> None:
    lake = open_lake(settings.lake)
    lake.store.put_bytes(UPLOAD, b"timestamp,server_id,metric,value\n2026-11-22T10:00:00Z,web-1,cpu,40\n")
    for append in (False, True):
        with pytest.raises(InputError, match=r"holds user uploads \(raw/uploads/tenants/acme/.*a lake of its own"):
            run_generate(lake, settings, run_date=RUN_DATE, append=append)
    assert [info.key for info in lake.store.list("")] == [UPLOAD]


def test_cli_append_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake_dir = tmp_path / "lake"
    common = ["--lake", str(lake_dir), "--servers", "4", "--days", "40"]
    assert main(["generate", *common, "--run-date", "2026-11-23", "--append"]) == 0
    assert main(["generate", *common, "--run-date", "2026-11-25", "--append"]) == 0
    assert len(raw_days(open_lake(lake_dir))) == 42
    open_lake(lake_dir).store.put_bytes(UPLOAD, b"timestamp,server_id,metric,value\n")
    capsys.readouterr()
    assert main(["generate", *common, "--run-date", "2026-11-26", "--append"]) == 2
    [line] = [text for text in capsys.readouterr().err.splitlines() if text.strip()]
    assert line.startswith("error: the lake holds user uploads (raw/uploads/tenants/acme/")


# ---- the handler on the moto S3 server -------------------------------------------------------------------


def scheduled(day: date) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((ROOT / "tests/events/scheduled_event.json").read_text())
    event["time"] = f"{day.isoformat()}T01:00:00Z"
    return event


def test_scheduled_handler_appends_on_s3_and_refuses_uploads(
    monkeypatch: pytest.MonkeyPatch, s3_bucket: str, moto_server: str
) -> None:
    env = {
        "CF_LAKE": f"s3://{s3_bucket}",
        "CF_S3_ENDPOINT_URL": moto_server,
        **SMALL,
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster",
        "POWERTOOLS_METRICS_NAMESPACE": "CapacityForecaster",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    lake = open_lake(settings.lake, settings.s3_config())
    generate = load_handler("generate")

    first = generate.handler(scheduled(RUN_DATE), LambdaContext())
    assert (first["status"], first["days"], first["last_day"]) == ("succeeded", 60, "2026-11-22")
    before = objects(lake)
    later = generate.handler(scheduled(LATER), LambdaContext())
    assert (later["status"], later["days"], later["first_day"]) == ("succeeded", 3, "2026-11-23")
    after = objects(lake)
    assert len(set(after) - set(before)) == 3
    assert {k for k in before if after[k] != before[k]} == {DEMO_FLEET_KEY}
    assert_partitions_continue(lake, settings, RUN_DATE - timedelta(days=60), LATER - timedelta(days=1))

    lake.store.put_bytes(UPLOAD, b"timestamp,server_id,metric,value\n")
    refused = generate.handler(scheduled(LATER + timedelta(days=1)), LambdaContext())
    assert refused["status"] == "rejected" and "holds user uploads" in refused["reason"]
    assert "\n" not in refused["reason"]
    assert objects(lake).keys() == {*after, UPLOAD}
