"""The one integrity rule: every file a reader opens is checked against its recorded size and crc32c first.

Each test damages one kind of file of a synthetic lake in a way that parses fine (so only the
checksum can notice) and checks that reads raise IntegrityError naming the file, never other values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import layerlake as ll
from layerlake.errors import IntegrityError
from layerlake.store import content_crc32c, read_sealed, seal_json, sealed_parquet, unseal_json

from .lakes import EID, synthetic_lake, texts


@pytest.fixture()
def lake(tmp_path: Path) -> ll.Lake:
    return synthetic_lake(tmp_path / "lake", {"wiki": texts(6)}, layers=(0, 1))


def _root(lake: ll.Lake) -> Path:
    return Path(lake.store.fs.root)


def test_json_files_are_sealed_and_a_changed_value_is_refused(lake: ll.Lake) -> None:
    root = _root(lake)
    marker = sorted((root / "extractions" / EID / "commits").glob("*.json"))[0]
    raw = json.loads(marker.read_text())
    assert raw["crc32c"] == seal_json({k: v for k, v in raw.items() if k != "crc32c"})["crc32c"]
    assert json.loads((root / "lake.json").read_text())["format_version"] == "1.1"
    raw["n_rows"] += 1                                   # valid JSON, valid manifest, wrong number
    marker.write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match=f"{marker.name} is damaged: its crc32c checksum"):
        ll.Lake(root).read_vectors("wiki")
    assert any(marker.name in str(p) for p in ll.Lake(root).verify())
    assert unseal_json({"a": 1}, "x") == {"a": 1}       # files written before checksums still read


def test_lake_json_of_format_1_1_requires_its_checksum_and_1_0_opens_without(tmp_path: Path) -> None:
    ll.Lake(tmp_path / "lake")
    meta = json.loads((tmp_path / "lake" / "lake.json").read_text())
    del meta["crc32c"]
    (tmp_path / "lake" / "lake.json").write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="lake.json has no 'crc32c' checksum"):
        ll.Lake(tmp_path / "lake")
    (tmp_path / "lake" / "lake.json").write_text(json.dumps(dict(meta, format_version="1.0")))
    assert ll.Lake(tmp_path / "lake").datasets() == []


def test_missing_lake_json_of_a_lake_is_damage_not_a_new_lake(lake: ll.Lake) -> None:
    (_root(lake) / "lake.json").unlink()
    with pytest.raises(IntegrityError, match="lake.json is missing"):
        ll.Lake(_root(lake))


def test_damaged_array_metadata_is_refused_before_zarr_reads_it(lake: ll.Lake) -> None:
    """The issue's case: zarr.json's fill value changed and a chunk deleted read back as zeros before."""
    root = _root(lake)
    meta = next(root.rglob("hidden.zarr/layer_1/zarr.json"))
    obj = json.loads(meta.read_text())
    obj["fill_value"] = 0.0
    obj["attributes"].pop("fill", None)
    meta.write_text(json.dumps(obj))
    next(p for p in sorted(meta.parent.rglob("*")) if p.is_file() and p.name != "zarr.json").unlink()
    with pytest.raises(IntegrityError, match="layer_1/zarr.json .* is damaged"):
        ll.Lake(root).read_vectors("wiki", layers=1)
    assert ll.Lake(root).read_vectors("wiki", layers=0).shape[0] > 0  # the other layer stays readable


def test_tokens_tables_are_checked_on_every_read_path(lake: ll.Lake) -> None:
    root = _root(lake)
    tokens = sorted(root.rglob("shards/*/tokens.parquet"))[0]
    table = pq.read_table(tokens)
    nll = table.column("nll").to_numpy(zero_copy_only=False).copy()
    nll[0] = 1.0
    pq.write_table(table.set_column(table.column_names.index("nll"), "nll", pa.array(nll, pa.float32())), tokens)
    fresh = ll.Lake(root)
    with pytest.raises(IntegrityError, match="tokens.parquet is damaged"):
        fresh.tokens("wiki").collect()
    sid = tokens.parent.name
    with pytest.raises(IntegrityError, match="tokens.parquet is damaged"):
        fresh.engine.token_table(EID, sid)


def test_dataset_tables_carry_their_content_checksum(lake: ll.Lake) -> None:
    path = _root(lake) / "datasets" / "wiki" / "docs.parquet"
    table = pq.read_table(path)
    assert table.schema.metadata[b"layerlake.content_crc32c"] == str(
        content_crc32c(table.replace_schema_metadata(None))).encode()
    changed = table.set_column(table.column_names.index("source"), "source",
                               pa.array(["other"] * table.num_rows))
    pq.write_table(changed, path)                        # the old checksum, new values
    with pytest.raises(IntegrityError, match="datasets/wiki/docs.parquet is damaged"):
        ll.Lake(_root(lake)).docs("wiki").collect()
    path.unlink()                                        # linked but gone: damage, not "no dataset"
    with pytest.raises(IntegrityError, match="is missing but dataset 'wiki' is linked"):
        ll.Lake(_root(lake)).read_vectors("wiki")


def test_sealed_tables_round_trip_every_column_type(tmp_path: Path) -> None:
    table = pa.table({"i": [1, None, 3], "s": ["a", None, "c"], "f": [1.5, -0.0, None],
                      "l": [[1], None, []], "st": [{"x": 1}, None, {"x": 2}]})
    fs = ll.Lake(tmp_path / "lake").store.fs
    fs.write_bytes_atomic(sealed_parquet(table), "t.parquet")
    back = read_sealed(fs, "t.parquet")  # (Parquet renames a list's item field: the checksum ignores that name)
    assert back.to_pylist() == table.to_pylist() and content_crc32c(back) == content_crc32c(table)


def test_a_lost_commit_marker_is_damage_for_every_reader(lake: ll.Lake) -> None:
    root = _root(lake)
    sorted((root / "extractions" / EID / "commits").glob("*.json"))[0].unlink()
    fresh = ll.Lake(root)
    with pytest.raises(IntegrityError, match="missing from its committed shards"):
        fresh.read_vectors("wiki")
    with pytest.raises(IntegrityError, match="missing from its committed shards"):
        fresh.metric("dataset_entropy", dataset="wiki", cache=False)
    with pytest.raises(IntegrityError, match="missing from its committed shards"):
        fresh.engine.snapshot().check()                  # what the SQL relations are built from


def test_a_damaged_metric_cache_entry_is_reported_and_recomputed_never_served(lake: ll.Lake) -> None:
    first = lake.metric("dataset_entropy", dataset="wiki")
    entry = sorted((_root(lake) / "metrics").rglob("*.parquet"))[0]
    table = pq.read_table(entry)
    values = table.column("value").to_numpy().copy()
    values[:] = 123.0
    pq.write_table(table.set_column(table.column_names.index("value"), "value", pa.array(values)), entry)
    fresh = ll.Lake(_root(lake))
    problems = [str(p) for p in fresh.verify()]
    assert any(entry.name in p and "metric-cache entry" in p for p in problems), problems
    again = fresh.metric("dataset_entropy", dataset="wiki")
    np.testing.assert_array_equal(again["value"].to_numpy(), first["value"].to_numpy())
    assert 123.0 not in again["value"].to_list()
    assert ll.Lake(_root(lake)).verify() == []           # the recomputed entry replaced the damaged one
