"""A training host reads only its shard of the channel: the same rows as the whole channel's shard, no others."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from capacity_forecaster.forecasting import job
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import run_etl, run_generate
from capacity_forecaster.storage.lake import open_lake


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> job.ContractPaths:
    root = tmp_path_factory.mktemp("shards")
    settings = load_settings(
        environ={}, overrides={"lake": str(root / "lake"), "fleet.servers": 7, "fleet.days": 40, "horizon_days": 14}
    )
    lake = open_lake(settings.lake)
    run_generate(lake, settings, run_date=date(2026, 11, 23))
    run_etl(lake, settings)
    paths = job.ContractPaths(root / "ml")
    job._download_channel(lake, paths.channel)
    return paths


@pytest.mark.parametrize("n_hosts", [2, 3])
def test_each_host_reads_exactly_its_shard(channel: job.ContractPaths, n_hosts: int) -> None:
    whole = job.read_channel(channel)
    parts = [job.read_channel(channel, "daily", index, n_hosts) for index in range(n_hosts)]
    for index, part in enumerate(parts):
        expected = job.select_shard(whole, index, n_hosts).reset_index(drop=True)
        pd.testing.assert_frame_equal(part.reset_index(drop=True), expected)
    assert sum(len(p) for p in parts) == len(whole) and all(len(p) < len(whole) for p in parts)


def test_a_host_whose_shard_is_empty_reads_no_rows_without_an_error(channel: job.ContractPaths) -> None:
    series = len(job.read_channel(channel)[["server_id", "metric"]].drop_duplicates())
    empty = [job.read_channel(channel, "daily", index, series * 4) for index in range(series * 4)]
    assert any(p.empty for p in empty) and sum(len(p) for p in empty) == len(job.read_channel(channel))


def test_an_empty_channel_is_still_named(tmp_path: Path) -> None:
    paths = job.ContractPaths(tmp_path)
    paths.channel.mkdir(parents=True)
    with pytest.raises(job.InputError, match="holds no metrics_daily rows"):
        job.read_channel(paths, "daily", 0, 2)
