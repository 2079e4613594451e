"""The sandboxed DuckDB connection refuses every way out, whatever the statement (no parsing involved)."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from layerlake.errors import QueryTimeoutError, SpecError
from layerlake.queries.sandbox import SqlLimits, is_inside, lock, open_sandbox, time_limit


@pytest.fixture
def conn(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    c = open_sandbox()
    c.register("t", pl.DataFrame({"x": [1, 2, 3]}).lazy())
    return lock(c, SqlLimits(memory_limit="512MB", threads=1))


ESCAPES = [
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM 'http://127.0.0.1:9/x.csv'",
    "COPY (SELECT 1) TO '{tmp}/out.csv'",
    "EXPORT DATABASE '{tmp}/exp'",
    "ATTACH '{tmp}/db.duckdb' AS d",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET lock_configuration",
    "SET log_query_path = '{tmp}/log'",
    "PRAGMA profiling_output = '{tmp}/prof'",
    "SET memory_limit = '100GB'",
    "SET threads = 64",
]


@pytest.mark.parametrize("statement", ESCAPES)
def test_escape_is_refused_and_writes_nothing(conn, tmp_path: Path, statement: str) -> None:
    with pytest.raises(duckdb.Error):
        conn.execute(statement.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert conn.execute("SELECT sum(x) FROM t").fetchone() == (6,)
    assert conn.execute("SELECT current_setting('threads')").fetchone() == (1,)


def test_time_limit_interrupts_a_runaway_query(conn) -> None:
    t0 = time.perf_counter()
    with pytest.raises(QueryTimeoutError, match="LAYERLAKE_SQL_TIMEOUT"):
        with time_limit(conn, 0.5):
            conn.execute("SELECT count(*) FROM range(100000000000)").fetchall()
    assert time.perf_counter() - t0 < 30
    with time_limit(conn, 5):
        assert conn.execute("SELECT count(*) FROM range(10)").fetchone() == (10,)


def test_limits_validate_and_read_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LAYERLAKE_SQL_TIMEOUT", "2.5")
    monkeypatch.setenv("LAYERLAKE_SQL_THREADS", "3")
    lim = SqlLimits.from_env(max_rows=7)
    assert (lim.timeout_s, lim.threads, lim.max_rows, lim.memory_limit) == (2.5, 3, 7, "4GB")
    monkeypatch.setenv("LAYERLAKE_SQL_THREADS", "many")
    with pytest.raises(SpecError, match="LAYERLAKE_SQL_THREADS"):
        SqlLimits.from_env()
    for bad in ({"memory_limit": "lots"}, {"threads": 0}, {"timeout_s": -1}, {"max_rows": True}):
        with pytest.raises(SpecError):
            SqlLimits(**bad)


def test_is_inside_resolves_double_slashes_dotdot_and_symlinks(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(lake)
    assert is_inside("/" + str(lake / "lake.json"), str(lake))
    assert is_inside(str(tmp_path / "x" / ".." / "lake" / "sub"), str(lake))
    assert is_inside(str(tmp_path / "link" / "lake.json"), str(lake))
    assert not is_inside(str(tmp_path / "lake2" / "f"), str(lake))
