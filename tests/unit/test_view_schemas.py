"""The planners' views' output columns, found by DuckDB on empty tables."""

from __future__ import annotations

import pyarrow as pa

from capacity_forecaster.query import views
from capacity_forecaster.schema import RISK_REGISTER
from capacity_forecaster.view_schemas import view_schemas


def test_every_view_has_a_schema() -> None:
    schemas = view_schemas()
    assert sorted(schemas) == sorted(views())
    assert all(len(s) > 0 for s in schemas.values())


def test_view_columns_keep_the_tables_types_and_the_sql_decides_the_rest() -> None:
    risk = view_schemas()["risk_servers"]
    assert risk.field("breach_date_p50").type == RISK_REGISTER.column("breach_date_p50").type
    assert risk.field("run_date").type == pa.date32()
    assert pa.types.is_integer(risk.field("severity_rank").type)
    assert risk.field("short_history").type == pa.bool_() and risk.field("history_days").type == pa.int32()
    accuracy = view_schemas()["forecast_accuracy"]
    assert accuracy.field("mae").type == pa.float64()  # avg(...)
    assert accuracy.field("scored_days").type == pa.int64()  # count(*)
