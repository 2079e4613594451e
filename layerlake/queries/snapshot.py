"""What a query sees: the committed state of a lake at one moment.

A :class:`Snapshot` is built from commit markers only (an uncommitted or
orphaned shard folder is invisible) and is immutable: SQL views and vector
scans built from one snapshot keep answering from it. :func:`state_key` is the
cheap fingerprint (directory listings, no file contents) that tells whether a
new snapshot is needed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ..errors import IntegrityError, NotFoundError
from ..store import ExtractionManifest, LakeStore, Placement, layout

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class ExtractionView:
    """One extraction as queries see it: its manifest, aliases and what its committed shards hold."""

    manifest: ExtractionManifest
    aliases: tuple[str, ...]
    placement: Placement

    eid = property(lambda self: self.manifest.extraction_id, doc="the extraction id")
    model = property(lambda self: self.manifest.model_name, doc="the model as given at ingest")
    d_model = property(lambda self: self.manifest.d_model, doc="width of the hidden states")
    dtype = property(lambda self: self.manifest.storage_dtype, doc="storage dtype of the hidden states")

    @functools.cached_property
    def layers(self) -> tuple[int, ...]:
        """Every hidden layer some committed shard holds."""
        return tuple(sorted({l for ls in self.placement.layers_held.values() for l in ls}))

    @functools.cached_property
    def shards(self) -> tuple[str, ...]:
        """The readable committed shards, by id."""
        return tuple(sorted(set(self.placement.index.column("shard").to_pylist())))


def state_key(store: LakeStore) -> tuple[Any, ...]:
    """A fingerprint of what is committed (extractions, shards, aliases, datasets); metric files are apart."""
    fs = store.fs
    ext = []
    for eid in store.extraction_ids():
        ext.append((eid, tuple(store.commit_ids(eid)), tuple(fs.listdir(*layout.aliases_dir(eid)))))
    ds = []
    for name in store.dataset_names():
        ds.append((name, _file_stamp(store, *layout.dataset_docs(name)),
                   tuple(fs.listdir(*layout.links_dir(name)))))
    return tuple(ext), tuple(ds)


def _file_stamp(store: LakeStore, *parts: str) -> tuple[Any, ...]:
    try:
        st = store.fs.stat(*parts)
    except FileNotFoundError:
        return ()
    return st.size, st.mtime, st.version


def metric_files(store: LakeStore) -> dict[str, int]:
    """The metric cache's entries ``<eid>/<key>.parquet`` (relative to ``metrics/``) -> size.

    Only files the cache writes count (layout.metric_file_extraction); anything else under
    ``metrics/`` is not part of the cache and is not read.
    """
    files = store.fs.walk_files(*layout.metrics_dir())
    base = layout.rel(layout.metrics_dir())
    return {rel: size for rel, size in files.items() if layout.metric_file_extraction(f"{base}/{rel}")}


class Snapshot:
    """The committed lake at one moment: extractions, their shards and document windows, datasets."""

    def __init__(self, store: LakeStore, key: tuple[Any, ...] | None = None) -> None:
        self.store = store
        self.key = key if key is not None else state_key(store)
        self.extractions: dict[str, ExtractionView] = {}
        for eid in store.extraction_ids():
            # committed shards only, one consistent listing
            self.extractions[eid] = ExtractionView(manifest=store.extraction(eid), aliases=tuple(store.aliases(eid)),
                                                   placement=store.placement(eid))
        self.dataset_names: list[str] = [d[0] for d in self.key[1]]
        self._datasets: dict[str, pa.Table] = {}
        self._checked = False

    # -- catalog ---------------------------------------------------------------------------
    def dataset(self, name: str) -> pa.Table:
        if name not in self._datasets:
            if name not in self.dataset_names:
                raise NotFoundError(f"no dataset {name!r} in lake {self.store.fs.url}; "
                                    f"known datasets: {', '.join(self.dataset_names) or 'none'}")
            self._datasets[name] = self.store.dataset_table(name)
        return self._datasets[name]

    def doc_index(self, eid: str) -> pa.Table:
        self.check()
        return self.extractions[eid].placement.index

    def check(self) -> None:
        """IntegrityError unless every committed document is readable: the rule for readers of whole extractions.

        Raised for a committed shard whose ``docs.parquet`` or commit marker is
        damaged, and for a dataset linked to an extraction that holds fewer of
        its documents than the link records (a lost commit marker): the SQL
        relations never answer with those documents silently left out.
        """
        if self._checked:
            return
        for eid in self.extractions:
            self.store.check_shards(eid)
        for name in self.dataset_names:
            links = self.store.dataset_links(name)
            if not links:
                continue
            hashes = self.dataset(name).column("doc_hash").to_pylist()
            for eid, link in sorted(links.items()):
                if eid not in self.extractions:
                    raise IntegrityError(f"dataset {name!r} links to extraction {eid}, which is not in lake "
                                         f"{self.store.fs.url}; run `layerlake verify`")
                held = self.extractions[eid].placement.layers_held
                missing = [h for h in hashes if h not in held]
                if len(hashes) - len(missing) < int(link.get("n_docs") or 0):
                    raise self.store.missing_documents_error(eid, None, missing, name)
        self._checked = True

    def dims(self) -> list[int]:
        return sorted({e.d_model for e in self.extractions.values() if e.d_model})

    # -- placements ------------------------------------------------------------------------
    @functools.cached_property
    def windows(self) -> pl.DataFrame:
        """Every committed window, one row per (extraction, shard, doc window)."""
        self.check()
        frames = []
        for eid in self.extractions:
            t = self.extractions[eid].placement.index
            if t.num_rows == 0:
                continue
            frames.append(pl.from_arrow(t.select(["doc_hash", "window", "char_offset", "n_tokens", "row_start",
                                                   "truncated", "shard", "layers"]))
                          .with_columns(pl.lit(eid).alias("extraction")))
        if not frames:
            return pl.DataFrame(schema={"doc_hash": pl.String, "window": pl.Int32, "char_offset": pl.Int64,
                                        "n_tokens": pl.Int32, "row_start": pl.Int64, "truncated": pl.Boolean,
                                        "shard": pl.String,
                                        "layers": pl.List(pl.Int32), "extraction": pl.String})
        return pl.concat(frames, how="vertical_relaxed")

    def _per_extraction(self, part: Any, schema: dict[str, Any]) -> pl.DataFrame:
        self.check()
        frames = [pl.from_arrow(t).with_columns(pl.lit(eid).alias("extraction"))
                  for eid, info in self.extractions.items() if (t := part(info.placement)).num_rows]
        if not frames:
            return pl.DataFrame(schema={"extraction": pl.String, **schema})
        return pl.concat(frames, how="vertical_relaxed").select(["extraction", *schema])

    @functools.cached_property
    def token_placement(self) -> pl.DataFrame:
        """(extraction, doc_hash) -> the shard serving the document's tokens (:mod:`layerlake.store.placement`)."""
        return self._per_extraction(
            lambda p: _pairs(p.token_shards(), "shard", pa.string()),
            {"doc_hash": pl.String, "shard": pl.String})

    @functools.cached_property
    def doc_layers(self) -> pl.DataFrame:
        """(extraction, doc_hash) -> every layer stored for the document, sorted."""
        return self._per_extraction(
            lambda p: _pairs({h: sorted(ls) for h, ls in p.layers_held.items()}, "layers", pa.list_(pa.int32())),
            {"doc_hash": pl.String, "layers": pl.List(pl.Int32)})

    @functools.cached_property
    def vector_placement(self) -> pl.DataFrame:
        """One row per (extraction, layer, doc window) in the shard serving that layer (:meth:`Placement.vector_rows`).

        Columns: extraction, layer, shard, doc_hash, window, row_start, n_tokens.
        """
        return self._per_extraction(
            lambda p: p.vector_rows(),
            {"layer": pl.Int32, "shard": pl.String, "doc_hash": pl.String, "window": pl.Int32, "row_start": pl.Int64,
             "n_tokens": pl.Int32})

    def superseded(self) -> pl.DataFrame:
        """(extraction, shard, doc_hash) of windows whose tokens are served by another shard."""
        w = self.windows.select(["extraction", "shard", "doc_hash"]).unique()
        return w.join(self.token_placement, on=["extraction", "doc_hash", "shard"], how="anti")

    def layer_stored_bytes(self, eid: str, layer: int) -> int:
        """Bytes of the chunks of ``layer`` over the committed shards of ``eid`` (from commit manifests)."""
        total = 0
        prefix = layout.hidden_prefix(layer)
        shards = set(self.extractions[eid].shards)
        for man in self.store.shard_manifests(eid):
            if man.shard not in shards:
                continue
            for rel, info in man.files.items():
                if rel.startswith(prefix) and "/c/" in "/" + rel[len(prefix):]:
                    total += info.size
        return total


def _pairs(by_doc: dict[str, Any], name: str, type_: pa.DataType) -> pa.Table:
    return pa.table({"doc_hash": pa.array(list(by_doc), pa.string()), name: pa.array(list(by_doc.values()), type_)})


def explode_rows(row_start: np.ndarray, n_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window ranges -> (index of the window for each token, shard row of each token)."""
    counts = np.asarray(n_tokens, dtype=np.int64)
    total = int(counts.sum())
    which = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    offsets = np.cumsum(counts) - counts
    rows = np.arange(total, dtype=np.int64) - np.repeat(offsets - np.asarray(row_start, dtype=np.int64), counts)
    return which, rows
