"""The Ray executor's pieces that need no cluster: options, unit cutting, fail-fast checks.

(The distributed ingest itself runs on a local Ray cluster in tests/reliability/test_ray.py.)
"""

from __future__ import annotations

import math

import pytest

import layerlake as ll
from layerlake.errors import SpecError
from layerlake.ingest.executors import ITEMSIZE, RayOptions, cut_units, default_temp_dir
from layerlake.ingest.models import load_model
from layerlake.ingest.pipeline import make_batches, plan_work
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


def test_units_cut_where_the_local_writer_cuts_shards(tmp_path, tiny_gpt2, corpus):
    """A unit is one shard: the Ray path cuts the same documents into the same shards as a local run."""
    lake = ll.Lake(tmp_path / "lake")
    res = lake.ingest(str(tiny_gpt2), corpus, dataset="d", layers="0,2", shard_bytes=30_000, batch_tokens=700)
    store = lake.store
    index = store.doc_index(res.extraction_id)
    docs_of: dict[str, set[str]] = {}
    for h, sid in zip(index.column("doc_hash").to_pylist(), index.column("shard").to_pylist()):
        docs_of.setdefault(sid, set()).add(h)
    local_shards = sorted(tuple(sorted(v)) for v in docs_of.values())
    lm = load_model(str(tiny_gpt2), device="cpu")
    c = load_corpus(corpus)
    spec = CaptureSpec(layers=(0, 2), max_length=256)
    plan = {(0, 2): [d.doc_hash for d in c.documents]}
    batches, per_doc, _ = make_batches(lm, c, plan[(0, 2)], spec, 700)
    units = cut_units(batches, per_doc, (0, 2), bytes_per_token=lm.d_model * ITEMSIZE["float16"] * 2,
                      shard_bytes=30_000)
    by_order = {i: d.doc_hash for i, d in enumerate(c.documents)}
    unit_shards = sorted(tuple(sorted({by_order[w.doc_order] for b in u.batches for w in b.windows}))
                         for u in units)
    assert len(units) == res.shards_written > 2
    assert unit_shards == local_shards
    assert [u.index for u in units] == list(range(len(units)))
    assert sum(u.n_tokens for u in units) == res.computed_tokens
    assert plan_work(store, res.extraction_id, c, [0, 2]) == {}


def test_units_never_split_a_document(tiny_gpt2):
    """With overflow='window' a long document has several windows; they stay in one unit."""
    lm = load_model(str(tiny_gpt2), device="cpu")
    texts = [" ".join(f"word{i}" for i in range(400)), "short one", "another short one"]
    c = load_corpus(texts)
    spec = CaptureSpec(layers=(1,), max_length=32, overflow="window", stride=4)
    batches, per_doc, _ = make_batches(lm, c, [d.doc_hash for d in c.documents], spec, 64)
    units = cut_units(batches, per_doc, (1,), bytes_per_token=128, shard_bytes=1)
    assert per_doc[0] > 3
    homes = {}
    for u in units:
        for b in u.batches:
            for w in b.windows:
                homes.setdefault(w.doc_order, set()).add(u.index)
    assert all(len(v) == 1 for v in homes.values())
    assert sum(len(b.windows) for u in units for b in u.batches) == sum(per_doc.values())
