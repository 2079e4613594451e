"""Export a dataset, import it elsewhere: same answers, every byte checked, nothing stored twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerlake as ll
from layerlake.errors import IntegrityError, NotFoundError, ReadOnlyError, SpecError
from layerlake.store.layout import EXPORT_MANIFEST as MANIFEST_NAME

from .lakes import EID, MODEL, dirs, stored_pairs, synthetic_lake, texts, tree

ROOT = Path(__file__).resolve().parents[2]


def _tokens(lake: ll.Lake, dataset: str, model: str | None = None):
    return lake.tokens(dataset, model=model).collect().drop(["shard", "row"])


@pytest.fixture
def source(tmp_path: Path) -> ll.Lake:
    """Dataset 'wiki' (8 docs) and 'news' (overlapping, 6 docs) in 3-doc shards, layers 0-2, with sketches."""
    return synthetic_lake(tmp_path / "src", {"wiki": texts(8), "news": texts(6, start=5)}, jacobian=True)


@pytest.fixture
def exported(source: ll.Lake, tmp_path: Path) -> Path:
    out = tmp_path / "export"
    source.export("wiki", out, license="CC-BY-4.0", description="eight synthetic documents")
    return out


def test_round_trip_gives_the_same_answers(source: ll.Lake, exported: Path, tmp_path: Path) -> None:
    report = ll.import_lake(exported, tmp_path / "dst")
    dst = ll.Lake(tmp_path / "dst", mode="r")
    assert dst.datasets() == ["wiki"]
    assert report.extractions_new == [EID]
    assert _tokens(dst, "wiki").equals(_tokens(source, "wiki"))
    a, b = source.read_vectors("wiki", layers=[0, 1, 2]), dst.read_vectors("wiki", layers=[0, 1, 2])
    assert a.shape == b.shape and np.array_equal(a, b)
    assert dst.docs("wiki").collect().drop("extraction").equals(source.docs("wiki").collect().drop("extraction"))
    from layerlake.metrics.matrix_entropy import matrix_entropy
    assert [matrix_entropy(x) for x in b] == [matrix_entropy(x) for x in a]
    assert dst.verify() == []
    # the export itself is a lake that can be used in place, read-only
    inplace = ll.Lake(exported, mode="r")
    assert np.array_equal(inplace.read_vectors("wiki", layers=1), a[1])


def test_export_card_and_manifest(exported: Path, source: ll.Lake) -> None:
    card = (exported / "README.md").read_text()
    for needle in ("CC-BY-4.0", "eight synthetic documents", "a" * 32, "b" * 32, MODEL, "max_length=64",
                   "How to load", "import_lake"):
        assert needle in card, needle
    man = json.loads((exported / MANIFEST_NAME).read_text())
    files = {str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    assert set(man["files"]) == files
    import hashlib
    for rel, entry in man["files"].items():
        data = (exported / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert man["dataset"] == "wiki" and man["license"] == "CC-BY-4.0" and man["extractions"] == [EID]
    # only wiki's documents and its dataset: news (sharing docs 5-7) is not exported
    exp = ll.Lake(exported, mode="r")
    assert exp.datasets() == ["wiki"]
    assert len(exp.store.covered_docs(EID)) == 8


def test_export_copies_whole_shards_and_rewrites_partial_ones(source: ll.Lake, tmp_path: Path) -> None:
    # shards hold docs [0-2] [3-5] [6-8] [9-10]; 'news' = docs 5..10
    report = source.export("news", tmp_path / "news")
    assert report.shards_copied == 2          # [6-8] and [9-10] taken whole, byte for byte
    assert report.shards_rewritten == 1       # doc 5 out of [3-5]
    exp = ll.Lake(tmp_path / "news", mode="r")
    assert np.array_equal(exp.read_vectors("news", layers=[0, 2]), source.read_vectors("news", layers=[0, 2]))
    assert _tokens(exp, "news").equals(_tokens(source, "news"))
    assert len(exp.store.covered_docs(EID)) == 6
    # sketches follow their rows into rewritten shards
    for man in exp.store.shard_manifests(EID):
        assert set(man.jacobian["sketch_k2"].layers) == {1, 2}


def test_export_layer_selection_and_no_vectors(source: ll.Lake, tmp_path: Path) -> None:
    source.export("wiki", tmp_path / "l1", layers=[1])
    exp = ll.Lake(tmp_path / "l1", mode="r")
    assert exp.extractions()["layers"].to_list() == [[1]]
    assert np.array_equal(exp.read_vectors("wiki", layers=1), source.read_vectors("wiki", layers=1))
    with pytest.raises(NotFoundError):
        exp.read_vectors("wiki", layers=[0])
    source.export("wiki", tmp_path / "tok", vectors=False)
    tok = ll.Lake(tmp_path / "tok", mode="r")
    assert _tokens(tok, "wiki").equals(_tokens(source, "wiki"))
    assert not list((tmp_path / "tok").rglob("hidden.zarr")) and not list((tmp_path / "tok").rglob("jacobian.zarr"))
    with pytest.raises(NotFoundError, match="layer"):
        source.export("wiki", tmp_path / "bad", layers=[7])
    assert not (tmp_path / "bad").exists()


def test_export_refuses_a_non_empty_target(source: ll.Lake, exported: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="already holds a lake"):
        source.export("wiki", exported)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("hi")
    with pytest.raises(SpecError, match="not empty"):
        source.export("wiki", tmp_path / "junk")


def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["hidden", "tokens", "dataset", "card"])
def test_flipped_byte_fails_naming_the_file_and_changes_nothing(exported: Path, source: ll.Lake,
                                                                tmp_path: Path, victim: str) -> None:
    target = synthetic_lake(tmp_path / "dst", {"other": texts(2, start=50)})
    before, before_dirs = tree(tmp_path / "dst"), dirs(tmp_path / "dst")
    path = {"hidden": next(p for p in sorted(exported.rglob("c/*/*")) if p.is_file()),
            "tokens": next(exported.rglob("tokens.parquet")),
            "dataset": exported / "datasets" / "wiki" / "docs.parquet",
            "card": exported / "README.md"}[victim]
    _flip_byte(path, len(path.read_bytes()) // 2)
    rel = str(path.relative_to(exported))
    with pytest.raises(IntegrityError, match="sha256") as info:
        target.import_(exported)
    assert rel in str(info.value)
    assert tree(tmp_path / "dst") == before and dirs(tmp_path / "dst") == before_dirs


def test_missing_file_fails_naming_it(exported: Path, tmp_path: Path) -> None:
    victim = next(exported.rglob("docs.parquet"))
    rel = str(victim.relative_to(exported))
    victim.unlink()
    with pytest.raises(IntegrityError, match="missing") as info:
        ll.import_lake(exported, tmp_path / "new")
    assert rel in str(info.value)
    assert not (tmp_path / "new").exists()     # a failed import creates no lake


def test_truncated_file_and_missing_manifest(exported: Path, tmp_path: Path) -> None:
    victim = next(exported.rglob("tokens.parquet"))
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(IntegrityError, match="size"):
        ll.import_lake(exported, tmp_path / "new")
    (exported / MANIFEST_NAME).unlink()
    with pytest.raises(NotFoundError, match="MANIFEST.json"):
        ll.import_lake(exported, tmp_path / "new")


def test_import_into_a_lake_holding_part_of_the_data_stores_nothing_twice(source: ll.Lake, tmp_path: Path) -> None:
    source.export("news", tmp_path / "news")        # docs 5..10
    target = synthetic_lake(tmp_path / "dst", {"wiki": texts(8)})   # docs 0..7, the same extraction
    before = {k: v for k, v in tree(tmp_path / "dst").items() if "/shards/" in k}
    report = target.import_(tmp_path / "news")
    assert report.extractions_existing == [EID]
    pairs = stored_pairs(target)
    assert set(pairs.values()) == {1}                                   # every (doc, layer) once
    assert {h for h, _ in pairs} == target.store.covered_docs(EID) and len({h for h, _ in pairs}) == 11
    # bytes: hidden rows stored per layer == tokens of the distinct documents, no more
    idx = target.store.doc_index(EID)
    per_doc = dict(zip(idx.column("doc_hash").to_pylist(), idx.column("n_tokens").to_pylist()))
    for layer in (0, 1, 2):
        rows = sum(m.n_rows for m in target.store.shard_manifests(EID) if layer in m.layers)
        assert rows == sum(per_doc.values())
    # the shards already there are untouched; docs 5-7 came in no new shard
    after = tree(tmp_path / "dst")
    assert all(after[k] == v for k, v in before.items())
    assert report.shards_skipped >= 1 and report.shards_rewritten >= 1
    assert np.array_equal(target.read_vectors("news", layers=[0, 1, 2]), source.read_vectors("news", layers=[0, 1, 2]))
    assert _tokens(target, "news").equals(_tokens(source, "news"))
    # importing again writes no byte of data
    data_before = {k: v for k, v in tree(tmp_path / "dst").items() if k.startswith("extractions/")}
    again = target.import_(tmp_path / "news")
    assert again.bytes_written == 0 and again.shards_copied == again.shards_rewritten == 0
    assert {k: v for k, v in tree(tmp_path / "dst").items() if k.startswith("extractions/")} == data_before
    assert target.verify() == []


def test_import_adds_missing_layers_only(tmp_path: Path) -> None:
    src = synthetic_lake(tmp_path / "src", {"wiki": texts(5)}, layers=(1, 2))
    src.export("wiki", tmp_path / "exp")
    target = synthetic_lake(tmp_path / "dst", {"wiki": texts(5)}, layers=(0, 1))
    target.import_(tmp_path / "exp")
    pairs = stored_pairs(target)
    assert set(pairs.values()) == {1} and {l for _, l in pairs} == {0, 1, 2}
    assert target.extractions()["layers"].to_list() == [[0, 1, 2]]
    assert np.array_equal(target.read_vectors("wiki", layers=2), src.read_vectors("wiki", layers=2))
    # the datasets merged by content: still 5 documents
    assert target.store.dataset_table("wiki").num_rows == 5


def test_same_named_dataset_is_merged_by_content(tmp_path: Path) -> None:
    src = synthetic_lake(tmp_path / "src", {"wiki": texts(4, start=2)})
    src.export("wiki", tmp_path / "exp")
    target = synthetic_lake(tmp_path / "dst", {"wiki": texts(4)})
    report = target.import_(tmp_path / "exp")
    assert report.datasets == {"wiki": 2}
    assert target.store.dataset_table("wiki").column("text").to_pylist() == texts(6)


def test_failure_while_writing_rolls_back(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = synthetic_lake(tmp_path / "dst", {"other": texts(2, start=50)})
    before, before_dirs = tree(tmp_path / "dst"), dirs(tmp_path / "dst")
    import layerlake.store.importer as imp
    calls = {"n": 0}
    real = imp.commit_shard

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(imp, "commit_shard", failing)
    with pytest.raises(OSError, match="simulated"):
        target.import_(exported)
    assert calls["n"] == 2
    assert tree(tmp_path / "dst") == before and dirs(tmp_path / "dst") == before_dirs


def test_import_into_read_only_lake_and_export_into_read_only(exported: Path, source: ll.Lake,
                                                             tmp_path: Path) -> None:
    synthetic_lake(tmp_path / "dst", {"other": texts(2, start=50)})
    ro = ll.Lake(tmp_path / "dst", mode="r")
    before = tree(tmp_path / "dst")
    with pytest.raises(ReadOnlyError):
        ro.import_(exported)
    with pytest.raises(ReadOnlyError):
        ll.import_lake(exported, ro)
    empty = ll.Lake(tmp_path / "empty")
    with pytest.raises(ReadOnlyError):
        source.export("wiki", ll.Lake(tmp_path / "empty", mode="r"))
    assert tree(tmp_path / "dst") == before and empty.datasets() == []
    # exporting FROM a read-only lake works
    ll.Lake(tmp_path / "src", mode="r").export("wiki", tmp_path / "from-ro")
    assert ll.Lake(tmp_path / "from-ro", mode="r").datasets() == ["wiki"]


def test_cli_export_import(source: ll.Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from layerlake.cli import main
    assert main(["export", "--lake", str(tmp_path / "src"), "--dataset", "wiki", "--model", MODEL, "--layers", "0,2",
                 "--out", str(tmp_path / "exp"), "--license", "MIT", "--description", "tiny"]) == 0
    assert "exported dataset 'wiki'" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "exp"), "--lake", str(tmp_path / "dst")]) == 0
    assert "verified" in capsys.readouterr().out
    dst = ll.Lake(tmp_path / "dst", mode="r")
    assert dst.extractions()["layers"].to_list() == [[0, 2]]
    _flip_byte(next((tmp_path / "exp").rglob("tokens.parquet")), 10)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAYERLAKE_PROGRESS": "0"}
    r = subprocess.run([sys.executable, "-m", "layerlake", "import", str(tmp_path / "exp"), "--lake",
                        str(tmp_path / "dst2")], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and "tokens.parquet" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "dst2").exists()


def test_export_several_models_or_one(tmp_path: Path) -> None:
    lake = synthetic_lake(tmp_path / "src", {"wiki": texts(4)})
    synthetic_lake(None, {"wiki": texts(4)}, lake=lake, fingerprint="e" * 32, model="other/model", layers=(0, 3))
    both = lake.export("wiki", tmp_path / "both")
    assert len(both.extractions) == 2
    exp = ll.Lake(tmp_path / "both", mode="r")
    for model in (MODEL, "other/model"):
        assert np.array_equal(exp.read_vectors("wiki", model=model, layers=0),
                              lake.read_vectors("wiki", model=model, layers=0))
    card = (tmp_path / "both" / "README.md").read_text()
    assert MODEL in card and "other/model" in card
    one = lake.export("wiki", tmp_path / "one", model="other/model")
    assert one.extractions == [lake.extraction_id("wiki", "other/model")]
    assert ll.Lake(tmp_path / "one", mode="r").extractions()["layers"].to_list() == [[0, 3]]
    target = ll.Lake(tmp_path / "dst")
    target.import_(tmp_path / "one")
    target.import_(tmp_path / "both")                 # the second model's data is already there
    assert target.extractions().height == 2
    for eid in target.store.extraction_ids():
        assert set(stored_pairs(target, eid).values()) == {1}
