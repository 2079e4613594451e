"""DuckDB SQL over the committed lake.

``lake.sql(query)`` runs on an in-memory DuckDB connection holding these
relations, rebuilt from commit markers whenever something new was committed
(checked on every call with a few directory listings):

``extractions``  one row per extraction: model id, aliases, revision, hashes, capture spec, layers, d_model, dtype
``datasets``     dataset, ordinal, doc_hash, text and the metadata columns (every dataset, union by name)
``docs``         extraction, shard, doc_hash, window, char_offset, n_tokens, row_start, truncated, layers
``tokens``       extraction, doc_hash, window, position, token_id, token, nll, shard, row: one row per stored token
``metrics``      the metric cache (``<lake>/metrics/**/*.parquet``), empty with its schema until filled
``vectors``      extraction, model, layer, doc_hash, window, position, token_id, token, nll, shard, row, norm, vec:
                 one row per stored token and layer; ``vec`` is ``FLOAT[d_model]``
``dataset_vectors``  dataset, ordinal + the columns of ``vectors``: one row per token of each dataset document
``vectors_<d>``, ``dataset_vectors_<d>``  the same restricted to the extractions of width ``d``

When the lake mixes widths, ``vec`` in ``vectors``/``dataset_vectors`` is a
``FLOAT[]`` list; the ``_<d>`` relations always have ``FLOAT[d]``. Filters on
the vector relations' own columns (extraction, model, layer, doc_hash, window,
position, dataset, ...) are pushed down to the chunks that hold the rows.

Extensions (the metric engine) add functions with :func:`register_sql_extension`.
A :class:`SqlCatalog` sits on a :class:`~layerlake.queries.engine.QueryEngine`
(the engine never imports this module); ``Lake.sql_catalog`` holds the lake's.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

import duckdb
import polars as pl

from ..errors import ReadOnlyError
from ..store import layout
from .snapshot import Snapshot, metric_files
from .vectors import VectorScope, VectorSource

if TYPE_CHECKING:
    from .engine import QueryEngine

log = logging.getLogger(__name__)

SqlExtension = Callable[[duckdb.DuckDBPyConnection, Any], None]
_EXTENSIONS: list[SqlExtension] = []

METRICS_SCHEMA: list[tuple[str, str]] = [
    ("extraction", "VARCHAR"), ("model", "VARCHAR"), ("dataset", "VARCHAR"), ("metric", "VARCHAR"),
    ("version", "VARCHAR"), ("params", "VARCHAR"), ("layer", "INTEGER"), ("layer2", "INTEGER"),
    ("doc_hash", "VARCHAR"), ("value", "DOUBLE"), ("n", "BIGINT"), ("computed_at", "VARCHAR"),
]
TOKENS_COLUMNS: list[tuple[str, str]] = [
    ("extraction", "VARCHAR"), ("doc_hash", "VARCHAR"), ("window", "INTEGER"), ("position", "INTEGER"),
    ("token_id", "INTEGER"), ("token", "VARCHAR"), ("nll", "FLOAT"), ("shard", "VARCHAR"), ("row", "BIGINT"),
]
DATASETS_EMPTY: list[tuple[str, str]] = [("dataset", "VARCHAR"), ("ordinal", "BIGINT"), ("doc_hash", "VARCHAR"),
                                         ("text", "VARCHAR")]
RELATIONS = ("extractions", "datasets", "docs", "tokens", "metrics", "vectors", "dataset_vectors")

# Statement types a read-only session may run (the CLI refuses everything else).
READ_ONLY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "SET", "VARIABLE_SET"}
# Statement types that write files or attach databases: refused when they point into the lake.
FILE_WRITING_TYPES = {"COPY", "EXPORT", "ATTACH", "COPY_DATABASE"}


def register_sql_extension(fn: SqlExtension) -> SqlExtension:
    """Call ``fn(conn, engine)`` once on every SQL connection of every lake (after the relations exist).

    ``engine``: the lake's :class:`~layerlake.queries.engine.QueryEngine` (``engine.store`` is its store).

    Use it to add functions, macros or relations, e.g. the metric engine's
    table functions. Usable as a decorator; registering the same function twice
    has no effect. A lake's connection opened before the call gets ``fn`` on its
    next ``lake.sql``; connections from :func:`connect` get it when opened.
    """
    if fn not in _EXTENSIONS:
        _EXTENSIONS.append(fn)
    return fn


def sql_extensions() -> list[SqlExtension]:
    return list(_EXTENSIONS)


def _q(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _empty_select(columns: Sequence[tuple[str, str]]) -> str:
    return "SELECT " + ", ".join(f'NULL::{t} AS "{c}"' for c, t in columns) + " WHERE false"


class SqlCatalog:
    """One DuckDB connection per lake handle, its relations refreshed when the lake's commits change."""

    def __init__(self, engine: "QueryEngine") -> None:
        self.engine = engine
        self.conn: duckdb.DuckDBPyConnection | None = None
        self._key: Any = None
        self._registered: set[str] = set()
        self._applied: list[SqlExtension] = []
        self._metrics_key: Any = None
        self._lock = threading.RLock()

    def connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            snap = self.engine.snapshot()
            fresh = self.conn is None
            if fresh:
                self.conn = new_connection(self.engine.store)
            if fresh or snap.key != self._key:
                self._registered = build_relations(self.conn, self.engine, snap, self._registered)
                self._key = snap.key
                self._metrics_key = None
            metrics = tuple(sorted(metric_files(self.engine.store).items()))
            if metrics != self._metrics_key:  # the metric cache changes often: only its view is rebuilt
                self.conn.execute(f"CREATE OR REPLACE VIEW metrics AS {metrics_sql(self.engine.store)}")
                self._metrics_key = metrics
            if fresh:
                self._applied = []
            for ext in sql_extensions():  # also extensions registered after the connection was opened
                if ext not in self._applied:
                    ext(self.conn, self.engine)
                    self._applied.append(ext)
            return self.conn

    def sql(self, query: str, params: Any = None, *, read_only: bool = False) -> duckdb.DuckDBPyRelation | None:
        """Run ``query``; ``read_only``: refuse anything but reads (else only writes into the lake)."""
        check_statements(query, lake_root=self.engine.store.fs, read_only=read_only)
        conn = self.connection()
        return conn.sql(query, params=params) if params is not None else conn.sql(query)


