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
from layerlake.cli.quickstart import quickstart_corpus
docs = [d["text"] for d in quickstart_corpus(60)]
ll.Lake(sys.argv[1]).ingest(sys.argv[2], docs, dataset="d", batch_tokens=1024, shard_bytes=1, max_length=64)
"""


def _ingest_in_subprocess(lake_dir: Path, model: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAYERLAKE_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(lake_dir), str(model)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kill_after_commits", [1, 3])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_gpt2, kill_after_commits):
    from layerlake.cli.quickstart import quickstart_corpus
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
    # no duplicated documents across committed shards; the shard the killed process was writing is gone
    index = lake.store.doc_index(lake.extraction_id("d"))
    assert index.num_rows == len(set(zip(index.column("doc_hash").to_pylist(), index.column("window").to_pylist())))
    assert lake.verify() == []


def test_resume_keeps_shards_of_live_or_foreign_writers(tmp_path, tiny_gpt2):
    """Only a dead local writer's folder is removed: a live process or another host may still commit."""
    import json
    import socket
    lake = ll.Lake(tmp_path / "lake")
    eid = lake.ingest(str(tiny_gpt2), ["one document", "two documents"], dataset="d").extraction_id
    shards = tmp_path / "lake" / "extractions" / eid / "shards"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    records = {"dead": {"host": socket.gethostname(), "pid": int(dead.stdout)},
               "live": {"host": socket.gethostname(), "pid": os.getpid()},
               "foreign": {"host": socket.gethostname() + "-elsewhere", "pid": int(dead.stdout)}}
    for name, rec in records.items():
        (shards / name).mkdir()
        (shards / name / "writer.json").write_text(json.dumps(rec))
        (shards / name / "docs.parquet").write_bytes(b"partial")
    (shards / "norecord").mkdir()
    lake.ingest(str(tiny_gpt2), ["one document", "three"], dataset="e")
    assert sorted(p.name for p in shards.iterdir() if p.name in (*records, "norecord")) == ["foreign", "live",
                                                                                          "norecord"]
