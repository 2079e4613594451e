"""The metric cache: content keys, no reads on a hit, recompute on change, explain, SQL."""

from __future__ import annotations

import dataclasses
import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

import layerlake as ll
from layerlake.metrics import REGISTRY
from layerlake.queries import metric_cache as mc
from layerlake.queries.metric_sql import install_sql_metrics
from layerlake.store import ChunkReader

from .synth import build


@pytest.fixture
def synth(tmp_path):
    return build(tmp_path, n_docs=10, models={"model-a": (3, 8)})


@pytest.fixture
def reads(monkeypatch):
    """Count hidden-state reads (every array read goes through the store's ChunkReader.fill)."""
    calls = []
    real = ChunkReader.fill

    def spy(self, out, ref, src_start, src_stop, dst_start, stats=None):
        if "hidden.zarr" in ref.parts:
            calls.append((ref.parts[1], int(ref.parts[-1].split("_")[1]), len(src_start)))
        return real(self, out, ref, src_start, src_stop, dst_start, stats)

    monkeypatch.setattr(ChunkReader, "fill", spy)
    return calls


def test_second_identical_call_reads_no_arrays(synth, reads):
    first = synth.lake.metric("representation_dispersion", dataset="ds")
    assert {c[1] for c in reads} == {0, 1, 2, 3}
    reads.clear()
    second = synth.lake.metric("representation_dispersion", dataset="ds")
    assert reads == []
    assert second.equals(first)
    docs = synth.lake.metric("representation_dispersion", dataset="ds", per="doc")  # shares the cached units
    assert reads == [] and docs.height == 4 * 10


def test_cache_files_layout_and_schema(synth):
    synth.lake.metric("mean_norm", dataset="ds", layers=[1, 2])
    eid = synth.eids["model-a"]
    files = sorted((synth.lake.store.fs.path("metrics", eid) + "/" + n)
                   for n in synth.lake.store.fs.listdir("metrics", eid))
    assert len(files) == 2 and all(f.endswith(".parquet") for f in files)
    table = pq.read_table(files[0])
    assert table.schema.names == ["extraction", "model", "dataset", "metric", "version", "params", "layer",
                                  "layer2", "doc_hash", "value", "n", "computed_at"]
    assert [str(t) for t in table.schema.types] == ["string", "string", "string", "string", "string", "string",
                                                     "int32", "int32", "string", "double", "int64", "string"]
    rows = table.to_pylist()
    assert len(rows) == 11  # 10 documents + the aggregate row
    agg = [r for r in rows if r["doc_hash"] is None][0]
    assert agg["metric"] == "mean_norm" and agg["version"] == "1" and agg["params"] == "{}"
    assert agg["extraction"] == eid and agg["n"] == 10
    assert agg["value"] == pytest.approx(np.mean([r["value"] for r in rows if r["doc_hash"]]))


def test_new_parameter_recomputes_and_default_equals_omitted(synth, reads):
    synth.lake.metric("coding_length_entropy", dataset="ds", layers=[0])
    reads.clear()
    synth.lake.metric("coding_length_entropy", dataset="ds", layers=[0], eps=0.5)  # the default: same key
    assert reads == []
    a = synth.lake.metric("coding_length_entropy", dataset="ds", layers=[0], eps=1.0)
    assert len(reads) > 0
    reads.clear()
    b = synth.lake.metric("coding_length_entropy", dataset="ds", layers=[0], eps=1)  # int for a float: same key
    assert reads == [] and a.equals(b)
    params = {json.loads(r) .get("eps") for r in _cached_params(synth, "coding_length_entropy")}
    assert params == {None, 1.0}


def _cached_params(synth, metric):
    eid = synth.eids["model-a"]
    out = []
    for key in mc.cached_keys(synth.lake.store, eid):
        t = mc.read_unit(synth.lake.store, eid, key)
        if t.column("metric")[0].as_py() == metric:
            out.append(t.column("params")[0].as_py())
    return out


def test_new_version_recomputes(synth, reads, monkeypatch):
    synth.lake.metric("mean_norm", dataset="ds", layers=[0])
    reads.clear()
    monkeypatch.setitem(REGISTRY, "mean_norm", dataclasses.replace(REGISTRY["mean_norm"], version="2"))
    synth.lake.metric("mean_norm", dataset="ds", layers=[0])
    assert len(reads) > 0


