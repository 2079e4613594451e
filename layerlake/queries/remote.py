"""Lazy Parquet scans of lake files wherever the lake lives (local, s3://, memory://, ...)."""

from __future__ import annotations

import polars as pl

from ..store import LakeStore, polars_reads_natively, polars_storage_options


def scan_lake_parquet(store: LakeStore, *parts: str) -> pl.LazyFrame:
    """A LazyFrame over one Parquet file of the lake, with projection and predicate pushdown.

    Local files and object stores Polars reads natively (s3, gcs, azure) are
    scanned by Polars with the lake's credentials mapped to its option names;
    other fsspec filesystems go through a pyarrow dataset on the fsspec filesystem.
    """
    fs = store.fs
    if polars_reads_natively(fs):
        return pl.scan_parquet(fs.url_of(*parts), storage_options=polars_storage_options(fs))
    import pyarrow.dataset as ds
    dataset = ds.dataset(fs.path(*parts), format="parquet", filesystem=fs.arrow_filesystem)
    return pl.scan_pyarrow_dataset(dataset)
