"""The risk register lookup the consolidation stage and the report share."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from capacity_forecaster.errors import CapacityForecasterError
from capacity_forecaster.schema import RISK_REGISTER
from capacity_forecaster.stages import read_risk_register
from capacity_forecaster.storage.lake import open_lake


def _row() -> dict[str, object]:
    """One register row: the required columns set, every nullable one left null."""
    row: dict[str, object] = {c.name: None for c in RISK_REGISTER.columns}
    required = {"server_id": "srv-1", "metric": "cpu", "threshold": 80.0, "already_breaching": False}
    return row | required | {"severity": "low", "finding": "optimized", "seasonal_peak": False, "short_history": False}


def test_newest_register_by_default_and_errors_that_say_what_to_run(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    with pytest.raises(CapacityForecasterError, match=r"no risk register in .*: run `capacity-forecaster risk` first"):
        read_risk_register(lake, None, command="risk")
    for day in (date(2026, 1, 1), date(2026, 1, 8)):
        lake.write_partition(RISK_REGISTER, pd.DataFrame([_row()]), {"run_date": day})
    run_date, register = read_risk_register(lake, None, command="run")
    assert run_date == date(2026, 1, 8) and register["server_id"].tolist() == ["srv-1"]
    assert read_risk_register(lake, date(2026, 1, 1), command="run")[0] == date(2026, 1, 1)
    with pytest.raises(CapacityForecasterError, match="no risk register for run date 2026-01-02"):
        read_risk_register(lake, date(2026, 1, 2), command="run")
