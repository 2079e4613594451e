"""Shared pieces of the reliability suite: the fault tally, lake comparison, a small corpus, Ray.

Every test records what it injected in ``fault_tally``: ``trials`` (faults
injected), ``detected`` (faults that were noticed: an interrupted ingest, a
damaged file named by verify, a write error raised, a bad input refused with a
clear error) and ``lost`` (trials that ended with wrong, missing or duplicated
data, or a damaged lake: must stay 0). The terminal summary prints one line per
fault class.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

_TALLY: dict[str, collections.Counter] = {}
_NOTES: dict[str, list[str]] = collections.defaultdict(list)


class FaultTally:
    def record(self, fault: str, *, trials: int = 1, detected: int = 0, lost: int = 0, note: str = "") -> None:
        c = _TALLY.setdefault(fault, collections.Counter())
        c["trials"] += trials
        c["detected"] += detected
        c["lost"] += lost
        if note:
            _NOTES[fault].append(note)


@pytest.fixture(scope="session")
def fault_tally() -> FaultTally:
    return FaultTally()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TALLY:
        return
    terminalreporter.section("reliability: faults injected")
    for fault in sorted(_TALLY):
        c = _TALLY[fault]
        line = (f"{fault:<28} trials={c['trials']:<4} failures detected={c['detected']:<4} "
                f"data lost={c['lost']}")
        notes = _NOTES.get(fault)
        if notes:
            line += f"   ({'; '.join(notes[:3])}{'; ...' if len(notes) > 3 else ''})"
        terminalreporter.write_line(line)


# -- lake comparison ------------------------------------------------------------------------------
def is_orphan(problem: Any) -> bool:
    """verify's reports of uncommitted leftovers (harmless: readers never see them)."""
    return "orphan" in problem.message


def lake_differences(lake: Any, ref: Any, datasets: Iterable[str] = ("d",)) -> list[str]:
    """What differs between ``lake`` and the reference ``ref`` (empty list: the same lake).

    Same documents in the same order, bit-identical vectors of every layer,
    identical tokens and losses, no document stored twice, verify clean apart
    from orphans.
    """
    out: list[str] = []
    for ds in datasets:
        try:
            got_docs = lake.store.dataset_table(ds).column("doc_hash").to_pylist()
        except Exception as exc:  # the comparison reports, the caller asserts
            out.append(f"dataset {ds}: {type(exc).__name__}: {exc}")
            continue
        want_docs = ref.store.dataset_table(ds).column("doc_hash").to_pylist()
        if got_docs != want_docs:
            out.append(f"dataset {ds}: documents differ ({len(got_docs)} vs {len(want_docs)})")
        try:
            a, b = lake.read_vectors(ds), ref.read_vectors(ds)
            if a.shape != b.shape or not np.array_equal(a.view(np.uint32), b.view(np.uint32)):
                out.append(f"dataset {ds}: vectors differ ({a.shape} vs {b.shape})")
            ta = lake.tokens(ds).collect().drop(["shard", "row"])
            tb = ref.tokens(ds).collect().drop(["shard", "row"])
            if not ta.equals(tb):
                out.append(f"dataset {ds}: tokens differ ({ta.height} vs {tb.height} rows)")
        except Exception as exc:  # reported as a difference
            out.append(f"dataset {ds}: read failed: {type(exc).__name__}: {exc}")
    for eid in lake.store.extraction_ids():
        index = lake.store.doc_index(eid)
        keys = list(zip(index.column("doc_hash").to_pylist(), index.column("window").to_pylist()))
        # one document may sit in two shards only when the shards hold different layers
        layers = index.column("layers").to_pylist()
        seen: dict[tuple[str, int], list[int]] = {}
        for k, ls in zip(keys, layers):
            for layer in ls:
                seen.setdefault((k, layer), []).append(1)
        dup = [k for k, v in seen.items() if len(v) > 1]
        if dup:
            out.append(f"extraction {eid}: {len(dup)} (document window, layer) pairs stored twice")
    bad = [str(p) for p in lake.verify() if not is_orphan(p)]
    if bad:
        out.append(f"verify: {bad[:3]}")
    return out


def copy_lake(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- inputs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def small_corpus_file(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """40 real paragraphs as .jsonl (about 4,800 tokens with the tiny tokenizer)."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with open(path, "w") as fh:
        for i, text in enumerate(corpus):
            fh.write(json.dumps({"text": text, "i": i}) + "\n")
    return path


# -- Ray ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_cluster() -> Any:
    """A local Ray cluster with 2 CPUs for the whole session (starting one takes 10-20 s)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    temp_dir = tempfile.mkdtemp(prefix="llr-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "LAYERLAKE_PROGRESS": "0"}
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, runtime_env={"env_vars": env},
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
