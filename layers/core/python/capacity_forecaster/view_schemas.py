"""The columns and types each planners' view returns, found by running the views on empty tables.

A view's output types follow from the tables' schemas and the SQL (``avg`` gives a double, ``count`` a bigint);
rather than restate them, DuckDB runs every view over empty tables built from ``capacity_forecaster.schema``
and reports what comes out. The cloud stack's QuickSight data sets declare these columns.
"""

from __future__ import annotations

from functools import cache

import pyarrow as pa

from capacity_forecaster.query import view_tables, views
from capacity_forecaster.schema import TABLES


@cache
def view_schemas() -> dict[str, pa.Schema]:
    """View name -> the Arrow schema of its rows (column names in the view's order)."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        for name, table in TABLES.items():
            con.register(f"_empty_{name}", table.arrow_schema(with_partitions=True).empty_table())
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM "_empty_{name}"')
        schemas = {}
        for name, sql in views().items():
            missing = sorted(set(view_tables(sql)) - set(TABLES))
            if missing:  # pragma: no cover - view_tables only returns known tables
                raise ValueError(f"view {name} reads unknown tables {missing}")
            con.execute(sql)
            schemas[name] = con.sql(f'SELECT * FROM "{name}" LIMIT 0').to_arrow_table().schema
        return schemas
    finally:
        con.close()
