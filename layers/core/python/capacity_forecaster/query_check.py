"""What ``capacity-forecaster query`` runs: one read-only statement, checked before any table is loaded.

Two parsers must agree. DuckDB's own parser (what will run) counts the statements and names their kind; sqlglot,
with the DuckDB dialect, reads the statement's tree, so a data-modifying or administrative clause anywhere in it
is refused too. The connection itself is the second wall: :func:`capacity_forecaster.query.connect` turns
external access off and locks the configuration, so even an accepted statement cannot read or write files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import sqlglot
from sqlglot import exp

from capacity_forecaster.errors import InputError

ALLOWED = "one read-only statement: SELECT (or WITH ... SELECT, FROM ..., VALUES), DESCRIBE, SHOW, SUMMARIZE or EXPLAIN"
EXAMPLE = '"SELECT * FROM risk_servers LIMIT 5"'

# DuckDB's statement kinds a query may have (PIVOT is planned as MULTI: it reads the distinct values first).
_DUCKDB_KINDS = {"SELECT", "EXPLAIN", "MULTI"}
# What sqlglot may find: the statement itself, and anything anywhere in its tree that writes or administers.
_READ_ONLY_ROOTS = (exp.Query, exp.Values, exp.Describe, exp.Show, exp.Summarize, exp.Pivot)
_WRITING_NODES = (
    *(exp.DML, exp.DDL, exp.Drop, exp.Alter, exp.Copy, exp.Export, exp.Into, exp.Command, exp.Set, exp.Pragma),
    *(exp.Attach, exp.Detach, exp.Install, exp.Use, exp.Transaction, exp.Analyze),
)
# EXPLAIN [ANALYZE | (options)] <statement>: the part after the keyword, which must pass the check itself.
_EXPLAIN_OPTIONS = re.compile(r"^\s*(?:ANALYZE\b|ANALYSE\b|\([^()]*\))?", re.IGNORECASE)


def check_read_only(sql: str) -> None:
    """Raise a one-line InputError unless ``sql`` is a single read-only statement."""
    _check(sql, explained=False)


def _check(sql: str, *, explained: bool) -> None:
    kinds = _duckdb_kinds(sql)
    if not kinds:
        raise InputError(f"query refused: the SQL is empty; give {ALLOWED}, e.g. {EXAMPLE}")
    if len(kinds) > 1:
        raise InputError(f"query refused: {len(kinds)} statements ({'; '.join(kinds)}); give {ALLOWED}")
    kind = kinds[0]
    if kind not in _DUCKDB_KINDS or (explained and kind == "EXPLAIN"):
        raise InputError(f"query refused: {kind} is not allowed; give {ALLOWED}")
    inner = _sqlglot_check(sql, duckdb_kind=kind)
    if inner is not None:
        _check(inner, explained=True)


def _duckdb_kinds(sql: str) -> list[str]:
    """The kind of each statement in ``sql`` as DuckDB's parser sees it (no table is needed to parse): SELECT,
    EXPLAIN or MULTI for those allowed, else the statement's first word (INSTALL, not DuckDB's LOAD)."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        return [_kind(str(s.type).rsplit(".", 1)[-1], s.query) for s in con.extract_statements(sql)]
    except duckdb.Error as exc:
        raise InputError(f"query failed: {str(exc).strip().splitlines()[0]}") from None
    finally:
        con.close()


def _kind(duckdb_kind: str, text: str) -> str:
    if duckdb_kind in _DUCKDB_KINDS:
        return duckdb_kind
    try:
        first = sqlglot.tokenize(text, read="duckdb")[0].text.upper()
    except (sqlglot.errors.SqlglotError, IndexError):
        return duckdb_kind
    return first if first.isalpha() and first != "WITH" else duckdb_kind


def _sqlglot_check(sql: str, *, duckdb_kind: str) -> str | None:
    """Refuse a statement whose sqlglot tree is not a read-only query; return the statement an EXPLAIN explains.

    Syntax sqlglot does not know is left to DuckDB's word when DuckDB calls it a plain SELECT (a SELECT in DuckDB
    has no data-modifying clauses)."""
    try:
        with _quiet_sqlglot():
            trees = [tree for tree in sqlglot.parse(sql, read="duckdb") if tree is not None]
    except sqlglot.errors.SqlglotError:
        if duckdb_kind == "SELECT":
            return None
        raise InputError(f"query refused: cannot check this {duckdb_kind} statement; give {ALLOWED}") from None
    if len(trees) != 1:
        raise InputError(f"query refused: {len(trees)} statements; give {ALLOWED}")
    tree = trees[0]
    if isinstance(tree, exp.Command):
        word = str(tree.this).upper()
        if word == "SHOW" and duckdb_kind == "SELECT":
            return None
        if word == "EXPLAIN" and duckdb_kind == "EXPLAIN":
            rest = tree.expression.name if isinstance(tree.expression, exp.Expression) else str(tree.expression)
            return _EXPLAIN_OPTIONS.sub("", rest, count=1)
        raise InputError(f"query refused: {word} is not allowed; give {ALLOWED}")
    if not isinstance(tree, _READ_ONLY_ROOTS):
        raise InputError(f"query refused: {tree.key.upper()} is not allowed; give {ALLOWED}")
    for node in tree.walk():
        if isinstance(node, _WRITING_NODES):
            raise InputError(f"query refused: {node.key.upper()} inside the query is not allowed; give {ALLOWED}")
    return None


@contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning when it falls back to a generic command (EXPLAIN, SHOW): not for the user's eyes."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
