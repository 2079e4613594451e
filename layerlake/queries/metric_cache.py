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

Integrity: each file carries the crc32c of its content (``store.sealed``) and
is checked on every read. A damaged entry, or one without a checksum, is never
served: :func:`read_unit` raises :class:`IntegrityError` naming it, the metric
engine then recomputes (and rewrites) the unit, :func:`read_all` (the SQL
``metrics`` relation) raises, and ``layerlake verify`` reports it. A *missing*
entry is simply not cached: the cache may be deleted at any time.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ..errors import IntegrityError
from ..store import LakeStore, layout, read_sealed, sealed_parquet

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
    """One cached unit, checked against its content checksum; IntegrityError naming the file if damaged."""
    parts = layout.metric_file(eid, key)
    table = read_sealed(store.fs, *parts)
    if table.schema.remove_metadata() != CACHE_SCHEMA:
        raise IntegrityError(f"{store.fs.url_of(*parts)}: columns {table.schema.names} are not the metric cache's "
                             f"{CACHE_SCHEMA.names}; run `layerlake verify`")
    return table


def read_all(store: LakeStore) -> pa.Table:
    """Every cached unit of the lake (:data:`CACHE_SCHEMA`), each checked; IntegrityError for a damaged one."""
    tables = [read_unit(store, eid, key) for eid in sorted(store.fs.listdir(*layout.metrics_dir()))
              for key in sorted(cached_keys(store, eid))]
    return pa.concat_tables(tables) if tables else CACHE_SCHEMA.empty_table()


def write_unit(store: LakeStore, eid: str, key: str, table: pa.Table) -> bool:
    """Write one unit atomically, sealed with its content checksum; False (and logs) when the lake is read-only."""
    if store.fs.read_only:
        log.debug("lake %s is read-only: metric unit %s not cached", store.fs.url, key)
        return False
    store.fs.write_bytes_atomic(sealed_parquet(table.cast(CACHE_SCHEMA)), *layout.metric_file(eid, key))
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
