"""The metric cache: one Parquet file per computed unit, named after its content key.

Layout: ``<lake>/metrics/<extraction>/<key>.parquet``. A *unit* is what one
file holds (:class:`~layerlake.queries.metric_plan.Unit`); its key is built by
:func:`~layerlake.queries.metric_plan.unit_key`, the only key builder. This
module stores and lists the files; it never builds a key.

Rows (:data:`CACHE_SCHEMA`, exactly these columns, also the SQL view
``metrics``): per-document values (``doc_hash`` set) for document-granularity
metrics, and the unit's aggregate rows (``doc_hash`` NULL; for document metrics
one row, the mean over the documents with a finite value, ``n`` = their count;
a Jacobian-sketch unit holds one row per layer pair or rank).
Files are written whole and atomically (``LakeFS.write_bytes_atomic``), so a
reader sees a unit completely or not at all; two processes computing the same
unit write identical content and the last one wins.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..store import LakeStore, layout

log = logging.getLogger(__name__)

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
