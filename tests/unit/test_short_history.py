"""Short histories in the risk register: a series too short to backtest (its champion's model_metrics status is
insufficient_history) is flagged ``short_history`` and rated at most medium unless it is breaching now.

The forecasts and model metrics are the real engine's (``forecast_fleet``) on a fleet where 20-day servers sit
beside 120-day ones with the same values.
"""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.forecasting.engine import forecast_fleet
from capacity_forecaster.html_report import ReportData, render_html, summary_cards
from capacity_forecaster.risk import SEVERITY_ORDER, capped_severity, history_days, short_histories
from capacity_forecaster.risk_inputs import STATUS_COLUMNS, champion_statuses
from capacity_forecaster.schema import FORECASTS, METRICS_DAILY, MODEL_METRICS, RISK_REGISTER
from capacity_forecaster.settings import Settings
from capacity_forecaster.stages import risk_register
from capacity_forecaster.storage.lake import open_lake, partition_key, to_arrow

RUN = date(2026, 6, 30)
MIN_HISTORY = 56
# server -> (days of history, level, level of the last 10 days): just under the 80% threshold (the short one
# rising to it), flat and cool, or saturated
FLEET = {
    "new-near": (20, 78.0, 79.5),
    "new-hot": (20, 70.0, 92.0),
    "old-near": (120, 79.6, 79.6),
    "old-cool": (120, 30.0, 30.0),
}


def daily_values() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    frames = []
    for server, (days, level, last) in FLEET.items():
        dt = pd.date_range(end=pd.Timestamp(RUN), periods=days, freq="D")
        values = np.full(days, level) + rng.normal(0, 1.0, days)
        values[-10:] = last + rng.normal(0, 1.0, 10)
        frames.append(pd.DataFrame({"server_id": server, "metric": "cpu", "dt": dt, "p95": values.clip(0, 100)}))
    out = pd.concat(frames, ignore_index=True)
    return out.assign(n_samples=24, imputed=False)


@pytest.fixture(scope="module")
def engine_output() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    daily = daily_values()
    forecasts, metrics = forecast_fleet(
        daily,
        run_date=RUN,
        horizon_days=60,
        models=Settings().training.models,
        n_origins=2,
        score="mae",
        min_history_days=MIN_HISTORY,
    )
    return daily, forecasts, metrics


