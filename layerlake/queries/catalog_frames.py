"""Catalog summaries: extractions and datasets as tables (for `ls` and SQL)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..store import LakeStore


def extractions_table(store: LakeStore) -> pa.Table:
    rows = []
    for eid in store.extraction_ids():
        man = store.extraction(eid)
        shards = store.shard_manifests(eid)
        model = man.model
        rows.append({
            "extraction": eid,
            "model": model.get("model"),
            "aliases": store.aliases(eid),
            "revision": model.get("revision"),
            "model_class": model.get("model_class"),
            "weights_hash": model.get("weights_hash"),
            "tokenizer_hash": man.tokenizer_hash,
            "capture": str(man.capture),
            "layers": sorted({l for s in shards for l in s.layers}),
            "n_layers": man.n_layers,
            "d_model": man.d_model,
            "dtype": man.dtype,
            "is_causal": man.is_causal,
            "shards": len(shards),
            "documents": len(store.placement(eid).layers_held) if shards else 0,
            "tokens": int(sum(s.n_rows for s in shards)),
            "bytes": int(sum(s.bytes for s in shards)),
            "fingerprint": man.fingerprint,
            "created": man.created,
        })
    schema = pa.schema([("extraction", pa.string()), ("model", pa.string()), ("aliases", pa.list_(pa.string())),
                        ("revision", pa.string()), ("model_class", pa.string()), ("weights_hash", pa.string()),
                        ("tokenizer_hash", pa.string()), ("capture", pa.string()), ("layers", pa.list_(pa.int32())),
                        ("n_layers", pa.int32()), ("d_model", pa.int32()), ("dtype", pa.string()),
                        ("is_causal", pa.bool_()), ("shards", pa.int64()), ("documents", pa.int64()),
                        ("tokens", pa.int64()), ("bytes", pa.int64()), ("fingerprint", pa.string()),
                        ("created", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def datasets_summary(store: LakeStore) -> pa.Table:
    rows = []
    for name in store.dataset_names():
        table = store.dataset_table(name)
        links = store.dataset_links(name)
        rows.append({"dataset": name, "documents": table.num_rows,
                     "extractions": sorted(links), "models": sorted({l.get("model", "") for l in links.values()})})
    schema = pa.schema([("dataset", pa.string()), ("documents", pa.int64()),
                        ("extractions", pa.list_(pa.string())), ("models", pa.list_(pa.string()))])
    return pa.Table.from_pylist(rows, schema=schema)


def lake_summary(store: LakeStore) -> dict[str, Any]:
    return {"lake": store.fs.url, "extractions": extractions_table(store).to_pylist(),
            "datasets": datasets_summary(store).to_pylist()}
