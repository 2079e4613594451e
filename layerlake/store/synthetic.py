"""Write an extraction of given arrays straight through the store API (no model).

For tests and benchmarks of everything downstream of ingest: the result is a
normal committed extraction (shards, dataset, link, alias), so the metric
engine, SQL and frames read it like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .arrays import to_physical
from .catalog import LakeStore
from .hashing import doc_hash, extraction_id, json_hash
from .shards import ShardData, write_shard

HiddenFn = Callable[[int, int, int], np.ndarray]  # (layer, document index, n_tokens) -> [n_tokens, d_model]


def write_synthetic_extraction(store: LakeStore, dataset: str, texts: Sequence[str], hidden: HiddenFn, *,
                               layers: Sequence[int], d_model: int, tokens_per_doc: Sequence[int],
                               model: str = "synthetic", n_layers: int | None = None, dtype: str = "float16",
                               nll: Callable[[int, int], np.ndarray] | None = None,
                               meta: dict[str, Sequence[Any]] | None = None, docs_per_shard: int = 256) -> str:
    """Store ``hidden(layer, i, n)`` for every document ``texts[i]`` and link ``dataset``; returns the extraction id.

    ``nll(i, n)`` gives ``[n]`` per-token losses (NaN = missing); default: none stored.
    ``meta`` adds dataset columns (e.g. ``group``/``view``). Documents go to shards of
    ``docs_per_shard`` documents, one window each.
    """
    hashes = [doc_hash(t) for t in texts]
    if len(set(hashes)) != len(hashes):
        raise ValueError("texts must be distinct")
    layers = sorted(int(l) for l in layers)
    eid = extraction_id(json_hash({"synthetic": model}), {"synthetic": True, "dtype": dtype})
    store.create_extraction(eid, {"model": {"model": model}, "capture": {"synthetic": True, "dtype": dtype},
                                  "d_model": int(d_model), "n_layers": int(n_layers or max(layers)),
                                  "is_causal": nll is not None, "dtype": dtype})
    store.add_alias(eid, model)
    have = store.covered_docs(eid, layers)
    todo = [i for i, h in enumerate(hashes) if h not in have]
    for s in range(0, len(todo), docs_per_shard):
        idx = todo[s:s + docs_per_shard]
        counts = [int(tokens_per_doc[i]) for i in idx]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        total = int(sum(counts))
        docs = pa.table({"doc_hash": [hashes[i] for i in idx], "window": [0] * len(idx), "char_offset": [0] * len(idx),
                         "n_tokens": counts, "row_start": starts, "truncated": [False] * len(idx)})
        losses = np.concatenate([np.asarray(nll(i, n), np.float32) if nll else np.full(n, np.nan, np.float32)
                                 for i, n in zip(idx, counts)])
        tokens = pa.table({
            "row": np.arange(total, dtype=np.int64),
            "doc_hash": [hashes[i] for i, n in zip(idx, counts) for _ in range(n)],
            "window": np.zeros(total, np.int32),
            "position": np.concatenate([np.arange(n, dtype=np.int32) for n in counts]),
            "token_id": np.zeros(total, np.int32),
            "token": [""] * total,
            "nll": pa.array(losses, pa.float32(), mask=np.isnan(losses)),
        })
        arrays = {}
        for l in layers:
            block = np.concatenate([np.asarray(hidden(l, i, n), np.float32).reshape(n, d_model)
                                    for i, n in zip(idx, counts)])
            arrays[l] = to_physical(block, dtype)
        write_shard(store.fs, eid, ShardData(docs=docs, tokens=tokens, hidden=arrays, dtype=dtype))
    cols: dict[str, Any] = {"doc_hash": hashes, "text": list(texts)}
    cols.update({k: list(v) for k, v in (meta or {}).items()})
    store.write_dataset(dataset, pa.table(cols))
    store.link_dataset(dataset, eid, {"model": model, "layers": layers, "n_docs": len(texts)})
    return eid
