"""Jacobian-sketch metrics through ``lake.metric``, cached like every other metric.

``coupling`` -> rows (layer, layer2 = the basis provider's block, value);
``jacobian_coupling_score`` -> one row per model (layer null);
``top_singular_values`` -> rows (layer, layer2 = rank 1..K, value).
Values are averages over the dataset's sketched tokens (see docs/jacobians.md).
The cache key holds the extraction, the dataset's documents, metric@version,
the non-default parameters, the sketch key and the blocks.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ..errors import NotFoundError
from ..metrics import get_metric
from ..store import LakeStore
from .jacobians import _resolve_blocks, compute_jacobian_metric, resolve_sketch
from .metric_cache import (cached_keys, docs_fingerprint, params_json, read_unit, unit_key, unit_table,
                           write_unit)
from .metric_engine import LAYER_SCHEMA


def jacobian_metric(store: LakeStore, name: str, dataset: str, model: Any = None, layers: Any = "all",
                    sketch: Any = None, cache: Any = True, **params: Any) -> pl.DataFrame:
    defn = get_metric(name)
    resolved = defn.resolve_params(params)
    non_default = {k: v for k, v in sorted(resolved.items()) if v != defn.params[k]}
    models = model if isinstance(model, (list, tuple)) else [model]
    if model is None:
        models = sorted(store.dataset_links(dataset)) or [None]
    docs = docs_fingerprint(store.dataset_table(dataset).column("doc_hash").to_pylist())
    frames = []
    for m in models:
        eid = store.resolve_extraction(dataset, m)
        try:
            key = resolve_sketch(store, eid, sketch)
        except NotFoundError:
            if model is None and len(models) > 1:
                continue  # this model has no sketches; others may
            raise
        blocks = _resolve_blocks(store, eid, key, layers)
        ukey = unit_key(extraction=eid, docs=docs, metric=name, version=defn.version,
                        params={**non_default, "sketch": key}, unit={"blocks": blocks})
        label = ", ".join(store.aliases(eid)) or eid
        if cache is True and ukey in cached_keys(store, eid):
            table = read_unit(store, eid, ukey)
        else:
            raw = compute_jacobian_metric(store, name, dataset, eid, blocks, sketch=key, **resolved)
            second = "rank" if "rank" in raw.columns else "layer2"
            rows = [{"layer": r.get("layer"), "layer2": r.get(second), "value": r["value"], "n": r["n"]}
                    for r in raw.iter_rows(named=True)]
            table = unit_table(rows, {"extraction": eid, "model": label, "dataset": dataset, "metric": name,
                                      "version": defn.version, "params": params_json(non_default)})
            if cache is not False:
                write_unit(store, eid, ukey, table)
        frames.append(pl.from_arrow(table).select(["model", "extraction", "dataset", "metric", "layer", "layer2",
                                                    "value", "n"]))
    if not frames:
        raise NotFoundError(f"no extraction of dataset {dataset!r} has Jacobian sketches; ingest with "
                            "--jacobian-k K (Python: jacobian=ll.JacobianSketch(k=K))")
    out = pl.concat(frames)
    return out.with_columns(pl.lit(None, pl.Float64).alias("std"), pl.lit(None, pl.Float64).alias("sem")) \
        .cast({k: v for k, v in LAYER_SCHEMA.items()})
