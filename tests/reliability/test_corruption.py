"""Corruption: damaged files are named by verify, reads of them fail clearly, the rest stays readable.

A lake holds dataset ``a`` and dataset ``b`` (separate shards of one extraction)
and dataset ``c`` (another model). Each test damages a copy of it and checks:
``layerlake verify`` exits 1 naming the damaged file; reading the damaged data
raises :class:`IntegrityError` (never returns other numbers); data elsewhere
reads exactly as before.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import layerlake as ll
from layerlake.cli import main
from layerlake.errors import IntegrityError
from tests.reliability.conftest import is_orphan

OPTS = {"shard_bytes": 12_000, "batch_tokens": 300}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_gpt2, tiny_llama, corpus):
    root = tmp_path_factory.mktemp("corrupt") / "lake"
    lake = ll.Lake(root)
    lake.ingest(str(tiny_gpt2), corpus[:12], dataset="a", **OPTS)
    lake.ingest(str(tiny_gpt2), corpus[12:24], dataset="b", **OPTS)
    lake.ingest(str(tiny_llama), corpus[24:30], dataset="c", **OPTS)
    base = {ds: (lake.read_vectors(ds), lake.tokens(ds).collect()) for ds in "abc"}
    assert lake.verify() == []
    return root, base


@pytest.fixture
def damaged(tmp_path, pristine):
    root, base = pristine
    dst = tmp_path / "lake"
    shutil.copytree(root, dst)
    return dst, base


def shard_of(root: Path, dataset: str) -> tuple[str, str]:
    """(extraction id, a shard holding only documents of ``dataset``), read with a handle of its own
    (a handle caches the shard index it has read: damage done later is seen by new handles)."""
    lake = ll.Lake(root, mode="r")
    eid = lake.extraction_id(dataset)
    mine = set(lake.store.dataset_table(dataset).column("doc_hash").to_pylist())
    index = lake.store.doc_index(eid)
    by_shard: dict[str, set[str]] = {}
    for h, s in zip(index.column("doc_hash").to_pylist(), index.column("shard").to_pylist()):
        by_shard.setdefault(s, set()).add(h)
    sid = next(s for s, hs in sorted(by_shard.items()) if hs <= mine)
    return eid, sid


def verify_cli(root: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", "--lake", str(root)])
    err = capsys.readouterr().err
    return code, err


def assert_readable(lake: ll.Lake, base: dict, datasets: str) -> None:
    for ds in datasets:
        v, t = base[ds]
        assert np.array_equal(lake.read_vectors(ds), v)
        assert lake.tokens(ds).collect().drop(["shard", "row"]).equals(t.drop(["shard", "row"]))


def flip(path: Path, offset: int | None = None, rng: random.Random | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = offset if offset is not None else (rng or random.Random(0)).randrange(len(data))
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_zarr_chunk(damaged, capsys, fault_tally):
    root, base = damaged
    eid, sid = shard_of(root, "a")
    chunk = root / "extractions" / eid / "shards" / sid / "hidden.zarr" / "layer_2" / "c" / "0" / "0"
    flip(chunk, offset=len(chunk.read_bytes()) // 2)
    lake = ll.Lake(root)
    code, err = verify_cli(root, capsys)
    assert code == 1 and str(chunk) in err
    with pytest.raises(IntegrityError, match="layer 2"):
        lake.read_vectors("a", layers=[2])
    assert np.array_equal(lake.read_vectors("a", layers=[0, 1, 3]), base["a"][0][[0, 1, 3]])
    assert_readable(lake, base, "bc")
    fault_tally.record("corruption: zarr chunk", detected=int(str(chunk) in err))


def test_deleted_zarr_chunk(damaged, capsys, fault_tally):
    """zarr reads a missing chunk as its fill value: the lake's NaN fill turns that into an error."""
    root, base = damaged
    eid, sid = shard_of(root, "a")
    chunk = root / "extractions" / eid / "shards" / sid / "hidden.zarr" / "layer_1" / "c" / "0" / "0"
    chunk.unlink()
    lake = ll.Lake(root)
    code, err = verify_cli(root, capsys)
    assert code == 1 and str(chunk) in err
    with pytest.raises(IntegrityError, match="missing"):
        lake.read_vectors("a", layers=[1])
    assert_readable(lake, base, "bc")
    fault_tally.record("corruption: zarr chunk", detected=int(str(chunk) in err))


def test_truncated_tokens_parquet(damaged, capsys, fault_tally):
    root, base = damaged
    eid, sid = shard_of(root, "a")
    path = root / "extractions" / eid / "shards" / sid / "tokens.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    lake = ll.Lake(root)
    code, err = verify_cli(root, capsys)
    assert code == 1 and str(path) in err
    with pytest.raises(IntegrityError, match="tokens.parquet"):
        lake.tokens("a").collect()
    assert np.array_equal(lake.read_vectors("a"), base["a"][0])  # vectors do not need that file
    assert_readable(lake, base, "bc")
    fault_tally.record("corruption: parquet", detected=1)


def test_truncated_docs_parquet(damaged, capsys, fault_tally):
    root, base = damaged
    eid, sid = shard_of(root, "a")
    path = root / "extractions" / eid / "shards" / sid / "docs.parquet"
    path.write_bytes(path.read_bytes()[:-7])
    lake = ll.Lake(root)
    code, err = verify_cli(root, capsys)
    assert code == 1 and str(path) in err
    with pytest.raises(IntegrityError, match=sid):
        lake.read_vectors("a")
    with pytest.raises(IntegrityError, match=sid):
        lake.tokens("a")
    assert_readable(lake, base, "bc")
    fault_tally.record("corruption: parquet", detected=1)


