"""gc beside a running ingest: gc in a loop (grace 0 and the default) never deletes what the ingest writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import layerlake as ll
from layerlake.store import LakeStore, collect_garbage

from tests.models import build_tiny

ROOT = Path(__file__).resolve().parents[2]
N_DOCS = 160
MIN_ROUNDS = 20


@pytest.fixture(scope="module")
def small_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("gpt2", tmp_path_factory.mktemp("gc-race") / "gpt2", n_layers=2, d=32)


def test_gc_in_a_loop_beside_an_ingest_loses_nothing(small_gpt2: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"document {i}: the quick brown fox {i * 7} jumps over the lazy dog {i}\n"
                              for i in range(N_DOCS)))
    lake_dir = tmp_path / "lake"
    ll.Lake(lake_dir, mode="a")                       # gc needs an existing lake from the first round
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "LAYERLAKE_PROGRESS": "0"}
    # tiny batches and shards: the ingest commits a shard every few documents, for several seconds
    proc = subprocess.Popen([sys.executable, "-m", "layerlake", "ingest", str(small_gpt2), str(corpus),
                             "--lake", str(lake_dir), "--dataset", "d", "--device", "cpu", "--batch-tokens", "64",
                             "--shard-mb", "0.002", "--dtype", "float32"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rounds = removed = 0
    try:
        while proc.poll() is None or rounds < MIN_ROUNDS:
            grace = 0 if rounds % 2 == 0 else None
            store = LakeStore(lake_dir, mode="a")
            report = (collect_garbage(store, grace_seconds=0) if grace == 0 else collect_garbage(store))
            removed += len(report.items)
            rounds += 1
            time.sleep(0.01)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert rounds >= MIN_ROUNDS
    lake = ll.Lake(lake_dir, mode="r")
    assert lake.verify() == []
    tokens = lake.tokens("d").collect()
    assert tokens["doc_hash"].n_unique() == N_DOCS                  # 0 documents lost
    assert len(lake.store.commit_ids(lake.store.resolve_extraction("d", None))) > 5   # many shards were raced
    vectors = lake.read_vectors("d", layers=[0, 2])
    assert vectors.shape[:2] == (2, tokens.height)
    print(f"{rounds} gc rounds beside the ingest, {removed} item(s) of other garbage removed")
