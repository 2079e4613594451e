"""Untrusted exports: paths cannot escape, nothing is executed, tampering is refused before any write."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from pathlib import Path

import crc32c
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import layerlake as ll
from layerlake.errors import IntegrityError
from layerlake.store import seal_json
from layerlake.store.layout import EXPORT_MANIFEST as MANIFEST_NAME
from layerlake.store.layout import safe_relpath

from .lakes import EID, synthetic_lake, texts, tree


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    lake = synthetic_lake(tmp_path / "src", {"wiki": texts(4)}, shard_docs=4)
    lake.export("wiki", tmp_path / "exp")
    return tmp_path / "exp"


@pytest.fixture
def target(tmp_path: Path) -> ll.Lake:
    return synthetic_lake(tmp_path / "dst", {"other": texts(2, start=40)})


def _manifest(exp: Path) -> dict:
    return json.loads((exp / MANIFEST_NAME).read_text())


def _rewrite(exp: Path, rel: str, data: bytes) -> None:
    """Replace a file and fix every checksum that lists it, so only the deeper checks can notice."""
    path = exp / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    man = _manifest(exp)
    parts = rel.split("/")
    if len(parts) > 5 and parts[2] == "shards":
        crel = f"extractions/{parts[1]}/commits/{parts[3]}.json"
        commit = json.loads((exp / crel).read_text())
        entry = {"size": len(data)}
        if rel.endswith(("zarr.json", ".parquet")):  # the files whose crc32c the commit marker holds
            entry["crc32c"] = crc32c.crc32c(data)
        commit["files"]["/".join(parts[4:])] = entry
        cbytes = json.dumps(seal_json(commit)).encode()
        (exp / crel).write_bytes(cbytes)
        man["files"][crel] = {"size": len(cbytes), "sha256": hashlib.sha256(cbytes).hexdigest()}
    man["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (exp / MANIFEST_NAME).write_text(json.dumps(man))


def _refused(target: ll.Lake, exp: Path, match: str) -> IntegrityError:
    root = Path(target.url)
    before = tree(root)
    with pytest.raises(IntegrityError, match=match) as info:
        target.import_(exp)
    assert tree(root) == before
    return info.value


@pytest.mark.parametrize("bad", ["../evil.txt", "/etc/passwd", "datasets/../../evil.txt", "datasets\\..\\evil.txt",
                                 "C:/evil.txt", "extractions/./x", "datasets//x", ".hidden",
                                 "extractions/" + EID + "/shards/s/hidden.zarr/.zarray", "a/" * 20 + "x"])
def test_paths_that_escape_or_hide_are_rejected(bad: str) -> None:
    with pytest.raises(IntegrityError):
        safe_relpath(bad)


@pytest.mark.parametrize("bad", ["../evil.txt", "/tmp/evil.txt", "datasets/wiki/../../../evil.txt",
                                 "evil.py", "extractions/" + EID + "/shards/s1/hidden.zarr/.zarray"])
def test_import_rejects_manifest_paths_outside_the_layout(exported: Path, target: ll.Lake, tmp_path: Path,
                                                          bad: str) -> None:
    man = _manifest(exported)
    man["files"][bad] = {"size": 4, "sha256": hashlib.sha256(b"evil").hexdigest()}
    (exported / MANIFEST_NAME).write_text(json.dumps(man))
    err = _refused(target, exported, "unsafe component|absolute|unexpected file")
    assert bad in str(err)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_import_rejects_symlinks(exported: Path, target: ll.Lake, tmp_path: Path) -> None:
    chunk = next(p for p in sorted(exported.rglob("c/*/*")) if p.is_file())
    outside = tmp_path / "outside.bin"
    outside.write_bytes(chunk.read_bytes())          # same bytes: the checksum alone would not notice
    chunk.unlink()
    chunk.symlink_to(outside)
    err = _refused(target, exported, "symbolic link")
    assert str(chunk.relative_to(exported)) in str(err)


def test_import_rejects_symlinked_folders(exported: Path, target: ll.Lake, tmp_path: Path) -> None:
    links = exported / "datasets" / "wiki" / "links"
    moved = tmp_path / "moved-links"
    links.rename(moved)
    links.symlink_to(moved, target_is_directory=True)
    _refused(target, exported, "symbolic link")


def test_pickle_codec_is_refused_and_never_run(exported: Path, target: ll.Lake, tmp_path: Path) -> None:
    """A zarr.json asking for the pickle codec, over a chunk whose unpickling would create a file."""
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arr_dir = next(p.parent for p in exported.rglob("layer_0/zarr.json"))
    meta = json.loads((arr_dir / "zarr.json").read_text())
    meta["codecs"] = [{"name": "numcodecs.pickle", "configuration": {"protocol": 4}}]
    meta["data_type"] = "float16"
    rel_meta = str((arr_dir / "zarr.json").relative_to(exported))
    _rewrite(exported, rel_meta, json.dumps(meta).encode())
    for chunk in [p for p in arr_dir.rglob("*") if p.is_file() and p.name != "zarr.json"]:
        _rewrite(exported, str(chunk.relative_to(exported)), pickle.dumps(Payload()))
    err = _refused(target, exported, "numcodecs.pickle")
    assert rel_meta in str(err)
    # opening the tampered lake directly and reading the array refuses too
    with pytest.raises(IntegrityError, match="numcodecs.pickle"):
        ll.Lake(exported, mode="r").read_vectors("wiki", layers=0)
    assert not marker.exists()


def test_object_dtypes_are_refused(exported: Path, target: ll.Lake) -> None:
    meta_path = next(exported.rglob("layer_1/zarr.json"))
    meta = json.loads(meta_path.read_text())
    meta["data_type"] = "string"
    _rewrite(exported, str(meta_path.relative_to(exported)), json.dumps(meta).encode())
    _refused(target, exported, "data_type 'string'")


def test_forged_extraction_id_is_refused(exported: Path, target: ll.Lake) -> None:
    rel = f"extractions/{EID}/extraction.json"
    meta = json.loads((exported / rel).read_text())
    meta["model"]["fingerprint"] = "0" * 32       # claims the id of another model's extraction
    _rewrite(exported, rel, json.dumps(meta).encode())
    _refused(target, exported, "does not match its model fingerprint")


def test_document_hash_must_match_text(exported: Path, target: ll.Lake) -> None:
    rel = "datasets/wiki/docs.parquet"
    table = pq.read_table(exported / rel)
    texts_ = table.column("text").to_pylist()
    texts_[1] = "something else entirely"
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts_))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    _rewrite(exported, rel, buf.getvalue())
    _refused(target, exported, "not the hash of its text")


def test_commit_marker_must_list_the_shard_files(exported: Path, target: ll.Lake) -> None:
    extra = next(exported.rglob("hidden.zarr")) / "layer_9" / "zarr.json"
    data = b'{"zarr_format": 3, "node_type": "group"}'
    extra.parent.mkdir()
    extra.write_bytes(data)
    man = _manifest(exported)
    man["files"][str(extra.relative_to(exported))] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (exported / MANIFEST_NAME).write_text(json.dumps(man))
    _refused(target, exported, "list different files")


def test_files_not_in_the_manifest_are_never_imported(exported: Path, target: ll.Lake) -> None:
    stray = exported / "datasets" / "wiki" / "links" / "notes.txt"
    stray.write_text("not listed")
    target.import_(exported)
    assert not list(Path(target.url).rglob("notes.txt"))
    assert target.store.dataset_table("wiki").num_rows == 4


def test_no_pickle_anywhere_in_the_store() -> None:
    root = Path(__file__).resolve().parents[2] / "layerlake" / "store"
    for path in root.glob("*.py"):
        src = path.read_text()
        assert "import pickle" not in src and "pickle.load" not in src and "allow_pickle=True" not in src, path
    for name in ("torch", "transformers", "duckdb", "polars"):
        for path in root.glob("*.py"):
            assert not re.search(rf"\bimport {name}\b(?!_)", path.read_text()), (path, name)