def test_flipped_byte_in_parquet_is_not_read_as_other_values(damaged, capsys, fault_tally):
    """A flip that Parquet's own structure may not notice is caught by the commit marker's crc32c."""
    root, base = damaged
    eid, sid = shard_of(root, "b")
    for name in ("docs.parquet", "tokens.parquet"):
        path = root / "extractions" / eid / "shards" / sid / name
        flip(path, offset=path.stat().st_size // 3)
    lake = ll.Lake(root)
    code, err = verify_cli(root, capsys)
    assert code == 1 and "docs.parquet" in err and "tokens.parquet" in err
    with pytest.raises(IntegrityError):
        lake.read_vectors("b")
    assert_readable(lake, base, "ac")
    fault_tally.record("corruption: parquet", trials=2, detected=2)


def test_deleted_commit_marker(damaged, capsys, fault_tally, tiny_gpt2, corpus):
    root, base = damaged
    eid, sid = shard_of(root, "a")
    (root / "extractions" / eid / "commits" / f"{sid}.json").unlink()
    lake = ll.Lake(root)
    code, err = verify_cli(root, capsys)
    assert code == 1 and str(root / "extractions" / eid / "shards" / sid) in err and "missing" in err
    with pytest.raises(IntegrityError, match="commit marker"):
        lake.read_vectors("a")
    assert_readable(lake, base, "bc")
    # recovery: re-running the ingest recomputes exactly the lost documents
    res = lake.ingest(str(tiny_gpt2), corpus[:12], dataset="a", **OPTS)
    assert 0 < res.computed_docs < 12
    assert_readable(lake, base, "abc")
    assert all(is_orphan(p) for p in lake.verify())
    fault_tally.record("corruption: commit marker", detected=1)


def test_deleted_extraction_json(damaged, capsys, fault_tally):
    root, base = damaged
    eid, _ = shard_of(root, "a")
    path = root / "extractions" / eid / "extraction.json"
    path.unlink()
    lake = ll.Lake(root)
    code, err = verify_cli(root, capsys)
    assert code == 1 and str(path) in err
    with pytest.raises(IntegrityError, match="extraction.json"):
        lake.read_vectors("a")
    assert_readable(lake, base, "c")  # the other model's extraction
    fault_tally.record("corruption: extraction.json", detected=1)


def test_damaged_array_metadata(damaged, capsys, fault_tally):
    root, base = damaged
    eid, sid = shard_of(root, "b")
    meta = root / "extractions" / eid / "shards" / sid / "hidden.zarr" / "layer_1" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:40])
    lake = ll.Lake(root)
    code, err = verify_cli(root, capsys)
    assert code == 1 and str(meta) in err
    with pytest.raises(IntegrityError):
        lake.read_vectors("b", layers=[1])
    assert_readable(lake, base, "ac")
    fault_tally.record("corruption: zarr metadata", detected=1)


def test_dataset_table_with_changed_text(damaged, capsys, fault_tally):
    """A dataset table carries its content checksum; and every row's doc_hash is the hash of its text."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    root, base = damaged
    path = root / "datasets" / "b" / "docs.parquet"
    table = pq.read_table(path)
    texts = table.column("text").to_pylist()
    texts[3] = texts[3].replace("e", "3", 1)
    changed = table.set_column(table.column_names.index("text"), "text", pa.array(texts))
    pq.write_table(changed, path)                       # the old content checksum over new values
    code, err = verify_cli(root, capsys)
    assert code == 1 and str(path) in err and "content checksum does not match" in err
    with pytest.raises(IntegrityError, match="datasets/b/docs.parquet is damaged"):
        ll.Lake(root).read_vectors("b")
    pq.write_table(changed.replace_schema_metadata(None), path)  # a table without a checksum (before 1.1)
    code, err = verify_cli(root, capsys)
    assert code == 1 and str(path) in err and "doc_hash" in err
    fault_tally.record("corruption: dataset table", detected=1)


@pytest.mark.parametrize("seed", range(6))
def test_random_byte_flips_in_committed_files(damaged, seed, fault_tally):
    """Flip one byte of a random committed shard file: verify names that file, and every read either
    returns exactly the original values or raises IntegrityError."""
    root, base = damaged
    rng = random.Random(seed)
    files = sorted(p for p in (root / "extractions").rglob("*") if p.is_file() and "/shards/" in str(p))
    victim = rng.choice(files)
    flip(victim, rng=rng)
    lake = ll.Lake(root)
    named = any(str(victim) in str(p) or str(p.path) in str(victim) for p in lake.verify())
    wrong = 0
    for ds in "abc":
        v, t = base[ds]
        try:
            got_v = lake.read_vectors(ds)
            wrong += not np.array_equal(got_v, v)
        except IntegrityError:
            pass
        try:
            got_t = lake.tokens(ds).collect()
            wrong += not got_t.equals(t)
        except IntegrityError:
            pass
    fault_tally.record("corruption: random flips", detected=int(named), lost=int(wrong > 0),
                       note="" if named else f"not named: {victim.name}")
    assert named, f"verify did not name {victim}"
    assert wrong == 0
