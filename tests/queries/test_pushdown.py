"""Selective reads touch only the chunks that hold the selected rows."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

import layerlake as ll
from layerlake.queries.vectors import split_conjuncts, to_ranges
from layerlake.store import ArrayRef, ChunkReader, arrays

CHUNK_BYTES = 8 << 10  # 64 rows of a d=64 float16 layer: a few documents per chunk


def thousand_docs() -> list[str]:
    from layerlake.cli.quickstart import quickstart_corpus
    out, seen = [], set()
    for d in quickstart_corpus(1000):
        for s in re.split(r"(?<=[.!?])\s+", d["text"]):
            if len(s) > 30 and s not in seen:
                seen.add(s)
                out.append(s)
    assert len(out) >= 1000
    return out[:1000]


@pytest.fixture(scope="module")
def big(tmp_path_factory, tiny_gpt2):
    """1,000 short documents x tiny GPT-2 (d=64, 4 layers), several shards, small chunks."""
    mp = pytest.MonkeyPatch()
    # small chunks so that one document is a small fraction of a layer (the default is 2 MiB per chunk)
    defaults = list(arrays.write_array.__defaults__)
    defaults[-1] = CHUNK_BYTES
    mp.setattr(arrays.write_array, "__defaults__", tuple(defaults))
    try:
        lake = ll.Lake(tmp_path_factory.mktemp("big") / "lake")
        lake.ingest(str(tiny_gpt2), thousand_docs(), dataset="thousand", max_length=16, batch_tokens=2048,
                    shard_bytes=256 << 10, progress=False)
    finally:
        mp.undo()
    return lake


def _layer_bytes(lake, layer: int) -> int:
    eid = lake.extraction_id("thousand")
    return lake.engine.snapshot().layer_stored_bytes(eid, layer)


def test_lake_is_shaped_for_the_check(big):
    n_shards = big.sql("SELECT count(DISTINCT shard) FROM docs").fetchall()[0][0]
    assert n_shards >= 4
    full = big.read_vectors("thousand", layers=2)
    stats = big.last_query_stats()
    assert stats["chunks"] >= 100 and stats["rows"] == full.shape[0]
    assert stats["bytes_read"] == _layer_bytes(big, 2)


@pytest.mark.parametrize("how", ["polars", "sql", "read_vectors"])
def test_one_document_one_layer_reads_under_two_percent(big, how):
    layer = 2
    hashes = big.docs("thousand").collect()["doc_hash"].to_list()
    h = hashes[617]
    full = big.read_vectors("thousand", layers=layer)
    toks = big.tokens("thousand").collect()
    sel = (toks["doc_hash"] == h).to_numpy()
    with big.track_reads() as total:
        if how == "polars":
            got = (big.vectors("thousand", layers=[0, 1, 2, 3])
                   .filter((pl.col("doc_hash") == h) & (pl.col("layer") == layer))
                   .select("vec").collect()["vec"].to_numpy())
        elif how == "sql":
            got = big.sql("SELECT vec FROM vectors WHERE layer = $l AND doc_hash = $h ORDER BY position",
                          {"l": layer, "h": h}).pl()["vec"].to_numpy()
        else:
            got = big.read_vectors("thousand", layers=layer, docs=[h])
    np.testing.assert_array_equal(got, full[sel])
    stored = _layer_bytes(big, layer)
    assert 0 < total.bytes_read < 0.02 * stored, (total, stored)
    assert total.chunks <= 2


def test_vector_free_queries_read_no_chunks(big):
    with big.track_reads() as total:
        n = big.sql("SELECT count(*) FROM vectors WHERE layer = 1 AND position = 0").fetchall()[0][0]
        big.vectors("thousand").select("doc_hash", "position", "token").collect()
    assert n == 1000
    assert total.chunks == 0 and total.bytes_read == 0


def test_position_filter_reads_only_chunks_with_those_rows(big):
    """Position 0 of every document touches every chunk but decodes each once."""
    with big.track_reads() as total:
        got = big.vectors("thousand", layers=[3]).filter(pl.col("position") == 0).collect()
    assert got.height == 1000
    assert total.bytes_read <= _layer_bytes(big, 3)
    full = big.read_vectors("thousand", layers=3)
    first = big.tokens("thousand").collect()["position"].to_numpy() == 0
    np.testing.assert_array_equal(got["vec"].to_numpy(), full[first])


# -- unit pieces -----------------------------------------------------------------------------

def test_split_conjuncts():
    e = (pl.col("a") == 1) & ((pl.col("b") < 2) & pl.col("c").is_in(["x"])) & (pl.col("d") | pl.col("e"))
    parts = split_conjuncts(e)
    assert [sorted(p.meta.root_names()) for p in parts] == [["a"], ["b"], ["c"], ["d", "e"]]
    assert split_conjuncts(pl.col("a") > 3)[0].meta.root_names() == ["a"]


def test_to_ranges():
    src = np.array([5, 6, 7, 10, 11, 3])
    dst = np.array([0, 1, 2, 3, 4, 5])
    s0, s1, d0 = to_ranges(src, dst)
    assert s0.tolist() == [5, 10, 3] and s1.tolist() == [8, 12, 4] and d0.tolist() == [0, 3, 5]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_chunk_reader_fill_matches_numpy(tmp_path, dtype):
    import zarr

    from layerlake.store.arrays import to_float32, to_physical
    lake = ll.Lake(tmp_path / "lake")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    phys = to_physical(x, dtype)
    path = tmp_path / "lake" / "extractions" / "e" / "shards" / "s" / "hidden.zarr"
    group = zarr.open_group(str(path), mode="w")
    arrays.write_array(group, "layer_1", phys, dtype, chunk_bytes=37 * 16 * phys.dtype.itemsize)
    want = to_float32(phys, dtype)
    reader = ChunkReader(lake.store.fs, block_bytes=3 * 37 * 16 * 4)
    ref = ArrayRef.hidden("e", "s", 1)
    starts = np.array([990, 0, 100, 36, 37, 500, 600])
    stops = np.array([1000, 5, 300, 38, 38, 501, 700])
    dst = np.concatenate([[0], np.cumsum(stops - starts)[:-1]])
    out = np.full((int((stops - starts).sum()), 16), np.nan, np.float32)
    with reader.scan() as stats:
        reader.fill(out, ref, starts, stops, dst, stats)
    np.testing.assert_array_equal(out, np.concatenate([want[a:b] for a, b in zip(starts, stops)]))
    touched = {r // 37 for a, b in zip(starts, stops) for r in range(a, b)}
    assert stats.chunks == len(touched)
    # many one-row ranges go through the gather path
    rows = rng.choice(1000, 300, replace=False)
    out2 = np.empty((300, 16), np.float32)
    reader.fill(out2, ref, rows, rows + 1, np.arange(300))
    np.testing.assert_array_equal(out2, want[rows])


def test_read_vectors_streams_in_bounded_blocks(big, monkeypatch):
    """A full layer is read a few chunks at a time straight into the result (no whole-layer buffer)."""
    reader = big.store.reader
    block_rows = 3 * (CHUNK_BYTES // (64 * 2))
    monkeypatch.setattr(reader, "block_bytes", 3 * CHUNK_BYTES)
    sizes = []
    real = reader._read

    def spy(arr, start, stop, *a):
        sizes.append(stop - start)
        return real(arr, start, stop, *a)

    monkeypatch.setattr(reader, "_read", spy)
    got = big.read_vectors("thousand", layers=[1, 3])
    assert got.shape[0] == 2 and max(sizes) <= block_rows and sum(sizes) == got.shape[0] * got.shape[1]
    monkeypatch.undo()
    eid = big.extraction_id("thousand")
    import zarr
    toks = big.tokens("thousand").select("shard", "row").collect()  # dataset order -> storage place
    arrays = {sid: zarr.open_array(f"{big.store.fs.root}/extractions/{eid}/shards/{sid}/hidden.zarr/layer_3")[:]
              for sid in toks["shard"].unique()}
    want = np.stack([arrays[s][r] for s, r in toks.iter_rows()]).astype(np.float32)
    np.testing.assert_array_equal(got[1], want)
