"""Hostile lakes, opened directly or imported: each attack is a one-line refusal, nothing read or written outside."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import layerlake as ll
from layerlake.cli import main
from layerlake.errors import IntegrityError
from layerlake.store import seal_json

from tests.store.lakes import EID, synthetic_lake, texts


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    synthetic_lake(tmp_path / "lake", {"wiki": texts(6)})
    return tmp_path / "lake"


def _marker(root: Path) -> Path:
    return sorted((root / "extractions" / EID / "commits").glob("*.json"))[0]


def _rewrite(root: Path, rel_in_shard: str, data: bytes, marker: Path | None = None) -> None:
    """Replace a shard file and its commit-marker entry, as an attacker who knows the format would."""
    marker = marker or _marker(root)
    sid = marker.stem
    (root / "extractions" / EID / "shards" / sid / rel_in_shard).write_bytes(data)
    obj = json.loads(marker.read_text())
    obj["files"][rel_in_shard] = {"size": len(data), "crc32c": crc32c.crc32c(data)}
    marker.write_text(json.dumps(seal_json(obj)))  # a crafted lake carries valid checksums


def _one_line_refusal(args: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("error:") and "\n" not in err and "internal error" not in err, err
    assert match in err, err


def test_commit_marker_path_leaving_the_lake_is_refused_by_export(lake_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    marker = _marker(lake_dir)
    obj = json.loads(marker.read_text())
    obj["files"]["../../../../secret.txt"] = {"size": 10}
    marker.write_text(json.dumps(seal_json(obj)))  # a crafted lake carries valid checksums
    before, outside = _tree(lake_dir), sorted(p.name for p in tmp_path.iterdir())
    _one_line_refusal(["export", "--lake", str(lake_dir), "--dataset", "wiki", "--out", str(tmp_path / "out")],
                      capsys, "not a relative path inside the shard")
    assert _tree(lake_dir) == before and sorted(p.name for p in tmp_path.iterdir()) == outside   # nothing written
    problems = {p.path: p.message for p in ll.Lake(lake_dir, mode="r").verify()}
    assert "'../../../../secret.txt' is not a relative path" in problems[str(marker)]
    assert "document(s) missing from extraction" in problems[str(lake_dir / "datasets" / "wiki")]


def test_symlinked_dataset_table_is_refused(lake_dir: Path, tmp_path: Path) -> None:
    table = lake_dir / "datasets" / "wiki" / "docs.parquet"
    outside = tmp_path / "outside.parquet"
    shutil.copy(table, outside)
    table.unlink()
    os.symlink(outside, table)
    lake = ll.Lake(lake_dir, mode="r")
    with pytest.raises(IntegrityError, match="outside the lake folder"):
        lake.tokens("wiki").collect()
    with pytest.raises(IntegrityError, match="outside the lake folder"):
        lake.export("wiki", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [(p.path, p.message.split(";")[0]) for p in lake.verify()] == [(str(table), "is a symbolic link")]


def test_huge_zarr_shape_is_refused_everywhere(lake_dir: Path, tmp_path: Path) -> None:
    clean = ll.Lake(lake_dir, mode="r")
    clean.export("wiki", tmp_path / "export")
    zarr_json = sorted((lake_dir / "extractions" / EID / "shards").glob("*/hidden.zarr/layer_0/zarr.json"))[0]
    sid = zarr_json.parts[-4]
    meta = json.loads(zarr_json.read_text())
    meta["shape"][0] = 10 ** 15
    _rewrite(lake_dir, "hidden.zarr/layer_0/zarr.json", json.dumps(meta).encode(),
             lake_dir / "extractions" / EID / "commits" / f"{sid}.json")
    lake = ll.Lake(lake_dir, mode="r")
    with pytest.raises(IntegrityError, match="more than the 1,099,511,627,776 layerlake allows"):
        lake.read_vectors("wiki", layers=[0])
    found: list = []
    worker = threading.Thread(target=lambda: found.append(lake.verify()), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert found, "verify hangs on a 1e15-row shape"
    assert any("zarr.json" in p.path and "layerlake allows" in p.message for p in found[0])
    # the same file in an export: import refuses it before touching the target
    exp = tmp_path / "export"
    rel = f"extractions/{EID}/shards/{sid}/hidden.zarr/layer_0/zarr.json"
    assert (exp / rel).exists()   # the shard was copied whole
    data = json.dumps(meta).encode()
    (exp / rel).write_bytes(data)
    manifest = json.loads((exp / "MANIFEST.json").read_text())
    manifest["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (exp / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="layerlake allows"):
        ll.import_lake(exp, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_bad_zarr_codec_and_tokens_schema_fail_verify(lake_dir: Path) -> None:
    zarr_json = sorted((lake_dir / "extractions" / EID / "shards").glob("*/hidden.zarr/layer_1/zarr.json"))[0]
    marker = lake_dir / "extractions" / EID / "commits" / f"{zarr_json.parts[-4]}.json"
    meta = json.loads(zarr_json.read_text())
    meta["codecs"].insert(0, {"name": "numcodecs.quantize", "configuration": {"digits": 1, "dtype": "<f4"}})
    _rewrite(lake_dir, "hidden.zarr/layer_1/zarr.json", json.dumps(meta).encode(), marker)
    other = [m for m in sorted((lake_dir / "extractions" / EID / "commits").glob("*.json")) if m != marker][0]
    tokens = lake_dir / "extractions" / EID / "shards" / other.stem / "tokens.parquet"
    table = pq.read_table(tokens)
    table = table.set_column(table.schema.get_field_index("nll"), "nll", table.column("nll").cast(pa.float64()))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _rewrite(lake_dir, "tokens.parquet", sink.getvalue().to_pybytes(), other)
    problems = {p.path: p.message for p in ll.Lake(lake_dir, mode="r").verify()}
    assert "numcodecs.quantize" in problems[str(zarr_json)]
    assert "is not the shard schema" in problems[str(tokens)]


@pytest.mark.parametrize("content, match", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"[" * 100 + b"]" * 100, "nested deeper than 64"),
    (b"{}", "missing key"),
    (b"[1, 2]", "must be a JSON object"),
])
def test_malformed_commit_marker_is_a_one_line_problem(lake_dir: Path, content: bytes, match: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    marker = _marker(lake_dir)
    marker.write_bytes(content)
    problems = ll.Lake(lake_dir, mode="r").verify()
    assert any(p.path == str(marker) and match in p.message and "\n" not in p.message for p in problems), problems
    capsys.readouterr()
    assert main(["verify", "--lake", str(lake_dir)]) == 1
    assert "internal error" not in capsys.readouterr().err
    with pytest.raises(IntegrityError, match=match):
        ll.Lake(lake_dir, mode="r").tokens("wiki").collect()


def test_extraction_manifest_that_is_a_list(lake_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (lake_dir / "extractions" / EID / "extraction.json").write_text("[1, 2]")
    problems = ll.Lake(lake_dir, mode="r").verify()
    assert any("extraction manifest must be a JSON object, got list" in p.message for p in problems)
    _one_line_refusal(["export", "--lake", str(lake_dir), "--dataset", "wiki", "--out", str(lake_dir.parent / "o")],
                      capsys, "must be a JSON object")


def test_many_rows_in_a_small_dataset_table_are_refused_by_import(lake_dir: Path, tmp_path: Path) -> None:
    ll.Lake(lake_dir, mode="r").export("wiki", tmp_path / "export")
    exp = tmp_path / "export"
    rel = "datasets/wiki/docs.parquet"
    n = 20_000_000
    hashes = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array(["0" * 32]))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"doc_hash": hashes}), sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    assert len(data) < 1_000_000
    (exp / rel).write_bytes(data)
    manifest = json.loads((exp / "MANIFEST.json").read_text())
    manifest["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (exp / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="claims 20,000,000 rows"):
        ll.import_lake(exp, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_many_rows_in_a_small_dataset_table_are_refused_on_every_read(lake_dir: Path, tmp_path: Path) -> None:
    n = 20_000_000
    hashes = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array(["0" * 32]))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"doc_hash": hashes}), sink, compression="zstd")
    (lake_dir / "datasets" / "wiki" / "docs.parquet").write_bytes(sink.getvalue().to_pybytes())
    lake = ll.Lake(lake_dir, mode="r")
    for read in (lambda: lake.read_vectors("wiki"), lambda: lake.export("wiki", tmp_path / "o"),
                 lambda: lake.sql("SELECT count(*) FROM datasets").pl()):
        with pytest.raises(IntegrityError, match="claims 20,000,000 rows"):
            read()
    assert not (tmp_path / "o").exists()
