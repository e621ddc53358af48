"""The SageMaker training contract run in a temporary folder, the multi-host publish and the local runner."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.errors import CapacityForecasterError, ConfigError
from capacity_forecaster.forecasting.job import (
    ContractPaths,
    parse_hyperparameters,
    publish_training_run,
    run_local_training,
    run_training_job,
    shard_of,
    staging_keys,
)
from capacity_forecaster.schema import FORECASTS, METRICS_DAILY, MODEL_METRICS
from capacity_forecaster.settings import TrainingSettings, load_settings
from capacity_forecaster.storage.lake import Lake, open_lake

REPO = Path(__file__).resolve().parents[2]
RUN_DATE = date(2026, 1, 10)
SERVERS = 5
METRICS = ("cpu", "mem", "disk")
DAYS = 120


def synthetic_daily(servers: int = SERVERS, days: int = DAYS) -> pd.DataFrame:
    """A few servers x metrics x ``days`` days of weekly patterns, trends and noise, ending on RUN_DATE."""
    rng = np.random.default_rng(2026)
    dates = pd.date_range(end=pd.Timestamp(RUN_DATE), periods=days, freq="D")
    t = np.arange(days)
    frames = []
    for s in range(servers):
        for k, metric in enumerate(METRICS):
            level = 20 + 10 * s + 5 * k
            y = level + (0.1 * k) * t + 6 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 2, days)
            frames.append(
                pd.DataFrame(
                    {
                        "server_id": f"srv-{s:02d}",
                        "metric": metric,
                        "dt": dates,
                        "p95": np.clip(y, 0, 100),
                        "n_samples": np.int32(288),
                        "imputed": False,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def source_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding curated/metrics_daily, written once; tests copy it."""
    root = tmp_path_factory.mktemp("source") / "lake"
    open_lake(str(root)).write_table(METRICS_DAILY, synthetic_daily())
    return root


@pytest.fixture
def lake(source_lake: Path, tmp_path: Path) -> Lake:
    root = tmp_path / "lake"
    shutil.copytree(source_lake, root)
    return open_lake(str(root))


def hyperparameters(lake: Lake, /, **overrides: str) -> dict[str, str]:
    values = {
        "run_date": RUN_DATE.isoformat(),
        "run_id": "test-run",
        "horizon_days": "30",
        "training.models": "seasonal_naive,linear_trend",
        "training.backtest_origins": "2",
        "training.score": "mae",
        "training.min_history_days": "56",
        "training.n_jobs": "1",
        "lake_uri": lake.uri,
    }
    values.update(overrides)
    return values


def contract_root(
    tmp_path: Path,
    lake: Lake,
    params: dict[str, str],
    host: str | None = None,
    hosts: list[str] | None = None,
) -> Path:
    """A contract root as SageMaker lays it out, with the lake's metrics_daily in the curated channel."""
    root = tmp_path / (host or "opt-ml")
    paths = ContractPaths(root)
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text(json.dumps(params))
    if host is not None:
        paths.resource_config.write_text(json.dumps({"current_host": host, "hosts": hosts}))
    shutil.copytree(Path(lake.uri) / METRICS_DAILY.prefix, paths.channel)
    return root


def failure_of(root: Path) -> str:
    text = ContractPaths(root).failure.read_text()
    assert text.count("\n") == 1, "the failure reason must be one line"
    return text.strip()


# ------------------------------------------------------------------------------------- the contract


