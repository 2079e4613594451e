"""What a metric computation is: the request, its units and plan, the output schemas and THE cache key.

Every registered metric, Jacobian-sketch metrics included, is planned into
:class:`Unit` s (one cache file each) by :mod:`.metric_engine`, computed by
:mod:`.metric_compute` and stored by :mod:`.metric_cache`. The key of a unit is
built here and nowhere else (:func:`unit_key`), after the Hugging Face
``datasets`` fingerprint habit: the input's fingerprint (extraction id +
:func:`docs_fingerprint` of the documents in order) + ``metric@version`` + the
canonical non-default parameters and value-changing engine options, sorted +
the unit (layer, layer pair or blocks). Parameters are canonicalised by the
registry (:meth:`~layerlake.metrics.MetricDef.resolve_params`), so ``alpha=1``
and ``alpha=1.0`` give one key. Content only: never paths, names or times.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from ..errors import SpecError
from ..metrics import MetricDef, get_metric
from ..store import canonical_json, json_hash, layout, parse_layers
from .metric_inputs import DEFAULT_BLOCK_BYTES

PER_CHOICES = ("layer", "doc")
PER_DOC_KINDS = ("doc_hidden", "doc_nll", "doc_trajectory")  # inputs with one value per document
EXECUTORS = ("local",)
DEFAULT_MAX_TOKENS = 10_000
KEY_LEN = 32

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
    "jacobian_sketch": {"sketch": None},
}
ALL_ENGINE_OPTIONS = sorted({k for v in ENGINE_OPTIONS.values() for k in v})

#: Columns of ``lake.metric(..., per="layer")`` and ``per="doc"``.
LAYER_SCHEMA = {"model": pl.String, "extraction": pl.String, "dataset": pl.String, "metric": pl.String,
                "layer": pl.Int32, "layer2": pl.Int32, "value": pl.Float64, "n": pl.Int64, "std": pl.Float64,
                "sem": pl.Float64}
DOC_SCHEMA = {"model": pl.String, "extraction": pl.String, "dataset": pl.String, "metric": pl.String,
              "layer": pl.Int32, "layer2": pl.Int32, "doc_hash": pl.String, "ordinal": pl.Int64,
              "value": pl.Float64, "n": pl.Int64}
UNITS_SCHEMA = {"model": pl.String, "extraction": pl.String, "layer": pl.Int32, "layer2": pl.Int32,
                "model2": pl.String, "status": pl.String, "key": pl.String}


# -- the cache key ------------------------------------------------------------------------------
def docs_fingerprint(doc_hashes: Iterable[str]) -> str:
    """Fingerprint of an ordered list of document hashes (content, not the dataset name)."""
    h = hashlib.sha256()
    for d in doc_hashes:
        h.update(d.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def key_params(defn: MetricDef, params: Mapping[str, Any],
               options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Canonical non-default metric parameters + value-changing engine ``options``, sorted by name."""
    canonical = defn.resolve_params(params)
    out = {k: v for k, v in canonical.items() if v != defn.params[k]}
    out.update(options or {})
    return dict(sorted(out.items()))


def unit_key(defn: MetricDef, *, extraction: str, docs: str, params: Mapping[str, Any],
             options: Mapping[str, Any], unit: Mapping[str, Any]) -> str:
    """The cache key (and file name) of one unit; the only place a key is built.

    ``docs``: :func:`docs_fingerprint`; ``params``: the metric parameters (any
    subset; canonicalised here); ``options``: value-changing engine options and
    the unit's own key parameters (``vs_extraction``, ``layers``, ``sketch``);
    ``unit``: where in the model (``layer``/``layer2``, or ``blocks``).
    """
    return json_hash({"extraction": extraction, "docs": docs, "metric": f"{defn.name}@{defn.version}",
                      "params": key_params(defn, params, options), "unit": dict(unit)}, KEY_LEN)


def params_json(params: Mapping[str, Any]) -> str:
    """The cache's ``params`` column: canonical JSON (sorted keys) of :func:`key_params`."""
    return canonical_json(_plain(dict(params)))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# -- plan types ---------------------------------------------------------------------------------
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


def make_request(name: str, dataset: str, model: Any = None, layers: Any = "all", per: str = "layer",
                 executor: str = "local", params: Mapping[str, Any] | None = None, cache: Any = True,
                 block_bytes: int = DEFAULT_BLOCK_BYTES, **kwargs: Any) -> MetricRequest:
    """Split ``kwargs`` into engine options and metric parameters and build a request."""
    defn = get_metric(name)
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in ALL_ENGINE_OPTIONS}
    allowed = ENGINE_OPTIONS[defn.input]
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


