"""Crash faults: SIGKILL an ingest at random points, resume, and get the lake an uninterrupted run gives.

The kills land anywhere: before the lake exists, while a shard's Parquet or
Zarr files are half written, between a shard's data and its commit marker,
after the last shard but before the dataset is recorded. Resuming must then
compute exactly the missing documents: same documents, bit-identical vectors,
identical tokens and losses, nothing stored twice; verify may report only
orphans (uncommitted leftovers of the killed run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import layerlake as ll
from tests.reliability.conftest import REPO, lake_differences

DRIVER = Path(__file__).with_name("crash_driver.py")


def run_trials(tmp_path: Path, model: Path, corpus: Path, *, trials: int, seed: int, shard_bytes: int,
               batch_tokens: int) -> tuple[dict, list[dict]]:
    cfg = {"model": str(model), "corpus": str(corpus), "reference": str(tmp_path / "reference"),
           "workdir": str(tmp_path), "trials": trials, "seed": seed, "shard_bytes": shard_bytes,
           "batch_tokens": batch_tokens}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(DRIVER), json.dumps(cfg)], capture_output=True, text=True,
                          env=env, timeout=60 + 30 * trials)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert proc.returncode == 0 and lines, f"crash driver failed:\n{proc.stderr[-3000:]}"
    return lines[0], lines[1:]


def check_trials(ref_info: dict, trials: list[dict], fault_tally, fault: str) -> None:
    ref = ll.Lake(ref_info["reference"], mode="r")
    assert ref.store.commit_ids(ref.extraction_id("d")), "the reference run committed nothing"
    failures = []
    for t in trials:
        assert t["resume"] == "finished", f"resume after a crash failed: {t}"
        diffs = lake_differences(ll.Lake(t["lake"], mode="r"), ref)
        fault_tally.record(fault, trials=1, detected=int(t["kills"] > 0), lost=int(bool(diffs)))
        if diffs:
            failures.append((t, diffs))
    killed = [t for t in trials if t["kills"]]
    points = sorted({c for t in killed for c in t["commits_at_kill"]})
    fault_tally.record(fault, trials=0, note=f"{len(killed)} killed mid-ingest, at commit counts {points}")
    assert not failures, failures[:3]
    # the kills must really land at many points of the job, not all before it starts or after it ends
    assert len(killed) >= len(trials) // 2
    assert len(points) >= 3


def test_sigkill_at_random_points_then_resume(tmp_path, tiny_gpt2, small_corpus_file, fault_tally):
    ref, trials = run_trials(tmp_path, tiny_gpt2, small_corpus_file, trials=20, seed=7, shard_bytes=20_000,
                             batch_tokens=512)
    assert len(trials) == 20
    check_trials(ref, trials, fault_tally, "crash: SIGKILL ingest")


@pytest.mark.slow
def test_sigkill_many_more_points(tmp_path, tiny_llama, small_corpus_file, fault_tally):
    """80 more kills, another architecture and shard size (finer shards: more commit points)."""
    ref, trials = run_trials(tmp_path, tiny_llama, small_corpus_file, trials=80, seed=11, shard_bytes=8_000,
                             batch_tokens=300)
    check_trials(ref, trials, fault_tally, "crash: SIGKILL ingest")