def test_good_run_stages_parts_manifest_and_model_artifact(lake: Lake, tmp_path: Path) -> None:
    root = contract_root(tmp_path, lake, hyperparameters(lake))
    assert run_training_job(root) == 0  # lake_uri hyperparameter: the job opens the lake itself
    assert not ContractPaths(root).failure.exists()

    keys = staging_keys("test-run", 0, 1)
    assert keys["forecasts"] == "staging/training/run_id=test-run/forecasts/part-000-of-001.parquet"
    manifest = json.loads(lake.store.get_bytes(keys["manifest"]))
    n_series = SERVERS * len(METRICS)
    assert manifest["series"] == n_series
    assert manifest["hosts"] == 1 and manifest["host"] == "algo-1"
    assert manifest["models"] == ["seasonal_naive", "linear_trend"]
    assert manifest["forecast_rows"] == n_series * 3 * 30  # two models and their median
    assert sum(manifest["champions"].values()) == n_series
    assert manifest["seconds"] >= 0

    forecasts = lake.read_object_table(keys["forecasts"], FORECASTS)
    metrics = lake.read_object_table(keys["model_metrics"], MODEL_METRICS)
    assert len(forecasts) == manifest["forecast_rows"] and len(metrics) == n_series * 3
    assert forecasts["ds"].min() == pd.Timestamp(RUN_DATE) + pd.Timedelta(days=1)

    artifact = json.loads((ContractPaths(root).model_dir / "model.json").read_text())
    assert artifact["run_id"] == "test-run" and artifact["settings"]["horizon_days"] == 30
    assert set(artifact["models"]) == {"seasonal_naive", "linear_trend"}
    assert artifact["models"]["linear_trend"]["window"] == 84
    assert len(artifact["champions"]) == n_series
    assert {c["model"] for c in artifact["champions"]} <= {"seasonal_naive", "linear_trend", "median"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"horizon_days": "abc"}, "hyperparameters: setting horizon_days='abc' is not a valid int"),
        ({"horizon_days": "0"}, "hyperparameters: horizon_days=0 must be between 1 and 730"),
        ({"horizon_days": "731"}, "hyperparameters: horizon_days=731 must be between 1 and 730"),
        (
            {"run_date": "2026-13-01"},
            "hyperparameter run_date='2026-13-01' is not a date in the form YYYY-MM-DD",
        ),
        ({"run_date": ""}, "hyperparameter run_date is required"),
        ({"run_id": "a/b"}, "hyperparameter run_id='a/b' is not 1 to 128 characters"),
        ({"training.models": "seasonal_naive,prophet9"}, "training.models=seasonal_naive,prophet9 must name distinct"),
        ({"training.models": " , "}, "hyperparameters: training.models must name at least one model"),
        ({"training.score": "mape"}, "hyperparameters: training.score must be one of mae, rmse, smape, mase"),
        ({"training.backtest_origins": "0"}, "training.backtest_origins must be between 1 and 52"),
        ({"training.backtest_origins_hourly": "53"}, "training.backtest_origins_hourly must be between 1 and 52"),
        (
            {"backtest_horizon": "31"},
            "hyperparameter backtest_horizon='31' is not an integer between 1 and 30",
        ),
        ({"training.min_history_days": "-5"}, "training.min_history_days must be between 14 and 3650"),
        ({"training.n_jobs": "many"}, "hyperparameters: setting training.n_jobs='many' is not a valid int"),
        ({"training.n_jobs": "-1"}, "training.n_jobs must be 0 (all cores) or more"),
        ({"lake_uri": "ftp://x/y"}, "hyperparameter lake_uri='ftp://x/y' is not a local folder or an s3://"),
        ({"horizon_day": "30"}, "unknown hyperparameter(s) horizon_day (did you mean horizon_days?); expected: "),
        ({"models": "prophet"}, "unknown hyperparameter(s) models (did you mean training.models?)"),
        ({"lake": "s3://elsewhere"}, "hyperparameter lake is not a job setting: the stack sets it"),
        ({"fleet.country": "Atlantis"}, "fleet.country='ATLANTIS' must be an ISO country code known to"),
        ({"training.rf_max_rows": "50"}, "training.rf_max_rows must be between 100 and 10000000"),
        ({"training.seed": "-1"}, "training.seed must be between 0 and 2147483647"),
        ({"training.prophet_history_days": "30"}, "training.prophet_history_days must be 0 (all) or between 56"),
    ],
)
def test_bad_hyperparameter_fails_with_one_clear_line(
    lake: Lake, tmp_path: Path, override: dict[str, str], message: str
) -> None:
    root = contract_root(tmp_path, lake, hyperparameters(lake, **override))
    assert run_training_job(root) == 1
    assert message in failure_of(root)
    assert not list(lake.store.list("staging/"))


