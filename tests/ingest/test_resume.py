"""A SIGKILLed ingest resumes to a lake identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import layerlake as ll

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, layerlake as ll
from layerlake.quickstart import quickstart_corpus
docs = [d["text"] for d in quickstart_corpus(60)]
ll.Lake(sys.argv[1]).ingest(sys.argv[2], docs, dataset="d", batch_tokens=1024, shard_bytes=1, max_length=64)
"""


def _ingest_in_subprocess(lake_dir: Path, model: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAYERLAKE_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(lake_dir), str(model)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kill_after_commits", [1, 3])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_gpt2, kill_after_commits):
    from layerlake.quickstart import quickstart_corpus
    docs = [d["text"] for d in quickstart_corpus(60)]
    ref = ll.Lake(tmp_path / "ref")
    ref.ingest(str(tiny_gpt2), docs, dataset="d", batch_tokens=1024, shard_bytes=1, max_length=64)

    lake_dir = tmp_path / "lake"
    proc = _ingest_in_subprocess(lake_dir, tiny_gpt2)
    deadline = time.monotonic() + 120
    commits = lambda: list(lake_dir.glob("extractions/*/commits/*.json"))  # noqa: E731
    while len(commits()) < kill_after_commits and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_committed = len(commits())
    lake = ll.Lake(lake_dir)
    assert "d" not in lake.datasets() or n_committed == len(ref.store.commit_ids(ref.extraction_id("d")))
    res = lake.ingest(str(tiny_gpt2), docs, dataset="d", batch_tokens=1024, shard_bytes=1, max_length=64)
    assert res.reused_docs >= 0 and res.reused_docs + res.computed_docs == len(docs)
    a, b = ref.tokens("d").collect(), lake.tokens("d").collect()
    cols = ["ordinal", "doc_hash", "window", "position", "token_id", "token", "nll"]
    assert a.select(cols).equals(b.select(cols))
    va, vb = ref.read_vectors("d"), lake.read_vectors("d")
    assert va.shape == vb.shape and np.array_equal(va, vb)
    # no duplicated documents across committed shards; the only problems allowed are orphans of the kill
    index = lake.store.doc_index(lake.extraction_id("d"))
    assert index.num_rows == len(set(zip(index.column("doc_hash").to_pylist(), index.column("window").to_pylist())))
    assert all("orphan" in p.message for p in lake.verify())
