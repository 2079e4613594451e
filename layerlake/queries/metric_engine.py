"""The lazy metric engine: plan, serve from cache, compute the rest, return a DataFrame.

``compute_metric(store, "prompt_entropy", dataset="wiki")`` (what ``Lake.metric``
calls) does three things:

1. **plan** (:func:`plan_metric`): resolve the metric (registry), its parameters,
   the documents (the dataset's, in order; augmented views excluded unless the
   metric consumes views), the extractions (``model=None``: every extraction
   linked to the dataset) and the layers, and cut the work into *units* (one
   metric value per extraction x layer, per layer pair, or per model). Each unit
   has a content key (:mod:`.metric_cache`); a unit whose file exists is served
   from cache. :func:`explain_metric` returns this plan without computing.
2. **compute** the missing units (:mod:`.metric_compute`): read only the arrays
   they need, one layer at a time, in dataset order, in blocks of documents, and
   write each unit's file atomically.
3. **assemble** a polars DataFrame: one row per model x layer (``per="layer"``) with
   ``value``, ``n`` and, for document-granularity metrics, ``std``/``sem`` over the
   documents; or one row per document (``per="doc"``).

Layer semantics by input kind (see docs/metrics.md):

- ``doc_hidden``: value = mean over documents with a finite value (``n`` = their count);
- ``doc_nll``: no layer (``layer`` is null), from stored per-token losses;
- ``pooled`` / ``token_cloud`` / ``views``: one value per layer, no per-document values;
- ``layer_pair``: ``layer`` -> ``layer2``; consecutive requested layers by default,
  ``pairs=[(a, b), ...]`` to choose; with ``model=[a, b]`` (two models) the pairs
  compare model a's layer with model b's (``match="index"``: same index,
  ``"depth"``: b's layer ``round(l * L_b / L_a)``, L = number of blocks);
- ``doc_trajectory``: one value per model (``layer`` null), mean over documents.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ..errors import NotFoundError, SpecError
from ..metrics import MetricDef, get_metric
from ..store import LakeStore, parse_layers
from . import metric_cache as mc
from .metric_inputs import DEFAULT_BLOCK_BYTES

log = logging.getLogger(__name__)

PER_CHOICES = ("layer", "doc")
PER_DOC_KINDS = ("doc_hidden", "doc_nll", "doc_trajectory")  # inputs with one value per document
EXECUTORS = ("local",)
DEFAULT_MAX_TOKENS = 10_000

#: Engine options (not metric parameters) by input kind, with defaults.
ENGINE_OPTIONS: dict[str, dict[str, Any]] = {
    "doc_hidden": {},
    "doc_nll": {},
    "pooled": {},
    "token_cloud": {"max_tokens": DEFAULT_MAX_TOKENS, "sample_seed": 0},
    "views": {"views": None},
    "layer_pair": {"pairs": None, "across": None, "match": "index", "rows": "auto",
                   "max_tokens": DEFAULT_MAX_TOKENS, "sample_seed": 0},
    "doc_trajectory": {},
}
ALL_ENGINE_OPTIONS = sorted({k for v in ENGINE_OPTIONS.values() for k in v})


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricRequest:
    """What a caller asked for. Frozen and validated on creation."""

    metric: str
    dataset: str
    model: tuple[str, ...] | None = None
    layers: Any = "all"
    per: str = "layer"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    executor: str = "local"
    cache: Any = True
    block_bytes: int = DEFAULT_BLOCK_BYTES

    def __post_init__(self) -> None:
        if self.per not in PER_CHOICES:
            raise SpecError(f"per={self.per!r} must be one of {PER_CHOICES}")
        if self.executor not in EXECUTORS:
            raise SpecError(f"executor={self.executor!r}: metrics run with executor='local' only "
                            "(the arrays are read and reduced in this process)")
        if self.cache not in (True, False, "refresh"):
            raise SpecError(f"cache={self.cache!r} must be True (use and fill the cache), False (neither) "
                            "or 'refresh' (recompute and overwrite)")
        if not isinstance(self.block_bytes, int) or self.block_bytes < 1:
            raise SpecError(f"block_bytes={self.block_bytes!r} must be a positive integer")
        model = self.model
        if model is not None:
            model = (model,) if isinstance(model, str) else tuple(str(m) for m in model)
            if not model:
                raise SpecError("model=[] is empty; pass None for every model of the dataset, or model ids")
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "layers", parse_layers(self.layers))
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "options", dict(self.options))


@dataclasses.dataclass
class Unit:
    """One cache file's worth of work: a metric at one layer / pair / model of one extraction."""

    eid: str
    model: str
    layer: int | None
    layer2: int | None
    key: str
    cached: bool
    reads: list[tuple[str, int | None]]  # (extraction, layer); layer None = per-token losses
    eid2: str | None = None
    model2: str | None = None


