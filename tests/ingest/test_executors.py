"""The executors' pieces that need no cluster: the shard plan, the time cut, Ray options, fail-fast checks.

(The distributed ingest itself runs on a local Ray cluster in tests/reliability/test_ray.py.)
"""

from __future__ import annotations

import math

import pytest

import layerlake as ll
from layerlake.errors import SpecError
from layerlake.ingest.executors import (ITEMSIZE, BatchStep, RayOptions, compute_shard, cut_shards, default_temp_dir,
                                        make_batches, plan_shards)
from layerlake.ingest.models import load_model
from layerlake.ingest.pipeline import plan_work
from layerlake.ingest.sources import load_corpus
from layerlake.store import CaptureSpec


@pytest.mark.parametrize("bad", [
    {"num_workers": 0}, {"num_workers": -3}, {"num_workers": 1.5}, {"num_workers": True},
    {"gpus_per_worker": -1}, {"gpus_per_worker": math.nan}, {"gpus_per_worker": math.inf}, {"gpus_per_worker": 1e9},
    {"cpus_per_worker": -0.5}, {"max_unit_retries": -1}, {"inflight_per_worker": 0}, {"address": ""},
    {"temp_dir": "/tmp/" + "x" * 80}, {"bogus": 1},
])
def test_ray_options_reject_absurd_values(bad):
    with pytest.raises(SpecError) as err:
        RayOptions.from_dict(bad)
    assert next(iter(bad)) in str(err.value)


def test_ray_options_defaults_and_short_temp_dir():
    opts = RayOptions.from_dict({"num_workers": 2, "gpus_per_worker": 0.5})
    assert (opts.num_workers, opts.gpus_per_worker, opts.cpus_per_worker) == (2, 0.5, 1.0)
    assert len(default_temp_dir()) < 40


def test_memory_lake_is_refused_before_any_work():
    lake = ll.Lake("memory://ray-refused")
    with pytest.raises(SpecError, match="Ray workers cannot write"):
        lake.ingest("no-such-model-is-loaded", ["text"], executor="ray")


def test_executor_options_are_for_ray_only(tmp_path):
    with pytest.raises(SpecError, match="executor_options"):
        ll.Lake(tmp_path / "lake").ingest("unused", ["text"], executor_options={"num_workers": 2})


def test_planned_shards_are_the_shards_a_local_run_writes(tmp_path, tiny_gpt2, corpus):
    """The shard plan is what the local executor commits: same documents per shard, same tokens."""
    lake = ll.Lake(tmp_path / "lake")
    res = lake.ingest(str(tiny_gpt2), corpus, dataset="d", layers="0,2", shard_bytes=30_000, batch_tokens=700,
                      shard_seconds=None)
    store = lake.store
    index = store.doc_index(res.extraction_id)
    docs_of: dict[str, set[str]] = {}
    for h, sid in zip(index.column("doc_hash").to_pylist(), index.column("shard").to_pylist()):
        docs_of.setdefault(sid, set()).add(h)
    local_shards = sorted(tuple(sorted(v)) for v in docs_of.values())
    lm = load_model(str(tiny_gpt2), device="cpu")
    c = load_corpus(corpus)
    spec = CaptureSpec(layers=(0, 2), max_length=256)
    plan = plan_shards(lm, c, {(0, 2): [d.doc_hash for d in c.documents]}, spec, batch_tokens=700,
                       shard_bytes=30_000)
    by_order = {i: d.doc_hash for i, d in enumerate(c.documents)}
    planned = sorted(tuple(sorted({by_order[w.doc_order] for b in s.batches for w in b.windows}))
                     for s in plan.shards)
    assert len(plan.shards) == res.shards_written > 2
    assert planned == local_shards
    assert [s.index for s in plan.shards] == list(range(len(plan.shards)))
    assert sum(s.n_tokens for s in plan.shards) == res.computed_tokens
    assert all(s.nbytes == s.n_tokens * lm.d_model * ITEMSIZE["float16"] * 2 for s in plan.shards)
    assert all(s.nbytes >= 30_000 for s in plan.shards[:-1])
    assert plan_work(store, res.extraction_id, c, [0, 2]) == {}


