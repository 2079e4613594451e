"""The SQL catalog: relations and schemas, committed-only visibility, refresh, the extension hook, the guard."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

import layerlake as ll
from layerlake.queries import metric_cache
from layerlake.queries import sql as sqlmod

RELATIONS = ["extractions", "datasets", "docs", "tokens", "metrics", "vectors", "dataset_vectors"]


def _columns(lake, rel: str) -> dict[str, str]:
    return dict((r[0], r[1]) for r in lake.sql(f"DESCRIBE {rel}").fetchall())


def test_relations_and_schemas(plake):
    names = {r[0] for r in plake.sql("SHOW TABLES").fetchall()}
    assert set(RELATIONS) | {"vectors_64", "vectors_32", "dataset_vectors_64", "dataset_vectors_32"} <= names
    assert list(_columns(plake, "tokens")) == ["extraction", "doc_hash", "window", "position", "token_id", "token",
                                               "nll", "shard", "row"]
    assert list(_columns(plake, "docs"))[:7] == ["extraction", "shard", "doc_hash", "window", "char_offset",
                                                 "n_tokens", "row_start"]
    assert list(_columns(plake, "datasets"))[:4] == ["dataset", "ordinal", "doc_hash", "text"]
    assert {"topic", "paragraph"} <= set(_columns(plake, "datasets"))
    ext = _columns(plake, "extractions")
    for c in ("extraction", "model", "aliases", "revision", "weights_hash", "tokenizer_hash", "capture", "layers",
              "d_model", "dtype"):
        assert c in ext
    assert _columns(plake, "vectors_64")["vec"] == "FLOAT[64]"
    assert _columns(plake, "dataset_vectors_32")["vec"] == "FLOAT[32]"
    assert list(_columns(plake, "dataset_vectors"))[:2] == ["dataset", "ordinal"]


def test_metrics_is_empty_with_its_schema(plake):
    cols = _columns(plake, "metrics")
    assert cols == {"extraction": "VARCHAR", "model": "VARCHAR", "dataset": "VARCHAR", "metric": "VARCHAR",
                    "version": "VARCHAR", "params": "VARCHAR", "layer": "INTEGER", "layer2": "INTEGER",
                    "doc_hash": "VARCHAR", "value": "DOUBLE", "n": "BIGINT", "computed_at": "VARCHAR"}
    assert plake.sql("SELECT count(*) FROM metrics").fetchall() == [(0,)]


def test_datasets_union_by_name(plake):
    rows = plake.sql("SELECT dataset, count(*), count(topic) FROM datasets GROUP BY dataset ORDER BY dataset").fetchall()
    assert rows == [("a", 16, 16), ("b", 16, 16)]


def test_tokens_count_matches_docs(plake):
    per = plake.sql("""SELECT d.extraction, sum(d.n_tokens) AS want,
                              (SELECT count(*) FROM tokens t WHERE t.extraction = d.extraction) AS got
                       FROM docs d GROUP BY d.extraction""").fetchall()
    assert per and all(w == g for _, w, g in per)


def _copy_lake(src: ll.Lake, dst: Path) -> ll.Lake:
    shutil.copytree(src.store.fs.root, dst)
    return ll.Lake(dst)


def test_only_committed_shards_are_visible(plake, tmp_path):
    lake = _copy_lake(plake, tmp_path / "lake")
    eid = lake.extraction_id("a", "tiny-gpt2")
    counts = lambda: lake.sql("""SELECT (SELECT count(*) FROM tokens), (SELECT count(*) FROM docs),
                                        (SELECT count(*) FROM vectors WHERE layer = 0)""").fetchall()[0]
    before = counts()
    n_vec = lake.vectors("a", model="tiny-gpt2", layers=[0]).select(pl.len()).collect().item()
    shards = lake.store.fs.root + f"/extractions/{eid}/shards"
    first = sorted(Path(shards).iterdir())[0]
    # a shard folder being written (no commit marker yet): a copy of a real shard under a new id, sorting first
    shutil.copytree(first, Path(shards) / "00000000T000000-inflight00")
    # an orphan left by a crash, and a marker-less temp file
    shutil.copytree(first, Path(shards) / "99999999T999999-orphan0000")
    (Path(lake.store.fs.root) / "extractions" / eid / "commits" / ".tmp-abc").write_text("{")
    assert counts() == before
    assert lake.vectors("a", model="tiny-gpt2", layers=[0]).select(pl.len()).collect().item() == n_vec
    assert lake.sql("SELECT count(*) FROM tokens WHERE shard LIKE '0000%' OR shard LIKE '9999%'").fetchall() == [(0,)]


def test_refresh_sees_new_commits_and_reuses_the_relations(plake, tmp_path, tiny_gpt2, qdocs):
    lake = _copy_lake(plake, tmp_path / "lake")
    n0 = lake.sql("SELECT count(*) FROM tokens").fetchall()[0][0]
    tokens = lake.sql_catalog.relations()["tokens"]
    assert lake.sql("SELECT count(*) FROM tokens").fetchall()[0][0] == n0
    assert lake.sql_catalog.relations()["tokens"] is tokens  # cached while nothing new is committed
    lake.ingest(str(tiny_gpt2), qdocs[:16] + [{"text": "A brand new document about queries.", "topic": "new"}],
                dataset="a", dtype="float32", max_length=24, model_name="tiny-gpt2", progress=False)
    assert lake.sql("SELECT count(*) FROM tokens").fetchall()[0][0] > n0
    assert lake.sql("SELECT count(*) FROM datasets WHERE topic = 'new'").fetchall() == [(1,)]
    assert lake.sql_catalog.relations()["tokens"] is not tokens


def test_metric_files_appear(plake, tmp_path):
    lake = _copy_lake(plake, tmp_path / "lake")
    assert lake.sql("SELECT count(*) FROM metrics").fetchall() == [(0,)]
    foreign = Path(lake.store.fs.root) / "metrics" / "prompt_entropy" / "x.parquet"  # not a cache entry: not read
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"not parquet")
    eid = lake.sql("SELECT extraction FROM docs LIMIT 1").fetchall()[0][0]
    metric_cache.write_unit(lake.store, eid, "0" * 32, pa.table({
        "extraction": [eid], "model": ["m"], "dataset": ["a"], "metric": ["prompt_entropy"], "version": ["1"],
        "params": ['{"alpha":1.0}'], "layer": pa.array([3], pa.int32()), "layer2": pa.array([None], pa.int32()),
        "doc_hash": pa.array([None], pa.string()), "value": [0.5], "n": [10],
        "computed_at": ["2026-01-01T00:00:00+00:00"]}))
    assert lake.sql("SELECT metric, layer, value FROM metrics").fetchall() == [("prompt_entropy", 3, 0.5)]


def test_extension_hook_runs_on_new_connections(plake, tmp_path):
    seen = []

    def ext(conn, lake):
        seen.append(lake)
        conn.create_function("ll_double", lambda x: 2 * x, ["BIGINT"], "BIGINT")

    sqlmod.register_sql_extension(ext)
    sqlmod.register_sql_extension(ext)  # idempotent
    try:
        lake = ll.Lake(plake.store.fs.root, mode="r")
        assert lake.sql("SELECT ll_double(21)").fetchall() == [(42,)]
        assert lake.sql("SELECT ll_double(1)").fetchall() == [(2,)]
        assert seen == [lake.engine, lake.engine]  # once per connection: every query gets a fresh one
        conn = sqlmod.connect(lake.engine)
        assert conn.sql("SELECT ll_double(2), (SELECT count(*) > 0 FROM tokens)").fetchall() == [(4, True)]
        assert len(seen) == 3
    finally:
        sqlmod._EXTENSIONS.remove(ext)


def test_params_and_relation_methods(plake):
    rel = plake.sql("SELECT layer, count(*) AS n FROM vectors_64 WHERE layer = ? GROUP BY layer", [2])
    rows = rel.fetchall()
    assert len(rows) == 1 and rows[0][0] == 2 and rows[0][1] > 0
    assert rel.pl().rows() == rows
    assert rel.df()["n"].tolist() == [rows[0][1]]
    assert rel.arrow().read_all().column("n").to_pylist() == [rows[0][1]]


def test_sandbox_refuses_every_file_write(plake, tmp_path):
    root = plake.store.fs.root
    out = tmp_path / "elsewhere.csv"
    for q in (f"COPY (SELECT 1 AS x) TO '{root}/x.csv'", f"ATTACH '{root}/db.duckdb' AS x",
              f"COPY (SELECT 1 AS x) TO '{out}'"):
        with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
            plake.sql(q)
    assert not out.exists() and not (Path(root) / "x.csv").exists() and not (Path(root) / "db.duckdb").exists()
    with pytest.raises(ll.ReadOnlyError, match="read-only"):
        sqlmod.refuse_non_queries("CREATE TABLE t AS SELECT 1")
    sqlmod.refuse_non_queries("WITH a AS (SELECT 1) SELECT * FROM a; EXPLAIN SELECT 1; DESCRIBE tokens")


def test_sql_errors_are_duckdbs(plake):
    with pytest.raises(duckdb.ParserException, match="LINE 1"):
        plake.sql("SELEC 1")
    with pytest.raises(duckdb.BinderException, match="nosuch"):
        plake.sql("SELECT nosuch FROM tokens")


def test_unknown_catalog_values_in_vector_filters_list_valid_ones(plake):
    with pytest.raises(ll.NotFoundError, match=r"valid models: tiny-gpt2, tiny-llama"):
        plake.sql("SELECT count(*) FROM vectors WHERE model = 'gpt-5'").fetchall()
    with pytest.raises(ll.NotFoundError, match=r"valid layers: 0, 1, 2, 3"):
        plake.sql("SELECT count(*) FROM vectors_64 WHERE layer = 12").fetchall()
    with pytest.raises(ll.NotFoundError, match=r"valid datasets: a, b"):
        plake.sql("SELECT count(*) FROM dataset_vectors WHERE dataset = 'c'").fetchall()
    # a layer some model stores is fine even where this relation has none
    assert plake.sql("SELECT count(*) FROM vectors_32 WHERE layer = 3").fetchall() == [(0,)]


def test_empty_lake(tmp_path):
    lake = ll.Lake(tmp_path / "empty")
    for rel in RELATIONS:
        assert lake.sql(f"SELECT count(*) FROM {rel}").fetchall() == [(0,)]


def test_fsspec_lake(tiny_gpt2, qdocs):
    """A lake on an fsspec URL (memory://): SQL, vectors and read_vectors read it alike."""
    lake = ll.Lake("memory://layerlake-test-queries")
    try:
        lake.ingest(str(tiny_gpt2), qdocs[:6], dataset="m", max_length=12, progress=False)
        n = lake.sql("SELECT count(*) FROM tokens").fetchall()[0][0]
        assert n == lake.sql("SELECT sum(n_tokens) FROM docs").fetchall()[0][0] > 0
        assert lake.sql("SELECT count(topic) FROM datasets").fetchall() == [(6,)]
        sql = lake.sql("""SELECT vec FROM dataset_vectors WHERE dataset = 'm' AND layer = 2
                          ORDER BY ordinal, position""").pl()["vec"].to_numpy()
        import numpy as np
        np.testing.assert_array_equal(sql, lake.read_vectors("m", layers=2))
        np.testing.assert_array_equal(sql, lake.vectors("m", layers=[2]).collect()["vec"].to_numpy())
    finally:
        lake.store.fs.rm()