@dataclasses.dataclass
class Extraction:
    eid: str
    label: str
    d_model: int
    n_layers: int
    dtype: str
    held: list[int]  # layers every used document holds


@dataclasses.dataclass
class MetricPlan:
    """What :func:`compute_metric` will do; ``print(plan)`` shows it."""

    request: MetricRequest
    defn: MetricDef
    params: dict[str, Any]  # resolved metric parameters (defaults + given)
    key_params: dict[str, Any]  # non-default parameters + value-changing engine options
    options: dict[str, Any]  # resolved engine options
    docs: list[str]  # documents the metric reads (view documents for "views")
    originals: list[str]  # the documents values are reported for
    ordinals: dict[str, int]
    view_matrix: list[list[str]] | None
    extractions: dict[str, Extraction]
    units: list[Unit]
    across_models: bool = False

    @property
    def kind(self) -> str:
        return self.defn.input

    @property
    def to_compute(self) -> list[Unit]:
        return [u for u in self.units if not u.cached]

    def reads(self, store: LakeStore) -> list[dict[str, Any]]:
        """Arrays the missing units will read: one entry per (extraction, layer)."""
        from .metric_inputs import locate_docs
        seen: dict[tuple[str, int | None], None] = {}
        for u in self.to_compute:
            for r in u.reads:
                seen.setdefault(r, None)
        tokens: dict[str, int] = {}
        out = []
        for eid, layer in seen:
            if eid not in tokens:
                tokens[eid] = locate_docs(store, eid, self.docs, None).total_tokens
            ex = self.extractions[eid]
            itemsize = 4 if ex.dtype == "float32" else 2
            nbytes = tokens[eid] * (ex.d_model * itemsize if layer is not None else 4)
            out.append({"extraction": eid, "model": ex.label, "layer": layer,
                        "what": "tokens.parquet nll" if layer is None else "hidden.zarr",
                        "documents": len(self.docs), "tokens": tokens[eid], "bytes": nbytes})
        return out

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame([{"model": u.model, "extraction": u.eid, "layer": u.layer, "layer2": u.layer2,
                              "model2": u.model2, "status": "cached" if u.cached else "compute",
                              "key": u.key} for u in self.units],
                            schema={"model": pl.String, "extraction": pl.String, "layer": pl.Int32,
                                    "layer2": pl.Int32, "model2": pl.String, "status": pl.String, "key": pl.String})

    def describe(self, store: LakeStore | None = None) -> str:
        d = self.defn
        lines = [(f"metric {d.name}@{d.version} (input {d.input}, granularity {d.granularity}) on dataset "
                  f"{self.request.dataset!r}: {len(self.originals)} document(s); params "
                  f"{mc.params_json(self.key_params)}")]
        n_cached = sum(u.cached for u in self.units)
        lines.append(f"{len(self.units)} unit(s): {n_cached} from cache, {len(self.units) - n_cached} to compute")
        for u in self.units:
            where = "-" if u.layer is None else str(u.layer)
            if u.layer2 is not None:
                where += f" -> {u.layer2}"
            other = f" vs {u.model2}" if u.model2 else ""
            status = "cached " if u.cached else "compute"
            lines.append(f"  {status}  {u.model}{other}  layer {where}  "
                         f"{mc.CACHE_DIR}/{u.eid}/{u.key}.parquet")
        if store is not None and self.to_compute:
            reads = self.reads(store)
            total = sum(r["bytes"] for r in reads)
            lines.append(f"will read {len(reads)} array(s), about {total / 1e6:,.1f} MB (before compression):")
            for r in reads:
                what = "losses (tokens.parquet)" if r["layer"] is None else f"layer {r['layer']}"
                lines.append(f"  {r['model']} ({r['extraction']}) {what}: {r['documents']} docs, "
                             f"{r['tokens']:,} tokens, {r['bytes'] / 1e6:,.1f} MB")
        elif not self.to_compute:
            lines.append("nothing to read: every unit is cached")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


