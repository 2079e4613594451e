"""Layer-level reuse: asking for more layers computes only the missing ones, also across a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import layerlake as ll
from layerlake.store import doc_hash

from .lakes import stored_pairs

ROOT = Path(__file__).resolve().parents[2]


def test_more_layers_computes_only_the_missing_one(gpt2_6: Path, corpus: list[str], tmp_path: Path) -> None:
    docs = corpus[:6]
    lake = ll.Lake(tmp_path / "lake")
    first = lake.ingest(str(gpt2_6), docs, dataset="d", layers=[1, 3])
    eid = first.extraction_id
    v3_before = lake.read_vectors("d", layers=3)
    second = lake.ingest(str(gpt2_6), docs, dataset="d", layers=[3, 5])
    assert second.extraction_id == eid                       # same model, same capture settings
    assert second.computed_docs == 6 and second.computed_tokens == first.computed_tokens
    layers_per_shard = sorted(tuple(m.layers) for m in lake.store.shard_manifests(eid))
    assert (5,) in layers_per_shard and all(3 not in ls for ls in layers_per_shard if 5 in ls)
    for m in lake.store.shard_manifests(eid):
        on_disk = {p.name for p in (tmp_path / "lake" / "extractions" / eid / "shards" / m.shard /
                                    "hidden.zarr").iterdir() if p.is_dir()}
        assert on_disk == {f"layer_{l}" for l in m.layers}     # layer 3 was not written twice
    assert set(stored_pairs(lake, eid).values()) == {1}
    # queries see one extraction with the union of the layers
    ext = lake.extractions()
    assert ext.height == 1 and ext["layers"].to_list() == [[1, 3, 5]]
    assert lake.read_vectors("d").shape == (3, first.computed_tokens, 64)
    assert np.array_equal(lake.read_vectors("d", layers=3), v3_before)
    assert lake.tokens("d").collect().height == first.computed_tokens   # tokens are not duplicated
    # the reused layer equals what a single ingest of all three layers stores
    fresh = ll.Lake(tmp_path / "fresh")
    fresh.ingest(str(gpt2_6), docs, dataset="d", layers=[1, 3, 5])
    assert np.array_equal(fresh.read_vectors("d", layers=[1, 3, 5]), lake.read_vectors("d", layers=[1, 3, 5]))
    # an identical request computes nothing
    assert lake.ingest(str(gpt2_6), docs, dataset="d", layers=[1, 5]).nothing_computed


def test_different_capture_settings_are_a_different_extraction(gpt2_6: Path, corpus: list[str],
                                                               tmp_path: Path) -> None:
    lake = ll.Lake(tmp_path / "lake")
    a = lake.ingest(str(gpt2_6), corpus[:3], dataset="d", layers=[1])
    b = lake.ingest(str(gpt2_6), corpus[:3], dataset="d", layers=[1], max_length=32)
    c = lake.ingest(str(gpt2_6), corpus[:3], dataset="d", layers=[1], dtype="float32")
    assert len({a.extraction_id, b.extraction_id, c.extraction_id}) == 3
    assert b.computed_docs == 3 and c.computed_docs == 3


KILLED_INGEST = textwrap.dedent('''
    import sys, time
    import layerlake, layerlake.store.shards as shards
    assert layerlake.__file__.startswith(sys.argv[1]), layerlake.__file__
    real, calls = shards.write_array, [0]
    def slow_write_array(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(sys.argv[4]):      # first array of the second shard: hang until killed
            time.sleep(600)
        return real(*args, **kwargs)
    shards.write_array = slow_write_array
    texts = open(sys.argv[3]).read().split("\\n\\x00\\n")
    layerlake.Lake(sys.argv[2]).ingest(sys.argv[5], texts, dataset="b", layers=[3, 5], shard_bytes=1,
                                       batch_tokens=512, progress=False)
''')


@pytest.mark.slow   # a subprocess imports torch + transformers (20-40 s on a busy machine)
def test_resume_after_sigkill_with_layer_reuse(gpt2_6: Path, corpus: list[str], tmp_path: Path) -> None:
    a_docs, b_docs = corpus[:4], corpus[2:8]        # b: 2 documents seen with layers {1,3}, 4 new ones
    common = dict(shard_bytes=1, batch_tokens=512, progress=False)
    ref = ll.Lake(tmp_path / "ref")
    ref.ingest(str(gpt2_6), a_docs, dataset="a", layers=[1, 3], **common)
    ref.ingest(str(gpt2_6), b_docs, dataset="b", layers=[3, 5], **common)

    lake_dir = tmp_path / "lake"
    lake = ll.Lake(lake_dir)
    eid = lake.ingest(str(gpt2_6), a_docs, dataset="a", layers=[1, 3], **common).extraction_id
    commits = lake_dir / "extractions" / eid / "commits"
    before = set(os.listdir(commits))
    corpus_file = tmp_path / "b.txt"
    corpus_file.write_text("\n\x00\n".join(b_docs))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAYERLAKE_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_INGEST, str(ROOT), str(lake_dir), str(corpus_file), "3",
                             str(gpt2_6)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        shards_dir = lake_dir / "extractions" / eid / "shards"
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            new = set(os.listdir(commits)) - before
            orphans = set(os.listdir(shards_dir)) - {n[:-5] for n in os.listdir(commits)}
            if new and any(any((shards_dir / o).rglob("zarr.json")) for o in orphans):
                break                      # the second shard is half-written: its first array is hanging
            time.sleep(0.2)
        else:
            pytest.fail("the ingest did not commit a shard in time")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(set(os.listdir(commits)) - before) == 1 and orphans          # one shard committed, one half-written
    assert ll.Lake(lake_dir).datasets() == ["a"]                            # b is recorded only when complete

    resumed = ll.Lake(lake_dir).ingest(str(gpt2_6), b_docs, dataset="b", layers=[3, 5], **common)
    assert 0 < resumed.computed_docs < len(b_docs)                          # the committed shard was reused
    lake = ll.Lake(lake_dir)
    assert set(stored_pairs(lake, eid).values()) == {1}                      # nothing stored twice
    want = {(doc_hash(t), l) for t in a_docs for l in (1, 3)} | {(doc_hash(t), l) for t in b_docs for l in (3, 5)}
    assert set(stored_pairs(lake, eid)) == want
    for ds, layers in (("a", [1, 3]), ("b", [3, 5])):
        assert np.array_equal(lake.read_vectors(ds, layers=layers), ref.read_vectors(ds, layers=layers)), ds
        cols = ["ordinal", "doc_hash", "window", "position", "token_id", "token", "nll"]
        assert lake.tokens(ds).collect().select(cols).equals(ref.tokens(ds).collect().select(cols)), ds
    # the half-written shard of the killed process was removed by the resumed ingest: nothing left to report
    assert not (lake_dir / "extractions" / eid / "shards" / next(iter(orphans))).exists()
    assert lake.verify() == []
    assert lake.gc(grace_seconds=0).items == []
