"""The SQL sandbox: DuckDB connections that reach nothing but the relations layerlake registers.

Safety comes from DuckDB's own configuration, not from parsing statements. A sandboxed
connection is opened with external access disabled (no file, URL or extension access: no
``read_text``, ``COPY ... TO``, ``ATTACH 'file'``, ``INSTALL``/``LOAD``, ``http://``), the
lake's relations are registered as Python objects whose files layerlake opened and checked
itself, then the limits are set and the configuration is locked, so no statement can turn
any of this back on (``SET``/``PRAGMA``/``RESET`` of any option fail). Every query gets a
fresh connection, so a statement such as ``CREATE OR REPLACE VIEW`` never changes what the
next query sees.

Limits (memory, threads, time, rows shown) come from :class:`SqlLimits`; their defaults can be
changed with the ``LAYERLAKE_SQL_*`` environment variables (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass, fields, replace
from typing import Any, Iterator

import duckdb

from ..errors import QueryTimeoutError, SpecError

# Options fixed when the connection opens; lock_configuration later makes every option final.
SANDBOX_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
}

_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class SqlLimits:
    """Resource limits of one sandboxed query.

    memory_limit: DuckDB's memory limit (e.g. ``"4GB"``); threads: DuckDB worker threads;
    timeout_s: wall-clock limit of one statement (0 = none); max_rows: rows a table shown on a
    terminal holds (the rest is not computed).
    """

    memory_limit: str = "4GB"
    threads: int = 2
    timeout_s: float = 600.0
    max_rows: int = 200

    def __post_init__(self) -> None:
        if not isinstance(self.memory_limit, str) or not _MEMORY.match(self.memory_limit):
            raise SpecError(f"SQL memory limit {self.memory_limit!r} is not a size such as '4GB' or '512MB'")
        for name, low in (("threads", 1), ("max_rows", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SpecError(f"SQL limit {name}={value!r} must be an integer >= {low}")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or self.timeout_s < 0:
            raise SpecError(f"SQL limit timeout_s={self.timeout_s!r} must be a number of seconds >= 0 (0 = none)")

    @classmethod
    def from_env(cls, **overrides: Any) -> "SqlLimits":
        """Defaults, then ``LAYERLAKE_SQL_MEMORY`` / ``_THREADS`` / ``_TIMEOUT`` / ``_MAX_ROWS``, then ``overrides``."""
        env = {"memory_limit": "LAYERLAKE_SQL_MEMORY", "threads": "LAYERLAKE_SQL_THREADS",
               "timeout_s": "LAYERLAKE_SQL_TIMEOUT", "max_rows": "LAYERLAKE_SQL_MAX_ROWS"}
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, var in env.items():
            raw = os.environ.get(var)
            if raw is None or raw == "":
                continue
            try:
                values[name] = raw if kinds[name] == "str" else (float(raw) if kinds[name] == "float" else int(raw))
            except ValueError:
                raise SpecError(f"{var}={raw!r} is not a valid {kinds[name]}; unset it or give a valid value") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def open_sandbox() -> duckdb.DuckDBPyConnection:
    """An in-memory connection without external access; register relations, then :func:`lock` it."""
    return duckdb.connect(":memory:", config=dict(SANDBOX_CONFIG))


def lock(conn: duckdb.DuckDBPyConnection, limits: SqlLimits) -> duckdb.DuckDBPyConnection:
    """Apply ``limits`` and lock the configuration: after this no statement can change any option."""
    conn.execute(f"SET memory_limit = '{limits.memory_limit}'")
    conn.execute(f"SET threads = {int(limits.threads)}")
    conn.execute("SET lock_configuration = true")
    return conn


@contextlib.contextmanager
def time_limit(conn: duckdb.DuckDBPyConnection, timeout_s: float) -> Iterator[None]:
    """Interrupt ``conn`` when the block runs longer than ``timeout_s`` seconds (0 = no limit)."""
    if not timeout_s:
        yield
        return
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        conn.interrupt()

    timer = threading.Timer(timeout_s, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    except duckdb.InterruptException:
        if fired.is_set():
            raise QueryTimeoutError(
                f"the query ran longer than {timeout_s:g} s and was stopped; narrow it (WHERE, LIMIT) or raise "
                "the limit with LAYERLAKE_SQL_TIMEOUT=SECONDS (0 = none)") from None
        raise
    finally:
        timer.cancel()


def is_inside(path: str, root: str) -> bool:
    """Whether local ``path`` is ``root`` or lies under it, after resolving ``..``, ``//`` and symlinks."""
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)
