"""SQL over the lake with DuckDB: every table is a view named as in Athena, plus the planners' views.

Tables are read through the lake adapter as Arrow and handed to DuckDB, so the same code serves a local folder
and an S3 lake (DuckDB's own S3 extension is not needed). The planners' views (``sql/*.sql``: latest forecasts,
risk with servers, fleet summary, forecast accuracy) are written once in SQL that Trino (Athena) and DuckDB
both run.

User SQL is read-only and reaches only those tables and views: :func:`run_query` runs one read-only statement
(:mod:`capacity_forecaster.query_check`), on a connection that can read no file and load no extension, with its
configuration locked so that no statement can undo that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import date, timedelta
from functools import cache
from importlib import resources
from typing import Any

import pandas as pd

from capacity_forecaster.errors import InputError
from capacity_forecaster.schema import LATEST_RUN, TABLES, TableSchema
from capacity_forecaster.storage.lake import Lake, PartitionFilter, partition_key

FORMATS = ("table", "csv", "json")
VIEW_WINDOW_DAYS = 90
"""Days of runs (and of actuals) before the newest run that ``forecast_accuracy`` scores: the ``window_start`` of
``latest_run``, which bounds the partitions the view reads."""

# Set once the tables and views exist: the connection then reads only them (Arrow in memory), no file, no URL, no
# extension, no Python variable; lock_configuration comes last, so that no SET, RESET or PRAGMA can undo the rest.
LOCKDOWN = (
    "SET enable_external_access = false",
    "SET python_enable_replacements = false",
    "SET lock_configuration = true",
)


@cache
def views() -> dict[str, str]:
    """The planners' views: name -> its ``CREATE OR REPLACE VIEW`` statement, from ``sql/*.sql``."""
    found = {}
    for entry in sorted(resources.files("capacity_forecaster").joinpath("sql").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            found[entry.name.removesuffix(".sql")] = entry.read_text(encoding="utf-8")
    return found


def record_latest_run(lake: Lake, run_date: date) -> str:
    """Point ``latest_run`` (what the views join on) at ``run_date``, unless it names a newer run already
    (building an older run's register again does not turn the views back)."""
    newest = run_date
    if lake.store.exists(partition_key(LATEST_RUN, None)):
        held = lake.read_table(LATEST_RUN)
        if not held.empty:
            newest = max(newest, held["run_date"].max().date())
    row = pd.DataFrame({"run_date": [newest], "window_start": [newest - timedelta(days=VIEW_WINDOW_DAYS)]})
    return lake.write_partition(LATEST_RUN, row)


def view_tables(sql: str) -> list[str]:
    """The lake tables a view reads (names after FROM or JOIN)."""
    named = set(re.findall(r"\b(?:from|join)\s+([a-z_]+)", sql.lower()))
    return [name for name in TABLES if name in named]


def view_partitions(lake: Lake, table: TableSchema) -> PartitionFilter | None:
    """The partitions of ``table`` the planners' views can read: the date partitions from ``latest_run``'s
    ``window_start`` up to its run (what the views' joins keep); None (all) for an unpartitioned table or a lake
    without ``latest_run``."""
    if not table.partition_keys or not lake.store.exists(partition_key(LATEST_RUN, None)):
        return None
    latest = lake.read_table(LATEST_RUN)
    if latest.empty:
        return None
    first, last = (latest[c].iloc[0].date().isoformat() for c in ("window_start", "run_date"))
    key = table.partition_names[0]
    upper = last if key == "run_date" else "9999-12-31"
    return {key: [p[key] for p in lake.list_partitions(table) if first <= p[key] <= upper]}


def connect(lake: Lake, tables: Iterable[str] | None = None, *, through_views: Iterable[str] = ()) -> Any:
    """A DuckDB connection with a view per lake table (empty tables still have their columns), and each planners'
    view whose tables are all loaded; it can read nothing else and its configuration is locked. Tables named in
    ``through_views`` (read by the statement only through the planners' views) are loaded with only the
    partitions the views read (:func:`view_partitions`)."""
    import duckdb

    con = duckdb.connect(":memory:")
    loaded = list(tables) if tables is not None else list(TABLES)
    pruned = set(through_views)
    for name in loaded:
        arrow = lake.read_arrow(TABLES[name], view_partitions(lake, TABLES[name]) if name in pruned else None)
        con.register(f"_arrow_{name}", arrow)
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM "_arrow_{name}"')
    for sql in views().values():
        if set(view_tables(sql)) <= set(loaded):
            con.execute(sql)
    for setting in LOCKDOWN:
        con.execute(setting)
    return con


def run_query(lake: Lake, sql: str) -> pd.DataFrame:
    """Run one read-only SQL statement on the lake and return the result; a statement that is not read-only is
    refused before any table is read, and SQL errors become one-line InputErrors."""
    import duckdb

    from capacity_forecaster.query_check import check_read_only

    check_read_only(sql)
    direct, through_views = _tables_named(sql)
    con = connect(lake, [*direct, *through_views], through_views=through_views)
    try:
        return con.sql(sql).to_arrow_table().to_pandas()
    except duckdb.PermissionException as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"query refused: only the lake's tables and views can be read ({first})") from None
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"query failed: {first}") from None
    finally:
        con.close()


def _tables_named(sql: str) -> tuple[list[str], list[str]]:
    """The tables a statement mentions, and those it reads only through the views it mentions (a cheap
    over-approximation by name): only these are loaded, the second ones pruned to what the views read."""
    lowered = sql.lower()
    named = {name for name in TABLES if re.search(rf"\b{name}\b", lowered)}
    seen = set()
    for view, text in views().items():
        if view in lowered:
            seen.update(view_tables(text))
    return [n for n in TABLES if n in named], [n for n in TABLES if n in seen - named]


def format_result(df: pd.DataFrame, fmt: str) -> str:
    """Render a result as CSV or JSON text (the table format is printed by the CLI with rich)."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(df.to_json(orient="records", date_format="iso")), indent=2)
    raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