def new_connection(store: Any) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(":memory:")
    if store.fs.url_filesystem is not None:
        try:
            conn.register_filesystem(store.fs.url_filesystem)
        except Exception as exc:  # already registered or unsupported: DuckDB reports on first read
            log.debug("could not register %s with DuckDB: %s", store.fs.url, exc)
    return conn


def connect(engine: "QueryEngine") -> duckdb.DuckDBPyConnection:
    """A new, independent DuckDB connection with the relations and extensions of ``engine``'s lake (``lake.engine``)."""
    conn = new_connection(engine.store)
    build_relations(conn, engine, engine.snapshot(), set())
    for ext in sql_extensions():
        ext(conn, engine)
    return conn


def build_relations(conn: duckdb.DuckDBPyConnection, engine: "QueryEngine", snap: Snapshot,
                    registered: set[str]) -> set[str]:
    """(Re)create every relation from ``snap``; returns the names registered as Python objects."""
    from .catalog_frames import extractions_table

    store = engine.store
    for name in registered:
        try:
            conn.unregister(name)
        except duckdb.Error:
            pass
    objects: dict[str, Any] = {}
    objects["extractions"] = extractions_table(store)
    objects["docs"] = docs_relation(snap)
    sup = snap.superseded()
    objects["_layerlake_superseded"] = sup
    conn.execute(f"CREATE OR REPLACE VIEW datasets AS {datasets_sql(store, snap)}")
    conn.execute(f"CREATE OR REPLACE VIEW metrics AS {metrics_sql(store)}")
    # vector relations: every extraction, and per width
    all_eids = tuple(snap.extractions)
    objects["vectors"] = VectorSource(engine, snap, VectorScope(all_eids, name="vectors")).lazy()
    objects["dataset_vectors"] = VectorSource(engine, snap, VectorScope(all_eids, dataset="*",
                                                                        name="dataset_vectors")).lazy()
    for d in snap.dims():
        eids = tuple(e for e, info in snap.extractions.items() if info.d_model == d)
        objects[f"vectors_{d}"] = VectorSource(engine, snap, VectorScope(eids, name=f"vectors_{d}")).lazy()
        objects[f"dataset_vectors_{d}"] = VectorSource(
            engine, snap, VectorScope(eids, dataset="*", name=f"dataset_vectors_{d}")).lazy()
    for name, obj in objects.items():
        conn.register(name, obj)
    conn.execute(f"CREATE OR REPLACE VIEW tokens AS {tokens_sql(store, snap, sup)}")
    return set(objects)