def champions(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics[metrics["is_champion"]][list(STATUS_COLUMNS)].reset_index(drop=True)


def statuses_of(metrics: pd.DataFrame) -> pd.DataFrame:
    """What the risk stage passes: the champions' status and their days of history."""
    statuses = champions(metrics)
    return statuses.assign(history_days=history_days(statuses.pop("n_history")))


def test_short_series_are_flagged_and_capped_at_medium_unless_breaching_now(
    engine_output: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    daily, forecasts, metrics = engine_output
    statuses = statuses_of(metrics)
    assert set(statuses.loc[statuses["status"] == "insufficient_history", "server_id"]) == {"new-near", "new-hot"}
    risk = Settings().risk
    uncapped = risk_register(forecasts, daily, risk, RUN).set_index("server_id")
    reg = risk_register(forecasts, daily, risk, RUN, statuses).set_index("server_id")

    assert reg["short_history"].to_dict() == {"new-near": True, "new-hot": True, "old-near": False, "old-cool": False}
    # Without the statuses the 20-day near-threshold series rates high or critical; flagged short it is medium.
    assert SEVERITY_ORDER[uncapped.loc["new-near", "severity"]] < SEVERITY_ORDER["medium"]
    assert reg.loc["new-near", "severity"] == "medium"
    # Breaching now (saturated for the last 7 observed days): critical from the actuals, short or not.
    assert reg.loc["new-hot", "already_breaching"] and reg.loc["new-hot", "severity"] == "critical"
    # The same values with 120 days of history are not short and keep their rating.
    for server in ("old-near", "old-cool"):
        assert reg.loc[server, "severity"] == uncapped.loc[server, "severity"]
    assert SEVERITY_ORDER[reg.loc["old-near", "severity"]] < SEVERITY_ORDER["medium"]
    # The finding follows the capped severity; nothing else moves.
    assert reg.loc["new-near", "finding"] != "under-provisioned"
    same = [c for c in reg.columns if c not in ("severity", "finding", "short_history", "history_days")]
    pd.testing.assert_frame_equal(reg.loc[uncapped.index, same], uncapped[same])
    # The days of history each series had, as the engine recorded them in model_metrics (n_history).
    assert reg["history_days"].to_dict() == {server: days for server, (days, _, _) in FLEET.items()}
    assert not uncapped["short_history"].any() and uncapped["history_days"].isna().all()


def test_history_days_come_from_the_statuses_when_they_carry_them() -> None:
    keys = pd.DataFrame({"server_id": ["a", "b", "c"], "metric": "cpu"})
    statuses = pd.DataFrame(
        {
            "server_id": ["a", "b"],
            "metric": "cpu",
            "status": ["insufficient_history", "ok"],
            "history_days": [20, 400],
        }
    )
    got = short_histories(keys, statuses)
    assert got["short_history"].tolist() == [True, False, False]  # c: no champion row, not short
    assert got["history_days"].tolist()[:2] == [20, 400] and pd.isna(got["history_days"].iloc[2])
    assert not short_histories(keys, None)["short_history"].any()


@pytest.mark.parametrize(
    ("tier", "short", "breaching", "expected"),
    [
        ("critical", True, False, "medium"),
        ("high", True, False, "medium"),
        ("medium", True, False, "medium"),
        ("low", True, False, "low"),
        ("critical", True, True, "critical"),
        ("critical", False, False, "critical"),
        ("high", False, False, "high"),
    ],
)
def test_capped_severity(tier: str, short: bool, breaching: bool, expected: str) -> None:
    got = capped_severity(pd.Series([tier]), pd.Series([short]), pd.Series([breaching]))
    assert got.tolist() == [expected]


def test_the_risk_command_reads_the_champions_status_and_flags_short_series(
    tmp_path: Path,
    engine_output: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    capsys: pytest.CaptureFixture[str],
) -> None:
    daily, forecasts, metrics = engine_output
    lake = open_lake(tmp_path / "lake")
    lake.write_table(METRICS_DAILY, daily)
    lake.write_partition(FORECASTS, forecasts, {"run_date": RUN})
    buf = io.BytesIO()  # the model metrics in row groups of 3 rows: the champion filter runs on each group
    pq.write_table(to_arrow(MODEL_METRICS, metrics.drop(columns="run_date")), buf, row_group_size=3)
    lake.store.put_bytes(partition_key(MODEL_METRICS, {"run_date": RUN}), buf.getvalue())

    statuses = champion_statuses(lake, MODEL_METRICS, RUN)
    assert list(statuses.columns) == list(STATUS_COLUMNS)
    pd.testing.assert_frame_equal(statuses, champions(metrics))
    assert champion_statuses(lake, MODEL_METRICS, date(2026, 1, 1)).empty  # another run: nothing

    assert main(["risk", "--lake", str(tmp_path / "lake"), "--run-date", RUN.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "short_history=2" in out
    now = out[out.index("Breaching now") : out.index("Next to break")]
    header = next(line for line in now.splitlines() if line.startswith("server"))
    hot = next(line for line in now.splitlines() if line.startswith("new-hot"))
    at = header.index("  short") + 2
    assert hot[at : at + 5].strip() == "yes"
    register = lake.read_table(RISK_REGISTER, where={"run_date": RUN}).set_index("server_id")
    assert register["short_history"].to_dict() == {
        "new-near": True,
        "new-hot": True,
        "old-near": False,
        "old-cool": False,
    }
    assert register.loc["new-near", "severity"] == "medium"
    assert register["history_days"].to_dict() == {server: days for server, (days, _, _) in FLEET.items()}

    data = ReportData(
        run_date=RUN,
        register=register.reset_index(),
        servers=pd.DataFrame(columns=["server_id", "application"]),
        plan=pd.DataFrame(columns=["server_id", "action", "monthly_savings", "profile"]),
        forecasts=forecasts[forecasts["is_champion"]],
        actuals=daily,
        features=pd.DataFrame(columns=["cpu_mean", "mem_mean"]),
    )
    page = render_html(data)
    assert "2 series had too little history to backtest" in page
    assert '<tr class="critical short-history"><td>new-hot</td>' in page  # breaching now, marked
    assert "<td>short: 20 days</td>" in page
    assert '<tr class="medium short-history"><td>new-near</td>' in page  # next to break, marked
    assert '<tr class="high"><td>old-near</td>' in page or '<tr class="critical"><td>old-near</td>' in page
    assert ("short history", 2, "count") in summary_cards(data)


def test_a_register_written_before_the_columns_reads_them_as_not_short(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    row: dict[str, object] = {c.name: None for c in RISK_REGISTER.columns if c.name not in RISK_REGISTER.optional}
    row |= {"server_id": "a", "metric": "cpu", "threshold": 80.0, "already_breaching": False}
    row |= {"severity": "low", "finding": "optimized", "seasonal_peak": False}
    old = to_arrow(RISK_REGISTER, pd.DataFrame([row])).drop_columns(list(RISK_REGISTER.optional))
    buf = io.BytesIO()
    pq.write_table(old, buf)
    lake.store.put_bytes(partition_key(RISK_REGISTER, {"run_date": RUN}), buf.getvalue())
    back = lake.read_table(RISK_REGISTER)
    assert back["short_history"].tolist() == [False] and back["history_days"].isna().all()


def test_model_metrics_written_before_n_history_give_a_null_history(
    tmp_path: Path, engine_output: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    _, _, metrics = engine_output
    lake = open_lake(tmp_path / "lake")
    old = to_arrow(MODEL_METRICS, metrics.drop(columns="run_date")).drop_columns(["n_history"])
    buf = io.BytesIO()
    pq.write_table(old, buf)
    lake.store.put_bytes(partition_key(MODEL_METRICS, {"run_date": RUN}), buf.getvalue())
    statuses = champion_statuses(lake, MODEL_METRICS, RUN)
    assert statuses["n_history"].isna().all()
    assert statuses["status"].tolist() == champions(metrics)["status"].tolist()
    assert history_days(statuses["n_history"]).isna().all()
    assert metrics["n_history"].tolist() == [FLEET[s][0] for s in metrics["server_id"]]  # the engine records it
