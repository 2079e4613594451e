"""Computing the units of a :class:`~layerlake.queries.metric_plan.MetricPlan` that are not cached.

One function per input kind. Each reads with :mod:`.metric_inputs` (one layer
at a time, dataset order, blocks of documents) or, for Jacobian sketches,
:func:`.jacobians.sketch_metric_rows`, calls the registered pure function
(float32 arrays in; the metric functions compute in float64), and returns
cache rows. Document-granularity metrics use the registry's optional
``batched`` twin on documents of equal token count. Units are written to the
cache as soon as they are done, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import IntegrityError, SpecError
from ..progress import track
from ..store import LakeStore
from . import metric_cache as mc
from .jacobians import sketch_metric_rows
from .metric_inputs import (
    LayerLocation,
    doc_blocks,
    doc_losses,
    iter_doc_arrays,
    locate_docs,
    pooled_vectors,
    read_block,
    sampled_tokens,
    token_sample,
)
from .metric_plan import PER_DOC_KINDS, MetricPlan, Unit, params_json

log = logging.getLogger(__name__)

Row = dict[str, Any]
BATCH_BYTES = 16 << 20  # float64 bytes of one stacked batch for a metric's batched twin


def compute_units(store: LakeStore, plan: MetricPlan) -> dict[str, pa.Table]:
    """Tables of every unit of ``plan``: read from cache, or computed (and cached)."""
    out: dict[str, pa.Table] = {}
    for u in plan.units:
        if u.cached:
            try:
                out[u.key] = mc.read_unit(store, u.eid, u.key)
            except (IntegrityError, OSError) as exc:  # a damaged or unreadable entry is never served: recompute it
                log.warning("cached metric unit %s/%s is damaged (%s); recomputing", u.eid, u.key, exc)
                u.cached = False
    todo = plan.to_compute
    if not todo:
        log.info("metric %s: all %d unit(s) from cache", plan.defn.name, len(plan.units))
        return out
    ctx = _Context(store, plan)
    fn = _KIND[plan.kind]
    with _blas_threads(1 if plan.kind in PER_DOC_KINDS else None), \
            track(f"{plan.defn.name}", total=len(todo), unit="units") as tr:
        def done(u: Unit, rows: list[Row]) -> None:
            common = {"extraction": u.eid, "model": u.model, "dataset": plan.request.dataset,
                      "metric": plan.defn.name, "version": plan.defn.version,
                      "params": params_json(plan.unit_params(u))}
            table = mc.unit_table([{"layer": u.layer, "layer2": u.layer2, **r} for r in rows], common)
            if plan.request.cache is not False:
                mc.write_unit(store, u.eid, u.key, table)
            out[u.key] = table
            tr.advance(1)

        fn(ctx, todo, done)
    log.info("metric %s: %d unit(s) computed, %d from cache", plan.defn.name, len(todo), len(plan.units) - len(todo))
    return out


@contextlib.contextmanager
def _blas_threads(limit: int | None) -> Iterator[None]:
    """Cap BLAS threads while computing many small per-document problems.

    A 128 x 128 eigendecomposition gains nothing from a second BLAS thread, and on a
    busy machine the spinning threads cost up to 10x (measured with OpenBLAS:
    2.7 ms vs 46 ms per prompt-entropy call at load 7 on 2 cores). Layer-level
    metrics (d x d decompositions) keep the default.
    """
    if limit is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: scikit-learn brings it
        yield
        return
    with threadpool_limits(limits=limit, user_api="blas"):
        yield


class _Context:
    """Shared state of one computation: locations and small caches of reduced arrays."""

    def __init__(self, store: LakeStore, plan: MetricPlan) -> None:
        self.store = store
        self.plan = plan
        self.params = plan.params
        self.block_bytes = plan.request.block_bytes
        self._locs: dict[tuple[str, int | None], LayerLocation] = {}
        self._arrays: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()

    def d(self, eid: str) -> int:
        return self.plan.extractions[eid].d_model

    def loc(self, eid: str, layer: int | None) -> LayerLocation:
        key = (eid, layer)
        if key not in self._locs:
            self._locs[key] = locate_docs(self.store, eid, self.plan.docs, layer, dataset=self.plan.request.dataset)
        return self._locs[key]

    def remember(self, key: tuple[Any, ...], make: Callable[[], np.ndarray], keep: int = 3) -> np.ndarray:
        """A small LRU of reduced arrays (pooled vectors, token samples) for layer pairs."""
        if key in self._arrays:
            self._arrays.move_to_end(key)
            return self._arrays[key]
        value = make()
        self._arrays[key] = value
        while len(self._arrays) > keep:
            self._arrays.popitem(last=False)
        return value

    def call(self, *arrays: Any) -> float:
        return _scalar(self.plan.defn.fn(*arrays, **self.params), self.plan.defn.name)


def _scalar(value: Any, name: str) -> float:
    arr = np.asarray(value)
    if arr.ndim != 0:
        raise SpecError(f"metric {name!r} returned an array of shape {arr.shape}; the engine stores one number "
                        "per document / layer (call the function directly for arrays)")
    return float(arr)


def _doc_rows(hashes: list[str], values: np.ndarray, sizes: np.ndarray) -> list[Row]:
    """Per-document rows + the aggregate row (mean over finite values, n = their count)."""
    rows: list[Row] = [{"doc_hash": h, "value": float(v), "n": int(s)} for h, v, s in zip(hashes, values, sizes)]
    finite = values[np.isfinite(values)]
    rows.append({"doc_hash": None, "value": float(finite.mean()) if finite.size else math.nan,
                 "n": int(finite.size)})
    return rows


# -- doc_hidden -------------------------------------------------------------------------------
def _apply_docs(ctx: _Context, docs: list[np.ndarray]) -> np.ndarray:
    defn = ctx.plan.defn
    out = np.empty(len(docs), dtype=np.float64)
    if defn.batched is None:
        for j, h in enumerate(docs):
            out[j] = ctx.call(h)
        return out
    by_len: dict[int, list[int]] = {}
    for j, h in enumerate(docs):
        by_len.setdefault(h.shape[0], []).append(j)
    for idx in by_len.values():
        if len(idx) == 1:
            out[idx[0]] = ctx.call(docs[idx[0]])
            continue
        n_tok, d = docs[idx[0]].shape
        step = max(1, BATCH_BYTES // max(8 * n_tok * d, 1))  # float64 working copies stay bounded
        for s in range(0, len(idx), step):
            part = idx[s:s + step]
            vals = np.asarray(defn.batched(np.stack([docs[j] for j in part]), **ctx.params), dtype=np.float64)
            if vals.shape != (len(part),):
                raise SpecError(f"metric {defn.name!r}: batched path returned shape {vals.shape}, "
                                f"expected ({len(part)},)")
            out[part] = vals
    return out


def _doc_hidden(ctx: _Context, units: list[Unit], done: Callable[[Unit, list[Row]], None]) -> None:
    for u in units:
        loc = ctx.loc(u.eid, u.layer)
        values = np.full(len(loc.hashes), np.nan)
        for i0, block, offsets in iter_doc_arrays(ctx.store, loc, ctx.d(u.eid), ctx.block_bytes):
            docs = [block[offsets[j]:offsets[j + 1]] for j in range(len(offsets) - 1)]
            values[i0:i0 + len(docs)] = _apply_docs(ctx, docs)
        done(u, _doc_rows(loc.hashes, values, loc.tokens))


# -- doc_nll ----------------------------------------------------------------------------------
def _doc_nll(ctx: _Context, units: list[Unit], done: Callable[[Unit, list[Row]], None]) -> None:
    for u in units:
        loc = ctx.loc(u.eid, None)
        losses = doc_losses(ctx.store, loc)
        if not any(len(x) for x in losses):
            raise SpecError(f"extraction {u.eid} ({u.model}) stores no per-token losses (not a causal LM?); "
                            f"metric {ctx.plan.defn.name!r} needs them")
        values = np.array([ctx.call(x) if len(x) else np.nan for x in losses], dtype=np.float64)
        done(u, _doc_rows(loc.hashes, values, np.array([len(x) for x in losses])))


# -- pooled / token_cloud / views -----------------------------------------------------------------
def _pooled(ctx: _Context, eid: str, layer: int) -> np.ndarray:
    return ctx.remember(("pooled", eid, layer), lambda: pooled_vectors(
        ctx.store, ctx.loc(eid, layer), ctx.d(eid), ctx.block_bytes))


def _pooled_kind(ctx: _Context, units: list[Unit], done: Callable[[Unit, list[Row]], None]) -> None:
    for u in units:
        x = _pooled(ctx, u.eid, int(u.layer))
        done(u, [{"doc_hash": None, "value": ctx.call(x), "n": x.shape[0]}])


def _sample(ctx: _Context, eid: str, layer: int, sample: np.ndarray) -> np.ndarray:
    return ctx.remember(("tokens", eid, layer), lambda: sampled_tokens(
        ctx.store, ctx.loc(eid, layer), sample, ctx.d(eid), ctx.block_bytes))


def _token_cloud(ctx: _Context, units: list[Unit], done: Callable[[Unit, list[Row]], None]) -> None:
    opts = ctx.plan.options
    for u in units:
        loc = ctx.loc(u.eid, u.layer)
        sample = token_sample(loc.total_tokens, opts["max_tokens"], opts["sample_seed"])
        x = _sample(ctx, u.eid, int(u.layer), sample)
        done(u, [{"doc_hash": None, "value": ctx.call(x), "n": x.shape[0]}])


def _views(ctx: _Context, units: list[Unit], done: Callable[[Unit, list[Row]], None]) -> None:
    matrix = ctx.plan.view_matrix or []
    n_orig, n_views = len(matrix), len(matrix[0]) if matrix else 0
    for u in units:
        pooled = _pooled(ctx, u.eid, int(u.layer))  # rows follow plan.docs = the flattened view matrix
        v = pooled.reshape(n_orig, n_views, pooled.shape[1])
        done(u, [{"doc_hash": None, "value": ctx.call(v), "n": n_orig}])


# -- layer pairs ------------------------------------------------------------------------------
def _layer_pair(ctx: _Context, units: list[Unit], done: Callable[[Unit, list[Row]], None]) -> None:
    opts = ctx.plan.options
    for u in units:
        eid_b = u.eid2 or u.eid
        if opts["rows"] == "pooled":
            x = _pooled(ctx, u.eid, int(u.layer))
            y = _pooled(ctx, eid_b, int(u.layer2))
        else:
            loc_a, loc_b = ctx.loc(u.eid, u.layer), ctx.loc(eid_b, u.layer2)
            if not np.array_equal(loc_a.tokens, loc_b.tokens) or not _same_tokenizer(ctx, u.eid, eid_b):
                raise SpecError(f"rows='tokens' needs the same tokens in both inputs, but {u.model} and "
                                f"{u.model2 or u.model} tokenise the documents differently; use rows='pooled'")
            sample = token_sample(loc_a.total_tokens, opts["max_tokens"], opts["sample_seed"])
            x = _sample(ctx, u.eid, int(u.layer), sample)
            y = _sample(ctx, eid_b, int(u.layer2), sample)
        done(u, [{"doc_hash": None, "value": ctx.call(x, y), "n": x.shape[0]}])


def _same_tokenizer(ctx: _Context, a: str, b: str) -> bool:
    if a == b:
        return True
    ta = ctx.store.extraction(a).tokenizer_hash
    tb = ctx.store.extraction(b).tokenizer_hash
    return ta is None or tb is None or ta == tb


# -- trajectories -----------------------------------------------------------------------------
def _doc_trajectory(ctx: _Context, units: list[Unit], done: Callable[[Unit, list[Row]], None]) -> None:
    for u in units:
        layers = [int(l) for _, l in u.reads]
        locs = [ctx.loc(u.eid, l) for l in layers]
        for loc in locs[1:]:
            if not np.array_equal(loc.tokens, locs[0].tokens):
                raise SpecError(f"extraction {u.eid}: documents have different token counts across layers "
                                f"{layers}; run `layerlake verify`")
        d = ctx.d(u.eid)
        values = np.full(len(locs[0].hashes), np.nan)
        for i0, i1 in doc_blocks(locs[0], d, ctx.block_bytes, per_doc_layers=len(layers)):
            stack = np.stack([read_block(ctx.store, loc, i0, i1) for loc in locs])  # [layers, tokens, d]
            offsets = np.concatenate([[0], np.cumsum(locs[0].tokens[i0:i1])])
            for j in range(i1 - i0):
                values[i0 + j] = ctx.call(stack[:, offsets[j]:offsets[j + 1]])
        done(u, _doc_rows(locs[0].hashes, values, locs[0].tokens))


# -- Jacobian sketches ------------------------------------------------------------------------
def _jacobian_sketch(ctx: _Context, units: list[Unit], done: Callable[[Unit, list[Row]], None]) -> None:
    for u in units:
        rows = sketch_metric_rows(ctx.store, ctx.plan.request.dataset, u.eid, u.extra["sketch"], u.unit["blocks"],
                                  ctx.plan.defn, ctx.params, docs=ctx.plan.docs)
        done(u, [{"doc_hash": None, **r} for r in rows])


_KIND: Mapping[str, Callable[[_Context, list[Any], Callable[[Any, list[Row]], None]], None]] = {
    "doc_hidden": _doc_hidden,
    "doc_nll": _doc_nll,
    "pooled": _pooled_kind,
    "token_cloud": _token_cloud,
    "views": _views,
    "layer_pair": _layer_pair,
    "doc_trajectory": _doc_trajectory,
    "jacobian_sketch": _jacobian_sketch,
}