class MetricExplanation:
    """``explain_metric``'s answer: the plan plus the reads it implies; prints as text."""

    def __init__(self, plan: MetricPlan, store: LakeStore) -> None:
        self.plan = plan
        self.text = plan.describe(store)
        self.reads = plan.reads(store) if plan.to_compute else []

    @property
    def units(self) -> pl.DataFrame:
        return self.plan.to_frame()

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython
        p.text(self.text)


# -- planning ----------------------------------------------------------------------------------
def make_request(name: str, dataset: str, model: Any = None, layers: Any = "all", per: str = "layer",
                 executor: str = "local", params: Mapping[str, Any] | None = None, cache: Any = True,
                 block_bytes: int = DEFAULT_BLOCK_BYTES, **kwargs: Any) -> MetricRequest:
    """Split ``kwargs`` into engine options and metric parameters and build a request."""
    defn = get_metric(name)
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in ALL_ENGINE_OPTIONS}
    allowed = ENGINE_OPTIONS.get(defn.input, {})
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise SpecError(f"option(s) {bad} do not apply to metric {name!r} (input {defn.input}); "
                        f"engine options for it: {sorted(allowed) or 'none'}; metric parameters: "
                        f"{sorted(defn.params) or 'none'}")
    merged = {**(params or {}), **kwargs}
    unknown = sorted(set(merged) - set(defn.params))
    if unknown:
        raise SpecError(f"metric {name!r} has no parameter(s) {unknown}; valid parameters: "
                        f"{sorted(defn.params) or 'none'}; engine options: {sorted(allowed) or 'none'}")
    return MetricRequest(metric=name, dataset=dataset, model=model, layers=layers, per=per, params=merged,
                         options=options, executor=executor, cache=cache, block_bytes=block_bytes)


