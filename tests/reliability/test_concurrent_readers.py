"""Concurrent readers: queries in a loop during an ingest see committed shards only and never fail.

Dataset ``a`` is stored first. Then a separate process ingests dataset ``b``
(new documents, many small shards) into the same extraction while threads here
read in a loop: ``tokens(...).collect()``, ``read_vectors`` and ``verify``.

"Never fail" means: every read of ``a`` returns exactly what it returned before
the ingest started; a read of ``b`` either raises :class:`NotFoundError` (the
dataset is not recorded or linked yet: the ingest records it only after its last
shard is committed) or returns all of ``b``; ``verify`` never raises and reports
nothing but orphans (the shard being written is not committed yet). Any other
exception is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np

import layerlake as ll
from layerlake.errors import NotFoundError
from tests.reliability.conftest import REPO, is_orphan

INGEST_B = """
import sys
import layerlake as ll
from layerlake.cli.quickstart import quickstart_corpus
texts = [d["text"] for d in quickstart_corpus(40)][12:40]
ll.Lake(sys.argv[1]).ingest(sys.argv[2], texts, dataset="b", shard_bytes=6_000, batch_tokens=200, progress=False)
"""


def test_readers_during_an_ingest(tmp_path, tiny_gpt2, corpus, fault_tally):
    root = tmp_path / "lake"
    lake = ll.Lake(root)
    lake.ingest(str(tiny_gpt2), corpus[:12], dataset="a", shard_bytes=6_000, batch_tokens=200)
    eid = lake.extraction_id("a")
    want_v = lake.read_vectors("a")
    want_t = lake.tokens("a").collect()
    n_before = len(lake.store.commit_ids(eid))

    stop = threading.Event()
    errors: list[str] = []
    seen = {"reads": 0, "b_not_found": 0, "b_complete": 0, "orphans_reported": 0, "commit_counts": set()}
    b_shapes: list[tuple[int, ...]] = []

    def reader() -> None:
        mine = ll.Lake(root, mode="r")
        while not stop.is_set():
            try:
                seen["commit_counts"].add(len(mine.store.commit_ids(eid)))
                if not np.array_equal(mine.read_vectors("a"), want_v):
                    errors.append("read_vectors(a) changed during the ingest")
                if not mine.tokens("a").collect().equals(want_t):
                    errors.append("tokens(a) changed during the ingest")
                try:
                    b = mine.read_vectors("b")
                    b_shapes.append(b.shape)
                    seen["b_complete"] += 1
                except NotFoundError:
                    seen["b_not_found"] += 1
                seen["reads"] += 1
            except Exception as exc:  # any other error is a failure of the suite's contract
                errors.append(f"reader: {type(exc).__name__}: {exc}")

    def verifier() -> None:
        mine = ll.Lake(root, mode="r")
        while not stop.is_set():
            try:
                problems = mine.verify(deep=True)
                bad = [str(p) for p in problems if not is_orphan(p)]
                seen["orphans_reported"] += len(problems) - len(bad)
                if bad:
                    errors.append(f"verify: {bad[:2]}")
            except Exception as exc:
                errors.append(f"verify raised {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=reader), threading.Thread(target=verifier)]
    for t in threads:
        t.start()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", INGEST_B, str(root), str(tiny_gpt2)], env=env,
                          capture_output=True, text=True, timeout=600)
    time.sleep(0.5)  # a few reads after the end too
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]

    final = ll.Lake(root, mode="r")
    b_final = final.read_vectors("b").shape
    n_after = len(final.store.commit_ids(eid))
    fault_tally.record("concurrent readers", trials=seen["reads"], detected=0, lost=len(errors),
                       note=f"{len(seen['commit_counts'])} commit states seen")
    assert not errors, errors[:5]
    assert all(s == b_final for s in b_shapes), "a reader saw part of dataset b"
    assert n_after - n_before >= 4
    # the readers really ran while shards were being committed
    assert seen["reads"] >= 3 and len(seen["commit_counts"]) >= 2
