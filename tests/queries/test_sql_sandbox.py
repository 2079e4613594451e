"""The sandboxed `lake.sql`: checked relations, layerlake errors as themselves, user columns kept, the proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import layerlake as ll
from layerlake.queries.sandbox import SqlLimits
from layerlake.queries.sql import SqlResult
from layerlake.errors import QueryTimeoutError
from layerlake.store import doc_hash, layout
from tests.store.lakes import EID, synthetic_lake, texts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def slake(tmp_path: Path) -> ll.Lake:
    return synthetic_lake(tmp_path / "lake", {"a": texts(9)})


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_damaged_tokens_file_is_an_integrity_error(slake: ll.Lake) -> None:
    sid = slake.store.commit_ids(EID)[0]
    path = Path(slake.store.fs.path(*layout.shard_file(EID, sid, layout.TOKENS_FILE)))
    flip_byte(path, path.stat().st_size // 2)
    lake = ll.Lake(slake.store.fs.root, mode="r")
    with pytest.raises(ll.IntegrityError, match="tokens.parquet is damaged: crc32c"):
        lake.sql("SELECT sum(nll) FROM tokens").fetchall()
    with pytest.raises(ll.IntegrityError, match="tokens.parquet"):
        lake.sql("SELECT nll FROM tokens").pl()
    assert lake.sql("SELECT count(*) FROM extractions").fetchall() == [(1,)]  # other relations still answer
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "layerlake", "sql", "SELECT sum(nll) FROM tokens", "--lake",
                        slake.store.fs.root], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "is damaged" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_tokens_match_the_store_and_are_checked_per_shard(slake: ll.Lake) -> None:
    got = slake.sql('SELECT doc_hash, position, nll FROM tokens ORDER BY doc_hash, position').fetchall()
    want = []
    for sid in slake.store.commit_ids(EID):
        t = slake.store.shard_table(EID, sid, layout.TOKENS_FILE)
        want += list(zip(t.column("doc_hash").to_pylist(), t.column("position").to_pylist(),
                         t.column("nll").to_pylist()))
    assert sorted(got, key=lambda r: (r[0], r[1])) == sorted(want, key=lambda r: (r[0], r[1]))
    assert len(got) == slake.sql("SELECT sum(n_tokens) FROM docs").fetchall()[0][0]


def test_metadata_columns_named_like_ours_stay_visible(tmp_path: Path) -> None:
    lake = synthetic_lake(tmp_path / "lake", {"a": texts(3)})
    docs = texts(3)
    lake.store.write_dataset("m", pa.table({"doc_hash": [doc_hash(t) for t in docs], "text": docs,
                                            "dataset": ["wiki", "web", "books"]}))
    rows = lake.sql("SELECT dataset, meta_dataset FROM datasets WHERE dataset = 'm' ORDER BY ordinal").fetchall()
    assert rows == [("m", "wiki"), ("m", "web"), ("m", "books")]
    assert lake.sql("SELECT count(*) FROM datasets WHERE dataset = 'a' AND meta_dataset IS NULL").fetchall() == [(3,)]


def test_result_proxy_delegates_and_wraps_chained_relations(slake: ll.Lake) -> None:
    res = slake.sql("SELECT position, nll FROM tokens")
    assert isinstance(res, SqlResult) and isinstance(res.relation, duckdb.DuckDBPyRelation)
    assert res.columns == ["position", "nll"]
    chained = res.filter("position = 0").limit(2)
    assert isinstance(chained, SqlResult) and len(chained.fetchall()) == 2
    assert res.pl().height == res.df().shape[0] == res.arrow().read_all().num_rows
    assert "position" in str(res.limit(1))


def test_limits_apply_per_call(slake: ll.Lake) -> None:
    res = slake.sql("SELECT current_setting('threads') AS t, current_setting('memory_limit') AS m",
                    limits=SqlLimits(threads=1, memory_limit="256MB"))
    threads, memory = res.fetchall()[0]
    assert int(threads) == 1 and memory.replace(" ", "") in ("256.0MiB", "244.1MiB", "256MB", "244MiB")
    with pytest.raises(QueryTimeoutError):
        slake.sql("SELECT count(*) FROM generate_series(1, 100000000000)", limits=SqlLimits(timeout_s=0.3)).fetchall()
