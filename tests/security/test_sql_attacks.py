"""Attacks on the SQL sandbox through `lake.sql` and `layerlake sql`: each is refused in one line, the lake unchanged."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import layerlake as ll
from layerlake.errors import LayerlakeError, QueryTimeoutError
from tests.store.lakes import synthetic_lake, texts

ROOT = Path(__file__).resolve().parents[2]

ATTACKS = [
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_text($$/etc/passwd$$)",
    "SELECT * FROM read_parquet('{lake}/datasets/a/docs.parquet')",
    "COPY (SELECT 1 AS x) TO '{lake}/lake.json'",
    "COPY (SELECT 1 AS x) TO $${lake}/lake.json$$",
    "COPY (SELECT 1 AS x) TO '/{lake}/lake.json'",
    "COPY (SELECT 1 AS x) TO '{lake}/../{lake_name}/lake.json'",
    "COPY (SELECT 1 AS x) TO '{link}/lake.json'",
    "COPY (SELECT 1 AS x) TO '{tmp}/outside.csv'",
    "EXPORT DATABASE '{tmp}/exported'",
    "ATTACH '{lake}/x.duckdb' AS x; CREATE TABLE x.t AS SELECT 1 AS v",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM 'http://127.0.0.1:9/x.parquet'",
    "SELECT * FROM read_parquet('https://example.invalid/x.parquet')",
    "SELECT st_point(1, 2)",
    "SET log_query_path = '{lake}/lake.json'; SELECT 1",
    "PRAGMA profiling_output = '{lake}/lake.json'",
    "SET profiling_output = '{lake}/lake.json'; PRAGMA enable_profiling; SELECT 1",
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET lock_configuration = false",
    "RESET lock_configuration",
    "SET memory_limit = '100GB'",
    "PRAGMA memory_limit = '100GB'",
    "RESET memory_limit",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("sqlattack")
    lake = synthetic_lake(base / "lake", {"a": texts(12), "b": texts(6, 20)})
    tmp = base / "outside"
    tmp.mkdir()
    link = base / "link"
    link.symlink_to(base / "lake")
    root = lake.store.fs.root
    return {"lake": root, "lake_name": Path(root).name, "tmp": str(tmp), "link": str(link)}


def checksums(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def before(setup: dict[str, str]) -> dict[str, str]:
    return checksums(setup["lake"])


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "layerlake", "sql", *args], capture_output=True, text=True,
                          env=full, timeout=300)


def assert_clean(setup: dict[str, str], before: dict[str, str]) -> None:
    assert checksums(setup["lake"]) == before
    assert os.listdir(setup["tmp"]) == []


@pytest.mark.parametrize("attack", ATTACKS)
def test_lake_sql_refuses(attack: str, setup: dict[str, str], before: dict[str, str]) -> None:
    lake = ll.Lake(setup["lake"], mode="r")
    q = attack.format(**setup)
    t0 = time.perf_counter()
    with pytest.raises((duckdb.Error, LayerlakeError)) as info:
        rel = lake.sql(q)
        if rel is not None:
            rel.fetchall()
    assert time.perf_counter() - t0 < 10  # nothing was downloaded or waited for
    assert "Traceback" not in str(info.value)
    assert_clean(setup, before)
    assert lake.sql("SELECT count(*) FROM datasets").fetchall() == [(18,)]  # and the next query is unaffected


@pytest.fixture(scope="module")
def cli_runs(setup: dict[str, str], before: dict[str, str]) -> dict[str, subprocess.CompletedProcess]:
    """Every attack through `layerlake sql`, a few processes at a time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        runs = {a: pool.submit(cli, a.format(**setup), "--lake", setup["lake"]) for a in ATTACKS}
        return {a: f.result() for a, f in runs.items()}


