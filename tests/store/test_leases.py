"""Ingest leases: held while an ingest runs, removed when it ends, a dead process's lease cleared on resume."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from layerlake.store import LakeFS, hold_lease, layout, release_lease

EID = "0123456789abcdef"


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lease(root: Path, name: str, record: object) -> Path:
    path = root.joinpath(*layout.leases_dir(EID), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_hold_and_release(tmp_path: Path) -> None:
    fs = LakeFS(tmp_path)
    parts = hold_lease(fs, EID)
    assert parts is not None and tmp_path.joinpath(*parts).is_file()
    release_lease(fs, parts)
    assert not tmp_path.joinpath(*parts).exists()


def test_read_only_lake_takes_no_lease(tmp_path: Path) -> None:
    (tmp_path / "extractions").mkdir()
    assert hold_lease(LakeFS(tmp_path, read_only=True), EID) is None
    assert not tmp_path.joinpath(*layout.leases_dir(EID)).exists()


def test_a_resumed_ingest_removes_the_lease_of_the_killed_one(tmp_path: Path) -> None:
    host = socket.gethostname()
    dead = write_lease(tmp_path, "dead.json", {"host": host, "pid": dead_pid(), "started": "2026-01-01T00:00:00+00:00"})
    alive = write_lease(tmp_path, "alive.json", {"host": host, "pid": 1, "started": "2026-01-01T00:00:00+00:00"})
    remote = write_lease(tmp_path, "remote.json", {"host": host + "-elsewhere", "pid": dead_pid(), "started": "x"})
    partial = write_lease(tmp_path, "partial.json", {"host": host})
    partial.write_text('{"host": ')   # being written: not this ingest's to judge
    parts = hold_lease(LakeFS(tmp_path), EID)
    assert parts is not None and tmp_path.joinpath(*parts).is_file()
    assert not dead.exists()
    assert alive.exists() and remote.exists() and partial.exists()   # live, other host's, unreadable: kept


def test_gc_keeps_the_temporary_files_of_a_leased_extraction(tmp_path: Path) -> None:
    """An ingest writes ``extraction.json`` through a temporary file before any shard exists."""
    import layerlake as ll
    from layerlake.store import LakeStore, collect_garbage

    ll.Lake(tmp_path, mode="a")
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lease(tmp_path, "owner.json", {"host": socket.gethostname(), "pid": owner.pid, "started": "x"})
        temp = tmp_path.joinpath(*layout.extraction_dir(EID), layout.TMP_PREFIX + "extraction")
        temp.write_text("{}")
        report = collect_garbage(LakeStore(tmp_path, mode="a"), grace_seconds=0)
        assert report.items == [] and temp.exists()
    finally:
        owner.kill()
        owner.wait()
    kinds = sorted(i.kind for i in collect_garbage(LakeStore(tmp_path, mode="a"), grace_seconds=0).items)
    assert not temp.exists() and "stale-lease" in kinds   # the owner is gone: both are garbage now
