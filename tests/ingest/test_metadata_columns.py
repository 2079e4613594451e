"""Metadata columns named like the columns layerlake keeps are stored as ``meta_<name>``, never dropped."""

from __future__ import annotations

import polars as pl

import layerlake as ll


def test_colliding_metadata_columns_are_kept_with_a_prefix(tmp_path, tiny_gpt2, corpus):
    data = pl.DataFrame({"text": corpus[:3], "ordinal": [30, 10, 20], "doc_hash": ["x", "y", "z"],
                         "dataset": ["a", "b", "c"], "label": [1, 0, 1]})
    lake = ll.Lake(tmp_path / "lake")
    lake.ingest(str(tiny_gpt2), data, dataset="d")
    got = lake.sql("SELECT ordinal, meta_ordinal, meta_doc_hash, meta_dataset, label FROM datasets "
                   "ORDER BY ordinal").pl()
    assert got["ordinal"].to_list() == [0, 1, 2]
    assert got["meta_ordinal"].to_list() == [30, 10, 20]
    assert got["meta_doc_hash"].to_list() == ["x", "y", "z"]
    assert got["meta_dataset"].to_list() == ["a", "b", "c"]
    assert got["label"].to_list() == [1, 0, 1]
    assert lake.verify() == []