@pytest.mark.parametrize("attack", ATTACKS)
def test_cli_refuses(attack: str, setup: dict[str, str], before: dict[str, str],
                     cli_runs: dict[str, subprocess.CompletedProcess]) -> None:
    r = cli_runs[attack]
    assert r.returncode in (1, 2), (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert_clean(setup, before)


def test_views_cannot_be_poisoned(setup: dict[str, str], before: dict[str, str]) -> None:
    lake = ll.Lake(setup["lake"], mode="r")
    lake.sql("CREATE OR REPLACE VIEW datasets AS SELECT 'evil' AS dataset")  # runs, in its own connection only
    assert lake.sql("SELECT dataset, count(*) FROM datasets GROUP BY ALL ORDER BY 1").fetchall() == [
        ("a", 12), ("b", 6)]
    lake.sql("CREATE TABLE tokens AS SELECT 1 AS x")
    assert lake.sql("SELECT count(*) FROM tokens").fetchall()[0][0] > 1
    assert_clean(setup, before)


@pytest.mark.parametrize("query", [
    "SELECT count(DISTINCT md5(repeat(a.token || b.token || c.token, 200))) FROM tokens a, tokens b, tokens c",
    "SELECT count(*) FROM generate_series(1, 100000000000)",
])
def test_runaway_queries_are_stopped(query: str, setup: dict[str, str], before: dict[str, str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERLAKE_SQL_TIMEOUT", "1")
    lake = ll.Lake(setup["lake"], mode="r")
    t0 = time.perf_counter()
    with pytest.raises(QueryTimeoutError, match="longer than 1 s"):
        lake.sql(query).fetchall()
    assert time.perf_counter() - t0 < 15
    r = cli(query, "--lake", setup["lake"], env={"LAYERLAKE_SQL_TIMEOUT": "1"})
    assert r.returncode == 1 and r.stderr.startswith("error: the query ran longer than 1 s"), r.stderr
    r = cli(query, "--lake", setup["lake"], "--timeout", "0.5")
    assert r.returncode == 1 and "longer than 0.5 s" in r.stderr, r.stderr
    assert_clean(setup, before)


#: runs argv[2:] with stdout to the file argv[1]; prints the child's peak RSS (KiB), exits with its status
PEAK_RSS_LAUNCHER = """
import os, subprocess, sys
with open(sys.argv[1], "w") as fh:
    proc = subprocess.Popen(sys.argv[2:], stdout=fh)
    _, status, usage = os.wait4(proc.pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_huge_result_as_table_is_bounded(setup: dict[str, str], before: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "stdout.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    t0 = time.perf_counter()
    # Measured through a small launcher: a child started straight from this (large) test process
    # inherits this process's peak RSS in its ru_maxrss at exec.
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS_LAUNCHER, str(out), sys.executable, "-m", "layerlake",
                           "sql", "SELECT * FROM range(300000000)", "--lake", setup["lake"], "--max-rows", "5"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - t0 < 60
    text = out.read_text()
    assert "(more than 5 rows, 5 shown" in text and "│ 4 " in text.replace("|", "│")
    assert int(proc.stdout) < 1_500_000  # KiB: far less than the 2.4 GB the whole result would take
    assert_clean(setup, before)


@pytest.mark.parametrize("where", ["{lake}/x.csv", "/{lake}/x.csv", "{lake}/../{lake_name}/x.csv", "{link}/x.csv"])
def test_out_inside_the_lake_is_refused(where: str, setup: dict[str, str], before: dict[str, str]) -> None:
    r = cli("SELECT 1 AS x", "--lake", setup["lake"], "--format", "csv", "--out", where.format(**setup))
    assert r.returncode == 2 and "inside the lake" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert_clean(setup, before)


def test_symlinked_out_file_into_the_lake_is_refused(setup: dict[str, str], before: dict[str, str],
                                                     tmp_path: Path) -> None:
    target = tmp_path / "innocent.csv"
    target.symlink_to(Path(setup["lake"]) / "lake.json")
    r = cli("SELECT 1 AS x", "--lake", setup["lake"], "--format", "csv", "--out", str(target))
    assert r.returncode == 2 and "inside the lake" in r.stderr, r.stderr
    assert_clean(setup, before)
