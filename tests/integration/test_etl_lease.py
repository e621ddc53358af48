"""Runs that write the same tables, one at a time: two ETL runs on one lake (local and on the moto server), the
CLI's exit status, and what the ETL and risk Lambdas do when another run holds the lease."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from capacity_forecaster import etl
from capacity_forecaster.cli import main
from capacity_forecaster.ingest import ingest_files
from capacity_forecaster.schema import ETL_RUNS, METRICS_DAILY
from capacity_forecaster.settings import Settings, load_settings
from capacity_forecaster.stages import ETL_LEASE, RISK_LEASE, StageResult, run_etl
from capacity_forecaster.storage.lake import Lake, open_lake
from capacity_forecaster.storage.lease import Lease, LeaseHeld, lease_key
from tests.lambda_modules import LambdaContext, load_handler

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EVENTS = Path(__file__).resolve().parents[1] / "events"


def export(folder: Path, name: str, day: str, server: str) -> Path:
    lines = ["timestamp,server_id,metric,value"] + [f"{day}T10:{5 * i:02d}:00Z,{server},cpu,{10 + i}" for i in range(6)]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(params=["local", "s3"])
def lake_and_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Lake, Settings]]:
    if request.param == "local":
        uri = str(tmp_path / "lake")
        yield open_lake(uri), load_settings(environ={}, overrides={"lake": uri})
        return
    bucket: str = request.getfixturevalue("s3_bucket")
    request.getfixturevalue("s3_endpoint_env")  # CF_S3_ENDPOINT_URL: the moto server
    settings = load_settings(environ={}, overrides={"lake": f"s3://{bucket}"})
    yield open_lake(settings.lake, settings.s3_config()), settings


def test_two_etl_runs_at_once_one_runs_one_is_refused_and_etl_runs_counts_once(
    lake_and_settings: tuple[Lake, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, settings = lake_and_settings
    ingest_files(lake, [export(tmp_path, "a.csv", "2026-11-20", "s1")], now=NOW)
    # The run that gets the lease waits inside its pass until the other run has given up: they overlap for sure.
    other_done = threading.Event()
    real_read = etl.read_raw_object

    def slow_read(*args: Any, **kwargs: Any) -> Any:
        assert other_done.wait(timeout=60)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(etl, "read_raw_object", slow_read)
    barrier = threading.Barrier(2)
    outcomes: dict[str, list[Any]] = {"succeeded": [], "refused": []}

    def run() -> None:
        barrier.wait()
        try:
            outcomes["succeeded"].append(run_etl(lake, settings, now=NOW))
        except LeaseHeld as exc:
            outcomes["refused"].append(str(exc))
            other_done.set()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(outcomes["succeeded"]) == 1 and len(outcomes["refused"]) == 1
    [result] = outcomes["succeeded"]
    assert isinstance(result, StageResult) and result.counts["rows_in"] == 6 and "passes" not in result.counts
    assert outcomes["refused"][0].startswith(
        f"another etl run holds the lease at {lake.store.uri_for(lease_key(ETL_LEASE))}"
    )
    runs = lake.read_table(ETL_RUNS)
    assert len(runs) == 1 and runs["rows_in"].tolist() == [6]
    assert len(lake.read_table(METRICS_DAILY)) == 1
    assert not lake.store.exists(lease_key(ETL_LEASE))


def test_objects_that_land_during_a_run_are_processed_before_it_releases_the_lease(
    lake_and_settings: tuple[Lake, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, settings = lake_and_settings
    ingest_files(lake, [export(tmp_path, "a.csv", "2026-11-20", "s1")], now=NOW)
    real_read = etl.read_raw_object
    landed: list[str] = []

    def read_and_upload(*args: Any, **kwargs: Any) -> Any:
        if not landed:  # an upload arrives while the first pass runs (its ETL event would find the lease held)
            landed.append("b.csv")
            ingest_files(lake, [export(tmp_path, "b.csv", "2026-11-21", "s2")], now=NOW)
            with pytest.raises(LeaseHeld):
                run_etl(lake, settings, now=NOW)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(etl, "read_raw_object", read_and_upload)
    result = run_etl(lake, settings, now=NOW)
    assert result.counts["passes"] == 2 and result.counts["files_read"] == 2 and result.counts["rows_in"] == 12
    assert len(result.counts["run_ids"]) == 2
    assert sorted(lake.read_table(METRICS_DAILY)["server_id"]) == ["s1", "s2"]
    assert lake.read_table(ETL_RUNS)["rows_in"].sum() == 12  # each pass records its own rows, once


def test_cli_exits_2_with_one_line_naming_the_holder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake_dir = tmp_path / "lake"
    lake = open_lake(lake_dir)
    with Lease(lake.store, ETL_LEASE, owner="lambda capacity-forecaster-etl", renew=False):
        assert main(["etl", "--lake", str(lake_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: another etl run holds the lease at ")
    assert "lambda capacity-forecaster-etl since " in err and " until " in err
    assert main(["etl", "--lake", str(lake_dir)]) == 0  # released: the next run goes ahead


def test_cli_wait_runs_once_the_holder_releases_the_lease(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake_dir = tmp_path / "lake"
    lake = open_lake(lake_dir)
    ingest_files(lake, [export(tmp_path, "a.csv", "2026-11-20", "s1")], now=NOW)
    holder = Lease(lake.store, ETL_LEASE, owner="ops@laptop pid 9", renew=False).acquire()
    timer = threading.Timer(1.0, holder.release)
    timer.start()
    started = time.monotonic()
    try:
        assert main(["etl", "--wait", "10", "--lake", str(lake_dir)]) == 0
    finally:
        timer.cancel()
    waited = time.monotonic() - started
    assert 1.0 <= waited < 10, waited  # it waited for the release, not for its whole --wait
    assert "rows_in=6" in capsys.readouterr().out
    assert lake.read_table(ETL_RUNS)["rows_in"].tolist() == [6]
    assert not lake.store.exists(lease_key(ETL_LEASE))


@pytest.mark.parametrize("command", ["etl", "risk", "train", "demo"])
def test_cli_wait_gives_up_after_its_time_with_one_line_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    from capacity_forecaster.forecasting.job import TRAIN_LEASE

    lake_dir = tmp_path / "lake"
    lake = open_lake(lake_dir)
    name = {"etl": ETL_LEASE, "risk": RISK_LEASE, "train": TRAIN_LEASE, "demo": ETL_LEASE}[command]
    if command == "demo":  # the pipeline's generate step runs before its ETL takes the lease: keep it small
        extra = ["--servers", "2", "--days", "30", "--report-dir", str(tmp_path / "reports")]
    else:
        extra = []
        if command in ("risk", "train"):  # a lake with what the stage needs before it takes its lease
            _small_lake_for_training(lake_dir)
    with Lease(lake.store, name, owner="ops@laptop pid 10", renew=False):
        started = time.monotonic()
        assert main([command, "--wait", "1", "--lake", str(lake_dir), *extra]) == 2
        waited = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: another {name} run holds the lease at "), err
    assert "ops@laptop pid 10 since " in err and "waited 1s for it (--wait)" in err
    assert waited >= 1.0, waited


def _small_lake_for_training(lake_dir: Path) -> None:
    from datetime import date

    from capacity_forecaster.stages import run_etl, run_generate, run_train

    uri = str(lake_dir)
    lake = open_lake(uri)
    settings = load_settings(
        environ={},
        overrides={"lake": uri, "fleet.servers": 2, "fleet.days": 60, "training.models": "seasonal_naive"},
    )
    run_generate(lake, settings, run_date=date(2026, 11, 23))
    run_etl(lake, settings)
    run_train(lake, settings, run_date=date(2026, 11, 23))


def test_a_lease_wait_polls_with_back_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from capacity_forecaster.storage import lease as module

    lake = open_lake(tmp_path / "lake")
    pauses: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(module, "time", SimpleNamespace(sleep=sleep, monotonic=lambda: clock[0]))
    with Lease(lake.store, ETL_LEASE, owner="other", renew=False):
        with module.waiting_for_leases(20), pytest.raises(LeaseHeld, match="waited 20s"):
            Lease(lake.store, ETL_LEASE, renew=False).acquire()
        with pytest.raises(LeaseHeld) as info:  # outside the block: refused at once, as before
            Lease(lake.store, ETL_LEASE, renew=False).acquire()
    assert "waited" not in str(info.value) and len(pauses) > 4
    assert sum(pauses) == pytest.approx(20)
    assert pauses[0] < pauses[1] < pauses[2] < pauses[3]  # doubling (with jitter) up to the cap
    assert pauses[0] <= module.WAIT_FIRST_S and max(pauses) <= module.WAIT_CAP_S


@pytest.fixture
def lambda_lake(monkeypatch: pytest.MonkeyPatch, s3_bucket: str, moto_server: str) -> Lake:
    for key, value in {
        "CF_LAKE": f"s3://{s3_bucket}",
        "CF_S3_ENDPOINT_URL": moto_server,
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster",
        "POWERTOOLS_METRICS_NAMESPACE": "CapacityForecaster",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    return open_lake(f"s3://{s3_bucket}", load_settings().s3_config())


def test_etl_lambda_returns_busy_while_a_cli_run_holds_the_lease(lambda_lake: Lake) -> None:
    event = (EVENTS / "scheduled_event.json").read_text()
    with Lease(lambda_lake.store, ETL_LEASE, owner="ops@laptop pid 7", renew=False):
        result = load_handler("etl").handler(json.loads(event), LambdaContext())
    assert result["status"] == "busy"
    assert "ops@laptop pid 7 since " in result["reason"]
    assert load_handler("etl").handler(json.loads(event), LambdaContext())["status"] == "succeeded"


def test_risk_lambda_raises_for_a_retry_while_the_lease_is_held(lambda_lake: Lake) -> None:
    event = json.loads((EVENTS / "sagemaker_training_job_state_change.json").read_text())
    with Lease(lambda_lake.store, RISK_LEASE, owner="ops@laptop pid 8", renew=False):
        with pytest.raises(LeaseHeld, match="ops@laptop pid 8"):
            load_handler("risk").handler(event, LambdaContext())
        assert lambda_lake.store.exists(lease_key(RISK_LEASE))  # the holder's lease is left alone


def test_local_training_is_refused_while_another_holds_the_train_or_risk_lease(tmp_path: Path) -> None:
    """`capacity-forecaster train` on a lake: one local training run at a time (a second one would clean the
    first one's staging), and its publication waits for no one: it is refused while the risk lease is held."""
    from datetime import date

    from capacity_forecaster.forecasting.job import TRAIN_LEASE
    from capacity_forecaster.stages import run_generate, run_train

    uri = str(tmp_path / "lake")
    lake = open_lake(uri)
    settings = load_settings(
        environ={},
        overrides={"lake": uri, "fleet.servers": 2, "fleet.days": 60, "training.models": "seasonal_naive"},
    )
    run_generate(lake, settings, run_date=date(2026, 11, 23))
    run_etl(lake, settings)
    for name in (TRAIN_LEASE, RISK_LEASE):
        with Lease(lake.store, name, owner="someone else"), pytest.raises(LeaseHeld, match="someone else"):
            run_train(lake, settings, run_date=date(2026, 11, 23))
        assert not lake.store.exists(lease_key(name))  # released by its holder, not by the refused run
    assert run_train(lake, settings, run_date=date(2026, 11, 23)).counts["series"] == 8
