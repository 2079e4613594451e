"""The store on its own: specs, lake.json, atomic shards, datasets, verify."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layerlake as ll
from layerlake.store import (ArrayRef, CaptureSpec, ChunkReader, JacobianSketch, LakeFS, LakeStore, ShardData,
                             write_shard)
from layerlake.store.arrays import to_float32, to_physical, write_array
from layerlake.store.verify import verify_lake
from layerlake.store import seal_json


def test_capture_spec_round_trip_and_validation():
    spec = CaptureSpec(layers="0,3,6", max_length=128, overflow="window", stride=8, dtype="bfloat16",
                       jacobian=JacobianSketch(k=4, positions=3, layers=[1, 2]))
    assert spec.layers.indices == (0, 3, 6) and spec.jacobian.layers.indices == (1, 2)
    again = CaptureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert "layers" not in spec.identity()
    assert spec.jacobian.l == 9
    with pytest.raises(ll.SpecError, match="dtype"):
        CaptureSpec(dtype="int8")
    with pytest.raises(ll.SpecError, match="overflow"):
        CaptureSpec(overflow="drop")
    with pytest.raises(ll.SpecError, match="layers"):
        CaptureSpec(layers="a,b")
    with pytest.raises(ll.SpecError, match="negative"):
        CaptureSpec(layers=[-1])
    with pytest.raises(ll.SpecError, match="k="):
        JacobianSketch(k=0)
    with pytest.raises(ll.SpecError, match="l="):
        JacobianSketch(k=5, l=3)


def test_lake_json_created_and_newer_major_refused(tmp_path):
    ll.Lake(tmp_path / "lake")
    meta = json.loads((tmp_path / "lake" / "lake.json").read_text())
    assert meta["format"] == "layerlake"
    meta["format_version"] = "99.0"
    (tmp_path / "lake" / "lake.json").write_text(json.dumps(seal_json(meta)))  # a consistent newer lake.json
    with pytest.raises(ll.FormatVersionError, match="99.0"):
        ll.Lake(tmp_path / "lake")


def test_lake_path_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ll.SpecError, match="is a file"):
        ll.Lake(f)


def test_non_empty_foreign_directory_refused(tmp_path):
    (tmp_path / "stuff.txt").write_text("x")
    with pytest.raises(ll.SpecError, match="not a lake"):
        ll.Lake(tmp_path)


def test_read_only_missing_lake(tmp_path):
    with pytest.raises(ll.NotFoundError):
        ll.Lake(tmp_path / "nope", mode="r")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32).filter(lambda v: abs(v) < 1e38), min_size=1, max_size=64))
def test_bfloat16_storage_is_exact_for_bf16_values(values):
    import torch
    x = torch.tensor(values, dtype=torch.float32).to(torch.bfloat16)
    phys = x.view(torch.int16).numpy().view(np.uint16)
    back = to_float32(phys, "bfloat16")
    assert np.array_equal(back, x.float().numpy())
    # numpy path rounds like torch
    assert np.array_equal(to_physical(np.asarray(values, np.float32), "bfloat16"), phys)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.lists(st.tuples(st.integers(0, 299), st.integers(1, 50)),
                                                        min_size=1, max_size=6))
def test_chunk_reader_take_matches_numpy_slices(n, d, spans):
    import tempfile

    import zarr
    rng = np.random.default_rng(n * 31 + d)
    data = rng.standard_normal((n, d)).astype(np.float16)
    with tempfile.TemporaryDirectory() as tmp:
        g = zarr.open_group(tmp, mode="w")
        write_array(g, "a", data, "float16", chunk_bytes=256)
        ranges = [(min(a, n), min(a + b, n)) for a, b in spans]
        got = ChunkReader(LakeFS(tmp)).take(ArrayRef(("a",), "array a"), [a for a, _ in ranges],
                                            [b - a for a, b in ranges])
        want = np.concatenate([data[a:b] for a, b in ranges if b > a] or [data[:0]]).astype(np.float32)
        assert np.array_equal(got, want)


def _shard(n_docs: int = 3, d: int = 8, layers=(0, 1)) -> ShardData:
    rows = []
    docs = {"doc_hash": [], "window": [], "char_offset": [], "n_tokens": [], "row_start": [], "truncated": []}
    r = 0
    for i in range(n_docs):
        n = 2 + i
        docs["doc_hash"].append(f"h{i}")
        docs["window"].append(0)
        docs["char_offset"].append(0)
        docs["n_tokens"].append(n)
        docs["row_start"].append(r)
        docs["truncated"].append(False)
        for p in range(n):
            rows.append({"row": r, "doc_hash": f"h{i}", "window": 0, "position": p, "token_id": p, "token": "t",
                         "nll": None})
            r += 1
    hidden = {l: np.full((r, d), l, np.float16) for l in layers}
    return ShardData(docs=pa.table(docs), tokens=pa.Table.from_pylist(rows), hidden=hidden, dtype="float16")


def test_shard_commit_is_atomic_on_failure(tmp_path, monkeypatch):
    store = LakeStore(tmp_path / "lake")
    write_shard(store.fs, "e1", _shard())
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "lake").rglob("*"))

    import layerlake.store.shards as shards_mod
    real = shards_mod.write_array

    def failing(group, name, *a, **k):
        if name == "layer_1":
            raise OSError(28, "No space left on device")
        return real(group, name, *a, **k)

    monkeypatch.setattr(shards_mod, "write_array", failing)
    with pytest.raises(OSError, match="No space"):
        write_shard(store.fs, "e1", _shard())
    after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "lake").rglob("*"))
    assert after == before
    assert len(store.commit_ids("e1")) == 1
    assert store.covered_docs("e1") == {"h0", "h1", "h2"}


def test_verify_flags_orphans_and_damage(tmp_path):
    store = LakeStore(tmp_path / "lake")
    store.create_extraction("e1", {"model": {"model": "m"}, "d_model": 8})
    man = write_shard(store.fs, "e1", _shard())
    assert verify_lake(store) == []
    orphan = tmp_path / "lake" / "extractions" / "e1" / "shards" / "orphan"
    orphan.mkdir()
    (orphan / "docs.parquet").write_bytes(b"x")
    problems = verify_lake(store)
    assert any("orphan" in str(p) for p in problems)
    import shutil
    shutil.rmtree(orphan)
    # flip a byte inside a zarr chunk
    chunk = next((tmp_path / "lake" / "extractions" / "e1" / "shards" / man.shard / "hidden.zarr" / "layer_1" / "c")
                 .rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    problems = verify_lake(store)
    assert problems and "layer_1" in str(problems[0])


def test_dataset_append_keeps_order_and_is_idempotent(tmp_path):
    store = LakeStore(tmp_path / "lake")
    store.write_dataset("d", pa.table({"doc_hash": ["a", "b"], "text": ["A", "B"]}))
    t = store.write_dataset("d", pa.table({"doc_hash": ["b", "c"], "text": ["B", "C"]}))
    assert t.column("doc_hash").to_pylist() == ["a", "b", "c"]
    assert t.column("ordinal").to_pylist() == [0, 1, 2]
    with pytest.raises(ll.SpecError, match="dataset name"):
        store.write_dataset("../evil", pa.table({"doc_hash": ["a"], "text": ["A"]}))
