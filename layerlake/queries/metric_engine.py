"""The lazy metric engine: plan every registered metric, serve from cache, compute the rest, assemble.

``compute_metric(store, "prompt_entropy", dataset="wiki")`` (what ``Lake.metric``
calls) does three things:

1. **plan** (:func:`plan_metric`): resolve the metric (registry), its parameters,
   the documents (the dataset's, in order; augmented views excluded unless the
   metric consumes views), the extractions (``model=None``: every extraction
   linked to the dataset) and the layers, and cut the work into *units* (one
   metric value per extraction x layer, per layer pair, or per model; for
   Jacobian-sketch metrics one unit per extraction over the sketched blocks).
   Each unit has a content key (:func:`.metric_plan.unit_key`, the only key
   builder); a unit whose file exists is served from cache. :func:`explain_metric`
   returns this plan without computing.
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
- ``doc_trajectory``: one value per model (``layer`` null), mean over documents;
- ``jacobian_sketch``: averages over the dataset's sketched tokens (docs/jacobians.md):
  ``coupling`` rows (layer, layer2 = the basis provider's block), ``top_singular_values``
  rows (layer, layer2 = rank 1..K), ``jacobian_coupling_score`` one row (layer null);
  ``sketch=`` picks the sketch when an extraction holds several.

Dependencies point one way: :mod:`.metric_cache` <- :mod:`.metric_plan` <-
:mod:`.metric_compute` <- this module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ..errors import NotFoundError, SpecError
from ..metrics import MetricDef, get_metric
from ..store import LakeStore, LayerSelection
from . import metric_cache as mc
from .jacobians import resolve_blocks, resolve_sketch, sketch_catalog, sketched_tokens
from .metric_compute import compute_units
from .metric_inputs import locate_docs
from .metric_plan import (
    DOC_SCHEMA,
    ENGINE_OPTIONS,
    LAYER_SCHEMA,
    PER_DOC_KINDS,
    Extraction,
    MetricExplanation,
    MetricPlan,
    MetricRequest,
    key_params,
    make_request,
)

log = logging.getLogger(__name__)


# -- planning ----------------------------------------------------------------------------------
def plan_metric(store: LakeStore, request: MetricRequest) -> MetricPlan:
    """Resolve ``request`` into units, each keyed and marked cached or not (reads no arrays)."""
    defn = get_metric(request.metric)
    kind = defn.input
    if request.per == "doc" and kind not in PER_DOC_KINDS:
        raise SpecError(f"per='doc' needs a document-granularity metric; {defn.name!r} has one value per "
                        f"{'layer pair' if defn.granularity == 'layer_pair' else 'layer'} (input {kind}); "
                        "use per='layer'")
    params = defn.resolve_params(request.params)
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

    plan = MetricPlan(request=request, defn=defn, params=params,
                      key_params=key_params(defn, params, _value_options(kind, options)), options=options,
                      docs=docs, originals=reported, ordinals=ordinals, view_matrix=view_matrix,
                      extractions=extractions, units=[], across_models=across_models)
    if kind == "jacobian_sketch":
        _sketch_units(store, plan, eids, request.model is None)
    elif kind == "layer_pair" and across_models:
        a, b = (extractions[e] for e in eids)
        for la, lb in _model_pairs(request, options, a, b):
            plan.add_unit(a, la, lb, [(a.eid, la), (b.eid, lb)], {"vs_extraction": b.eid}, b)
    else:
        for eid in eids:
            ex = extractions[eid]
            if kind == "doc_nll":
                plan.add_unit(ex, None, None, [(eid, None)])
                continue
            layers = _layers_for(request.layers, ex)
            if kind == "layer_pair":
                for la, lb in _layer_pairs(options.get("pairs"), layers, ex):
                    plan.add_unit(ex, la, lb, [(eid, la), (eid, lb)])
            elif kind == "doc_trajectory":
                if len(layers) < 2:
                    raise SpecError(f"metric {defn.name!r} needs at least 2 layers; got {layers}")
                plan.add_unit(ex, None, None, [(eid, l) for l in layers], {"layers": layers})
            else:
                for l in layers:
                    plan.add_unit(ex, l, None, [(eid, l)])

    if request.cache is True:
        present: dict[str, set[str]] = {}
        for u in plan.units:
            if u.eid not in present:
                present[u.eid] = mc.cached_keys(store, u.eid)
            u.cached = u.key in present[u.eid]
    return plan


def _sketch_units(store: LakeStore, plan: MetricPlan, eids: list[str], every_model: bool) -> None:
    """One unit per extraction holding the sketch: all requested blocks (``{"blocks": [...]}``)."""
    for eid in eids:
        try:
            key = resolve_sketch(store, eid, plan.options["sketch"])
        except NotFoundError:
            if every_model and len(eids) > 1:
                continue  # this model has no sketches; others may
            raise
        blocks = resolve_blocks(store, eid, key, plan.request.layers)
        plan.add_unit(plan.extractions[eid], None, None, [(eid, b) for b in blocks], {"sketch": key},
                      unit={"blocks": blocks})
    if not plan.units:
        raise NotFoundError(f"no extraction of dataset {plan.request.dataset!r} has Jacobian sketches; ingest "
                            "with --jacobian-k K (Python: jacobian=ll.JacobianSketch(k=K))")


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
        raise store.missing_documents_error(eid, None, missing, dataset)
    held = set.intersection(*(set(have[h]) for h in docs)) if docs else set()
    return Extraction(eid=eid, label=str(label), d_model=man.d_model,
                      n_layers=int(man.n_layers or max(held, default=0)), dtype=man.storage_dtype,
                      held=sorted(held))


def _layers_for(requested: Any, ex: Extraction) -> list[int]:
    if requested == "all" and not ex.held:
        raise NotFoundError(f"extraction {ex.eid} ({ex.label}) holds no layer for every document of the dataset")
    return LayerSelection.parse(requested).among(
        ex.held, f"are not stored for every document in extraction {ex.eid} ({ex.label})", "ingest them with --layers")


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
    plan = plan_metric(store, make_request(name, dataset, model, layers, per, executor, **kwargs))
    return assemble(plan, compute_units(store, plan))


def explain_metric(store: LakeStore, name: str, dataset: str, model: Any = None, layers: Any = "all",
                   per: str = "layer", executor: str = "local", **kwargs: Any) -> MetricExplanation:
    """See :meth:`layerlake.Lake.explain_metric`."""
    plan = plan_metric(store, make_request(name, dataset, model, layers, per, executor, **kwargs))
    return MetricExplanation(plan, plan_reads(store, plan) if plan.to_compute else [])


def plan_reads(store: LakeStore, plan: MetricPlan) -> list[dict[str, Any]]:
    """Arrays the missing units will read: one entry per (extraction, layer or sketched block)."""
    seen: dict[tuple[str, int | None, str | None], None] = {}
    for u in plan.to_compute:
        for eid, layer in u.reads:
            seen.setdefault((eid, layer, u.extra.get("sketch")), None)
    tokens: dict[str, int] = {}
    out = []
    for eid, layer, sketch in seen:
        ex = plan.extractions[eid]
        entry = {"extraction": eid, "model": ex.label, "layer": layer, "documents": len(plan.docs)}
        if sketch is not None:
            attrs = sketch_catalog(store, eid)[sketch]["attrs"]
            n = sketched_tokens(store, plan.request.dataset, eid, sketch, int(layer), plan.docs).height
            d, k = int(attrs["d"]), int(attrs["k"])
            per_token = 4 * d * (2 * k if attrs.get("power_iterations") else k + int(attrs.get("l") or k))
            out.append({**entry, "what": "jacobian.zarr", "sketch": sketch, "tokens": n, "bytes": n * per_token})
            continue
        if eid not in tokens:
            tokens[eid] = locate_docs(store, eid, plan.docs, None).total_tokens
        itemsize = 4 if ex.dtype == "float32" else 2
        nbytes = tokens[eid] * (ex.d_model * itemsize if layer is not None else 4)
        out.append({**entry, "what": "tokens.parquet nll" if layer is None else "hidden.zarr",
                    "tokens": tokens[eid], "bytes": nbytes})
    return out


# -- assembly ---------------------------------------------------------------------------------
def assemble(plan: MetricPlan, tables: Mapping[str, pa.Table]) -> pl.DataFrame:
    """One row per aggregate row of every unit (``per="layer"``), or per document (``per="doc"``)."""
    req = plan.request
    rows: list[dict[str, Any]] = []
    extra_cols = plan.across_models
    for u in plan.units:
        t = tables[u.key]
        doc_hash = t.column("doc_hash").to_pylist()
        values = t.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
        ns = t.column("n").to_pylist()
        layer, layer2 = t.column("layer").to_pylist(), t.column("layer2").to_pylist()
        base = {"model": u.model, "extraction": u.eid, "dataset": req.dataset, "metric": plan.defn.name}
        if extra_cols:
            base.update(model2=u.model2, extraction2=u.eid2)
        if req.per == "doc":
            for h, v, n in zip(doc_hash, values, ns):
                if h is not None:
                    rows.append({**base, "layer": u.layer, "layer2": u.layer2, "doc_hash": h,
                                 "ordinal": plan.ordinals.get(h), "value": float(v), "n": n})
            continue
        agg = [i for i, h in enumerate(doc_hash) if h is None]
        if not agg:
            raise SpecError(f"cached unit {u.key} has no aggregate row; delete metrics/{u.eid}/{u.key}.parquet")
        docs_v = np.asarray([v for h, v in zip(doc_hash, values) if h is not None], dtype=np.float64)
        finite = docs_v[np.isfinite(docs_v)]
        std = sem = None
        if finite.size >= 2:
            std = float(np.std(finite, ddof=1))
            sem = std / float(np.sqrt(finite.size))
        for i in agg:
            rows.append({**base, "layer": layer[i], "layer2": layer2[i], "value": float(values[i]), "n": ns[i],
                         "std": std, "sem": sem})
    schema = dict(DOC_SCHEMA if req.per == "doc" else LAYER_SCHEMA)
    if extra_cols:
        schema.update(model2=pl.String, extraction2=pl.String)
    return pl.DataFrame(rows, schema=schema)