@dataclasses.dataclass
class Unit:
    """One cache file's worth of work: a metric at one layer / pair / model of one extraction.

    ``unit``: where in the model, part of the key (``{"layer": l}``, ``{"layer": a,
    "layer2": b}``, ``{}`` for a whole model, ``{"blocks": [...]}`` for sketches);
    ``extra``: the unit's own key parameters (``vs_extraction``, ``layers``, ``sketch``);
    ``reads``: ``(extraction, layer)`` it reads; layer None = per-token losses
    (Jacobian-sketch units: the sketched blocks).
    """

    eid: str
    model: str
    layer: int | None
    layer2: int | None
    key: str
    cached: bool
    reads: list[tuple[str, int | None]]
    eid2: str | None = None
    model2: str | None = None
    unit: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


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
    """What ``compute_metric`` will do; ``print(plan)`` shows it."""

    request: MetricRequest
    defn: MetricDef
    params: dict[str, Any]  # resolved, canonical metric parameters (defaults + given)
    key_params: dict[str, Any]  # key_params(): non-default parameters + value-changing engine options
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

    @functools.cached_property
    def docs_fingerprint(self) -> str:
        return docs_fingerprint(self.docs)

    def unit_params(self, u: Unit) -> dict[str, Any]:
        """The key parameters of unit ``u`` (the cache's ``params`` column)."""
        return dict(sorted({**self.key_params, **u.extra}.items()))

    def add_unit(self, ex: Extraction, layer: int | None, layer2: int | None, reads: list[tuple[str, int | None]],
                 extra: Mapping[str, Any] | None = None, ex2: Extraction | None = None,
                 unit: Mapping[str, Any] | None = None) -> None:
        """Append a unit, keyed by :func:`unit_key` (``unit`` default: its layer / layer pair)."""
        extra = dict(extra or {})
        if unit is None:
            unit = {k: v for k, v in (("layer", layer), ("layer2", layer2)) if v is not None}
        key = unit_key(self.defn, extraction=ex.eid, docs=self.docs_fingerprint, params=self.params,
                       options={**self.key_params, **extra}, unit=unit)
        self.units.append(Unit(eid=ex.eid, model=ex.label, layer=layer, layer2=layer2, key=key, cached=False,
                               reads=reads, eid2=ex2.eid if ex2 else None, model2=ex2.label if ex2 else None,
                               unit=dict(unit), extra=extra))

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame([{"model": u.model, "extraction": u.eid, "layer": u.layer, "layer2": u.layer2,
                              "model2": u.model2, "status": "cached" if u.cached else "compute",
                              "key": u.key} for u in self.units], schema=UNITS_SCHEMA)

    def describe(self, reads: list[dict[str, Any]] | None = None) -> str:
        """The plan as text; ``reads`` (``metric_engine.plan_reads``) adds what the missing units read."""
        d = self.defn
        lines = [(f"metric {d.name}@{d.version} (input {d.input}, granularity {d.granularity}) on dataset "
                  f"{self.request.dataset!r}: {len(self.originals)} document(s); params "
                  f"{params_json(self.key_params)}")]
        n_cached = sum(u.cached for u in self.units)
        lines.append(f"{len(self.units)} unit(s): {n_cached} from cache, {len(self.units) - n_cached} to compute")
        for u in self.units:
            if "blocks" in u.unit:
                where = f"blocks {u.unit['blocks']}"
            else:
                where = "layer " + ("-" if u.layer is None else str(u.layer))
            if u.layer2 is not None:
                where += f" -> {u.layer2}"
            other = f" vs {u.model2}" if u.model2 else ""
            status = "cached " if u.cached else "compute"
            lines.append(f"  {status}  {u.model}{other}  {where}  {layout.rel(layout.metric_file(u.eid, u.key))}")
        if reads is not None and self.to_compute:
            total = sum(r["bytes"] for r in reads)
            lines.append(f"will read {len(reads)} array(s), about {total / 1e6:,.1f} MB (before compression):")
            for r in reads:
                lines.append(f"  {r['model']} ({r['extraction']}) {_read_label(r)}: {r['documents']} docs, "
                             f"{r['tokens']:,} tokens, {r['bytes'] / 1e6:,.1f} MB")
        elif not self.to_compute:
            lines.append("nothing to read: every unit is cached")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def _read_label(r: Mapping[str, Any]) -> str:
    if r["what"] == "jacobian.zarr":
        return f"Jacobian sketch {r['sketch']} block {r['layer']}"
    return "losses (tokens.parquet)" if r["layer"] is None else f"layer {r['layer']}"


class MetricExplanation:
    """``explain_metric``'s answer: the plan plus the reads it implies; prints as text."""

    def __init__(self, plan: MetricPlan, reads: list[dict[str, Any]]) -> None:
        self.plan = plan
        self.reads = reads
        self.text = plan.describe(reads)

    @property
    def units(self) -> pl.DataFrame:
        return self.plan.to_frame()

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython
        p.text(self.text)
