"""What the metric engine reads: documents of one layer in blocks, pooled vectors, token samples, losses.

Everything streams one layer at a time, in dataset order, in blocks of whole
documents of at most ``block_bytes`` of float32 (a document larger than that is
one block of its own). Arrays are read by the lake handle's chunk reader
(``store.reader``: only chunks overlapping the rows, each once per block, counted
by ``Lake.track_reads``) as float32; reductions accumulate in float64. Nothing
here computes a metric.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from ..errors import SpecError
from ..store import ArrayRef, LakeStore, layout

DEFAULT_BLOCK_BYTES = 32 << 20  # float32 rows per block; reading one costs ~4x this transiently


@dataclasses.dataclass
class LayerLocation:
    """Windows of an ordered list of documents in one extraction (at one layer, or any layer)."""

    eid: str
    layer: int | None
    hashes: list[str]
    table: pa.Table  # rows of LakeStore.locate, dataset order, windows in order
    doc_start: np.ndarray  # [docs + 1] first row in ``table`` of each document
    tokens: np.ndarray  # [docs] tokens of each document (all windows)

    @property
    def token_start(self) -> np.ndarray:
        """``[docs + 1]`` offset of each document in the concatenated token rows."""
        return np.concatenate([[0], np.cumsum(self.tokens)]).astype(np.int64)

    @property
    def total_tokens(self) -> int:
        return int(self.tokens.sum())


def locate_docs(store: LakeStore, eid: str, hashes: Sequence[str], layer: int | None,
                dataset: str | None = None) -> LayerLocation:
    """Locate ``hashes`` (in that order, documents of ``dataset``) in extraction ``eid``; every one must be there."""
    table = store.locate(eid, list(hashes), layer)
    got = table.column("doc_hash").to_pylist()
    counts = table.column("n_tokens").to_pylist()
    starts = np.zeros(len(hashes) + 1, dtype=np.int64)
    tokens = np.zeros(len(hashes), dtype=np.int64)
    i = -1
    prev = None
    for row, (h, n) in enumerate(zip(got, counts)):
        if h != prev:
            i += 1
            prev = h
            if i >= len(hashes) or hashes[i] != h:
                break
            starts[i] = row
        tokens[i] += int(n)
    found = i + 1
    if found != len(hashes) or len(set(got)) != len(hashes):
        have = set(got)
        raise store.missing_documents_error(eid, layer, [h for h in hashes if h not in have], dataset)
    starts[len(hashes)] = table.num_rows
    return LayerLocation(eid, layer, list(hashes), table, starts, tokens)


def doc_blocks(loc: LayerLocation, d_model: int, block_bytes: int, per_doc_layers: int = 1) -> list[tuple[int, int]]:
    """Document ranges ``[i0, i1)`` whose float32 rows (x ``per_doc_layers``) fit in ``block_bytes``."""
    row_bytes = 4 * max(d_model, 1) * max(per_doc_layers, 1)
    out: list[tuple[int, int]] = []
    i0 = 0
    size = 0
    for i, n in enumerate(loc.tokens.tolist()):
        b = int(n) * row_bytes
        if i > i0 and size + b > block_bytes:
            out.append((i0, i))
            i0, size = i, 0
        size += b
    if i0 < len(loc.tokens):
        out.append((i0, len(loc.tokens)))
    return out


def read_block(store: LakeStore, loc: LayerLocation, i0: int, i1: int) -> np.ndarray:
    """Float32 token rows ``[tokens of docs i0..i1-1, d_model]`` at ``loc.layer``, as one counted scan.

    Per shard, every chunk holding a wanted row is decoded once, however the
    windows are scattered (e.g. every other augmented view, or a dataset whose
    documents lie between others of a shard written for another dataset).
    """
    r0, r1 = int(loc.doc_start[i0]), int(loc.doc_start[i1])
    sub = loc.table.slice(r0, r1 - r0)
    shards = np.asarray(sub.column("shard").to_pylist(), dtype=object)
    starts = np.asarray(sub.column("row_start").to_numpy(), dtype=np.int64)
    counts = np.asarray(sub.column("n_tokens").to_numpy(), dtype=np.int64)
    dst = np.cumsum(counts) - counts
    reader = store.reader
    with reader.scan(f"metric input {loc.eid} layer {loc.layer}") as stats:
        out: np.ndarray | None = None
        for sid in dict.fromkeys(shards.tolist()):
            ref = ArrayRef.hidden(loc.eid, sid, int(loc.layer))
            if out is None:
                out = np.empty((int(counts.sum()),) + reader.shape(ref, stats)[1:], dtype=np.float32)
            m = shards == sid
            reader.fill(out, ref, starts[m], starts[m] + counts[m], dst[m], stats)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def iter_doc_arrays(store: LakeStore, loc: LayerLocation, d_model: int,
                    block_bytes: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(i0, block, offsets)`` per block: rows of docs ``i0..`` and their offsets ``[docs + 1]``."""
    for i0, i1 in doc_blocks(loc, d_model, block_bytes):
        block = read_block(store, loc, i0, i1)
        offsets = np.concatenate([[0], np.cumsum(loc.tokens[i0:i1])]).astype(np.int64)
        yield i0, block, offsets


