"""The profile stage: flags and series profile written to the lake, metrics_daily untouched, re-runs identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.schema import METRICS_DAILY, METRICS_DAILY_FLAGS, SERIES_PROFILE
from capacity_forecaster.settings import load_settings
from capacity_forecaster.stages import run_profile
from capacity_forecaster.storage.lake import open_lake


def fleet_daily(days: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    dt = pd.date_range("2026-01-01", periods=days, freq="D")
    frames = []
    for server in ("web-1", "db-1"):
        for metric in ("cpu", "mem"):
            values = 30 + rng.uniform(-1, 1, days)
            if (server, metric) == ("web-1", "cpu") and days > 50:
                values[50] = 95.0
            frames.append(
                pd.DataFrame(
                    {"server_id": server, "metric": metric, "dt": dt, "p95": values, "n_samples": 288, "imputed": False}
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_profile_writes_flags_and_profile_and_leaves_daily_alone(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    lake.write_table(METRICS_DAILY, fleet_daily())
    before = lake.read_table(METRICS_DAILY)
    settings = load_settings(environ={}, overrides={"lake": str(tmp_path / "lake")})
    result = run_profile(lake, settings)
    assert result.counts["series"] == 4 and result.counts["anomalies"] == 1
    pd.testing.assert_frame_equal(lake.read_table(METRICS_DAILY), before)
    flags = lake.read_table(METRICS_DAILY_FLAGS)
    assert len(flags) == len(before)
    spike = flags[flags["anomaly"]]
    assert spike[["server_id", "metric"]].values.tolist() == [["web-1", "cpu"]]
    assert spike["dt"].dt.date.astype(str).tolist() == ["2026-02-20"]
    profile = lake.read_table(SERIES_PROFILE).set_index(["server_id", "metric"])
    assert profile.loc[("web-1", "cpu"), "n_anomalies"] == 1
    assert str(profile.loc[("web-1", "cpu"), "last_anomaly"])[:10] == "2026-02-20"
    assert profile["n_days"].tolist() == [60] * 4
    assert profile["adf_pvalue"].notna().all()
    # Re-running gives the same tables; a stricter threshold flags more, from the config.
    run_profile(lake, settings)
    pd.testing.assert_frame_equal(lake.read_table(METRICS_DAILY_FLAGS), flags)
    strict = load_settings(environ={}, overrides={"lake": str(tmp_path / "lake"), "etl.outlier_z": 1.5})
    assert run_profile(lake, strict).counts["values_flagged_z"] > result.counts["values_flagged_z"]


def test_profile_cli_and_empty_lake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--lake", str(tmp_path / "empty")]) == 2
    assert "run `capacity-forecaster etl`" in capsys.readouterr().err
    lake = open_lake(tmp_path / "lake")
    lake.write_table(METRICS_DAILY, fleet_daily(30))
    assert main(["profile", "--lake", str(tmp_path / "lake")]) == 0
    assert "profile: series=4" in capsys.readouterr().out
