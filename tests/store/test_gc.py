"""rm and gc: datasets go, shared documents stay, unreferenced and orphan data is collected safely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import layerlake as ll
from layerlake.errors import NotFoundError, ReadOnlyError
from layerlake.store import doc_hash, write_shard

from .lakes import EID, shard_data, synthetic_lake, texts, tree

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lake(tmp_path: Path) -> ll.Lake:
    # shards: [0-2] [3-5] [6-7 + news' 8] [9-10]; wiki = 0..7, news = 5..10
    return synthetic_lake(tmp_path / "lake", {"wiki": texts(8), "news": texts(6, start=5)})


def _shard_bytes(root: Path, sid: str) -> int:
    base = root / "extractions" / EID
    files = list((base / "shards" / sid).rglob("*")) + [base / "commits" / f"{sid}.json"]
    return sum(p.stat().st_size for p in files if p.is_file())


def test_rm_keeps_shared_documents_and_gc_frees_the_rest(lake: ll.Lake, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    news_before = lake.read_vectors("news", layers=[0, 2])
    shards = sorted(lake.store.commit_ids(EID))
    report = lake.rm_dataset("wiki")
    assert report.documents == 8 and lake.datasets() == ["news"]
    assert sorted(lake.store.commit_ids(EID)) == shards               # rm never deletes shards
    with pytest.raises(NotFoundError, match="wiki"):
        lake.tokens("wiki")
    dry = lake.gc(grace_seconds=0, dry_run=True)
    assert [i.kind for i in dry.items] == ["unreferenced-shard"] and sorted(lake.store.commit_ids(EID)) == shards
    idx = lake.store.doc_index(EID)
    gone = dict(zip(idx.column("doc_hash").to_pylist(), idx.column("shard").to_pylist()))[doc_hash(texts(1)[0])]
    # the shard of docs 0-2: only wiki used them
    assert dry.items[0].path.endswith(gone) and dry.bytes_freed == _shard_bytes(root, gone)
    report = lake.gc(grace_seconds=0)
    assert report.bytes_freed == dry.bytes_freed
    assert sorted(lake.store.commit_ids(EID)) == sorted(set(shards) - {gone}) and not (root / "extractions" / EID / "shards" / gone).exists()
    assert np.array_equal(lake.read_vectors("news", layers=[0, 2]), news_before)   # news is whole
    assert lake.verify() == []
    assert lake.gc(grace_seconds=0).items == []                       # nothing left to collect
    with pytest.raises(NotFoundError):
        lake.rm_dataset("wiki")


def test_gc_removes_an_extraction_nobody_uses(lake: ll.Lake, tmp_path: Path) -> None:
    lake.rm_dataset("wiki")
    lake.rm_dataset("news")
    size = sum(p.stat().st_size for p in (tmp_path / "lake" / "extractions").rglob("*") if p.is_file())
    report = lake.gc(grace_seconds=0)
    assert [i.kind for i in report.items] == ["empty-extraction"] and report.bytes_freed == size
    assert not (tmp_path / "lake" / "extractions" / EID).exists() and lake.extractions().height == 0


def test_gc_is_safe_against_a_concurrent_ingest(lake: ll.Lake, tmp_path: Path) -> None:
    """Young data is kept: an uncommitted shard being written and committed shards not yet in a dataset."""
    fs = lake.store.fs
    fresh = [doc_hash(t) for t in texts(3, start=100)]
    write_shard(fs, EID, shard_data(fresh[:2], [0, 1, 2]))                 # committed, dataset not written yet
    data = shard_data(fresh[2:], [0, 1, 2])
    manifest = write_shard(fs, EID, data, commit=False)                     # still being written
    before = tree(tmp_path / "lake")
    report = lake.gc()                                                      # default grace: one hour
    assert report.items == [] and report.kept_young == 2
    assert tree(tmp_path / "lake") == before
    # the ingest finishes: commit + dataset; nothing is lost
    from layerlake.store.shards import commit_shard
    commit_shard(fs, EID, manifest)
    lake.store.write_dataset("late", pa.table({"doc_hash": fresh, "text": texts(3, start=100)}))
    lake.store.link_dataset("late", EID, {"model": "synthetic/model"})
    assert lake.gc(grace_seconds=0).items == []
    assert lake.read_vectors("late", layers=1).shape[0] > 0


def test_gc_orphans_temp_files_and_grace(lake: ll.Lake, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    orphan = root / "extractions" / EID / "shards" / "20200101T000000-deadbeef00"
    (orphan / "hidden.zarr").mkdir(parents=True)
    (orphan / "docs.parquet").write_bytes(b"x" * 100)
    (orphan / "hidden.zarr" / "zarr.json").write_bytes(b"{}")
    tmp = root / "datasets" / "wiki" / ".tmp-abc123"
    tmp.write_bytes(b"y" * 10)
    assert lake.gc().items == []                                   # all young
    old = time.time() - 7200
    for p in (orphan / "docs.parquet", orphan / "hidden.zarr" / "zarr.json", tmp):
        os.utime(p, (old, old))
    report = lake.gc()
    assert sorted(i.kind for i in report.items) == ["orphan-shard", "temp-file"]
    assert report.bytes_freed == 112
    assert not orphan.exists() and not tmp.exists() and lake.verify() == []


def test_gc_stale_metric_cache_entries(lake: ll.Lake, tmp_path: Path) -> None:
    metrics = tmp_path / "lake" / "metrics"
    (metrics / EID).mkdir(parents=True)
    (metrics / EID / "live.parquet").write_bytes(b"kept: its extraction exists")
    (metrics / "0123456789abcdef").mkdir()
    (metrics / "0123456789abcdef" / "gone.parquet").write_bytes(b"stale")
    (metrics / "extraction=fedcba9876543210").mkdir()
    (metrics / "extraction=fedcba9876543210" / "x.json").write_bytes(b"{}")
    pq.write_table(pa.table({"extraction": ["aaaaaaaaaaaaaaaa"], "value": [1.0]}), metrics / "flat.parquet")
    pq.write_table(pa.table({"extraction": [EID], "value": [1.0]}), metrics / "flat-live.parquet")
    (metrics / "entry.json").write_text(json.dumps({"extraction": "bbbbbbbbbbbbbbbb"}))
    (metrics / "unknown.bin").write_bytes(b"which extraction? unknown: kept")
    report = lake.gc(grace_seconds=0)
    removed = sorted(i.path for i in report.items)
    assert removed == ["metrics/0123456789abcdef/gone.parquet", "metrics/entry.json",
                       "metrics/extraction=fedcba9876543210/x.json", "metrics/flat.parquet"]
    assert all(i.kind == "stale-metric" for i in report.items)
    assert (metrics / EID / "live.parquet").exists() and (metrics / "unknown.bin").exists()
    assert (metrics / "flat-live.parquet").exists()


def test_rm_and_gc_on_a_read_only_lake(lake: ll.Lake, tmp_path: Path) -> None:
    ro = ll.Lake(tmp_path / "lake", mode="r")
    before = tree(tmp_path / "lake")
    with pytest.raises(ReadOnlyError):
        ro.rm_dataset("wiki")
    with pytest.raises(ReadOnlyError):
        ro.gc(grace_seconds=0)
    assert ro.gc(grace_seconds=0, dry_run=True).items == []           # a dry run only reads
    assert tree(tmp_path / "lake") == before


def test_cli_rm_gc_ls(lake: ll.Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    from layerlake.cli import main
    monkeypatch.setenv("COLUMNS", "200")
    root = str(tmp_path / "lake")
    assert main(["ls", "--lake", root]) == 0
    out = capsys.readouterr().out
    for needle in ("provenance", "aaaaaaaaaaaa", "bbbbbbbbbbbb", "len=64 truncate float16", EID):
        assert needle in out, needle
    assert main(["rm", "--lake", root, "--dataset", "wiki"]) == 0
    assert "removed dataset 'wiki'" in capsys.readouterr().out
    assert main(["gc", "--lake", root, "--dry-run", "--grace-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "would remove unreferenced-shard" in out and "would free" in out
    assert main(["gc", "--lake", root, "--grace-seconds", "0"]) == 0
    assert "freed" in capsys.readouterr().out
    assert main(["rm", "--lake", root, "--dataset", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_runs_as_a_module(lake: ll.Lake, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAYERLAKE_PROGRESS": "0"}
    r = subprocess.run([sys.executable, "-m", "layerlake", "gc", "--lake", str(tmp_path / "lake"), "--dry-run"],
                       env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "nothing to remove" in r.stdout, r.stderr


def test_temp_files_inside_an_orphan_shard_are_counted_once(lake: ll.Lake, tmp_path: Path) -> None:
    orphan = tmp_path / "lake" / "extractions" / EID / "shards" / "20200101T000000-0123456789"
    orphan.mkdir(parents=True)
    (orphan / ".tmp-x1").write_bytes(b"z" * 50)       # killed while writing its first file
    report = lake.gc(grace_seconds=0)
    assert [(i.kind, i.bytes) for i in report.items] == [("orphan-shard", 50)] and not orphan.exists()
