"""`layerlake sql`: formats, --out, read-only refusal, DuckDB errors with their position."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "layerlake", "sql", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_table_and_json(plake):
    lake = plake.store.fs.root
    r = run("SELECT model, d_model, dtype FROM extractions ORDER BY model", "--lake", lake)
    assert r.returncode == 0, r.stderr
    assert "tiny-gpt2" in r.stdout and "tiny-llama" in r.stdout and "(2 rows)" in r.stdout
    r = run("SELECT layer, count(*) AS n FROM vectors_64 WHERE position = 0 GROUP BY layer ORDER BY layer",
            "--lake", lake, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["layer"] for row in rows] == [0, 1, 2, 3] and all(row["n"] == 24 for row in rows)


def main(capsys, *args: str) -> tuple[int, str, str]:
    """The same entry point in-process (faster than a subprocess per case)."""
    from layerlake.cli import main as cli_main
    code = cli_main(["sql", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_csv_and_parquet_out(plake, tmp_path, capsys):
    lake = plake.store.fs.root
    q = "SELECT doc_hash, position, vec FROM vectors_32 WHERE layer = 1 AND position < 2 ORDER BY doc_hash, position"
    out = tmp_path / "v.csv"
    code, _, err = main(capsys, q, "--lake", lake, "--format", "csv", "--out", str(out))
    assert code == 0, err
    text = out.read_text().splitlines()
    assert text[0] == "doc_hash,position,vec" and len(text) == 33 and text[1].count(",") > 32
    pq = tmp_path / "v.parquet"
    code, _, err = main(capsys, q, "--lake", lake, "--format", "parquet", "--out", str(pq))
    assert code == 0, err
    df = pl.read_parquet(pq)
    assert df.height == 32 and df.schema["vec"] in (pl.Array(pl.Float32, 32), pl.List(pl.Float32))
    code, out_text, _ = main(capsys, "SELECT 1 AS x, 'a,b' AS y", "--lake", lake, "--format", "csv")
    assert code == 0 and out_text.splitlines() == ["x,y", '1,"a,b"']


def test_errors_exit_one_with_duckdbs_message(plake):
    r = run("SELECT nll FROM tokens WHERE", "--lake", plake.store.fs.root)
    assert r.returncode == 1 and "Parser Error" in r.stderr and "LINE 1" in r.stderr and "^" in r.stderr
    assert "Traceback" not in r.stderr


def test_refusals(plake, tmp_path, capsys):
    lake = plake.store.fs.root
    code, _, err = main(capsys, "SELECT count(*) FROM nosuch", "--lake", lake)
    assert code == 1 and "Table with name nosuch does not exist" in err
    code, _, err = main(capsys, "CREATE TABLE t AS SELECT 1", "--lake", lake)
    assert code == 2 and "read-only" in err and "--out" in err
    code, _, err = main(capsys, f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", "--lake", lake)
    assert code == 2 and "COPY" in err and not (tmp_path / "x.csv").exists()
    code, _, err = main(capsys, f"ATTACH '{tmp_path / 'x.db'}'", "--lake", lake)
    assert code == 2 and "ATTACH" in err
    code, _, err = main(capsys, "SELECT 1", "--lake", lake, "--out", str(Path(lake) / "x.csv"))
    assert code == 2 and "inside the lake" in err
    code, _, err = main(capsys, "SELECT 1", "--lake", str(tmp_path / "missing"))
    assert code == 2 and "no lake" in err
    code, _, err = main(capsys, "SELECT 1", "--lake", lake, "--format", "parquet")
    assert code == 2 and "--out" in err
