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

from ..errors import IntegrityError, NotFoundError, SpecError
from ..store import LakeStore, parse_layers
from ..store.reader import gather_rows


def dataset_frame(store: LakeStore, dataset: str) -> pa.Table:
    return store.dataset_table(dataset)


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
        what = f"layer {layer}" if layer is not None else "tokens"
        lost = lost_documents_error(store, dataset, eid, layer, len(missing))
        if lost is not None:
            raise lost
        have = store.extraction(eid)
        raise NotFoundError(
            f"{len(missing)} document(s) of dataset {dataset!r} have no {what} in extraction {eid} "
            f"({have['model'].get('model')}); ingest them (e.g. `layerlake ingest ... --layers {layer}`)"
        )
    return loc


def lost_documents_error(store: LakeStore, dataset: str, eid: str, layer: int | None,
                         n_missing: int) -> IntegrityError | None:
    """An IntegrityError when documents the dataset was ingested with are gone (damage, not a request
    for something never computed); None otherwise."""
    damaged = store.damaged_shards(eid)
    if damaged:
        sid, why = sorted(damaged.items())[0]
        return IntegrityError(f"{n_missing} document(s) of dataset {dataset!r} are in damaged shard(s) of extraction "
                              f"{eid} ({len(damaged)} shard(s), e.g. {sid}: {why})")
    link = store.dataset_links(dataset).get(eid)
    if link is not None and (layer is None or layer in link.get("layers", [])):
        return IntegrityError(
            f"{n_missing} document(s) of dataset {dataset!r} that were ingested into extraction {eid} are missing "
            "from its committed shards (a commit marker or shard was lost); run `layerlake verify`, then re-run "
            "the ingest to recompute them"
        )
    return None


def tokens_frame(store: LakeStore, dataset: str, model: str | None = None) -> pl.LazyFrame:
    """One row per stored token of the dataset, in dataset order (a LazyFrame over Parquet)."""
    eid = store.resolve_extraction(dataset, model)
    loc = locate_dataset(store, dataset, eid)
    shards = sorted(set(loc.column("shard").to_pylist()))
    files = [store.checked_url(eid, s, "tokens.parquet") for s in shards]
    order = pl.from_arrow(store.dataset_table(dataset).select(["ordinal", "doc_hash"])).lazy()
    pick = pl.from_arrow(loc.select(["doc_hash", "shard"])).lazy().unique()
    opts = store.fs.storage_options or None
    scans = [pl.scan_parquet(f, storage_options=opts).with_columns(pl.lit(s).alias("shard"))
             for f, s in zip(files, shards)]
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
    stored = sorted({l for m in store.shard_manifests(eid) for l in m["layers"]})
    parsed = parse_layers(layers)
    if parsed == "all":
        return stored
    bad = [l for l in parsed if l not in stored]
    if bad:
        raise NotFoundError(f"layer(s) {bad} are not stored in extraction {eid} ({man['model'].get('model')}); "
                            f"stored layers: {stored}")
    return list(parsed)


def read_vectors(store: LakeStore, dataset: str, model: str | None = None, layers: Any = "all",
                 docs: Sequence[str] | None = None) -> np.ndarray:
    """Float32 numpy ``[layers, tokens, d_model]`` (``[tokens, d_model]`` for an int layer), dataset order."""
    eid = store.resolve_extraction(dataset, model)
    single = isinstance(layers, (int, np.integer)) and not isinstance(layers, bool)
    layer_list = normalize_layers(store, eid, int(layers) if single else layers)
    if not layer_list:
        raise SpecError(f"extraction {eid} stores no layers")
    out = [gather_rows(store, eid, locate_dataset(store, dataset, eid, l, docs), l) for l in layer_list]
    return out[0] if single else np.stack(out)