def pooled_vectors(store: LakeStore, loc: LayerLocation, d_model: int, block_bytes: int) -> np.ndarray:
    """Masked mean over each document's tokens (all windows): ``Float64[docs, d_model]``."""
    out = np.empty((len(loc.hashes), d_model), dtype=np.float64)
    for i0, block, offsets in iter_doc_arrays(store, loc, d_model, block_bytes):
        n = len(offsets) - 1
        counts = np.diff(offsets)
        if np.any(counts == 0):
            raise SpecError(f"extraction {loc.eid}: a document has no tokens; cannot pool it")
        for j in range(n):  # per-document float64 sums: ~7x faster than np.add.reduceat(..., dtype=float64)
            out[i0 + j] = block[offsets[j]:offsets[j + 1]].sum(axis=0, dtype=np.float64) / counts[j]
    return out


def token_sample(total: int, max_tokens: int, seed: int) -> np.ndarray:
    """Sorted token indices (into the concatenated dataset tokens) kept by the engine."""
    if max_tokens <= 0 or total <= max_tokens:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=max_tokens, replace=False)).astype(np.int64)


def sampled_tokens(store: LakeStore, loc: LayerLocation, sample: np.ndarray, d_model: int,
                   block_bytes: int) -> np.ndarray:
    """Float32 rows ``[len(sample), d_model]`` of the sampled tokens, read block by block."""
    out = np.empty((len(sample), d_model), dtype=np.float32)
    starts = loc.token_start
    pos = 0
    for i0, i1 in doc_blocks(loc, d_model, block_bytes):
        lo, hi = starts[i0], starts[i1]
        a, b = np.searchsorted(sample, lo), np.searchsorted(sample, hi)
        if a == b:
            continue
        block = read_block(store, loc, i0, i1)
        out[pos:pos + (b - a)] = block[sample[a:b] - lo]
        pos += b - a
    return out


def doc_losses(store: LakeStore, loc: LayerLocation) -> list[np.ndarray]:
    """Per-token NLL of each located document (windows, then positions, in order), float64.

    Read from ``tokens.parquet`` of the shard each document was located in (a shard
    that only adds layers repeats the same tokens). Missing values (the first token
    of every window; every token of a non-causal model) are dropped.
    """
    import polars as pl

    pick = pl.from_arrow(loc.table.select(["doc_hash", "shard"])).unique()
    frames = []
    for sid in sorted(set(pick["shard"].to_list())):
        toks = store.shard_table(loc.eid, sid, layout.TOKENS_FILE, columns=["doc_hash", "window", "position", "nll"])
        mine = pick.filter(pl.col("shard") == sid).select("doc_hash")
        frames.append(pl.from_arrow(toks).join(mine, on="doc_hash", how="semi"))
    if not frames:
        return [np.zeros(0) for _ in loc.hashes]
    order = pl.DataFrame({"doc_hash": loc.hashes, "_o": np.arange(len(loc.hashes))})
    toks = (pl.concat(frames).join(order, on="doc_hash").drop_nulls("nll")
            .filter(pl.col("nll").is_not_nan()).sort(["_o", "window", "position"]))
    nll = toks["nll"].cast(pl.Float64).to_numpy()
    counts = np.bincount(toks["_o"].to_numpy(), minlength=len(loc.hashes))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [nll[bounds[i]:bounds[i + 1]] for i in range(len(loc.hashes))]
