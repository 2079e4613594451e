"""The Ray and the local executor cut the same shards for the same plan, with bit-identical vectors.

Slow: starting a local Ray cluster and a worker that imports torch takes 30-90 s.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

import layerlake as ll

OPTS = {"layers": "0,2", "shard_bytes": 8_000, "batch_tokens": 300, "shard_seconds": None,
        "jacobian": ll.JacobianSketch(k=2, layers=(2,))}


def shard_contents(lake: ll.Lake) -> list[tuple[tuple[str, ...], int, int]]:
    """Per shard: its documents, rows and bytes, sorted (shard ids are time + random, not plan order)."""
    eid = lake.extraction_id("d")
    index = lake.store.doc_index(eid)
    docs: dict[str, set[str]] = {}
    for h, sid in zip(index.column("doc_hash").to_pylist(), index.column("shard").to_pylist()):
        docs.setdefault(sid, set()).add(h)
    return sorted((tuple(sorted(docs[m.shard])), m.n_rows, sum(len(v.layers) for v in m.jacobian.values()))
                  for m in lake.store.shard_manifests(eid))


@pytest.mark.slow
def test_ray_and_local_cut_the_same_shards(tmp_path, tiny_gpt2, corpus):
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    temp_dir = tempfile.mkdtemp(prefix="llx-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    try:
        local = ll.Lake(tmp_path / "local")
        local.ingest(str(tiny_gpt2), corpus[:16], dataset="d", **OPTS)
        remote = ll.Lake(tmp_path / "ray")
        res = remote.ingest(str(tiny_gpt2), corpus[:16], dataset="d", executor="ray", device="cpu",
                            executor_options={"num_workers": 1, "temp_dir": temp_dir}, **OPTS)
        assert res.executor_stats["workers"] == 1
        shards = shard_contents(local)
        assert len(shards) > 2
        assert shard_contents(remote) == shards
        a, b = local.read_vectors("d"), remote.read_vectors("d")
        assert a.shape == b.shape and np.array_equal(a.view(np.uint16), b.view(np.uint16))
        ta, tb = (x.tokens("d").collect().drop(["shard", "row"]) for x in (local, remote))
        assert ta.equals(tb)
        ja, jb = (x.jacobians("d", layer=2, dense=True) for x in (local, remote))
        # sketches agree to float32 rounding only: the worker runs torch with its own thread count
        assert len(ja) == 16 and np.allclose(ja.dense, jb.dense, rtol=1e-4, atol=1e-6)
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        os.environ.pop("RAY_ADDRESS", None)