def test_hyperparameter_parsing_defaults_and_sagemaker_keys() -> None:
    params = parse_hyperparameters(
        {
            "run_date": '"2026-01-10"',  # JSON-quoted, as some SDKs send strings
            "run_id": "r1",
            "lake_uri": "s3://bucket/lake",
            "sagemaker_program": "train.py",
            "training.n_jobs": "0",
        }
    )
    assert params.run_date == RUN_DATE
    assert (params.horizon_days, params.backtest_origins, params.score, params.min_history_days) == (
        90,
        1,
        "mae",
        56,
    )
    assert params.models == ("seasonal_naive", "linear_trend", "recent_trend", "prophet", "random_forest")
    # The cloud job (launched without these hyperparameters) backtests as the local pipeline does.
    local = TrainingSettings()
    assert (params.models, params.backtest_origins) == (local.models, local.backtest_origins)
    hourly = parse_hyperparameters(
        {"run_date": "2026-01-10", "run_id": "r1", "lake_uri": "s3://bucket/lake", "training.grain": "hourly"}
    )
    assert hourly.backtest_origins == local.backtest_origins_hourly == 2
    three = parse_hyperparameters(
        {
            "run_date": "2026-01-10",
            "run_id": "r1",
            "lake_uri": "s3://bucket/lake",
            "training.grain": "hourly",
            "training.backtest_origins_hourly": "3",
        }
    )
    assert (three.backtest_origins, three.training.backtest_origins) == (3, 1)
    assert params.n_jobs == -1  # all cores
    assert (params.country, params.rf_max_rows, params.seed) == ("US", 20_000, 0)
    assert params.prophet_history_days == 400
    custom = parse_hyperparameters(
        {
            "run_date": "2026-01-10",
            "run_id": "r1",
            "lake_uri": "lake",
            "training.models": "prophet,random_forest,seasonal_naive",
            "fleet.country": "gb",
            "training.rf_max_rows": "5000",
            "training.seed": "3",
            "training.n_jobs": "2",
            "training.prophet_history_days": "0",
        }
    )
    # the settings hyperparameters are decoded into the same Settings the YAML file gives
    assert custom.settings == load_settings(
        environ={},
        overrides={
            "training.models": ["prophet", "random_forest", "seasonal_naive"],
            "fleet.country": "GB",
            "training.rf_max_rows": 5000,
            "training.seed": 3,
            "training.n_jobs": 2,
            "training.prophet_history_days": 0,
        },
    )
    assert custom.models == ("prophet", "random_forest", "seasonal_naive")
    assert custom.model_settings() == {
        "recent_trend": {"country": "GB"},
        "prophet": {"country": "GB", "seed": 3, "history_days": 0},
        "random_forest": {"country": "GB", "max_rows": 5000, "seed": 3, "n_jobs": 2},
    }
    with pytest.raises(ConfigError, match="hyperparameter run_id is required"):
        parse_hyperparameters({"run_date": "2026-01-10", "lake_uri": "x"})


def test_missing_channel_and_bad_resource_config_fail_cleanly(lake: Lake, tmp_path: Path) -> None:
    root = contract_root(tmp_path, lake, hyperparameters(lake))
    shutil.rmtree(ContractPaths(root).channel)
    assert run_training_job(root) == 1
    assert "no data channel 'curated'" in failure_of(root)

    root = contract_root(tmp_path / "b", lake, hyperparameters(lake), host="algo-9", hosts=["algo-1", "algo-2"])
    assert run_training_job(root) == 1
    assert "current_host 'algo-9' is not in hosts" in failure_of(root)


