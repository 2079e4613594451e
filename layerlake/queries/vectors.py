"""Vectors as a lazy relation: a Polars IO source with projection and predicate pushdown into Zarr chunks.

One row per stored token x layer, with the hidden state as ``vec``
(``Array(Float32, d_model)``; a ``List(Float32)`` when the relation mixes
models of different widths). The same source backs ``lake.vectors(...)`` and
the SQL relations ``vectors`` / ``dataset_vectors`` (DuckDB hands its filters
and column list to the Polars scan, which hands them here).

A scan runs in three steps, each narrowed by the parts of the predicate it can
evaluate (the predicate is split at its top-level ``&``):

1. windows: (extraction, layer, shard, document window) placements from the
   commit markers, filtered by conjuncts on dataset/ordinal/extraction/model/
   layer/shard/doc_hash/window;
2. tokens: windows expanded to shard rows; ``position``/``token``/``token_id``/
   ``nll`` are fetched from ``tokens.parquet`` only when asked or filtered on;
3. vectors: only when ``vec`` is projected or filtered on, the selected rows
   are read chunk by chunk (:class:`layerlake.store.ChunkReader`).

A conjunct on ``dataset``, ``model``, ``extraction`` or ``layer`` that no value
in the lake satisfies is an error naming the valid values (a typo should not
look like an empty answer).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from ..errors import NotFoundError
from ..store import ArrayRef
from .snapshot import Snapshot, explode_rows

if TYPE_CHECKING:
    from .engine import QueryEngine

log = logging.getLogger(__name__)

WINDOW_COLUMNS = ("dataset", "ordinal", "extraction", "model", "layer", "doc_hash", "window", "shard")
TOKEN_COLUMNS = ("position", "token_id", "token", "nll")
CATALOG_COLUMNS = ("dataset", "model", "extraction", "layer")
BATCH_BYTES = 64 << 20
LARGE_SCAN_BYTES = 4 << 30

_DTYPES: dict[str, Any] = {
    "dataset": pl.String, "ordinal": pl.Int64, "extraction": pl.String, "model": pl.String, "layer": pl.Int32,
    "doc_hash": pl.String, "window": pl.Int32, "position": pl.Int32, "token_id": pl.Int32, "token": pl.String,
    "nll": pl.Float32, "shard": pl.String, "row": pl.Int64, "norm": pl.Float32,
}
VECTOR_COLUMNS = ("vec", "norm")


@dataclasses.dataclass(frozen=True)
class VectorScope:
    """Which rows a vector relation covers.

    extractions: in scope; layers: allowed layers per extraction (absent = all
    stored), in output order; dataset: ``None`` (dataset-independent: one row
    per stored token), ``"*"`` (one row per token of every dataset document) or
    a dataset name (its documents, in dataset order).
    """

    extractions: tuple[str, ...]
    layers: tuple[tuple[str, tuple[int, ...]], ...] = ()
    dataset: str | None = None
    name: str = "vectors"

    def layers_of(self, eid: str) -> tuple[int, ...] | None:
        for e, ls in self.layers:
            if e == eid:
                return ls
        return None


def split_conjuncts(expr: pl.Expr) -> list[pl.Expr]:
    """``a & (b & c)`` -> ``[a, b, c]``; anything else -> ``[expr]``."""
    try:
        tree = json.loads(expr.meta.serialize(format="json"))
    except Exception:  # an expression polars cannot serialise is kept whole
        return [expr]
    top = tree.get("BinaryExpr") if isinstance(tree, dict) else None
    if isinstance(top, dict) and top.get("op") in ("And", "LogicalAnd"):
        parts = expr.meta.pop()
        if len(parts) == 2:
            return [c for p in reversed(parts) for c in split_conjuncts(p)]
    return [expr]


def _roots(expr: pl.Expr) -> set[str]:
    try:
        return set(expr.meta.root_names())
    except Exception:
        return {"vec"}  # unknown: evaluate last, when every column exists


class VectorSource:
    """A lazily evaluated vector relation over one snapshot of the lake."""

    def __init__(self, engine: "QueryEngine", snapshot: Snapshot, scope: VectorScope) -> None:
        self.engine = engine
        self.snapshot = snapshot
        self.scope = scope
        dims = sorted({snapshot.extractions[e].d_model for e in scope.extractions})
        self.d_model: int | None = dims[0] if len(dims) == 1 else None
        self._windows: pl.DataFrame | None = None

    # -- schema ----------------------------------------------------------------------------
    def columns(self) -> list[str]:
        cols = ["extraction", "model", "layer", "doc_hash", "window", "position", "token_id", "token", "nll",
                "shard", "row", "norm", "vec"]
        if self.scope.dataset is not None:
            cols = ["dataset", "ordinal"] + cols
        return cols

    def vec_dtype(self) -> Any:
        return pl.Array(pl.Float32, self.d_model) if self.d_model else pl.List(pl.Float32)

    def schema(self) -> dict[str, Any]:
        return {c: (self.vec_dtype() if c == "vec" else _DTYPES[c]) for c in self.columns()}

    def lazy(self) -> pl.LazyFrame:
        from polars.io.plugins import register_io_source

        detail = (f"{len(self.scope.extractions)} extraction(s), d_model={self.d_model or 'mixed'}, "
                  f"dataset={self.scope.dataset or '-'}; filters on {', '.join(WINDOW_COLUMNS)} prune windows, "
                  "only chunks of selected rows are read")
        try:
            return register_io_source(self._io, schema=self.schema(), explain_name=f"layerlake {self.scope.name}",
                                      explain_detail=detail)
        except TypeError:  # polars without explain labels
            return register_io_source(self._io, schema=self.schema())

    # -- step 1: windows -------------------------------------------------------------------
    def windows(self) -> pl.DataFrame:
        """Placements in scope, in output order (without filters)."""
        if self._windows is not None:
            return self._windows
        snap, scope = self.snapshot, self.scope
        w = snap.vector_placement.filter(pl.col("extraction").is_in(list(scope.extractions)))
        rank_rows = []
        for eid in scope.extractions:
            allowed = scope.layers_of(eid)
            layers = allowed if allowed is not None else snap.extractions[eid].layers
            rank_rows += [(eid, int(l), i) for i, l in enumerate(layers)]
        ranks = pl.DataFrame(rank_rows, schema={"extraction": pl.String, "layer": pl.Int32, "_layer_rank": pl.Int32},
                             orient="row")
        w = w.join(ranks, on=["extraction", "layer"], how="inner")
        models = pl.DataFrame({"extraction": list(scope.extractions),
                               "model": [snap.extractions[e].model for e in scope.extractions]},
                              schema={"extraction": pl.String, "model": pl.String})
        w = w.join(models, on="extraction", how="left")
        if scope.dataset is not None:
            names = snap.dataset_names if scope.dataset == "*" else [scope.dataset]
            ds = [pl.from_arrow(snap.dataset(n).select(["ordinal", "doc_hash"])).with_columns(
                pl.lit(n).alias("dataset")) for n in names]
            docs = (pl.concat(ds, how="vertical_relaxed") if ds else
                    pl.DataFrame(schema={"ordinal": pl.Int64, "doc_hash": pl.String, "dataset": pl.String}))
            w = w.join(docs, on="doc_hash", how="inner")
            order = ["dataset", "extraction", "_layer_rank", "ordinal", "window"]
        else:
            order = ["extraction", "_layer_rank", "shard", "row_start"]
        w = w.sort(order).with_columns(pl.col("layer").cast(pl.Int32), pl.col("window").cast(pl.Int32))
        self._windows = w
        return w

    def _check_catalog(self, conj: pl.Expr, column: str) -> None:
        snap = self.snapshot
        if column == "dataset":
            known = pl.DataFrame({"dataset": snap.dataset_names}, schema={"dataset": pl.String})
        elif column == "model":
            known = pl.DataFrame({"model": sorted({e.model for e in snap.extractions.values()})},
                                 schema={"model": pl.String})
        elif column == "extraction":
            known = pl.DataFrame({"extraction": sorted(snap.extractions)}, schema={"extraction": pl.String})
        else:
            known = pl.DataFrame({"layer": sorted({l for e in snap.extractions.values() for l in e.layers})},
                                 schema={"layer": pl.Int32})
        try:
            hit = known.filter(conj).height
        except Exception:  # not evaluable on the catalog alone: no check
            return
        if hit == 0:
            valid = known.get_column(column).to_list()
            extra = ""
            if column == "model":
                extra = " (aliases: " + "; ".join(
                    f"{e.model}: {', '.join(e.aliases)}" for e in snap.extractions.values()) + ")"
            raise NotFoundError(f"no {column} in lake {snap.store.fs.url} satisfies the filter {conj}; "
                                f"valid {column}s: {', '.join(map(str, valid)) or 'none'}{extra}")

    # -- the IO source ---------------------------------------------------------------------
    def _io(self, with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
            batch_size: int | None) -> Iterator[pl.DataFrame]:
        schema = self.schema()
        out_cols = list(with_columns) if with_columns is not None else list(schema)
        if n_rows == 0:
            yield pl.DataFrame(schema={c: schema[c] for c in out_cols})
            return
        with self.engine.store.reader.scan(self.scope.name) as stats:
            yield from self._scan(out_cols, predicate, n_rows, stats)

    def _scan(self, out_cols: list[str], predicate: pl.Expr | None, n_rows: int | None,
              stats: Any) -> Iterator[pl.DataFrame]:
        schema = self.schema()
        conjuncts = split_conjuncts(predicate) if predicate is not None else []
        window_level: list[pl.Expr] = []
        row_level: list[pl.Expr] = []
        token_level: list[pl.Expr] = []
        vec_level: list[pl.Expr] = []
        window_cols = set(WINDOW_COLUMNS) & set(schema)
        for c in conjuncts:
            roots = _roots(c)
            if roots <= window_cols:
                window_level.append(c)
                if len(roots) == 1 and next(iter(roots)) in CATALOG_COLUMNS:
                    self._check_catalog(c, next(iter(roots)))
            elif roots <= window_cols | {"row"}:
                row_level.append(c)
            elif roots <= set(schema) - set(VECTOR_COLUMNS):
                token_level.append(c)
            else:
                vec_level.append(c)
        used = set(out_cols) | {r for c in token_level + vec_level for r in _roots(c)}
        need_tokens = bool(used & set(TOKEN_COLUMNS))
        need_vec = bool(used & set(VECTOR_COLUMNS))

        w = self.windows()
        for c in window_level:
            w = w.filter(c)
        which, rows = explode_rows(w.get_column("row_start").to_numpy(), w.get_column("n_tokens").to_numpy())
        keep = [c for c in w.columns if c in window_cols or c in ("extraction", "shard", "layer")]
        e = w.select(keep)[which].with_columns(pl.Series("row", rows, dtype=pl.Int64))
        for c in row_level:
            e = e.filter(c)
        if need_tokens:
            e = self._attach_tokens(e)
        for c in token_level:
            e = e.filter(c)
        if n_rows is not None and not vec_level:
            e = e.head(n_rows)
        if not need_vec:
            yield e.select(out_cols)
            return
        if e.height and "vec" in used:
            size = e.height * 4 * max(self.snapshot.extractions[x].d_model for x in e["extraction"].unique())
            if size > LARGE_SCAN_BYTES:
                log.warning("%s: materialising %.1f GB of vectors (%s rows); filter on layer, doc_hash or position, "
                            "or ask for norm instead of vec, to read less", self.scope.name, size / 1e9,
                            f"{e.height:,}")
        produced = 0
        for batch in self._batches(e):
            df = batch.with_columns(self._read_vec(batch, stats, "vec" in used, "norm" in used))
            for c in vec_level:
                df = df.filter(c)
            if n_rows is not None:
                df = df.head(n_rows - produced)
                produced += df.height
            yield df.select(out_cols)
            if n_rows is not None and produced >= n_rows:
                return
        if e.height == 0:
            yield pl.DataFrame(schema={c: schema[c] for c in out_cols})

    # -- step 2: tokens --------------------------------------------------------------------
    def _attach_tokens(self, e: pl.DataFrame) -> pl.DataFrame:
        if e.height == 0:
            return e.with_columns([pl.lit(None, dtype=_DTYPES[c]).alias(c) for c in TOKEN_COLUMNS])
        e = e.with_row_index("_i")
        groups = e.group_by(["extraction", "shard"], maintain_order=True).agg(pl.col("_i"), pl.col("row"))
        pieces = []
        for eid, sid, idx, rows in groups.iter_rows():
            table = self.engine.token_table(eid, sid)
            sub = pl.from_arrow(table.take(pa.array(rows, pa.int64())).select(list(TOKEN_COLUMNS)))
            pieces.append(sub.with_columns(pl.Series("_i", idx, dtype=pl.UInt32)))
        toks = pl.concat(pieces, how="vertical_relaxed").sort("_i")
        return e.drop("_i").hstack(toks.drop("_i").select(
            [pl.col(c).cast(_DTYPES[c]) for c in TOKEN_COLUMNS]))

    # -- step 3: vectors -------------------------------------------------------------------
    def _batches(self, e: pl.DataFrame) -> Iterator[pl.DataFrame]:
        if e.height == 0:
            return
        ext = e.get_column("extraction")
        bounds = [0] + (np.flatnonzero((ext != ext.shift(1)).fill_null(False).to_numpy()).tolist()) + [e.height]
        bounds = sorted(set(bounds))
        for a, b in zip(bounds[:-1], bounds[1:]):
            d = self.snapshot.extractions[ext[a]].d_model or 1
            step = max(1024, BATCH_BYTES // (4 * d))
            for s in range(a, b, step):
                yield e.slice(s, min(step, b - s))

    def _read_vec(self, batch: pl.DataFrame, stats: Any, want_vec: bool, want_norm: bool) -> list[pl.Series]:
        eid0 = batch.get_column("extraction")[0]
        d = self.snapshot.extractions[eid0].d_model
        out = np.empty((batch.height, d), dtype=np.float32)
        groups = (batch.select(["extraction", "shard", "layer", "row"]).with_row_index("_i")
                  .group_by(["extraction", "shard", "layer"], maintain_order=True)
                  .agg(pl.col("_i"), pl.col("row")))
        for eid, sid, layer, idx, rows in groups.iter_rows():
            dst = np.asarray(idx, dtype=np.int64)
            src = np.asarray(rows, dtype=np.int64)
            s0, s1, d0 = to_ranges(src, dst)
            self.engine.store.reader.fill(out, ArrayRef.hidden(eid, sid, int(layer)), s0, s1, d0, stats)
        cols = []
        if want_norm:
            norm = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64)).astype(np.float32)
            cols.append(pl.Series("norm", norm, dtype=pl.Float32))
        if want_vec:
            if self.d_model:
                cols.append(pl.Series("vec", out))
            else:
                flat = pa.FixedSizeListArray.from_arrays(pa.array(out.reshape(-1)), d).cast(pa.list_(pa.float32()))
                cols.append(pl.Series("vec", flat))
        return cols


def to_ranges(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row pairs -> maximal runs where both source and destination advance by one."""
    if src.size == 0:
        return src, src, dst
    breaks = np.flatnonzero((np.diff(src) != 1) | (np.diff(dst) != 1)) + 1
    starts = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([starts, [src.size]]))
    return src[starts], src[starts] + lengths, dst[starts]