def test_only_missing_layers_are_computed(synth, reads):
    synth.lake.metric("matrix_entropy", dataset="ds", layers=[0, 1])
    reads.clear()
    plan = synth.lake.explain_metric("matrix_entropy", dataset="ds")
    assert plan.units["status"].to_list() == ["cached", "cached", "compute", "compute"]
    text = str(plan)
    assert "2 from cache, 2 to compute" in text and "layer 2:" in text and "layer 0:" not in text
    assert [r["layer"] for r in plan.reads] == [2, 3]
    assert plan.reads[0]["tokens"] == sum(synth.tokens["model-a"])
    assert reads == []  # explaining reads no arrays
    synth.lake.metric("matrix_entropy", dataset="ds")
    assert {c[1] for c in reads} == {2, 3}
    assert "nothing to read" in str(synth.lake.explain_metric("matrix_entropy", dataset="ds"))


def test_key_follows_document_content_not_dataset_name(synth, reads):
    store = synth.lake.store
    synth.lake.metric("mean_norm", dataset="ds", layers=[0])
    table = store.dataset_table("ds")
    eid = synth.eids["model-a"]
    store.write_dataset("same-docs", table.drop_columns(["ordinal"]))
    store.link_dataset("same-docs", eid, {"model": "model-a"})
    reads.clear()
    renamed = synth.lake.metric("mean_norm", dataset="same-docs", layers=[0])
    assert reads == [] and renamed["dataset"][0] == "same-docs"
    rev = table.drop_columns(["ordinal"]).take(list(range(table.num_rows))[::-1])
    store.write_dataset("reversed", rev)
    store.link_dataset("reversed", eid, {"model": "model-a"})
    synth.lake.metric("mean_norm", dataset="reversed", layers=[0])
    assert len(reads) > 0


def test_cache_false_and_refresh(synth, reads):
    synth.lake.metric("mean_norm", dataset="ds", layers=[0], cache=False)
    assert mc.cached_keys(synth.lake.store, synth.eids["model-a"]) == set()
    synth.lake.metric("mean_norm", dataset="ds", layers=[0])
    reads.clear()
    synth.lake.metric("mean_norm", dataset="ds", layers=[0], cache="refresh")
    assert len(reads) > 0


def test_read_only_lake_computes_without_writing(synth, reads):
    synth.lake.metric("mean_norm", dataset="ds", layers=[0])
    ro = ll.Lake(synth.lake.url, mode="r")
    reads.clear()
    ro.metric("mean_norm", dataset="ds", layers=[0])
    assert reads == []
    df = ro.metric("mean_norm", dataset="ds", layers=[1])
    assert len(reads) > 0 and df.height == 1
    assert len(mc.cached_keys(ro.store, synth.eids["model-a"])) == 1


def test_sql_table_macro_computes_on_first_use(synth, reads):
    con = duckdb.connect()
    install_sql_metrics(con, synth.lake)
    got = con.sql("SELECT layer, value, n, sem FROM layerlake_metric('representation_dispersion', 'ds') "
                  "ORDER BY layer").fetchall()
    assert len(reads) > 0
    reads.clear()
    want = synth.lake.metric("representation_dispersion", dataset="ds")
    assert reads == []
    assert got == want.select("layer", "value", "n", "sem").rows()
    pairs = con.sql("SELECT layer, layer2 FROM layerlake_metric('linear_cka', 'ds', layers := '0,2,3', "
                    "params := '{\"rows\": \"pooled\"}')").fetchall()
    assert pairs == [(0, 2), (2, 3)]
    docs = con.sql("SELECT count(*), count(DISTINCT doc_hash) FROM layerlake_metric('mean_norm', 'ds', "
                   "model := 'model-a', layers := '1', per := 'doc')").fetchall()[0]
    assert docs == (10, 10)
    with pytest.raises(duckdb.Error, match="valid metrics"):
        con.sql("SELECT * FROM layerlake_metric('nope', 'ds')").fetchall()


def test_unreadable_cache_file_is_recomputed(synth, reads):
    first = synth.lake.metric("mean_norm", dataset="ds", layers=[0])
    eid = synth.eids["model-a"]
    (key,) = mc.cached_keys(synth.lake.store, eid)
    path = synth.lake.store.fs.path("metrics", eid, f"{key}.parquet")
    with open(path, "wb") as fh:
        fh.write(b"not parquet")
    reads.clear()
    again = synth.lake.metric("mean_norm", dataset="ds", layers=[0])
    assert len(reads) > 0 and again.equals(first)
    assert mc.read_unit(synth.lake.store, eid, key).num_rows == 11  # rewritten