def test_shards_never_split_a_document(tiny_gpt2):
    """With overflow='window' a long document has several windows; they stay in one shard."""
    lm = load_model(str(tiny_gpt2), device="cpu")
    texts = [" ".join(f"word{i}" for i in range(400)), "short one", "another short one"]
    c = load_corpus(texts)
    spec = CaptureSpec(layers=(1,), max_length=32, overflow="window", stride=4)
    batches, _ = make_batches(lm, c, [d.doc_hash for d in c.documents], spec, 64)
    shards = cut_shards(batches, (1,), lambda b: 128 * b.n_tokens, shard_bytes=1)
    per_doc: dict[int, int] = {}
    for b in batches:
        for w in b.windows:
            per_doc[w.doc_order] = per_doc.get(w.doc_order, 0) + 1
    assert per_doc[0] > 3
    homes: dict[int, set[int]] = {}
    for s in shards:
        for b in s.batches:
            for w in b.windows:
                homes.setdefault(w.doc_order, set()).add(s.index)
    assert all(len(v) == 1 for v in homes.values())
    assert sum(len(b.windows) for s in shards for b in s.batches) == sum(per_doc.values())
    assert len(shards) == 2  # shard_bytes=1: the long document, then the one batch of both short ones


def test_sketch_bytes_count_towards_the_cut(tiny_gpt2):
    """The planned bytes of a shard are its hidden states plus the sketches the capture will return."""
    lm = load_model(str(tiny_gpt2), device="cpu")
    c = load_corpus(["one two three four", "five six seven", "eight nine ten eleven twelve"])
    hashes = [d.doc_hash for d in c.documents]
    plain = plan_shards(lm, c, {(1,): hashes}, CaptureSpec(layers=(1,)), batch_tokens=8, shard_bytes=1 << 30)
    spec = CaptureSpec(layers=(1,), jacobian=ll.JacobianSketch(k=2, layers=(1, 2)))
    sketched = plan_shards(lm, c, {(1,): hashes}, spec, batch_tokens=8, shard_bytes=1 << 30)
    d, k, l = lm.d_model, 2, 5
    per_token = 4 * (d * k + l * d) + 8  # float32 Y [d, k] and W [l, d], int64 row
    assert sketched.shards[0].nbytes - plain.shards[0].nbytes == len(hashes) * 2 * per_token  # last token, 2 blocks
    step = BatchStep(lm, spec)
    out = step(sketched.shards[0].batches[0], (1,))
    got = sum(a.nbytes for e in out.extra["jacobian"].values() for arrs in e["layers"].values() for a in arrs.values())
    assert got == step.sketch.batch_bytes(out.batch)


def test_time_cut_ends_shards_at_document_boundaries(tiny_gpt2):
    """shard_seconds cuts a planned shard into parts at document boundaries; None leaves it whole."""
    lm = load_model(str(tiny_gpt2), device="cpu")
    texts = [" ".join(f"word{i}" for i in range(120)), "short one", "another short one", "a third"]
    c = load_corpus(texts)
    spec = CaptureSpec(layers=(1,), max_length=32, overflow="window", stride=4)
    plan = plan_shards(lm, c, {(1,): [d.doc_hash for d in c.documents]}, spec, batch_tokens=32,
                       shard_bytes=1 << 30)
    (shard,) = plan.shards
    step = BatchStep(lm, spec)
    ticks = iter(range(10_000))
    ends = [end for _, end in compute_shard(shard, step, 0.5, clock=lambda: float(next(ticks)))]
    assert ends[-1] and sum(ends) > 1
    left: dict[int, int] = {}
    for b in shard.batches:
        for w in b.windows:
            left[w.doc_order] = left.get(w.doc_order, 0) + 1
    seen: set[int] = set()
    for b, end in zip(shard.batches, ends):  # no document has windows left after a cut
        for w in b.windows:
            left[w.doc_order] -= 1
            seen.add(w.doc_order)
        if end:
            assert all(left[d] == 0 for d in seen)
    assert all(v == 0 for v in left.values())
    assert [end for _, end in compute_shard(shard, step, None)] == [False] * (len(ends) - 1) + [True]
