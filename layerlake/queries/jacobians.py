"""Reading stored Jacobian sketches: low-rank factors, singular triplets, coupling metrics.

A shard's ``jacobian.zarr/<key>/layer_<l>/`` holds, per sketched token (rows
``rows`` of the shard's tokens.parquet), ``Y = Jres Omega`` ``[d, k]`` and
``W = Psi^T Jres`` ``[l, d]`` (or, with power iterations, ``Q`` ``[d, k]`` and
``B = Q^T Jres`` ``[k, d]``) and, with ``exact=True``, the full ``J``. This
module rebuilds ``Jres ~ Q X`` (:class:`~layerlake.metrics.jacobian.JacobianFactors`,
METRICS.md 8.3) without forming ``d x d`` matrices unless asked, and evaluates the
paper-5 metrics from them (:func:`compute_jacobian_metric`).

Which tokens: the dataset's documents in dataset order, each from the shard
that ``store.placement`` says serves (document, key, block): the smallest-id
committed shard holding sketches of the key at that block for it; tokens
by window and position. A document computed twice (e.g. once for more hidden
layers) is therefore never counted twice.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import IntegrityError, NotFoundError, SpecError
from ..metrics import REGISTRY, MetricDef, get_metric
from ..metrics.jacobian import JacobianFactors, coupling_matrix, linearization_fidelity, sketch_reconstruct
from ..store import (
    ArrayRef, check_test_matrix, JacobianSketch, LakeStore, LayerSelection, layout, sketch_key,
)

TokenKey = tuple[str, int, int]  # (doc_hash, window, position)


# -- catalog of sketches ---------------------------------------------------------------------------
def sketch_catalog(store: LakeStore, eid: str) -> dict[str, dict[str, Any]]:
    """``{key: {"attrs": ..., "shards": {shard: [layers]}, "layers": [union]}}`` from committed manifests."""
    out: dict[str, dict[str, Any]] = {}
    for man in store.shard_manifests(eid):
        for key, entry in man.jacobian.items():
            slot = out.setdefault(key, {"attrs": dict(entry.attrs), "shards": {}, "layers": set()})
            slot["shards"][man.shard] = list(entry.layers)
            slot["layers"].update(entry.layers)
    for slot in out.values():
        slot["layers"] = sorted(slot["layers"])
    return out


def resolve_sketch(store: LakeStore, eid: str, sketch: Any = None) -> str:
    """The sketch key to read: ``sketch`` = None (the only one), a key, or a :class:`JacobianSketch`."""
    cat = sketch_catalog(store, eid)
    model = store.extraction(eid).model_name
    if not cat:
        raise NotFoundError(f"extraction {eid} ({model}) holds no Jacobian sketches; ingest with "
                            "jacobian=layerlake.JacobianSketch(k=...) (CLI: --jacobian-k K)")
    described = "; ".join(f"{k} ({_describe(v['attrs'])}, blocks {v['layers']})" for k, v in sorted(cat.items()))
    if sketch is None:
        if len(cat) == 1:
            return next(iter(cat))
        raise SpecError(f"extraction {eid} ({model}) holds {len(cat)} kinds of sketches; pass sketch= one of: "
                        f"{described}")
    key = sketch_key(sketch) if isinstance(sketch, JacobianSketch) else str(sketch)
    if key not in cat:
        raise NotFoundError(f"extraction {eid} ({model}) has no sketch {key}; stored: {described}")
    return key


def _describe(attrs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={attrs.get(k)}" for k in ("k", "l", "positions", "seed", "exact", "power_iterations")
                     if k in attrs)


# -- which tokens ----------------------------------------------------------------------------------
def sketched_tokens(store: LakeStore, dataset: str, eid: str, key: str, layer: int,
                    docs: Sequence[str] | None = None) -> pl.DataFrame:
    """One row per sketched token of the dataset at ``layer``, in dataset order.

    Columns: ``ordinal, doc_hash, window, position, token, shard, row`` (shard
    token row) and ``sketch_index`` (index into the shard's sketch arrays).
    Raises :class:`NotFoundError` when a dataset document has no sketch there.
    """
    cat = sketch_catalog(store, eid)
    if key not in cat:
        raise NotFoundError(f"extraction {eid} has no sketch {key}")
    shards = sorted(s for s, ls in cat[key]["shards"].items() if layer in ls)
    if not shards:
        raise NotFoundError(f"sketch {key} of extraction {eid} has no block {layer}; sketched blocks: "
                            f"{cat[key]['layers']}")
    dtable = store.dataset_table(dataset).select(["ordinal", "doc_hash"])
    if docs is not None:
        unknown = set(docs) - set(dtable.column("doc_hash").to_pylist())
        if unknown:
            raise NotFoundError(f"document(s) {sorted(unknown)[:3]} are not in dataset {dataset!r}")
        dtable = dtable.filter(pc.is_in(dtable.column("doc_hash"), value_set=pa.array(sorted(set(docs)))))
    wanted = pl.from_arrow(dtable)
    parts = []
    reader = store.reader
    with reader.scan(f"sketch {key} block {layer} rows") as stats:
        stored = {}
        for sid in shards:
            ref = ArrayRef.sketch(eid, sid, key, layer, "rows")
            stored[sid] = reader.take(ref, [0], [reader.shape(ref, stats)[0]], stats, dtype=np.int64)
    for sid in shards:
        rows = stored[sid]
        toks = store.shard_table(eid, sid, layout.TOKENS_FILE, columns=["row", "doc_hash", "window", "position", "token"])
        frame = pl.from_arrow(toks)
        picked = pl.DataFrame({"row": rows.astype(np.int64), "sketch_index": np.arange(len(rows), dtype=np.int64)})
        parts.append(picked.join(frame, on="row", how="left").with_columns(pl.lit(sid).alias("shard")))
    allrows = pl.concat(parts, how="vertical")
    serving = store.placement(eid).sketch_shards(key, layer)  # the placement rule (store.placement)
    first = pl.DataFrame({"doc_hash": list(serving), "first": list(serving.values())},
                         schema={"doc_hash": pl.String, "first": pl.String})
    out = (allrows.join(first, on="doc_hash").filter(pl.col("shard") == pl.col("first")).drop("first")
           .join(wanted, on="doc_hash", how="inner")
           .sort(["ordinal", "window", "position"]))
    missing = wanted.height - out.select(pl.col("doc_hash").n_unique()).item()
    if missing:
        held = store.placement(eid).token_shards()
        lost = [h for h in wanted["doc_hash"].to_list() if h not in held]
        if lost:  # not even their tokens are held: damage (IntegrityError) or never ingested (NotFoundError)
            raise store.missing_documents_error(eid, None, lost, dataset)
        raise NotFoundError(
            f"{missing} document(s) of dataset {dataset!r} have no Jacobian sketch {key} at block {layer} in "
            f"extraction {eid}; ingest the dataset again with the same jacobian sketch to add them"
        )
    return out.select(["ordinal", "doc_hash", "window", "position", "token", "shard", "row", "sketch_index"])


def read_sketch_arrays(store: LakeStore, eid: str, key: str, layer: int, tokens: pl.DataFrame,
                       names: Sequence[str] = ("Y", "W")) -> dict[str, np.ndarray]:
    """Stored arrays (``Y``, ``W``, ``J``) of the tokens of :func:`sketched_tokens`, in its order."""
    out: dict[str, np.ndarray] = {}
    shards = np.asarray(tokens.get_column("shard").to_list(), dtype=object)
    index = tokens.get_column("sketch_index").to_numpy().astype(np.int64)
    reader = store.reader
    with reader.scan(f"sketch {key} block {layer}") as stats:
        for name in names:
            res: np.ndarray | None = None
            for sid in dict.fromkeys(shards.tolist()):
                ref = ArrayRef.sketch(eid, sid, key, layer, name)
                if res is None:
                    res = np.empty((len(shards),) + reader.shape(ref, stats)[1:], dtype=np.float32)
                m = np.flatnonzero(shards == sid)
                reader.fill(res, ref, index[m], index[m] + 1, m, stats)
            out[name] = res if res is not None else np.empty((0,), dtype=np.float32)
    return out


# -- reconstruction ---------------------------------------------------------------------------------
@dataclasses.dataclass
class JacobianSet:
    """Residual Jacobians ``Jres = J - I`` of one block for the dataset's sketched tokens.

    tokens: polars frame (``index`` = position in the lists below, ``ordinal``,
    ``doc_hash``, ``window``, ``position``, ``token``, ``shard``, ``row``);
    factors: ``Jres ~ Q X`` per token; U ``[n, d, K]``, S ``[n, K]``, V ``[n, d, K]``:
    top-K singular triplets of ``Q X``; dense ``[n, d, d]`` = ``Q X`` and exact
    ``[n, d, d]`` = the stored exact ``J - I`` (sketches ingested with ``exact=True``),
    only when asked for (``dense=True``).
    """

    layer: int
    key: str
    extraction: str
    attrs: dict[str, Any]
    tokens: pl.DataFrame
    factors: list[JacobianFactors]
    U: np.ndarray
    S: np.ndarray
    V: np.ndarray
    dense: np.ndarray | None = None
    exact: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.factors)

    def __repr__(self) -> str:
        d = self.attrs.get("d")
        return (f"JacobianSet(block {self.layer}, {len(self)} tokens, d={d}, k={self.attrs.get('k')}, "
                f"K={self.S.shape[1] if self.S.ndim == 2 else 0}, sketch {self.key}, extraction {self.extraction})")


def factor_names(attrs: dict[str, Any]) -> tuple[str, str]:
    """The stored arrays a sketch is rebuilt from: ``("Y", "W")`` (one-pass) or ``("Q", "B")`` (power iterations)."""
    return ("Q", "B") if attrs.get("power_iterations") else ("Y", "W")


def factors_from_arrays(attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[JacobianFactors]:
    """``JacobianFactors`` of each stored sketch.

    One-pass: ``Y`` ``[n, d, k]``, ``W`` ``[n, l, d]`` -> ``Q = orth(Y)``, ``X = (Psi^T Q)^+ W``;
    power iterations: ``Q`` ``[n, d, k]``, ``B`` ``[n, k, d]`` are the factors themselves.
    """
    if attrs.get("power_iterations"):
        return [JacobianFactors(q, b) for q, b in zip(arrays["Q"], arrays["B"])]
    Y, W = arrays["Y"], arrays["W"]
    if len(Y) == 0:
        return []
    psi = check_test_matrix(attrs, "psi")
    if psi.shape[0] != Y.shape[1] or psi.shape[1] != W.shape[1]:
        raise IntegrityError(f"sketch {attrs.get('key')}: Psi {psi.shape} does not fit Y {Y.shape} / W {W.shape}")
    Q, X = sketch_reconstruct(Y, W, psi)
    return [JacobianFactors(q, x) for q, x in zip(Q, X)]


def jacobians(store: LakeStore, dataset: str, model: str | None = None, layer: int | None = None,
              rows: Sequence[int] | None = None, K: int | None = None, dense: bool = False, sketch: Any = None,
              docs: Sequence[str] | None = None) -> JacobianSet:
    """Factors and top-``K`` singular triplets of block ``layer``'s sketched Jacobians (see :class:`JacobianSet`).

    K: singular triplets per Jacobian (default ``min(10, k)``; at most the sketch's k);
    rows: indices into the dataset's sketched tokens at that block (``None`` = all);
    docs: restrict to these document hashes; sketch: which sketch when the
    extraction holds several (a key or a :class:`JacobianSketch`).
    """
    eid = store.resolve_extraction(dataset, model)
    key = resolve_sketch(store, eid, sketch)
    attrs = sketch_catalog(store, eid)[key]["attrs"]
    if layer is None:
        raise SpecError(f"pass layer= one of the sketched blocks {sketch_catalog(store, eid)[key]['layers']}")
    K = min(10, int(attrs["k"])) if K is None else int(K)
    if not 1 <= K <= int(attrs["k"]):
        raise SpecError(f"K={K} must be in 1..k={attrs['k']} (the sketch's rank); ingest with a larger k for more")
    toks = sketched_tokens(store, dataset, eid, key, int(layer), docs)
    if rows is not None:
        idx = [int(r) for r in rows]
        bad = [r for r in idx if not -toks.height <= r < toks.height]
        if bad:
            raise SpecError(f"rows {bad[:5]} out of range: block {layer} has {toks.height} sketched tokens in "
                            f"dataset {dataset!r} (rows index them, 0..{toks.height - 1})")
        toks = toks[[r % toks.height for r in idx]]
    names = factor_names(attrs) + (("J",) if dense and attrs.get("exact") else ())
    arrays = read_sketch_arrays(store, eid, key, int(layer), toks, names)
    factors = factors_from_arrays(attrs, arrays)
    d = int(attrs["d"])
    U = np.empty((len(factors), d, K))
    S = np.empty((len(factors), K))
    V = np.empty((len(factors), d, K))
    for i, f in enumerate(factors):
        U[i], S[i], V[i] = f.top(K)
    out = JacobianSet(layer=int(layer), key=key, extraction=eid, attrs=attrs,
                      tokens=toks.drop("sketch_index").with_row_index("index"), factors=factors, U=U, S=S, V=V)
    if dense:
        out.dense = np.stack([f.dense() for f in factors]) if factors else np.empty((0, d, d))
        if "J" in arrays:
            out.exact = arrays["J"].astype(np.float64) - np.eye(d)[None]
    return out


def sketched_layers(store: LakeStore, eid: str, key: str) -> list[int]:
    return sketch_catalog(store, eid)[key]["layers"]


def resolve_blocks(store: LakeStore, eid: str, key: str, layers: Any) -> list[int]:
    return LayerSelection.parse(layers, "block").among(sketched_layers(store, eid, key),
                                                       f"have no sketch {key} in extraction {eid}")


def jacobian_factors(store: LakeStore, dataset: str, eid: str, layers: Any = "all", sketch: Any = None,
                     docs: Sequence[str] | None = None, exact: bool = False) -> dict[TokenKey, list[JacobianFactors]]:
    """Per sketched token ``(doc_hash, window, position)``: its factors at ``layers``, in layer order.

    Dataset order. Every token must be sketched at every requested block (same
    sketch key: the positions are the same at every block). ``exact=True`` uses
    the stored exact Jacobians instead (``JacobianFactors.from_dense(J - I)``).
    """
    key = resolve_sketch(store, eid, sketch)
    attrs = sketch_catalog(store, eid)[key]["attrs"]
    if exact and not attrs.get("exact"):
        raise SpecError(f"sketch {key} was ingested without exact=True; no exact Jacobians are stored")
    blocks = resolve_blocks(store, eid, key, layers)
    out: dict[TokenKey, list[JacobianFactors]] = {}
    order: list[TokenKey] | None = None
    for layer in blocks:
        toks = sketched_tokens(store, dataset, eid, key, layer, docs)
        keys = list(zip(toks.get_column("doc_hash").to_list(), toks.get_column("window").to_list(),
                        toks.get_column("position").to_list()))
        if order is None:
            order = keys
            out = {k: [] for k in keys}
        elif set(keys) != set(order):
            raise NotFoundError(f"sketch {key}: block {layer} covers different tokens than block {blocks[0]}; "
                                "ask for blocks ingested together")
        if exact:
            J = read_sketch_arrays(store, eid, key, layer, toks, ("J",))["J"]
            eye = np.eye(J.shape[1])
            facs = [JacobianFactors.from_dense(j.astype(np.float64) - eye) for j in J]
        else:
            arrays = read_sketch_arrays(store, eid, key, layer, toks, factor_names(attrs))
            facs = factors_from_arrays(attrs, arrays)
        for k, f in zip(keys, facs):
            out[k].append(f)
    return out


# -- metrics -------------------------------------------------------------------------------------
def sketch_metric_rows(store: LakeStore, dataset: str, eid: str, key: str, blocks: list[int], defn: MetricDef,
                       params: dict[str, Any], docs: Sequence[str] | None = None,
                       exact: bool = False) -> list[dict[str, Any]]:
    """Registered Jacobian-sketch metric ``defn`` averaged over the sketched tokens: rows ``layer, layer2, value, n``.

    ``defn.fn`` maps one token's per-block factors to a value; the rows follow its
    shape: a number -> one row (layer null); ``[L]`` -> one row per block;
    ``[L, L]`` (granularity ``layer_pair``) -> (block, block); ``[L, K]`` -> (block,
    ``layer2`` = index 1..K, e.g. the rank of a singular value).
    """
    _check_rank(store, eid, key, defn.name, params, exact)
    per_token = jacobian_factors(store, dataset, eid, blocks, key, docs=docs, exact=exact)
    values = np.stack([np.asarray(defn.fn(f, **params), dtype=np.float64) for f in per_token.values()])
    n = len(values)
    mean = np.nanmean(values, axis=0)
    if mean.ndim == 0:
        return [{"layer": None, "layer2": None, "value": float(mean), "n": n}]
    if mean.ndim == 1:
        return [{"layer": a, "layer2": None, "value": float(mean[i]), "n": n} for i, a in enumerate(blocks)]
    second = blocks if defn.granularity == "layer_pair" else list(range(1, mean.shape[1] + 1))
    return [{"layer": a, "layer2": b, "value": float(mean[i, j]), "n": n}
            for i, a in enumerate(blocks) for j, b in enumerate(second)]


def compute_jacobian_metric(lake: Any, name: str, dataset: str, model: str | None = None, layers: Any = "all",
                            sketch: Any = None, exact: bool = False, **params: Any) -> pl.DataFrame:
    """A Jacobian metric of ``dataset``'s sketched tokens as a polars DataFrame (see docs/jacobians.md).

    - a registered ``jacobian_sketch`` metric (:func:`sketch_metric_rows`; the same
      numbers as ``lake.metric``, which caches them):
      ``coupling``: the ``[L, L]`` m_K matrix of each token, averaged over tokens
      -> rows ``(layer, layer2, value)``; row = Jacobian diagonalised, layer2 = basis;
      ``jacobian_coupling_score``: mean off-diagonal m_K, averaged over tokens -> one row;
      ``top_singular_values``: mean over tokens of the top-K singular values -> ``(layer, rank, value)``.
    - ``token_coupling`` (not in the registry): at each block, m_K between the sketched
      tokens of one document (their own Jacobians J_tt, not cross-token J_{t t'}),
      mean off-diagonal per document, averaged over documents -> ``(layer, value)``.
    - ``linearization_fidelity`` (METRICS.md 6.6, not in the registry): per token
      ``cos(prod_l (I + Q_l X_l) x^{a-1}, x^b)`` over consecutive blocks a..b, with the
      rank-k factors (``exact=True``: stored exact Jacobians) -> one row; needs hidden
      layers a-1 and b stored.

    ``lake``: a :class:`layerlake.Lake` or :class:`LakeStore`; params: the metric's
    (K, normalization, variant). Every frame carries ``extraction``, ``model``,
    ``sketch``, ``n`` (tokens or documents averaged) and ``metric``.
    """
    store: LakeStore = getattr(lake, "store", lake)
    if name == "token_coupling":
        mdef = get_metric("coupling")
    elif name != "linearization_fidelity":
        mdef = REGISTRY.get(name)
        if mdef is None or mdef.input != "jacobian_sketch":
            valid = sorted(n for n, d in REGISTRY.items() if d.input == "jacobian_sketch")
            raise NotFoundError(f"unknown Jacobian metric {name!r}; valid: "
                                f"{', '.join(valid + ['token_coupling', 'linearization_fidelity'])}")
    eid = store.resolve_extraction(dataset, model)
    key = resolve_sketch(store, eid, sketch)
    blocks = resolve_blocks(store, eid, key, layers)
    base = {"metric": name, "extraction": eid, "model": ", ".join(store.aliases(eid)), "sketch": key}
    if name == "linearization_fidelity":
        if params:
            raise SpecError(f"linearization_fidelity takes no parameters, got {sorted(params)}")
        return _linearization(store, dataset, eid, key, blocks, exact, base)
    p = mdef.resolve_params(params)
    if name == "token_coupling":
        _check_rank(store, eid, key, name, p, exact)
        return _token_coupling(store, dataset, eid, key, blocks, exact, p, base)
    rows = sketch_metric_rows(store, dataset, eid, key, blocks, mdef, p, exact=exact)
    second = "layer2" if mdef.granularity == "layer_pair" else "rank"
    recs = []
    for r in rows:
        where = {} if r["layer"] is None else {"layer": r["layer"]}
        if r["layer2"] is not None:
            where[second] = r["layer2"]
        recs.append({**base, **where, "value": r["value"], "n": r["n"], **_pcols(p)})
    return pl.DataFrame(recs)


def _check_rank(store: LakeStore, eid: str, key: str, name: str, params: dict[str, Any], exact: bool) -> None:
    k = int(sketch_catalog(store, eid)[key]["attrs"]["k"])
    if "K" in params and params["K"] > k and not exact:
        raise SpecError(f"{name}: K={params['K']} is larger than the sketch rank k={k}; pass K<={k}")


def _pcols(p: dict[str, Any]) -> dict[str, Any]:
    return {f"param_{k}": v for k, v in sorted(p.items())}


def _token_coupling(store: LakeStore, dataset: str, eid: str, key: str, blocks: list[int], exact: bool,
                    p: dict[str, Any], base: dict[str, Any]) -> pl.DataFrame:
    recs = []
    for layer in blocks:
        per_token = jacobian_factors(store, dataset, eid, [layer], key, exact=exact)
        by_doc: dict[tuple[str, int], list[JacobianFactors]] = {}
        for (h, w, _), facs in per_token.items():
            by_doc.setdefault((h, w), []).append(facs[0])
        scores = []
        for facs in by_doc.values():
            if len(facs) >= 2:
                m = coupling_matrix(facs, **p)
                scores.append(float(np.nanmean(m[~np.eye(len(facs), dtype=bool)])))
        if not scores:
            raise SpecError(f"token_coupling needs at least 2 sketched tokens in some document at block {layer}; "
                            "ingest with jacobian positions=N (N >= 2) or 'all'")
        recs.append({**base, "layer": layer, "value": float(np.mean(scores)), "n": len(scores), **_pcols(p)})
    return pl.DataFrame(recs)


def _linearization(store: LakeStore, dataset: str, eid: str, key: str, blocks: list[int], exact: bool,
                   base: dict[str, Any]) -> pl.DataFrame:
    from .frames import read_vectors, tokens_frame
    if blocks != list(range(blocks[0], blocks[-1] + 1)):
        raise SpecError(f"linearization_fidelity needs consecutive blocks a..b, got {blocks}")
    a, b = blocks[0], blocks[-1]
    per_token = jacobian_factors(store, dataset, eid, blocks, key, exact=exact)
    toks = tokens_frame(store, dataset, eid).select(["doc_hash", "window", "position"]).collect()
    index = {k: i for i, k in enumerate(zip(toks.get_column("doc_hash").to_list(), toks.get_column("window").to_list(),
                                            toks.get_column("position").to_list()))}
    try:
        hid = read_vectors(store, dataset, eid, [a - 1, b])
    except NotFoundError as exc:
        raise NotFoundError(f"linearization_fidelity over blocks {a}..{b} needs hidden layers {a - 1} and {b}: "
                            f"{exc}") from None
    vals = [linearization_fidelity(facs, hid[0, index[k]], hid[1, index[k]]) for k, facs in per_token.items()]
    return pl.DataFrame([{**base, "layer": a, "layer2": b, "value": float(np.nanmean(vals)), "n": len(vals)}])