def docs_relation(snap: Snapshot) -> pl.DataFrame:
    """``docs``: each stored window once, in the shard that serves its tokens, with the document's layers."""
    w = snap.windows.join(snap.token_placement, on=["extraction", "doc_hash", "shard"], how="semi")
    w = w.drop("layers").join(snap.doc_layers, on=["extraction", "doc_hash"], how="left")
    return w.select(["extraction", "shard", "doc_hash", "window", "char_offset", "n_tokens", "row_start",
                     "truncated", "layers"]).sort(["extraction", "shard", "row_start"])


def tokens_sql(store: Any, snap: Snapshot, superseded: pl.DataFrame) -> str:
    """One multi-file Parquet scan per extraction over its committed shards' ``tokens.parquet``.

    The shard id is the file's folder name. Shards whose documents are all
    served by another shard (store.placement) are left out; the others lose only those documents.
    """
    sup_counts = dict(superseded.group_by(["extraction", "shard"]).len().select(
        pl.concat_str(["extraction", "shard"], separator="/"), "len").iter_rows())
    doc_counts = dict(snap.windows.group_by(["extraction", "shard"]).agg(pl.col("doc_hash").n_unique()).select(
        pl.concat_str(["extraction", "shard"], separator="/"), "doc_hash").iter_rows())
    cols = 'doc_hash, "window", position, token_id, token, nll'
    shard_of = r"regexp_extract(filename, '([^/\\]+)[/\\]tokens\.parquet$', 1)"
    parts = []
    for eid, info in snap.extractions.items():
        files, partial = [], False
        for sid in info.shards:
            n_sup = sup_counts.get(f"{eid}/{sid}", 0)
            if n_sup and n_sup >= doc_counts.get(f"{eid}/{sid}", 0):
                continue  # every document of this shard is served by an earlier one
            partial = partial or bool(n_sup)
            files.append(_q(store.fs.url_of(*layout.shard_file(eid, sid, layout.TOKENS_FILE))))
        if not files:
            continue
        sel = (f"SELECT {_q(eid)} AS extraction, {cols}, {shard_of} AS shard, row "
               f"FROM read_parquet([{', '.join(files)}], filename = true)")
        if partial:
            sel = (f"SELECT * FROM ({sel}) t WHERE NOT EXISTS (SELECT 1 FROM _layerlake_superseded s "
                   f"WHERE s.extraction = t.extraction AND s.shard = t.shard AND s.doc_hash = t.doc_hash)")
        parts.append(sel)
    return "\nUNION ALL ".join(parts) if parts else _empty_select(TOKENS_COLUMNS)


def datasets_sql(store: Any, snap: Snapshot) -> str:
    parts = [f"SELECT {_q(n)} AS dataset, * FROM read_parquet({_q(store.fs.url_of(*layout.dataset_docs(n)))})"
             for n in snap.dataset_names]
    return "\nUNION ALL BY NAME ".join(parts) if parts else _empty_select(DATASETS_EMPTY)


def metrics_sql(store: Any) -> str:
    files = sorted(metric_files(store))
    empty = _empty_select(METRICS_SCHEMA)
    if not files:
        return empty
    listing = ", ".join(_q(store.fs.url_of(*layout.metrics_dir(), f)) for f in files)
    return f"SELECT * FROM ({empty}) UNION ALL BY NAME SELECT * FROM read_parquet([{listing}], union_by_name=true)"


# -- read-only guard ----------------------------------------------------------------------------
_STRING = re.compile(r"'((?:[^']|'')*)'")


def check_statements(query: str, *, lake_root: Any, read_only: bool) -> None:
    """Refuse statements that would write into the lake (``read_only``: anything but reads).

    Syntax errors are left to DuckDB, which reports them with their position.
    """
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error:
        return
    for i, st in enumerate(statements, 1):
        kind = str(st.type).split(".")[-1]
        text = " ".join(st.query.split())
        short = text if len(text) <= 60 else text[:57] + "..."
        if read_only and kind not in READ_ONLY_TYPES:
            raise ReadOnlyError(
                f"layerlake sql is read-only: statement {i} ({kind}: {short}) is refused; only queries "
                "(SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE, PRAGMA, SET) run here. To save a result use "
                "--out FILE with --format parquet|csv|json")
        if kind in FILE_WRITING_TYPES and _points_into(st.query, lake_root):
            raise ReadOnlyError(
                f"statement {i} ({kind}: {short}) would write into the lake {lake_root.url}; the lake is written "
                "only by ingest. Write results elsewhere (e.g. relation.write_parquet('out.parquet'))")


def _points_into(statement: str, lake_fs: Any) -> bool:
    return any(lake_fs.contains(m.group(1).replace("''", "'")) for m in _STRING.finditer(statement))