def plan_metric(store: LakeStore, request: MetricRequest) -> MetricPlan:
    defn = get_metric(request.metric)
    kind = defn.input
    if kind == "jacobian_sketch":
        raise SpecError(f"metric {defn.name!r} reads Jacobian sketches: compute it with lake.metric(...) "
                        "(served by queries/jacobian_metrics.py); explain_metric does not plan it")
    if request.per == "doc" and kind not in PER_DOC_KINDS:
        raise SpecError(f"per='doc' needs a document-granularity metric; {defn.name!r} has one value per "
                        f"{'layer pair' if kind == 'layer_pair' else 'layer'} (input {kind}); use per='layer'")
    params = _canonical(defn, defn.resolve_params(request.params))
    non_default = {k: v for k, v in sorted(params.items()) if v != defn.params[k]}
    options = {**ENGINE_OPTIONS[kind], **request.options}
    _check_options(defn, options)

    table = store.dataset_table(request.dataset)
    hashes = table.column("doc_hash").to_pylist()
    ordinals = dict(zip(hashes, table.column("ordinal").to_pylist()))
    originals, groups = _split_views(table)

    eids = _resolve_models(store, request)
    view_matrix = None
    if kind == "views":
        reported, view_matrix, view_ids = _view_matrix(defn, originals, groups, options.get("views"),
                                                       request.dataset)
        options["views"] = view_ids
        docs = [h for row in view_matrix for h in row]
    else:
        docs = originals
        reported = originals
    if not docs:
        raise SpecError(f"dataset {request.dataset!r} has no documents to compute {defn.name!r} on")

    extractions = {eid: _extraction(store, eid, request.dataset, docs) for eid in eids}
    across_models = False
    if kind == "layer_pair":
        across_models = _across_models(request, options, eids)
        rows = options["rows"]
        if rows == "auto":
            rows = "pooled" if across_models else "tokens"
        if rows not in ("tokens", "pooled"):
            raise SpecError(f"rows={rows!r} must be 'auto', 'tokens' or 'pooled'")
        options["rows"] = rows

    key_params = dict(non_default)
    key_params.update(_value_options(kind, options))
    docs_fp = mc.docs_fingerprint(docs)
    units: list[Unit] = []

    def add(ex: Extraction, layer: int | None, layer2: int | None, reads: list[tuple[str, int | None]],
            extra: Mapping[str, Any] | None = None, ex2: Extraction | None = None) -> None:
        kp = {**key_params, **(extra or {})}
        spec = {k: v for k, v in (("layer", layer), ("layer2", layer2)) if v is not None}
        key = mc.unit_key(extraction=ex.eid, docs=docs_fp, metric=defn.name, version=defn.version, params=kp,
                          unit=spec)
        units.append(Unit(eid=ex.eid, model=ex.label, layer=layer, layer2=layer2, key=key, cached=False,
                          reads=reads, eid2=ex2.eid if ex2 else None, model2=ex2.label if ex2 else None))

    if kind == "layer_pair" and across_models:
        a, b = (extractions[e] for e in eids)
        for la, lb in _model_pairs(request, options, a, b):
            add(a, la, lb, [(a.eid, la), (b.eid, lb)], {"vs_extraction": b.eid}, b)
    else:
        for eid in eids:
            ex = extractions[eid]
            if kind == "doc_nll":
                add(ex, None, None, [(eid, None)])
                continue
            layers = _layers_for(request.layers, ex)
            if kind == "layer_pair":
                for la, lb in _layer_pairs(options.get("pairs"), layers, ex):
                    add(ex, la, lb, [(eid, la), (eid, lb)])
            elif kind == "doc_trajectory":
                if len(layers) < 2:
                    raise SpecError(f"metric {defn.name!r} needs at least 2 layers; got {layers}")
                add(ex, None, None, [(eid, l) for l in layers], {"layers": layers})
            else:
                for l in layers:
                    add(ex, l, None, [(eid, l)])

    if request.cache is True:
        present: dict[str, set[str]] = {}
        for u in units:
            if u.eid not in present:
                present[u.eid] = mc.cached_keys(store, u.eid)
            u.cached = u.key in present[u.eid]
    return MetricPlan(request=request, defn=defn, params=params, key_params=key_params, options=options,
                      docs=docs, originals=reported, ordinals=ordinals, view_matrix=view_matrix,
                      extractions=extractions, units=units, across_models=across_models)


def _canonical(defn: MetricDef, params: dict[str, Any]) -> dict[str, Any]:
    """Same value, same key: ints given for float parameters become floats, tuples become lists."""
    out = {}
    for k, v in params.items():
        default = defn.params[k]
        if isinstance(default, float) and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            v = float(v)
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _check_options(defn: MetricDef, options: dict[str, Any]) -> None:
    for k in ("max_tokens", "sample_seed"):
        if k in options:
            v = options[k]
            if isinstance(v, str):
                try:
                    v = int(v)
                except ValueError:
                    raise SpecError(f"{k}={options[k]!r} must be an integer") from None
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or (k == "max_tokens" and v < 0):
                raise SpecError(f"{k}={options[k]!r} must be a non-negative integer (max_tokens=0: no subsampling)")
            options[k] = int(v)
    if "match" in options and options["match"] not in ("index", "depth"):
        raise SpecError(f"match={options['match']!r} must be 'index' (same layer index) or 'depth' "
                        "(same relative depth)")
    if "across" in options and options["across"] not in (None, "layers", "models"):
        raise SpecError(f"across={options['across']!r} must be None (auto), 'layers' or 'models'")
    if options.get("pairs") is not None:
        options["pairs"] = parse_pairs(options["pairs"])
    if options.get("views") is not None:
        v = options["views"]
        if isinstance(v, str):
            v = [int(x) for x in v.split(",")] if "," in v else int(v)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            if v < 2:
                raise SpecError(f"views={v} must be >= 2 (views per document)")
            v = int(v)
        else:
            v = tuple(int(x) for x in v)
            if len(v) < 2 or min(v) < 0:
                raise SpecError(f"views={v} must list at least 2 view indices (0 = the original text)")
        options["views"] = v


