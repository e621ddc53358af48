"""The statement check of ``query``: one read-only statement passes; anything else is refused in one line that
says what is allowed. (That the connection itself reads nothing else is tested on a lake: tests/e2e/test_sql_views.)"""

from __future__ import annotations

import logging

import pytest

from capacity_forecaster.errors import InputError
from capacity_forecaster.query_check import ALLOWED, check_read_only

READ_ONLY = [
    "SELECT 1",
    "select 1;",
    "SELECT 1 /* a comment */ ; ",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "FROM servers",
    "FROM servers SELECT server_id",
    "SELECT 1 UNION ALL SELECT 2",
    "(SELECT 1)",
    "VALUES (1, 2)",
    "SELECT * EXCLUDE (cores) FROM servers",
    "SELECT list_transform([1, 2], x -> x + 1)",
    "SELECT ';' AS s",
    "SELECT $$; COPY servers TO '/tmp/x'$$ AS s",
    "SELECT 1 -- ; COPY servers TO '/tmp/x'\n",
    "/* /* nested */ ; COPY servers TO '/tmp/x' */ SELECT 1",
    "DESCRIBE servers",
    "DESCRIBE SELECT 1",
    "SHOW servers",
    "SHOW TABLES",
    "SHOW ALL TABLES",
    "SUMMARIZE servers",
    "PIVOT servers ON datacenter USING count(*)",
    "EXPLAIN SELECT 1",
    "explain analyze SELECT 1",
    "EXPLAIN (FORMAT json) SELECT 1",
    "/* why */ EXPLAIN ANALYZE WITH x AS (SELECT 1) SELECT * FROM x",
    # Reads files: passes this check, and is refused by the connection (external access is off).
    "SELECT * FROM read_csv('/etc/passwd')",
]

# statement -> the word the refusal names
REFUSED = {
    "COPY servers TO '/tmp/x.csv'": "COPY",
    "COPY (SELECT 1) TO 'lake/curated/servers/data.parquet' (FORMAT parquet)": "COPY",
    "COPY servers FROM '/etc/passwd'": "COPY",
    "EXPORT DATABASE '/tmp/export'": "EXPORT",
    "ATTACH '/tmp/other.db' AS other": "ATTACH",
    "DETACH other": "DETACH",
    "INSTALL httpfs": "INSTALL",
    "LOAD httpfs": "LOAD",
    "SET enable_external_access = true": "SET",
    "SET lock_configuration = false": "SET",
    "RESET enable_external_access": "RESET",
    "PRAGMA enable_profiling": "PRAGMA",
    "CALL pragma_version()": "CALL",
    "CHECKPOINT": "CHECKPOINT",
    "USE memory": "USE",
    "BEGIN TRANSACTION": "BEGIN",
    "CREATE TABLE t AS SELECT 1": "CREATE",
    "CREATE VIEW v AS SELECT 1": "CREATE",
    "CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')": "CREATE",
    "CREATE MACRO m(a) AS a + 1": "CREATE",
    "DROP VIEW risk_servers": "DROP",
    "ALTER VIEW risk_servers RENAME TO r": "ALTER",
    "INSERT INTO servers SELECT * FROM servers": "INSERT",
    "WITH x AS (SELECT * FROM servers) INSERT INTO servers SELECT * FROM x": "INSERT",
    "UPDATE servers SET cores = 0": "UPDATE",
    "DELETE FROM servers": "DELETE",
    "VACUUM": "VACUUM",
    "EXPLAIN ANALYZE COPY servers TO '/tmp/x.csv'": "COPY",
    "EXPLAIN CREATE TABLE t AS SELECT 1": "CREATE",
    "SELECT 1; COPY servers TO '/tmp/x.csv'": "2 statements",
    "SELECT 1; SELECT 2": "2 statements",
    "SELECT 1 /* ; */ ; COPY servers TO '/tmp/x.csv'": "2 statements",
    "SELECT 1 --\n; ATTACH '/tmp/other.db'": "2 statements",
    "": "empty",
    "   \n\t ": "empty",
    "-- only a comment": "empty",
    ";": "empty",
}


@pytest.mark.parametrize("sql", READ_ONLY)
def test_read_only_statements_pass(sql: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        check_read_only(sql)
    # sqlglot's fallback warning for EXPLAIN/SHOW would reach the user's terminal: it is kept quiet.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("sql", sorted(REFUSED))
def test_everything_else_is_refused_in_one_line_naming_what_is_allowed(sql: str) -> None:
    with pytest.raises(InputError) as caught:
        check_read_only(sql)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("query refused: ") and ALLOWED in message
    assert REFUSED[sql] in message


def test_a_syntax_error_is_one_line_from_duckdb() -> None:
    with pytest.raises(InputError, match=r"^query failed: Parser Error: syntax error") as caught:
        check_read_only("SELEC 1")
    assert "\n" not in str(caught.value)
