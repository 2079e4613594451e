"""The placement rule: the smallest-id committed shard serves a (document, layer), for every reader."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import layerlake as ll
from layerlake.metrics import get_metric
from layerlake.store import Placement, ShardManifest, doc_hash, serving_shard, write_shard
from layerlake.store.arrays import to_physical

from .lakes import EID, n_tokens, shard_data, synthetic_lake, texts, vectors

DUP = "0-duplicate"   # sorts before every time-based shard id (they start with the year)
SALT = "other-values"


def _index(rows: list[tuple[str, str, list[int]]]) -> pa.Table:
    return pa.table({"doc_hash": [h for h, _, _ in rows], "window": [0] * len(rows),
                     "row_start": [10 * ROWS.index(r) if r in ROWS else 99 for r in rows], "n_tokens": [3] * len(rows),
                     "shard": [s for _, s, _ in rows], "layers": pa.array([ls for _, _, ls in rows], pa.list_(pa.int32()))})


def _manifest(sid: str, sketch: dict[str, list[int]]) -> ShardManifest:
    return ShardManifest.from_json({
        "format": 1, "shard": sid, "extraction": "e1", "n_docs": 1, "n_doc_hashes": 1, "n_rows": 3, "layers": [],
        "d_model": None, "dtype": "float16", "jacobian": {k: {"layers": v, "attrs": {}} for k, v in sketch.items()},
        "files": {}, "bytes": 0, "created": "2026-01-01T00:00:00+00:00", "writer": {}}, source="test")


ROWS = [("a", "s3", [1, 2]), ("a", "s1", [2]), ("a", "s2", [1, 2, 3]), ("b", "s3", [1]), ("b", "s2", []),
        ("c", "s1", [0])]
SKETCHES = {"s1": {"j1": [1]}, "s2": {"j1": [1, 2]}, "s3": {"j1": [2], "j2": [1]}}


def _answers(rows: list[tuple[str, str, list[int]]]) -> dict[str, object]:
    p = Placement.build(_index(rows), [_manifest(s, k) for s, k in SKETCHES.items()])
    return {"tokens": p.token_shards(), "layers": {l: p.layer_shards(l) for l in range(4)},
            "held": p.layers_held, "blocks": p.blocks_held("j1"),
            "sketch": {b: p.sketch_shards("j1", b) for b in (1, 2)},
            "locate": p.locate(["c", "a", "b"], 2).to_pylist(),
            "vectors": sorted(map(tuple, (r.values() for r in p.vector_rows().to_pylist())))}


def test_rule_is_smallest_shard_id() -> None:
    assert serving_shard(["20260102T000000-b", "20260101T000000-z", "20260101T000000-a"]) == "20260101T000000-a"
    a = _answers(ROWS)
    assert a["tokens"] == {"a": "s1", "b": "s2", "c": "s1"}
    assert a["layers"][2] == {"a": "s1"} and a["layers"][1] == {"a": "s2", "b": "s3"} and a["layers"][0] == {"c": "s1"}
    assert a["held"] == {"a": {1, 2, 3}, "b": {1}, "c": {0}}
    assert a["blocks"] == {"a": {1, 2}, "b": {1, 2}, "c": {1}}
    assert a["sketch"] == {1: {"a": "s1", "b": "s2", "c": "s1"}, 2: {"a": "s2", "b": "s2"}}
    assert [(r["doc_hash"], r["shard"]) for r in a["locate"]] == [("a", "s1")]   # c and b lack layer 2


@pytest.mark.parametrize("seed", range(5))
def test_rule_ignores_listing_order_and_duplicate_rows(seed: int) -> None:
    h, _, ls = ROWS[seed % len(ROWS)]
    rows = list(ROWS) + [(h, "s9", ls)]      # one more holder, with a larger id: it never serves
    random.Random(seed).shuffle(rows)
    assert _answers(rows) == _answers(ROWS)


@pytest.fixture()
def twice(tmp_path: Path) -> ll.Lake:
    """Documents 0..3 stored by the synthetic shards and again, with other values, by shard DUP (committed last)."""
    docs = texts(8)
    lake = synthetic_lake(tmp_path / "lake", {"wiki": docs}, layers=(0, 1), shard_docs=4)
    write_shard(lake.store.fs, EID, shard_data([doc_hash(t) for t in docs[:4]], [0, 1], salt=SALT), shard_id=DUP)
    return lake


def _expected(docs: list[str], layer: int) -> np.ndarray:
    parts = []
    for i, t in enumerate(docs):
        v = vectors(doc_hash(t), layer, 8, SALT if i < 4 else "f" * 32)
        parts.append(np.asarray(to_physical(v, "float16"), np.float32))
    return np.concatenate(parts)


def test_every_reader_uses_the_serving_shard(twice: ll.Lake, tmp_path: Path) -> None:
    lake, docs = twice, texts(8)
    hashes = [doc_hash(t) for t in docs]
    assert lake.store.placement(EID).layer_shards(1)[hashes[0]] == DUP
    want = _expected(docs, 1)
    np.testing.assert_array_equal(lake.read_vectors("wiki", layers=1), want)
    sql = lake.sql("SELECT doc_hash, position, vec FROM dataset_vectors WHERE layer = 1 ORDER BY ordinal, position")
    got = np.asarray([np.asarray(r[2], np.float32) for r in sql.fetchall()])
    np.testing.assert_array_equal(got, want)
    shards = {r[0] for r in lake.sql("SELECT DISTINCT shard FROM vectors WHERE layer = 1 AND doc_hash = ?",
                                     [hashes[0]]).fetchall()}
    assert shards == {DUP}
    n_tok = lake.sql("SELECT count(*) FROM tokens").fetchall()[0][0]
    assert n_tok == sum(n_tokens(h) for h in hashes)          # each document's tokens once
    norms = lake.metric("mean_norm", dataset="wiki", layers=[1], per="doc")["value"].to_numpy()
    fn = get_metric("mean_norm").fn
    starts = np.cumsum([0] + [n_tokens(h) for h in hashes])
    np.testing.assert_allclose(norms, [fn(want[a:b].astype(np.float64)) for a, b in zip(starts[:-1], starts[1:])],
                               rtol=1e-6)
    out = tmp_path / "export"
    lake.export("wiki", out, layers=[1])
    exported = ll.Lake(out)
    np.testing.assert_array_equal(exported.read_vectors("wiki", layers=1), want)


def test_shard_ids_sort_in_creation_order(tmp_path) -> None:
    """Shards written one after another within a second: the earlier one serves (the smallest id)."""
    from layerlake.store import LakeFS, layout
    from layerlake.store.shards import new_shard_id

    fs = LakeFS(tmp_path)
    ids = [new_shard_id(fs) for _ in range(500)]
    assert all(layout.SHARD_ID_RE.match(i) for i in ids)
    assert [serving_shard(ids[i:]) for i in range(0, 500, 50)] == ids[0:500:50]
    assert serving_shard([ids[0], ids[0][:15] + "-ffffffffff"]) == ids[0][:15] + "-ffffffffff"   # a format 1.0 id