def parse_pairs(value: Any) -> list[tuple[int, int]]:
    """``[(0, 1), (1, 2)]`` or ``"0:1,1:2"`` -> list of int pairs."""
    if isinstance(value, str):
        items = [p for p in value.replace(" ", "").split(",") if p]
        try:
            out = [tuple(int(x) for x in p.split(":")) for p in items]
        except ValueError:
            raise SpecError(f"pairs={value!r} must look like '0:1,1:2' (layer:layer2, comma-separated)") from None
    else:
        try:
            out = [tuple(int(x) for x in p) for p in value]
        except (TypeError, ValueError):
            raise SpecError(f"pairs={value!r} must be a list of (layer, layer2) tuples") from None
    if not out or any(len(p) != 2 or min(p) < 0 for p in out):
        raise SpecError(f"pairs={value!r} must be a non-empty list of (layer, layer2) with layers >= 0")
    return [(int(a), int(b)) for a, b in out]


def _value_options(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Engine options that change values: part of the cache key and the ``params`` column."""
    if kind == "token_cloud":
        return {"max_tokens": options["max_tokens"], "sample_seed": options["sample_seed"]}
    if kind == "views":
        return {"views": list(options["views"])}
    if kind == "layer_pair":
        if options["rows"] == "tokens":
            return {"rows": "tokens", "max_tokens": options["max_tokens"], "sample_seed": options["sample_seed"]}
        return {"rows": "pooled"}
    return {}


def _split_views(table: pa.Table) -> tuple[list[str], dict[str, dict[int, str]]]:
    """Original documents in order, and ``group -> {view index: doc_hash}`` (augmented datasets)."""
    hashes = table.column("doc_hash").to_pylist()
    if "group" not in table.column_names or "view" not in table.column_names:
        return hashes, {}
    groups_col = table.column("group").to_pylist()
    views_col = table.column("view").to_pylist()
    originals = []
    groups: dict[str, dict[int, str]] = {}
    for h, g, v in zip(hashes, groups_col, views_col):
        v = int(v) if v is not None else 0
        g = g or h
        if v == 0:
            originals.append(h)
        groups.setdefault(g, {})[v] = h
    for h in originals:
        groups.setdefault(h, {})[0] = h
    return originals, groups


def _originals_with(originals: list[str], groups: dict[str, dict[int, str]], views: Sequence[int]) -> list[str]:
    return [o for o in originals if all(v in groups.get(o, {}) for v in views)]


def _view_matrix(defn: MetricDef, originals: list[str], groups: dict[str, dict[int, str]], views: Any,
                 dataset: str) -> tuple[list[str], list[list[str]], tuple[int, ...]]:
    """Originals that have every chosen view, their view documents ``[originals][views]``, the view ids."""
    stored = sorted({v for g in groups.values() for v in g if v > 0})
    if not stored:
        raise SpecError(f"metric {defn.name!r} needs augmented views, but dataset {dataset!r} has none; ingest it "
                        "with augment=N (layerlake ingest ... --augment N) to store N views of each document")
    if views is None:
        k = defn.n_views or len(stored)
        views = k
    if isinstance(views, int):
        if views > len(stored):
            raise SpecError(f"metric {defn.name!r} wants {views} views per document but dataset {dataset!r} "
                            f"stores {len(stored)} (views {stored}); re-ingest with --augment {views}")
        view_ids = tuple(stored[:views])
    else:
        view_ids = tuple(views)
        bad = [v for v in view_ids if v != 0 and v not in stored]
        if bad:
            raise SpecError(f"views {bad} are not stored in dataset {dataset!r}; stored views: {stored} "
                            "(0 = the original text)")
    if defn.n_views is not None and len(view_ids) != defn.n_views:
        raise SpecError(f"metric {defn.name!r} takes exactly {defn.n_views} views per document; got views={view_ids}")
    keep = _originals_with(originals, groups, view_ids)
    dropped = len(originals) - len(keep)
    if dropped:
        log.warning("%d document(s) of dataset %r lack some of views %s (e.g. an augmentation equal to another "
                    "text); computing %s on the other %d", dropped, dataset, list(view_ids), defn.name, len(keep))
    return keep, [[groups[o][v] for v in view_ids] for o in keep], view_ids


def _resolve_models(store: LakeStore, request: MetricRequest) -> list[str]:
    if request.model is None:
        links = store.dataset_links(request.dataset)
        if not links:
            raise NotFoundError(f"dataset {request.dataset!r} has not been ingested with any model yet")
        return sorted(links, key=lambda e: (str(links[e].get("model", "")), e))
    out: list[str] = []
    for m in request.model:
        eid = store.resolve_extraction(request.dataset, m)
        if eid not in out:
            out.append(eid)
    return out


def _extraction(store: LakeStore, eid: str, dataset: str, docs: list[str]) -> Extraction:
    man = store.extraction(eid)
    link = store.dataset_links(dataset).get(eid, {})
    aliases = store.aliases(eid)
    label = link.get("model") or (aliases[0] if aliases else None) or man.model_name or eid
    have = store.placement(eid).layers_held
    missing = [h for h in docs if h not in have]
    if missing:
        raise NotFoundError(f"{len(missing)} of {len(docs)} document(s) of dataset {dataset!r} are not stored in "
                            f"extraction {eid} ({label}); ingest the dataset with that model first")
    held = set.intersection(*(set(have[h]) for h in docs)) if docs else set()
    return Extraction(eid=eid, label=str(label), d_model=man.d_model,
                      n_layers=int(man.n_layers or max(held, default=0)), dtype=man.storage_dtype,
                      held=sorted(held))


def _layers_for(requested: Any, ex: Extraction) -> list[int]:
    if requested == "all":
        if not ex.held:
            raise NotFoundError(f"extraction {ex.eid} ({ex.label}) holds no layer for every document of the dataset")
        return list(ex.held)
    bad = [l for l in requested if l not in ex.held]
    if bad:
        raise NotFoundError(f"layer(s) {bad} are not stored for every document in extraction {ex.eid} ({ex.label}); "
                            f"stored layers: {ex.held}; ingest them with --layers")
    return list(requested)


def _across_models(request: MetricRequest, options: Mapping[str, Any], eids: list[str]) -> bool:
    across = options.get("across")
    if across is None:
        across = "models" if request.model is not None and len(request.model) == 2 and len(eids) == 2 else "layers"
    if across == "models" and len(eids) != 2:
        raise SpecError(f"across='models' compares exactly two models; got {len(eids)} extraction(s)")
    return across == "models"


def _layer_pairs(pairs: Any, layers: list[int], ex: Extraction) -> list[tuple[int, int]]:
    if pairs is None:
        if len(layers) < 2:
            raise SpecError(f"a layer-pair metric needs at least 2 layers; got {layers} for {ex.label}")
        return list(zip(layers[:-1], layers[1:]))
    bad = sorted({l for p in pairs for l in p if l not in ex.held})
    if bad:
        raise NotFoundError(f"pairs use layer(s) {bad} not stored in extraction {ex.eid} ({ex.label}); "
                            f"stored: {ex.held}")
    return list(pairs)


def _model_pairs(request: MetricRequest, options: Mapping[str, Any], a: Extraction,
                 b: Extraction) -> list[tuple[int, int]]:
    if options.get("pairs") is not None:
        pairs = list(options["pairs"])
    else:
        layers = _layers_for(request.layers, a) if request.layers != "all" else list(a.held)
        if options["match"] == "index":
            if request.layers == "all":
                layers = [l for l in layers if l in b.held]
            pairs = [(l, l) for l in layers]
        else:
            pairs = [(l, int(round(l * b.n_layers / max(a.n_layers, 1)))) for l in layers]
    bad_a = sorted({p[0] for p in pairs if p[0] not in a.held})
    bad_b = sorted({p[1] for p in pairs if p[1] not in b.held})
    if bad_a or bad_b:
        raise NotFoundError(f"layer pairs need layer(s) {bad_a} of {a.label} (stored {a.held}) and {bad_b} of "
                            f"{b.label} (stored {b.held})")
    if not pairs:
        raise SpecError(f"no common layers to compare between {a.label} and {b.label}")
    return pairs


# -- public entry points ------------------------------------------------------------------------
def compute_metric(store: LakeStore, name: str, dataset: str, model: Any = None, layers: Any = "all",
                   per: str = "layer", executor: str = "local", **kwargs: Any) -> pl.DataFrame:
    """See :meth:`layerlake.Lake.metric`."""
    if get_metric(name).input == "jacobian_sketch":
        from .jacobian_metrics import jacobian_metric
        if per != "layer":
            raise SpecError(f"metric {name!r} is computed per layer (pair) from Jacobian sketches; use per='layer'")
        return jacobian_metric(store, name, dataset, model, layers, **kwargs)
    request = make_request(name, dataset, model, layers, per, executor, **kwargs)
    plan = plan_metric(store, request)
    from .metric_compute import compute_units
    tables = compute_units(store, plan)
    return assemble(plan, tables)


def explain_metric(store: LakeStore, name: str, dataset: str, model: Any = None, layers: Any = "all",
                   per: str = "layer", executor: str = "local", **kwargs: Any) -> MetricExplanation:
    """See :meth:`layerlake.Lake.explain_metric`."""
    request = make_request(name, dataset, model, layers, per, executor, **kwargs)
    return MetricExplanation(plan_metric(store, request), store)


# -- assembly ---------------------------------------------------------------------------------
LAYER_SCHEMA = {"model": pl.String, "extraction": pl.String, "dataset": pl.String, "metric": pl.String,
                "layer": pl.Int32, "layer2": pl.Int32, "value": pl.Float64, "n": pl.Int64, "std": pl.Float64,
                "sem": pl.Float64}
DOC_SCHEMA = {"model": pl.String, "extraction": pl.String, "dataset": pl.String, "metric": pl.String,
              "layer": pl.Int32, "layer2": pl.Int32, "doc_hash": pl.String, "ordinal": pl.Int64,
              "value": pl.Float64, "n": pl.Int64}


def assemble(plan: MetricPlan, tables: Mapping[str, pa.Table]) -> pl.DataFrame:
    req = plan.request
    rows: list[dict[str, Any]] = []
    extra_cols = plan.across_models
    for u in plan.units:
        t = tables[u.key]
        doc_hash = t.column("doc_hash").to_pylist()
        values = t.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
        ns = t.column("n").to_pylist()
        base = {"model": u.model, "extraction": u.eid, "dataset": req.dataset, "metric": plan.defn.name,
                "layer": u.layer, "layer2": u.layer2}
        if extra_cols:
            base.update(model2=u.model2, extraction2=u.eid2)
        if req.per == "doc":
            for h, v, n in zip(doc_hash, values, ns):
                if h is not None:
                    rows.append({**base, "doc_hash": h, "ordinal": plan.ordinals.get(h), "value": float(v), "n": n})
            continue
        agg = [i for i, h in enumerate(doc_hash) if h is None]
        if not agg:
            raise SpecError(f"cached unit {u.key} has no aggregate row; delete metrics/{u.eid}/{u.key}.parquet")
        i = agg[0]
        docs_v = np.asarray([v for h, v in zip(doc_hash, values) if h is not None], dtype=np.float64)
        finite = docs_v[np.isfinite(docs_v)]
        std = sem = None
        if finite.size >= 2:
            std = float(np.std(finite, ddof=1))
            sem = std / float(np.sqrt(finite.size))
        rows.append({**base, "value": float(values[i]), "n": ns[i], "std": std, "sem": sem})
    schema = dict(DOC_SCHEMA if req.per == "doc" else LAYER_SCHEMA)
    if extra_cols:
        schema.update(model2=pl.String, extraction2=pl.String)
    return pl.DataFrame(rows, schema=schema)