def test_empty_channel_fails_cleanly(lake: Lake, tmp_path: Path) -> None:
    root = contract_root(tmp_path, lake, hyperparameters(lake))
    shutil.rmtree(ContractPaths(root).channel)
    ContractPaths(root).channel.mkdir()
    assert run_training_job(root) == 1
    assert "holds no metrics_daily rows" in failure_of(root)


def test_train_entry_point_runs_the_contract(lake: Lake, tmp_path: Path) -> None:
    root = contract_root(tmp_path, lake, hyperparameters(lake, horizon_days="abc"))
    env = {**os.environ, "SM_CONTRACT_ROOT": str(root)}
    done = subprocess.run(
        [sys.executable, str(REPO / "sagemaker_jobs" / "train.py"), "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "horizon_days='abc'" in failure_of(root)


# ------------------------------------------------------------------------------- sharding and publish


def test_shards_are_stable_and_disjoint() -> None:
    assert shard_of("srv-01", "cpu", 1) == 0
    assert shard_of("srv-01", "cpu", 7) == shard_of("srv-01", "cpu", 7)
    owners = [shard_of(f"srv-{i}", m, 3) for i in range(200) for m in METRICS]
    assert set(owners) == {0, 1, 2}
    # The known SHA-256 value pins the scheme: a change would silently re-shard running jobs.
    digest = hashlib.sha256(b"srv-00|cpu").digest()
    assert shard_of("srv-00", "cpu", 1000) == int.from_bytes(digest[:8], "big") % 1000


def test_three_hosts_give_the_one_host_forecasts(lake: Lake, tmp_path: Path) -> None:
    """Every candidate's forecast and backtest is the same on any number of hosts; the champion of a metric is
    chosen, and its band calibrated, on each host's own shard (a hash sample of the fleet), so only those two
    may differ between 1 and 3 hosts."""
    one = run_local_training(lake, run_date=RUN_DATE, hyperparameters=hyperparameters(lake, run_id="one"))
    forecasts_1 = lake.read_table(FORECASTS, {"run_date": RUN_DATE})
    metrics_1 = lake.read_table(MODEL_METRICS, {"run_date": RUN_DATE})

    workdir = tmp_path / "work"
    three = run_local_training(
        lake,
        run_date=RUN_DATE,
        hyperparameters=hyperparameters(lake, run_id="three"),
        hosts=3,
        workdir=workdir,
    )
    forecasts_3 = lake.read_table(FORECASTS, {"run_date": RUN_DATE})
    metrics_3 = lake.read_table(MODEL_METRICS, {"run_date": RUN_DATE})

    assert (one.hosts, three.hosts) == (1, 3)
    assert one.series == three.series == SERVERS * len(METRICS)
    assert one.forecast_rows == three.forecast_rows == len(forecasts_1)
    chosen = ["is_champion", "p10", "p90"]
    pd.testing.assert_frame_equal(forecasts_1.drop(columns=chosen), forecasts_3.drop(columns=chosen))
    others = ~forecasts_1["is_champion"] & ~forecasts_3["is_champion"]
    pd.testing.assert_frame_equal(forecasts_1[others], forecasts_3[others])
    pd.testing.assert_frame_equal(metrics_1.drop(columns="is_champion"), metrics_3.drop(columns="is_champion"))
    assert (metrics_3.groupby(["server_id", "metric"])["is_champion"].sum() == 1).all()
    # Each simulated host had its own contract root, hyperparameters as strings, and a share of the series.
    hosts = sorted(p.name for p in workdir.iterdir() if p.name.startswith("algo-"))
    assert hosts == ["algo-1", "algo-2", "algo-3"]
    for host in hosts:
        paths = ContractPaths(workdir / host)
        assert all(isinstance(v, str) for v in json.loads(paths.hyperparameters.read_text()).values())
        assert json.loads(paths.resource_config.read_text())["current_host"] == host
        assert 0 < len(json.loads((paths.model_dir / "model.json").read_text())["champions"]) < one.series
    # Staging is cleaned up; only the publish records stay.
    staged = [o.key for o in lake.store.list("staging/")]
    assert sorted(staged) == [
        "staging/training/run_id=one/published.json",
        "staging/training/run_id=three/published.json",
    ]


def test_publish_is_idempotent(lake: Lake) -> None:
    first = run_local_training(lake, run_date=RUN_DATE, hyperparameters=hyperparameters(lake, run_id="idem"))
    key = "curated/forecasts/run_date=2026-01-10/data.parquet"
    before = lake.store.get_bytes(key)
    again = publish_training_run(lake, run_id="idem", run_date=RUN_DATE)
    assert again.already_published and not first.already_published
    assert (again.series, again.forecast_rows, again.model_metric_rows, again.hosts) == (
        first.series,
        first.forecast_rows,
        first.model_metric_rows,
        first.hosts,
    )
    assert lake.store.get_bytes(key) == before
    with pytest.raises(CapacityForecasterError, match="published for run date 2026-01-10, not 2026-01-11"):
        publish_training_run(lake, run_id="idem", run_date=date(2026, 1, 11))


def test_publish_redone_after_an_interrupted_clean_up(lake: Lake, tmp_path: Path) -> None:
    params = hyperparameters(lake, run_id="redo")
    assert run_training_job(contract_root(tmp_path, lake, params), lake=lake) == 0
    staged = sorted(o.key for o in lake.store.list("staging/"))
    copies = {k: lake.store.get_bytes(k) for k in staged}
    first = publish_training_run(lake, run_id="redo", run_date=RUN_DATE)
    for k, data in copies.items():  # as if the clean-up had not run
        lake.store.put_bytes(k, data)
    second = publish_training_run(lake, run_id="redo", run_date=RUN_DATE)
    assert second.forecast_rows == first.forecast_rows
    assert not [o for o in lake.store.list("staging/") if not o.key.endswith("published.json")]


def test_publish_with_a_missing_host_manifest_is_a_clear_error(lake: Lake, tmp_path: Path) -> None:
    params = hyperparameters(lake, run_id="partial")
    root = contract_root(tmp_path, lake, params, host="algo-1", hosts=["algo-1", "algo-2"])
    assert run_training_job(root, lake=lake) == 0
    with pytest.raises(CapacityForecasterError) as err:
        publish_training_run(lake, run_id="partial", run_date=RUN_DATE)
    assert str(err.value) == (
        "training run partial is incomplete: 1 of 2 host manifests present, missing part-001-of-002"
    )
    assert not lake.list_partitions(FORECASTS)


def test_publish_of_an_unknown_run_is_a_clear_error(lake: Lake) -> None:
    with pytest.raises(CapacityForecasterError, match="training run nope has nothing staged"):
        publish_training_run(lake, run_id="nope", run_date=RUN_DATE)


def test_publish_rejects_a_series_staged_twice(lake: Lake, tmp_path: Path) -> None:
    params = hyperparameters(lake, run_id="dup")
    root = contract_root(tmp_path, lake, params, host="algo-1", hosts=["algo-1", "algo-2"])
    assert run_training_job(root, lake=lake) == 0
    # Fake the second host's output as a copy of the first: every series appears twice.
    first, second = staging_keys("dup", 0, 2), staging_keys("dup", 1, 2)
    for name in ("forecasts", "model_metrics", "manifest"):
        lake.store.put_bytes(second[name], lake.store.get_bytes(first[name]))
    with pytest.raises(CapacityForecasterError, match=r"appear in more than one host's output, e\.g\. srv-"):
        publish_training_run(lake, run_id="dup", run_date=RUN_DATE)


def test_local_runner_reports_a_failing_host(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(CapacityForecasterError) as err:
        run_local_training(lake, run_date=RUN_DATE, hyperparameters=hyperparameters(lake, horizon_days="abc"), hosts=2)
    assert str(err.value) == (
        "training host algo-1 failed: hyperparameters: setting horizon_days='abc' is not a valid int"
    )
    # the reason reaches the user once, in the error raised (the CLI prints it), not also as a logged error
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_local_runner_clears_a_stale_attempt_of_the_same_run(lake: Lake) -> None:
    stale = staging_keys("again", 2, 3)["manifest"]  # an interrupted 3-host attempt
    lake.store.put_bytes(stale, b"{}")
    result = run_local_training(lake, run_date=RUN_DATE, hyperparameters=hyperparameters(lake, run_id="again"))
    assert result.hosts == 1 and not lake.store.exists(stale)


def test_local_runner_fills_in_run_id_and_lake_uri(lake: Lake) -> None:
    result = run_local_training(
        lake,
        run_date=RUN_DATE,
        hyperparameters={"horizon_days": 14, "training.models": ["seasonal_naive"], "training.n_jobs": 1},
    )
    assert result.run_id.startswith("local-20260110-")
    forecasts = lake.read_table(FORECASTS, {"run_date": RUN_DATE})
    assert set(forecasts["model"]) == {"seasonal_naive"}
    assert forecasts["horizon_step"].max() == 14


def test_prophet_and_random_forest_run_under_the_contract(lake: Lake, tmp_path: Path) -> None:
    root = contract_root(
        tmp_path,
        lake,
        hyperparameters(
            lake,
            **{
                "training.models": "seasonal_naive,prophet,random_forest",
                "fleet.country": "GB",
                "training.rf_max_rows": "2000",
                "training.n_jobs": "2",
            },
        ),
    )
    assert run_training_job(root) == 0, failure_of(root)
    keys = staging_keys("test-run", 0, 1)
    metrics = lake.read_object_table(keys["model_metrics"], MODEL_METRICS)
    n_series = SERVERS * len(METRICS)
    assert len(metrics) == n_series * 4  # three models and their median
    assert (metrics["status"] == "ok").all(), metrics[metrics["status"] != "ok"]["reason"].tolist()
    assert metrics.groupby(["server_id", "metric"])["is_champion"].sum().eq(1).all()
    forecasts = lake.read_object_table(keys["forecasts"], FORECASTS)
    assert len(forecasts) == n_series * 4 * 30
    assert (forecasts["p10"] <= forecasts["p50"]).all() and (forecasts["p50"] <= forecasts["p90"]).all()
    assert forecasts["p10"].min() >= 0 and forecasts["p90"].max() <= 100
    artifact = json.loads((ContractPaths(root).model_dir / "model.json").read_text())
    assert artifact["models"]["prophet"]["country"] == "GB"
    assert artifact["models"]["random_forest"]["max_rows"] == 2000


def test_a_terminated_training_run_removes_its_workspace_and_the_next_run_removes_stale_ones(tmp_path: Path) -> None:
    from capacity_forecaster.forecasting.job import STALE_WORKSPACE_AGE, WORKSPACE_PREFIX, remove_stale_workspaces

    # SIGTERM inside the workspace (a stopped container, `kill`): the folder goes with the process.
    code = (
        "import os, signal, time\n"
        "from capacity_forecaster.forecasting.job import _workspace\n"
        "with _workspace(None) as base:\n"
        "    (base / 'channel.parquet').write_bytes(b'x')\n"
        "    print(base, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert Path(done.stdout.strip()).parent == tmp_path and not Path(done.stdout.strip()).exists()

    # A kill -9 leaves one behind: removed once older than a day; a live run's folder is left alone.
    stale, live = tmp_path / f"{WORKSPACE_PREFIX}killed", tmp_path / f"{WORKSPACE_PREFIX}running"
    for folder in (stale, live):
        (folder / "algo-1").mkdir(parents=True)
    old = (stale.stat().st_mtime) - STALE_WORKSPACE_AGE.total_seconds() - 60
    os.utime(stale, (old, old))
    assert remove_stale_workspaces(tmp_path) == [stale]
    assert not stale.exists() and live.exists()
