"""Typed manifests: exact JSON round trips, and every malformed input refused naming its file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layerlake as ll
from layerlake.errors import IntegrityError
from layerlake.store import ExtractionManifest, ShardManifest, SketchEntry, seal_json

from .lakes import EID, synthetic_lake, texts

SRC = "memory://lake/extractions/e1/commits/s1.json"

SHARD = {
    "format": 1, "shard": "20260101T000000-abcdef0123", "extraction": "0123456789abcdef", "n_docs": 3,
    "n_doc_hashes": 2, "n_rows": 17, "layers": [0, 3], "d_model": 8, "dtype": "bfloat16",
    "jacobian": {"j3f9c0a1b2c4d": {"layers": [1, 2], "attrs": {"k": 2, "omega": {"seed": [0, 0]}}}},
    "files": {"docs.parquet": {"size": 100, "crc32c": 12345}, "hidden.zarr/layer_0/c/0/0": {"size": 7}},
    "bytes": 107, "created": "2026-01-01T00:00:00+00:00", "writer": {"host": "h", "pid": 4, "executor": "ray"},
}
EXTRACTION = {
    "extraction_id": "0123456789abcdef", "created": "2026-01-01T00:00:00+00:00",
    "model": {"fingerprint": "f" * 32, "model": "gpt2", "tokenizer_hash": "b" * 32, "revision": None},
    "capture": {"max_length": 64}, "d_model": 8, "n_layers": 4, "is_causal": True, "dtype": "float16",
    "tokenizer_class": "GPT2TokenizerFast",
}


def test_explicit_round_trips() -> None:
    man = ShardManifest.from_json(copy.deepcopy(SHARD), source=SRC)
    assert man.to_json() == SHARD and man.layers == (0, 3) and man.files["docs.parquet"].crc32c == 12345
    assert man.jacobian["j3f9c0a1b2c4d"] == SketchEntry(key="j3f9c0a1b2c4d", layers=(1, 2),
                                                         attrs=SHARD["jacobian"]["j3f9c0a1b2c4d"]["attrs"])
    assert man.sketch_blocks("j3f9c0a1b2c4d") == (1, 2) and man.sketch_blocks("other") == ()
    ext = ExtractionManifest.from_json(copy.deepcopy(EXTRACTION), source=SRC)
    assert ext.to_json() == EXTRACTION
    assert (ext.model_name, ext.fingerprint, ext.tokenizer_hash, ext.storage_dtype) == ("gpt2", "f" * 32, "b" * 32,
                                                                                       "float16")
    minimal = {"extraction_id": "e1", "created": "x", "model": {"model": "m"}, "d_model": 8}
    ext = ExtractionManifest.from_json(minimal, source=SRC)
    assert ext.to_json() == minimal and ext.n_layers is None and ext.storage_dtype == "float16"
    tokens_only = dict(SHARD, layers=[], d_model=None, jacobian={})
    assert ShardManifest.from_json(tokens_only, source=SRC).to_json() == tokens_only


@settings(max_examples=60, deadline=None)
@given(layers=st.lists(st.integers(0, 200), max_size=6), n_rows=st.integers(0, 2**40),
       sizes=st.dictionaries(st.from_regex(r"[a-z]{1,8}(/[a-z0-9]{1,4}){0,3}", fullmatch=True),
                             st.tuples(st.integers(0, 2**40), st.none() | st.integers(0, 2**32 - 1)), max_size=5),
       blocks=st.dictionaries(st.from_regex(r"j[0-9a-f]{12}", fullmatch=True),
                              st.lists(st.integers(1, 50), max_size=4), max_size=2))
def test_shard_manifest_round_trips(layers, n_rows, sizes, blocks) -> None:
    files = {k: ({"size": s} if c is None else {"size": s, "crc32c": c}) for k, (s, c) in sizes.items()}
    obj = dict(SHARD, layers=layers, n_rows=n_rows, files=files,
               jacobian={k: {"layers": v, "attrs": {"k": 1}} for k, v in blocks.items()})
    back = ShardManifest.from_json(json.loads(json.dumps(obj)), source=SRC).to_json()
    assert back == obj and json.dumps(back, sort_keys=True) == json.dumps(obj, sort_keys=True)


def _without(obj: dict, key: str) -> dict:
    return {k: v for k, v in obj.items() if k != key}


@pytest.mark.parametrize("bad, problem", [
    ([SHARD], "must be a JSON object, got list"),
    (_without(SHARD, "n_rows"), "missing key 'n_rows'"),
    (_without(SHARD, "files"), "missing key 'files'"),
    (dict(SHARD, n_rows=-1), "'n_rows' must be a non-negative integer, got -1"),
    (dict(SHARD, n_rows="17"), "'n_rows' must be a non-negative integer"),
    (dict(SHARD, bytes=True), "'bytes' must be a non-negative integer"),
    (dict(SHARD, layers=[0, -3]), "'layers' must be a list of non-negative integers"),
    (dict(SHARD, layers="0,3"), "'layers' must be a list of non-negative integers"),
    (dict(SHARD, files=[["docs.parquet", 1]]), "'files' must be a JSON object, got list"),
    (dict(SHARD, files={"docs.parquet": 100}), "file entry 'docs.parquet' must be a JSON object, got int"),
    (dict(SHARD, files={"docs.parquet": {"size": -5}}), "'size' must be a non-negative integer, got -5"),
    (dict(SHARD, files={"../../etc/passwd": {"size": 1}}), "not a relative path"),
    (dict(SHARD, shard="../x"), "'shard' must be a string matching"),
    (dict(SHARD, d_model=-8), "'d_model' must be a non-negative integer"),
    (dict(SHARD, jacobian={"bad/key": {"layers": [1], "attrs": {}}}), "Jacobian sketch key 'bad/key'"),
    (dict(SHARD, jacobian={"j1": {"layers": [1]}}), "Jacobian sketch j1: missing key 'attrs'"),
    (dict(SHARD, writer=None), "'writer' must be a JSON object"),
])
def test_malformed_commit_markers_are_refused(bad, problem) -> None:
    with pytest.raises(IntegrityError) as info:
        ShardManifest.from_json(bad, source=SRC)
    msg = str(info.value)
    assert msg.startswith(SRC + ": ") and problem in msg and "\n" not in msg


@pytest.mark.parametrize("bad, problem", [
    ("not a dict", "must be a JSON object, got str"),
    (_without(EXTRACTION, "model"), "missing key 'model'"),
    (_without(EXTRACTION, "d_model"), "missing key 'd_model'"),
    (dict(EXTRACTION, d_model=-1), "'d_model' must be a non-negative integer, got -1"),
    (dict(EXTRACTION, n_layers=2.5), "'n_layers' must be a non-negative integer"),
    (dict(EXTRACTION, model=["gpt2"]), "'model' must be a JSON object, got list"),
    (dict(EXTRACTION, model={"model": 3}), "'model.model' must be a string"),
    (dict(EXTRACTION, is_causal="yes"), "'is_causal' must be true or false"),
    (dict(EXTRACTION, extraction_id="a/b"), "'extraction_id' must be a string matching"),
    (dict(EXTRACTION, surprise=1), "unknown key(s) ['surprise']"),
])
def test_malformed_extraction_manifests_are_refused(bad, problem) -> None:
    with pytest.raises(IntegrityError) as info:
        ExtractionManifest.from_json(bad, source=SRC)
    assert str(info.value).startswith(SRC + ": ") and problem in str(info.value)


def test_lake_files_round_trip_and_damage_names_the_file(tmp_path: Path) -> None:
    lake = synthetic_lake(tmp_path / "lake", {"wiki": texts(6)}, layers=(0, 1), jacobian=True)
    base = tmp_path / "lake" / "extractions" / EID
    for path in sorted((base / "commits").glob("*.json")):
        raw = json.loads(path.read_text())
        # the on-disk format is unchanged but for the crc32c self-checksum that every JSON file carries
        assert seal_json(lake.store.shard_manifest(EID, path.stem).to_json()) == raw
    assert seal_json(lake.store.extraction(EID).to_json()) == json.loads((base / "extraction.json").read_text())
    original = (base / "extraction.json").read_text()
    (base / "extraction.json").write_text(json.dumps(dict(json.loads(original), d_model="8")))
    with pytest.raises(IntegrityError, match=r"extraction\.json is damaged: its crc32c checksum does not match"):
        ll.Lake(tmp_path / "lake").store.extraction(EID)
    # a consistently sealed but malformed manifest: the validation names the field
    (base / "extraction.json").write_text(json.dumps(seal_json(dict(json.loads(original), d_model="8"))))
    fresh = ll.Lake(tmp_path / "lake")
    with pytest.raises(IntegrityError, match=r"extraction\.json: extraction manifest: 'd_model' must be"):
        fresh.store.extraction(EID)
