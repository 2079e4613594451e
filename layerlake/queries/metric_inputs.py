"""What the metric engine reads: documents of one layer in blocks, pooled vectors, token samples, losses.

Everything streams one layer at a time, in dataset order, in blocks of whole
documents of at most ``block_bytes`` of float32 (a document larger than that is
one block of its own). Arrays come from :func:`layerlake.store.reader.gather_rows`
(only chunks overlapping the rows are read) as float32; reductions accumulate
in float64. Nothing here computes a metric.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import NotFoundError, SpecError
from ..store import LakeStore, layout, read_parquet, reader

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
                what: str = "") -> LayerLocation:
    """Locate ``hashes`` (in that order) in extraction ``eid``; every document must be there."""
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
        missing = [h for h in hashes if h not in have]
        where = f"layer {layer}" if layer is not None else "tokens"
        raise NotFoundError(
            f"{len(missing)} document(s) {what}have no {where} in extraction {eid} (e.g. {missing[:2]}); "
            f"ingest them first (layerlake ingest ... --layers {layer if layer is not None else 'all'})"
        )
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


class ArrayHandles:
    """Open zarr arrays per (shard, layer) of one extraction, reused across blocks."""

    def __init__(self, store: LakeStore, eid: str) -> None:
        self.store, self.eid = store, eid
        self._open: dict[int, dict[str, Any]] = {}

    def for_layer(self, layer: int, shards: Sequence[str]) -> dict[str, Any]:
        have = self._open.setdefault(layer, {})
        for s in shards:
            if s not in have:
                have[s] = reader.layer_array(self.store, self.eid, s, layer)
        return have


COALESCE_GAP_ROWS = 8192  # rows a coalesced read may skip in one shard (beyond 2x what is wanted)


def read_block(store: LakeStore, loc: LayerLocation, i0: int, i1: int, handles: ArrayHandles) -> np.ndarray:
    """Float32 token rows ``[tokens of docs i0..i1-1, d_model]`` at ``loc.layer``.

    Windows of one shard that lie close together (the rows in between are at most
    as many as those wanted, or ``COALESCE_GAP_ROWS``) are read as one range and
    picked in memory: a chunk is then decoded once instead of once per window
    (e.g. every other augmented view, or a dataset whose documents are scattered
    over a shard written for another dataset).
    """
    r0, r1 = int(loc.doc_start[i0]), int(loc.doc_start[i1])
    sub = loc.table.slice(r0, r1 - r0)
    shards = sub.column("shard").to_pylist()
    starts = sub.column("row_start").to_pylist()
    counts = sub.column("n_tokens").to_pylist()
    arrays = handles.for_layer(int(loc.layer), sorted(set(shards)))
    layer = int(loc.layer)
    by_shard: dict[str, list[tuple[int, int, int]]] = {}
    dst = 0
    for s, a, n in zip(shards, starts, counts):
        by_shard.setdefault(s, []).append((int(a), int(n), dst))
        dst += int(n)
    if len(by_shard) == 1 and _contiguous(next(iter(by_shard.values()))):
        return reader.gather_rows(store, loc.eid, sub, layer, arrays=arrays)
    out: np.ndarray | None = None
    for s, pieces in by_shard.items():
        lo = min(a for a, _, _ in pieces)
        hi = max(a + n for a, n, _ in pieces)
        want = sum(n for _, n, _ in pieces)
        if len(pieces) > 1 and (hi - lo <= 2 * want or hi - lo - want <= COALESCE_GAP_ROWS):
            span = pa.table({"shard": [s], "row_start": [lo], "n_tokens": [hi - lo]})
            big = reader.gather_rows(store, loc.eid, span, layer, arrays=arrays)
            parts = [(big[a - lo:a - lo + n], d) for a, n, d in pieces]
        else:
            t = pa.table({"shard": [s] * len(pieces), "row_start": [a for a, _, _ in pieces],
                          "n_tokens": [n for _, n, _ in pieces]})
            got = reader.gather_rows(store, loc.eid, t, layer, arrays=arrays)
            offs = np.concatenate([[0], np.cumsum([n for _, n, _ in pieces])])
            parts = [(got[offs[k]:offs[k + 1]], d) for k, (_, _, d) in enumerate(pieces)]
        for rows, d in parts:
            if out is None:
                out = np.empty((dst, rows.shape[1]), dtype=np.float32)
            out[d:d + rows.shape[0]] = rows
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def _contiguous(pieces: list[tuple[int, int, int]]) -> bool:
    return all(pieces[k][0] + pieces[k][1] == pieces[k + 1][0] for k in range(len(pieces) - 1))


def iter_doc_arrays(store: LakeStore, loc: LayerLocation, d_model: int, block_bytes: int,
                    handles: ArrayHandles) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(i0, block, offsets)`` per block: rows of docs ``i0..`` and their offsets ``[docs + 1]``."""
    for i0, i1 in doc_blocks(loc, d_model, block_bytes):
        block = read_block(store, loc, i0, i1, handles)
        offsets = np.concatenate([[0], np.cumsum(loc.tokens[i0:i1])]).astype(np.int64)
        yield i0, block, offsets


def pooled_vectors(store: LakeStore, loc: LayerLocation, d_model: int, block_bytes: int,
                   handles: ArrayHandles) -> np.ndarray:
    """Masked mean over each document's tokens (all windows): ``Float64[docs, d_model]``."""
    out = np.empty((len(loc.hashes), d_model), dtype=np.float64)
    for i0, block, offsets in iter_doc_arrays(store, loc, d_model, block_bytes, handles):
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


def sampled_tokens(store: LakeStore, loc: LayerLocation, sample: np.ndarray, d_model: int, block_bytes: int,
                   handles: ArrayHandles) -> np.ndarray:
    """Float32 rows ``[len(sample), d_model]`` of the sampled tokens, read block by block."""
    out = np.empty((len(sample), d_model), dtype=np.float32)
    starts = loc.token_start
    pos = 0
    for i0, i1 in doc_blocks(loc, d_model, block_bytes):
        lo, hi = starts[i0], starts[i1]
        a, b = np.searchsorted(sample, lo), np.searchsorted(sample, hi)
        if a == b:
            continue
        block = read_block(store, loc, i0, i1, handles)
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
        toks = read_parquet(store.fs, *layout.shard_file(loc.eid, sid, layout.TOKENS_FILE),
                            columns=["doc_hash", "window", "position", "nll"])
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
