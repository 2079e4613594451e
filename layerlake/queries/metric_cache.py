"""The metric cache: one Parquet file per computed unit, keyed by content.

Layout: ``<lake>/metrics/<extraction>/<key>.parquet``. A *unit* is what one
file holds: one metric at one layer (or one layer pair, or the whole model for
layer-free metrics) of one extraction over one ordered set of documents. The
key is the hash of (extraction id, the fingerprint of the documents' hashes in
order, ``metric@version``, the non-default metric parameters and the engine
options that change values, sorted, and the unit) — the Hugging Face
``datasets`` fingerprint habit: content, never names, paths or times. A new
parameter value, a new metric version or other documents give a new key, so
nothing is ever invalidated in place.

Rows (:data:`CACHE_SCHEMA`, exactly these columns, also the SQL view
``metrics``): per-document values (``doc_hash`` set) for document-granularity
metrics, and one aggregate row per unit (``doc_hash`` NULL; for document
metrics the mean over the documents with a finite value, ``n`` = their count).
Files are written whole and atomically (``LakeFS.write_bytes_atomic``), so a
reader sees a unit completely or not at all; two processes computing the same
unit write identical content and the last one wins.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..store import LakeStore, canonical_json, json_hash, layout

log = logging.getLogger(__name__)

KEY_LEN = 32

CACHE_SCHEMA = pa.schema([
    ("extraction", pa.string()),
    ("model", pa.string()),
    ("dataset", pa.string()),
    ("metric", pa.string()),
    ("version", pa.string()),
    ("params", pa.string()),
    ("layer", pa.int32()),
    ("layer2", pa.int32()),
    ("doc_hash", pa.string()),
    ("value", pa.float64()),
    ("n", pa.int64()),
    ("computed_at", pa.string()),
])


def docs_fingerprint(doc_hashes: Iterable[str]) -> str:
    """Fingerprint of an ordered list of document hashes (content, not the dataset name)."""
    h = hashlib.sha256()
    for d in doc_hashes:
        h.update(d.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def unit_key(*, extraction: str, docs: str, metric: str, version: str, params: Mapping[str, Any],
             unit: Mapping[str, Any]) -> str:
    """Cache key of one unit; ``params`` = non-default metric parameters + value-changing engine options."""
    return json_hash({"extraction": extraction, "docs": docs, "metric": f"{metric}@{version}",
                      "params": dict(sorted(params.items())), "unit": dict(unit)}, KEY_LEN)


def params_json(params: Mapping[str, Any]) -> str:
    """The ``params`` column: canonical JSON (sorted keys) of the non-default parameters."""
    return canonical_json(_plain(dict(params)))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def cached_keys(store: LakeStore, eid: str) -> set[str]:
    """Keys present in ``metrics/<eid>/`` (one directory listing)."""
    return layout.metric_keys(store.fs.listdir(*layout.metrics_dir(eid)))


def read_unit(store: LakeStore, eid: str, key: str) -> pa.Table:
    fs = store.fs
    table = pq.read_table(fs.path(*layout.metric_file(eid, key)), filesystem=fs.arrow_filesystem)
    return table.cast(CACHE_SCHEMA)


def write_unit(store: LakeStore, eid: str, key: str, table: pa.Table) -> bool:
    """Write one unit atomically; returns False (and logs) when the lake is read-only."""
    if store.fs.read_only:
        log.debug("lake %s is read-only: metric unit %s not cached", store.fs.url, key)
        return False
    buf = io.BytesIO()
    pq.write_table(table.cast(CACHE_SCHEMA), buf, compression="zstd")
    store.fs.write_bytes_atomic(buf.getvalue(), *layout.metric_file(eid, key))
    return True


def unit_table(rows: list[dict[str, Any]], common: Mapping[str, Any]) -> pa.Table:
    """Rows (``layer``, ``layer2``, ``doc_hash``, ``value``, ``n``) + common columns -> a cache table."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    cols: dict[str, list[Any]] = {name: [] for name in CACHE_SCHEMA.names}
    for r in rows:
        full = {**common, **r, "computed_at": now}
        for name in CACHE_SCHEMA.names:
            cols[name].append(full.get(name))
    return pa.table(cols, schema=CACHE_SCHEMA)
