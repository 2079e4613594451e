"""Polars frames and numpy reads over a dataset's committed data, in dataset order.

Rows come in the dataset's order: documents in the order they were given at
ingest (even when they were computed earlier for another dataset), windows in
order, tokens by position. Padding is never a row.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import NotFoundError, SpecError
from ..store import ArrayRef, LakeStore, LayerSelection, layout
from .remote import scan_lake_parquet


def locate_dataset(store: LakeStore, dataset: str, eid: str, layer: int | None = None,
                   docs: Sequence[str] | None = None) -> pa.Table:
    """Windows of the dataset's documents (all, or ``docs``) in dataset order, with their shards."""
    table = store.dataset_table(dataset)
    hashes = table.column("doc_hash").to_pylist()
    if docs is not None:
        wanted = set(docs)
        unknown = wanted - set(hashes)
        if unknown:
            raise NotFoundError(f"document(s) {sorted(unknown)[:3]} are not in dataset {dataset!r}")
        hashes = [h for h in hashes if h in wanted]
    loc = store.locate(eid, hashes, layer)
    found = set(loc.column("doc_hash").to_pylist())
    missing = [h for h in hashes if h not in found]
    if missing:
        raise store.missing_documents_error(eid, layer, missing, dataset)
    return loc


def tokens_frame(store: LakeStore, dataset: str, model: str | None = None) -> pl.LazyFrame:
    """One row per stored token of the dataset, in dataset order (a LazyFrame over Parquet)."""
    eid = store.resolve_extraction(dataset, model)
    loc = locate_dataset(store, dataset, eid)
    shards = sorted(set(loc.column("shard").to_pylist()))
    for s in shards:  # checks each tokens.parquet against its commit marker's crc32c (once per handle)
        store.checked_url(eid, s, layout.TOKENS_FILE)
    order = pl.from_arrow(store.dataset_table(dataset).select(["ordinal", "doc_hash"])).lazy()
    pick = pl.from_arrow(loc.select(["doc_hash", "shard"])).lazy().unique()
    scans = [scan_lake_parquet(store, *layout.shard_file(eid, s, layout.TOKENS_FILE))
             .with_columns(pl.lit(s).alias("shard")) for s in shards]
    toks = pl.concat(scans, how="vertical") if scans else pl.LazyFrame()
    return (toks.join(pick, on=["doc_hash", "shard"], how="inner")
            .join(order, on="doc_hash", how="inner")
            .sort(["ordinal", "window", "position"])
            .select(["ordinal", "doc_hash", "window", "position", "token_id", "token", "nll", "shard", "row"])
            .with_columns(pl.lit(eid).alias("extraction")))


def docs_frame(store: LakeStore, dataset: str, model: str | None = None) -> pl.LazyFrame:
    """The dataset's documents with metadata (and, with ``model``, token counts)."""
    frame = pl.from_arrow(store.dataset_table(dataset)).lazy()
    if model is None and len(store.dataset_links(dataset)) != 1:
        return frame
    eid = store.resolve_extraction(dataset, model)
    loc = pl.from_arrow(locate_dataset(store, dataset, eid).select(["doc_hash", "n_tokens", "window"]))
    counts = loc.group_by("doc_hash").agg(pl.col("n_tokens").sum(), pl.len().alias("n_windows")).lazy()
    return frame.join(counts, on="doc_hash", how="left").sort("ordinal").with_columns(pl.lit(eid).alias("extraction"))


def normalize_layers(store: LakeStore, eid: str, layers: Any) -> list[int]:
    man = store.extraction(eid)
    stored = sorted({l for m in store.shard_manifests(eid) for l in m.layers})
    return LayerSelection.parse(layers).among(stored, f"are not stored in extraction {eid} ({man.model_name})")


def read_vectors(store: LakeStore, dataset: str, model: str | None = None, layers: Any = "all",
                 docs: Sequence[str] | None = None) -> np.ndarray:
    """Float32 numpy ``[layers, tokens, d_model]`` (``[tokens, d_model]`` for an int layer), dataset order.

    Streams chunk by chunk into the preallocated result: only chunks holding
    the selected rows are read, in blocks of bounded size, converted to
    float32 while copied into place (no whole layer is held in its stored dtype).
    """
    eid = store.resolve_extraction(dataset, model)
    single = isinstance(layers, (int, np.integer)) and not isinstance(layers, bool)
    layer_list = normalize_layers(store, eid, int(layers) if single else layers)
    if not layer_list:
        raise SpecError(f"extraction {eid} stores no layers")
    locs = [locate_dataset(store, dataset, eid, l, docs) for l in layer_list]
    counts = [int(pc.sum(loc.column("n_tokens")).as_py() or 0) for loc in locs]
    if len(set(counts)) > 1:
        raise NotFoundError(f"layers {layer_list} of extraction {eid} hold different token counts {counts} for "
                            f"dataset {dataset!r}; run `layerlake verify`")
    d = store.extraction(eid).d_model
    out = np.empty((len(layer_list), counts[0], d), dtype=np.float32)
    reader = store.reader
    with reader.scan(f"read_vectors[{dataset}]") as stats:
        for li, (layer, loc) in enumerate(zip(layer_list, locs)):
            n_tok = np.asarray(loc.column("n_tokens").to_numpy(), dtype=np.int64)
            starts = np.asarray(loc.column("row_start").to_numpy(), dtype=np.int64)
            dst = np.cumsum(n_tok) - n_tok
            shards = np.asarray(loc.column("shard").to_pylist(), dtype=object)
            for sid in dict.fromkeys(shards.tolist()):
                m = shards == sid
                reader.fill(out[li], ArrayRef.hidden(eid, sid, layer), starts[m], starts[m] + n_tok[m], dst[m], stats)
    return out[0] if single else out