def dataset_vectors(engine: "QueryEngine", dataset: str, model: str | None = None, layers: Any = "all",
                    docs: Sequence[str] | None = None) -> pl.LazyFrame:
    """``lake.vectors``: the dataset's token vectors as a LazyFrame, layer by layer in dataset order."""
    from .frames import normalize_layers

    store = engine.store
    snap = engine.snapshot()
    table = snap.dataset(dataset)  # NotFoundError listing datasets
    eid = store.resolve_extraction(dataset, model)
    layer_list = normalize_layers(store, eid, layers)
    hashes = pl.from_arrow(table.select(["doc_hash"]))
    if docs is not None:
        wanted = pl.DataFrame({"doc_hash": list(docs)}, schema={"doc_hash": pl.String})
        unknown = wanted.join(hashes, on="doc_hash", how="anti")["doc_hash"].to_list()
        if unknown:
            raise NotFoundError(f"document(s) {sorted(unknown)[:3]} are not in dataset {dataset!r}")
        hashes = hashes.join(wanted, on="doc_hash", how="semi")
    # every document must hold every asked layer (as read_vectors requires)
    placed = (snap.vector_placement.filter((pl.col("extraction") == eid) & pl.col("layer").is_in(layer_list))
              .select("layer", "doc_hash").unique())
    for layer in layer_list:
        have = placed.filter(pl.col("layer") == layer)
        missing = hashes.join(have, on="doc_hash", how="anti")["doc_hash"].to_list()
        if missing:
            raise store.missing_documents_error(eid, layer, missing, dataset)
    scope = VectorScope(extractions=(eid,), layers=((eid, tuple(layer_list)),), dataset=dataset,
                        name=f"vectors[{dataset}]")
    lf = VectorSource(engine, snap, scope).lazy()
    if docs is not None:
        lf = lf.filter(pl.col("doc_hash").is_in(list(docs)))
    return lf
