"""Lakes on object storage: a real S3 API (moto's server on 127.0.0.1) and fsspec's memory://."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import layerlake as ll
from layerlake.errors import ReadOnlyError
from layerlake.store import doc_hash
from layerlake.store.remote import polars_storage_options

from .lakes import EID, synthetic_lake, texts

COLS = ["ordinal", "doc_hash", "window", "position", "token_id", "token", "nll"]


def test_s3_ingest_query_export_import(s3, gpt2_6: Path, corpus: list[str], tmp_path: Path) -> None:
    bucket, opts = s3
    docs = corpus[:5]
    remote = ll.Lake(f"{bucket}/lake", storage_options=opts)
    res = remote.ingest(str(gpt2_6), docs, dataset="wiki", layers=[1, 3], progress=False)
    assert res.computed_docs == 5 and res.shards_written >= 1
    local = ll.Lake(tmp_path / "local")
    local.ingest(str(gpt2_6), docs, dataset="wiki", layers=[1, 3], progress=False)
    # query from the object store
    ro = ll.Lake(f"{bucket}/lake", mode="r", storage_options=opts)
    assert np.array_equal(ro.read_vectors("wiki", layers=[1, 3]), local.read_vectors("wiki", layers=[1, 3]))
    assert ro.tokens("wiki").collect().select(COLS).equals(local.tokens("wiki").collect().select(COLS))
    assert ro.extractions()["layers"].to_list() == [[1, 3]] and ro.verify() == []
    # a second ingest with one more layer reuses what is stored there
    more = remote.ingest(str(gpt2_6), docs, dataset="wiki", layers=[3, 5], progress=False)
    assert more.computed_tokens == res.computed_tokens
    assert remote.extractions()["layers"].to_list() == [[1, 3, 5]]
    # export to the object store, import from it into a local lake
    report = ro.export("wiki", f"{bucket}/share/wiki", storage_options=opts, license="CC0-1.0")
    assert report.files > 5
    imported = ll.import_lake(f"{bucket}/share/wiki", tmp_path / "imported", storage_options=opts)
    assert imported.extractions_new == [res.extraction_id]
    back = ll.Lake(tmp_path / "imported", mode="r")
    assert np.array_equal(back.read_vectors("wiki", layers=[1, 3, 5]), ro.read_vectors("wiki", layers=[1, 3, 5]))
    assert back.tokens("wiki").collect().select(COLS).equals(ro.tokens("wiki").collect().select(COLS))
    # and a local export imported into an object-store lake
    local.export("wiki", tmp_path / "exp")
    into = ll.Lake(f"{bucket}/other", storage_options=opts)
    into.import_(tmp_path / "exp")
    assert np.array_equal(into.read_vectors("wiki", layers=[1, 3]), local.read_vectors("wiki", layers=[1, 3]))


def test_s3_read_only_refuses_every_write(s3, gpt2_6: Path, tmp_path: Path) -> None:
    bucket, opts = s3
    synthetic_lake(f"{bucket}/lake", {"wiki": texts(4)}, storage_options=opts)
    synthetic_lake(tmp_path / "src", {"news": texts(3, start=9)}).export("news", tmp_path / "exp")
    ro = ll.Lake(f"{bucket}/lake", mode="r", storage_options=opts)
    with pytest.raises(ReadOnlyError, match="read-only"):
        ro.ingest(str(gpt2_6), ["some text"], dataset="x")
    with pytest.raises(ReadOnlyError):
        ro.import_(tmp_path / "exp")
    with pytest.raises(ReadOnlyError):
        ro.rm_dataset("wiki")
    with pytest.raises(ReadOnlyError):
        ro.gc(grace_seconds=0)
    with pytest.raises(ReadOnlyError):
        ll.Lake(tmp_path / "src").export("news", ro)
    assert ro.datasets() == ["wiki"] and ro.verify() == []


def test_only_the_chunks_a_query_needs_are_fetched(s3, s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket, opts = s3
    import layerlake.store.shards as shards
    from layerlake.store.arrays import write_array
    monkeypatch.setattr(shards, "write_array", functools.partial(write_array, chunk_bytes=1024))  # 8 rows/chunk
    docs = texts(40)
    lake = synthetic_lake(f"{bucket}/lake", {"wiki": docs}, layers=(0, 1), d=64, shard_docs=40,
                          storage_options=opts)
    man = lake.store.shard_manifests(EID)[0]
    n_chunks = sum(1 for f in man.files if f.startswith("hidden.zarr/layer_1/c/"))
    assert n_chunks >= 20
    ro = ll.Lake(f"{bucket}/lake", mode="r", storage_options=opts)
    ro.store.doc_index(EID)                     # catalog reads are not what we count
    s3_server.reset()
    one = ro.read_vectors("wiki", layers=1, docs=[doc_hash(docs[17])])
    fetched = s3_server.gets("/hidden.zarr/layer_1/c/")
    assert one.shape[0] > 0 and 1 <= len(fetched) <= 2, fetched     # a document spans at most two chunks
    assert not s3_server.gets("/hidden.zarr/layer_0/")
    s3_server.reset()
    everything = ro.read_vectors("wiki", layers=1)
    assert len(s3_server.gets("/hidden.zarr/layer_1/c/")) == n_chunks
    assert everything.shape[0] == man.n_rows


def test_polars_options_from_fsspec_options(s3) -> None:
    bucket, opts = s3
    lake = ll.Lake(f"{bucket}/lake", storage_options=opts)
    mapped = polars_storage_options(lake.store.fs)
    assert mapped == {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
                      "aws_endpoint_url": opts["client_kwargs"]["endpoint_url"], "aws_allow_http": "true",
                      "aws_region": "us-east-1"}


def test_memory_lake_round_trip() -> None:
    import uuid
    name = uuid.uuid4().hex[:8]
    lake = synthetic_lake(f"memory://{name}/lake", {"wiki": texts(5)})
    tokens = lake.tokens("wiki").collect()
    assert tokens.height == sum(len(t) for t in [lake.read_vectors("wiki", layers=0)])
    lake.export("wiki", f"memory://{name}/exp")
    report = ll.import_lake(f"memory://{name}/exp", f"memory://{name}/imp")
    assert report.shards_copied == 2
    imp = ll.Lake(f"memory://{name}/imp", mode="r")
    assert np.array_equal(imp.read_vectors("wiki"), lake.read_vectors("wiki"))
    assert imp.tokens("wiki").collect().select(COLS).equals(tokens.select(COLS))


def test_s3_rm_and_gc(s3) -> None:
    bucket, opts = s3
    lake = synthetic_lake(f"{bucket}/lake", {"wiki": texts(6), "news": texts(3, start=4)}, storage_options=opts)
    assert lake.gc().items == []                      # everything is young and referenced
    lake.rm_dataset("wiki")
    report = lake.gc(grace_seconds=0)
    assert [i.kind for i in report.items] == ["unreferenced-shard"] and report.bytes_freed > 0
    again = ll.Lake(f"{bucket}/lake", mode="r", storage_options=opts)
    assert again.verify() == [] and again.read_vectors("news", layers=1).shape[0] > 0


def test_cli_on_s3_with_credentials_from_the_environment(s3, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bucket, opts = s3
    synthetic_lake(f"{bucket}/lake", {"wiki": texts(4)}, storage_options=opts)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", opts["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", opts["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", opts["client_kwargs"]["endpoint_url"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from layerlake.cli import main
    assert main(["export", "--lake", f"{bucket}/lake", "--dataset", "wiki", "--out", str(tmp_path / "exp")]) == 0
    assert main(["import", str(tmp_path / "exp"), "--lake", f"{bucket}/copy"]) == 0
    assert main(["gc", "--lake", f"{bucket}/copy", "--dry-run"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert ll.Lake(f"{bucket}/copy", mode="r", storage_options=opts).datasets() == ["wiki"]
