"""The LakeFS contract, one suite run on every backend: local disk, memory:// and S3 (moto's server)."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

import layerlake as ll
from layerlake.errors import IntegrityError, ReadOnlyError
from layerlake.store import LakeFS, layout

from .lakes import synthetic_lake, texts


def _parquet(n: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": list(range(n))}), buf)
    return buf.getvalue()


class BackendContract:
    """Subclasses provide ``target`` ((url, storage_options) of a fresh, empty lake root) and the flags."""

    local = False
    protocol = ""

    @pytest.fixture
    def target(self) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    @pytest.fixture
    def fs(self, target: tuple[str, dict[str, Any]]) -> LakeFS:
        url, opts = target
        return LakeFS(url, storage_options=opts)

    @pytest.fixture
    def ro(self, target: tuple[str, dict[str, Any]], fs: LakeFS) -> LakeFS:
        fs.write_bytes_atomic(b"old", "a", "f.bin")
        url, opts = target
        return LakeFS(url, read_only=True, storage_options=opts)

    # -- flags ---------------------------------------------------------------------------------
    def test_capability_flags(self, fs: LakeFS) -> None:
        assert (fs.supports_rename, fs.supports_fsync, fs.supports_symlinks) == (self.local,) * 3
        assert fs.protocol == self.protocol
        assert (fs.url_filesystem is None) == self.local

    # -- atomic writes and reads ---------------------------------------------------------------
    def test_atomic_write_round_trip_and_overwrite(self, fs: LakeFS) -> None:
        fs.write_bytes_atomic(b"first", "a", "b", "c.bin")
        assert fs.read_bytes("a", "b", "c.bin") == b"first"
        fs.write_bytes_atomic(b"second, longer", "a/b/c.bin")   # a part may hold slashes
        assert fs.read_bytes("a", "b", "c.bin") == b"second, longer"
        assert fs.listdir("a", "b") == ["c.bin"]                # no temporary file left behind

    def test_json_round_trip_and_damage(self, fs: LakeFS) -> None:
        fs.write_json_atomic({"b": [1, 2], "a": "x"}, "m.json")
        assert fs.read_json("m.json") == {"a": "x", "b": [1, 2]}
        assert fs.read_bytes("m.json").index(b'"a"') < fs.read_bytes("m.json").index(b'"b"')  # canonical: sorted
        fs.write_bytes_atomic(b"{not json", "bad.json")
        with pytest.raises(IntegrityError, match="bad.json is not valid JSON"):
            fs.read_json("bad.json")

    def test_plain_write_and_open(self, fs: LakeFS) -> None:
        fs.write_bytes(b"data", "d", "e.bin")
        with fs.open("d/e.bin") as fh:
            assert fh.read() == b"data"
        with fs.open("d", "f", "g.bin", mode="wb") as fh:
            fh.write(b"streamed")
        assert fs.read_bytes("d", "f", "g.bin") == b"streamed"
        with pytest.raises(FileNotFoundError):
            fs.read_bytes("d", "missing.bin")

    # -- listings ------------------------------------------------------------------------------
    def test_listdir(self, fs: LakeFS) -> None:
        for rel in ("x/b.json", "x/a.json", "x/sub/c.bin", "y.bin"):
            fs.write_bytes_atomic(b"1", rel)
        assert fs.listdir("x") == ["a.json", "b.json", "sub"]
        assert fs.listdir() == ["x", "y.bin"]
        assert fs.listdir("nowhere") == []

    def test_walk_files_and_stats(self, fs: LakeFS) -> None:
        fs.write_bytes_atomic(b"12345", "w", "one.bin")
        fs.write_bytes_atomic(b"12", "w", "deep", "er", "two.bin")
        assert fs.walk_files("w") == {"one.bin": 5, "deep/er/two.bin": 2}
        assert fs.walk_files() == {"w/one.bin": 5, "w/deep/er/two.bin": 2}
        assert fs.walk_files("nowhere") == {}
        stats = fs.walk_stats("w")
        assert stats["one.bin"].size == 5 and stats["one.bin"].mtime is not None

    def test_exists_isfile_sizes(self, fs: LakeFS) -> None:
        fs.write_bytes_atomic(b"abc", "k", "v.bin")
        assert fs.exists("k", "v.bin") and fs.isfile("k", "v.bin")
        assert fs.exists("k") and not fs.isfile("k")
        assert not fs.exists("k", "nope.bin") and not fs.isfile("k", "nope.bin")
        assert fs.size("k", "v.bin") == 3
        st = fs.stat("k", "v.bin")
        assert st.size == 3 and st.mtime is not None
        with pytest.raises(FileNotFoundError):
            fs.stat("k", "nope.bin")

    # -- removal -------------------------------------------------------------------------------
    def test_rm(self, fs: LakeFS) -> None:
        for rel in ("r/a.bin", "r/s/b.bin", "r/s/t/c.bin", "keep.bin"):
            fs.write_bytes_atomic(b"1", rel)
        fs.rm("r", "a.bin")
        assert fs.listdir("r") == ["s"]
        fs.rm("r", "s")
        assert not fs.exists("r", "s", "t", "c.bin") and fs.walk_files("r") == {}
        fs.rm("r", "never-there")  # nothing to remove is fine
        assert fs.walk_files() == {"keep.bin": 1}

    # -- read-only -----------------------------------------------------------------------------
    def test_read_only_refuses_every_write(self, ro: LakeFS) -> None:
        writes = [
            lambda: ro.makedirs("x"),
            lambda: ro.write_bytes(b"x", "a", "f.bin"),
            lambda: ro.write_bytes_atomic(b"x", "a", "f.bin"),
            lambda: ro.write_json_atomic({}, "a", "g.json"),
            lambda: ro.create_dir({"w.json": b"{}"}, "a", "dir", stage_in=("a",)),
            lambda: ro.open("a", "h.bin", mode="wb"),
            lambda: ro.rm("a", "f.bin"),
            lambda: ro.rm(),
            lambda: ro.zarr_store("a", "z.zarr"),
        ]
        for write in writes:
            with pytest.raises(ReadOnlyError, match="read-only"):
                write()
        assert ro.read_bytes("a", "f.bin") == b"old" and ro.walk_files() == {"a/f.bin": 3}

    # -- staged folder claim -------------------------------------------------------------------
    def test_create_dir(self, fs: LakeFS) -> None:
        eid, sid = "0123456789abcdef", "20260101T000000-abc"
        folder = layout.shard_dir(eid, sid)
        fs.create_dir({layout.WRITER_FILE: b'{"pid": 1}'}, *folder, stage_in=layout.staging_dir(eid))
        assert fs.walk_files(*folder) == {layout.WRITER_FILE: 10}
        assert fs.read_json(*folder, layout.WRITER_FILE) == {"pid": 1}
        assert fs.listdir(*layout.staging_dir(eid)) == ["shards"]  # no staging folder left behind
        if fs.supports_rename:  # a folder that exists is never replaced
            with pytest.raises(OSError):
                fs.create_dir({"other.json": b"{}"}, *folder, stage_in=layout.staging_dir(eid))
            assert fs.listdir(*folder) == [layout.WRITER_FILE]
            assert fs.listdir(*layout.staging_dir(eid)) == ["shards"]

    # -- addresses for other libraries ---------------------------------------------------------
    def test_pyarrow_reads_paths_through_arrow_filesystem(self, fs: LakeFS) -> None:
        fs.write_bytes_atomic(_parquet(4), "t", "x.parquet")
        table = pq.read_table(fs.path("t", "x.parquet"), filesystem=fs.arrow_filesystem)
        assert table.column("x").to_pylist() == [0, 1, 2, 3]

    def test_duckdb_reads_urls(self, fs: LakeFS) -> None:
        fs.write_bytes_atomic(_parquet(3), "t", "y.parquet")
        conn = duckdb.connect(":memory:")
        if fs.url_filesystem is not None:
            conn.register_filesystem(fs.url_filesystem)
        assert conn.sql(f"SELECT sum(x) FROM read_parquet('{fs.url_of('t', 'y.parquet')}')").fetchall() == [(3,)]

    def test_url_of_root_reopens_the_lake(self, fs: LakeFS, target: tuple[str, dict[str, Any]]) -> None:
        fs.write_bytes_atomic(b"here", "z.bin")
        again = LakeFS(fs.url_of(), storage_options=target[1])
        assert again.read_bytes("z.bin") == b"here" and again.root == fs.root

    def test_zarr_store_round_trip(self, fs: LakeFS) -> None:
        group = zarr.open_group(fs.zarr_store("g.zarr"), mode="w")
        group.create_array("a", shape=(4, 2), chunks=(2, 2), dtype="float32")[...] = np.arange(8).reshape(4, 2)
        back = zarr.open_group(fs.zarr_store("g.zarr", read_only=True), mode="r", zarr_format=3)
        assert np.array_equal(back["a"][...], np.arange(8, dtype=np.float32).reshape(4, 2))
        assert "g.zarr/a/zarr.json" in fs.walk_files()

    def test_contains(self, fs: LakeFS) -> None:
        assert fs.contains(fs.url) and fs.contains(fs.url_of()) and fs.contains(fs.url_of("metrics", "x.parquet"))
        assert not fs.contains(fs.url_of() + "-sibling/x.parquet")
        assert not fs.contains("relative/path.parquet")

    def test_special_entries_on_a_clean_tree(self, fs: LakeFS) -> None:
        fs.write_bytes_atomic(b"1", "p", "q.bin")
        assert fs.special_entries() == []

    def test_new_id(self, fs: LakeFS) -> None:
        ids = {fs.new_id() for _ in range(50)}
        assert len(ids) == 50 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)

    # -- end to end ----------------------------------------------------------------------------
    def test_lake_write_and_read(self, target: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
        url, opts = target
        docs = texts(5)
        synthetic_lake(url, {"wiki": docs}, layers=(0, 2), shard_docs=2, storage_options=opts)
        reference = synthetic_lake(tmp_path / "reference", {"wiki": docs}, layers=(0, 2), shard_docs=2)
        lake = ll.Lake(url, mode="r", storage_options=opts)
        assert lake.verify() == []
        assert np.array_equal(lake.read_vectors("wiki", layers=[0, 2]), reference.read_vectors("wiki", layers=[0, 2]))
        assert lake.tokens("wiki").drop("shard").collect().equals(reference.tokens("wiki").drop("shard").collect())


class TestLocal(BackendContract):
    local = True
    protocol = "file"

    @pytest.fixture
    def target(self, tmp_path: Path) -> tuple[str, dict[str, Any]]:
        return str(tmp_path / "lake"), {}

    def test_atomic_write_fsyncs_and_replaces(self, fs: LakeFS, monkeypatch: pytest.MonkeyPatch) -> None:
        synced, replaced = [], []
        real_fsync, real_replace = os.fsync, os.replace
        monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
        monkeypatch.setattr(os, "replace", lambda a, b: replaced.append((a, b)) or real_replace(a, b))
        fs.write_bytes_atomic(b"x", "s", "f.bin")
        assert len(synced) == 2  # the file, then its folder
        assert len(replaced) == 1 and os.path.basename(replaced[0][0]).startswith(layout.TMP_PREFIX)
        assert replaced[0][1] == fs.path("s", "f.bin")

    def test_special_entries_reports_links(self, fs: LakeFS, tmp_path: Path) -> None:
        fs.write_bytes_atomic(b"1", "p", "q.bin")
        outside = tmp_path / "outside.bin"
        outside.write_bytes(b"secret")
        link = os.path.join(fs.root, "p", "link.bin")
        os.symlink(outside, link)
        assert fs.special_entries() == [(link, "is a symbolic link")]
        with pytest.raises(IntegrityError, match="outside the lake folder"):   # never read through the link
            fs.read_bytes("p", "link.bin")

    def test_contains_local_spellings(self, fs: LakeFS) -> None:
        assert fs.contains("file://" + fs.path("x.parquet"))
        assert not fs.contains("s3://bucket" + fs.path("x.parquet"))


class TestMemory(BackendContract):
    protocol = "memory"

    @pytest.fixture
    def target(self) -> Any:
        url = f"memory://conformance-{uuid.uuid4().hex[:8]}"
        yield url, {}
        LakeFS(url).rm()


class TestS3(BackendContract):
    protocol = "s3"

    @pytest.fixture
    def target(self, s3: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        bucket, opts = s3
        return f"{bucket}/lake", opts
