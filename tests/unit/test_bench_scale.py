"""The scale benchmark's training accounting: the shards it predicts for each host are the job's own, and its
prediction of a host's CPU is ``capacity_forecaster.scale``'s model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks.bench_scale import host_series, predicted_host_cpu
from capacity_forecaster import scale
from capacity_forecaster.forecasting.job import select_shard
from capacity_forecaster.schema import METRICS_DAILY
from capacity_forecaster.storage.lake import open_lake


def daily_frame(servers: int) -> pd.DataFrame:
    days = pd.date_range("2026-01-01", periods=3, freq="D")
    rows = [
        {"server_id": f"srv-{i:04d}", "metric": metric, "dt": day, "p95": 50.0, "n_samples": 288, "imputed": False}
        for i in range(servers)
        for metric in ("cpu", "mem", "disk", "net")
        for day in days
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("hosts", [1, 2, 3])
def test_host_series_are_the_shards_the_training_job_keeps(tmp_path: Path, hosts: int) -> None:
    frame = daily_frame(25)
    lake = open_lake(str(tmp_path / "lake"))
    lake.write_table(METRICS_DAILY, frame)
    read = lake.read_table(METRICS_DAILY)

    counts = host_series(tmp_path / "lake", hosts)

    assert len(counts) == hosts
    for index, per_metric in enumerate(counts):
        kept = select_shard(read, index, hosts)[["server_id", "metric"]].drop_duplicates()
        assert per_metric == kept["metric"].value_counts().to_dict()
    assert sum(sum(c.values()) for c in counts) == 100


def test_predicted_host_cpu_is_the_scale_model() -> None:
    per_metric = {"cpu": 30, "mem": 30, "disk": 30, "net": 30}
    cpu, backtested = predicted_host_cpu(per_metric, sample=20)
    assert backtested == 80
    assert cpu == pytest.approx(scale.host_cpu_seconds(120, sample=20))
    uneven, backtested = predicted_host_cpu({"cpu": 5, "mem": 40}, sample=20)
    assert backtested == 25
    assert uneven == pytest.approx(
        scale.HOST_FIXED_CPU_S + 25 * scale.CPU_S_PER_BACKTESTED + 20 * scale.CPU_S_PER_FITTED
    )
