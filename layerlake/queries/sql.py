"""DuckDB SQL over the committed lake, in a sandbox (:mod:`layerlake.queries.sandbox`).

``lake.sql(query)`` runs on a FRESH sandboxed DuckDB connection per call: the
relations below are registered as Python objects that layerlake's own readers
fill (every file checked against its commit marker or cache record), the SQL
extensions (metric functions) are installed, then limits are set and the
configuration is locked. DuckDB itself can open no file, URL or extension, and no
statement of one call (``CREATE OR REPLACE VIEW datasets``, ``SET``, ``ATTACH``)
changes what the next call sees. The relation objects are cached per snapshot
(commit markers, datasets) and metric-cache listing, so a fresh connection costs
a few milliseconds.

``extractions``  one row per extraction: model id, aliases, revision, hashes, capture spec, layers, d_model, dtype
``datasets``     dataset, ordinal, doc_hash, text and the metadata columns (every dataset, union by name); a
                 metadata column named ``dataset`` shows as ``meta_dataset``
``docs``         extraction, shard, doc_hash, window, char_offset, n_tokens, row_start, truncated, layers
``tokens``       extraction, doc_hash, window, position, token_id, token, nll, shard, row: one row per stored token
``metrics``      the metric cache (its entries ``<lake>/metrics/<eid>/<key>.parquet``, each checked), empty until filled
``vectors``      extraction, model, layer, doc_hash, window, position, token_id, token, nll, shard, row, norm, vec:
                 one row per stored token and layer; ``vec`` is ``FLOAT[d_model]``
``dataset_vectors``  dataset, ordinal + the columns of ``vectors``: one row per token of each dataset document
``vectors_<d>``, ``dataset_vectors_<d>``  the same restricted to the extractions of width ``d``

When the lake mixes widths, ``vec`` in ``vectors``/``dataset_vectors`` is a
``FLOAT[]`` list; the ``_<d>`` relations always have ``FLOAT[d]``. Filters on
the vector relations' own columns (extraction, model, layer, doc_hash, window,
position, dataset, ...) are pushed down to the chunks that hold the rows.
``tokens`` and ``datasets`` are read shard by shard / dataset by dataset when scanned.

``lake.sql`` returns a :class:`SqlResult`: the DuckDB relation behind a thin proxy
that runs its executing methods under the statement time limit and turns a
layerlake error raised inside a scan (IntegrityError, NotFoundError, LakeIOError...)
back into that error. Extensions add functions with :func:`register_sql_extension`.
A :class:`SqlCatalog` sits on a :class:`~layerlake.queries.engine.QueryEngine`
(the engine never imports this module); ``Lake.sql_catalog`` holds the lake's.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator

import duckdb
import polars as pl
import pyarrow as pa

from .. import errors
from ..errors import LayerlakeError, ReadOnlyError
from ..store import layout, read_parquet
from .metric_cache import CACHE_SCHEMA, read_unit
from .sandbox import SqlLimits, lock, open_sandbox, time_limit
from .snapshot import Snapshot, metric_files
from .vectors import VectorScope, VectorSource

if TYPE_CHECKING:
    from .engine import QueryEngine

log = logging.getLogger(__name__)

SqlExtension = Callable[[duckdb.DuckDBPyConnection, Any], None]
_EXTENSIONS: list[SqlExtension] = []
_OPEN: "weakref.WeakSet[duckdb.DuckDBPyConnection]" = weakref.WeakSet()

TOKENS_SCHEMA: dict[str, Any] = {
    "extraction": pl.String, "doc_hash": pl.String, "window": pl.Int32, "position": pl.Int32,
    "token_id": pl.Int32, "token": pl.String, "nll": pl.Float32, "shard": pl.String, "row": pl.Int64,
}
DATASETS_EMPTY: dict[str, Any] = {"dataset": pl.String, "ordinal": pl.Int64, "doc_hash": pl.String,
                                  "text": pl.String}
META_PREFIX = "meta_"  # a dataset's own metadata column that collides with a column layerlake adds
RELATIONS = ("extractions", "datasets", "docs", "tokens", "metrics", "vectors", "dataset_vectors")

# Statement types ``read_only=True`` (the CLI) lets through; the sandbox, not this list, keeps the lake safe.
QUERY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "SET", "VARIABLE_SET"}


def register_sql_extension(fn: SqlExtension) -> SqlExtension:
    """Call ``fn(conn, engine)`` on every SQL connection of every lake (after the relations exist, before locking).

    ``engine``: the lake's :class:`~layerlake.queries.engine.QueryEngine` (``engine.store`` is its store).

    Use it to add functions, macros or relations, e.g. the metric engine's
    table functions. Usable as a decorator; registering the same function twice
    has no effect. Every ``lake.sql`` call opens a fresh connection, so ``fn``
    runs once per call; the connection is sandboxed (no file access).
    """
    if fn not in _EXTENSIONS:
        _EXTENSIONS.append(fn)
    return fn


def sql_extensions() -> list[SqlExtension]:
    return list(_EXTENSIONS)


class SqlCatalog:
    """The relations of one lake handle, rebuilt when its commits change; a fresh sandbox per query."""

    def __init__(self, engine: "QueryEngine") -> None:
        self.engine = engine
        self._lock = threading.RLock()
        self._key: Any = None
        self._objects: dict[str, Any] = {}
        self._metrics_key: Any = None
        self._metrics: Any = None

    def relations(self) -> dict[str, Any]:
        """name -> the Python object DuckDB scans (Arrow tables, Polars frames), for the current snapshot."""
        with self._lock:
            snap = self.engine.snapshot()
            if snap.key != self._key:
                self._objects = build_relations(self.engine, snap)
                self._key = snap.key
            listing = tuple(sorted(metric_files(self.engine.store).items()))
            if listing != self._metrics_key:  # the metric cache changes often: only its relation is rebuilt
                self._metrics = metrics_relation(self.engine.store, [rel for rel, _ in listing])
                self._metrics_key = listing
            return {**self._objects, "metrics": self._metrics}

    def connect(self, limits: SqlLimits | None = None) -> duckdb.DuckDBPyConnection:
        """A new sandboxed, locked connection holding the relations and extensions."""
        limits = limits if limits is not None else SqlLimits.from_env()
        conn = open_sandbox()
        try:
            for name, obj in self.relations().items():
                conn.register(name, obj)
            for ext in sql_extensions():
                ext(conn, self.engine)
            lock(conn, limits)
        except BaseException:
            conn.close()
            raise
        return conn

    def sql(self, query: str, params: Any = None, *, read_only: bool = False,
            limits: SqlLimits | None = None) -> "SqlResult | None":
        """Run ``query`` on a fresh sandbox; ``read_only``: refuse anything but queries (friendlier message)."""
        if read_only:
            refuse_non_queries(query)
        limits = limits if limits is not None else SqlLimits.from_env()
        conn = self.connect(limits)
        try:
            with executing(conn, limits.timeout_s):
                rel = conn.sql(query, params=params) if params is not None else conn.sql(query)
        except BaseException:
            conn.close()
            raise
        if rel is None:
            conn.close()
            return None
        _OPEN.add(conn)
        return SqlResult(rel, conn, limits)


def connect(engine: "QueryEngine", limits: SqlLimits | None = None) -> duckdb.DuckDBPyConnection:
    """A new, independent sandboxed DuckDB connection with the relations and extensions of ``engine``'s lake."""
    return SqlCatalog(engine).connect(limits)


@atexit.register
def _close_open_connections() -> None:
    """Close the connections of results still alive at exit (DuckDB can abort if they are torn down late)."""
    for conn in list(_OPEN):
        try:
            conn.close()
        except duckdb.Error:
            log.debug("closing a SQL connection at exit failed", exc_info=True)


# -- the proxy --------------------------------------------------------------------------------
_ERROR_NAME = re.compile(r"\b([A-Z]\w*Error): ")


def original_error(exc: duckdb.Error) -> LayerlakeError | None:
    """The layerlake error a DuckDB error reports (raised inside a registered scan or a UDF), or None."""
    text = str(exc)
    for m in _ERROR_NAME.finditer(text):
        cls = getattr(errors, m.group(1), None)
        if isinstance(cls, type) and issubclass(cls, LayerlakeError):
            return cls(text[m.end():].strip())
    return None


@contextlib.contextmanager
def executing(conn: duckdb.DuckDBPyConnection, timeout_s: float) -> Iterator[None]:
    """Run a block under the time limit; a layerlake error reported by DuckDB is raised as itself."""
    try:
        with time_limit(conn, timeout_s):
            yield
    except duckdb.Error as exc:
        err = original_error(exc)
        if err is None:
            raise
        raise err from None


class SqlResult:
    """What ``lake.sql`` returns: a DuckDB relation (``.pl()``, ``.df()``, ``.arrow()``, ``.fetchall()``, ...).

    Every attribute is the relation's; calls run under the statement time limit
    (``LAYERLAKE_SQL_TIMEOUT``) and raise layerlake errors from scans as themselves;
    relations returned by chaining methods (``.filter``, ``.limit``...) come wrapped
    too. ``.relation`` is the plain ``duckdb.DuckDBPyRelation``, ``.connection`` its
    sandboxed connection.
    """

    __slots__ = ("relation", "connection", "limits")

    def __init__(self, relation: duckdb.DuckDBPyRelation, connection: duckdb.DuckDBPyConnection,
                 limits: SqlLimits) -> None:
        self.relation = relation
        self.connection = connection
        self.limits = limits

    def executing(self) -> Any:
        """Context manager: the time limit and error translation, for work on ``.relation`` done directly."""
        return executing(self.connection, self.limits.timeout_s)

    def _wrap(self, out: Any) -> Any:
        return SqlResult(out, self.connection, self.limits) if isinstance(out, duckdb.DuckDBPyRelation) else out

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.relation, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.executing():
                return self._wrap(attr(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = getattr(attr, "__doc__", None)
        return call

    def __getitem__(self, key: Any) -> Any:
        return self._wrap(self.relation[key])

    def __len__(self) -> int:
        with self.executing():
            return len(self.relation)

    def __str__(self) -> str:
        with self.executing():
            return str(self.relation)

    def __repr__(self) -> str:
        with self.executing():
            return repr(self.relation)


def refuse_non_queries(query: str) -> None:
    """Refuse statements that are not queries, with a message pointing at ``--out``.

    Only a friendlier message: the sandbox refuses writes whatever this says.
    Syntax errors are left to DuckDB, which reports them with their position.
    """
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error:
        return
    for i, st in enumerate(statements, 1):
        kind = str(st.type).split(".")[-1]
        if kind not in QUERY_TYPES:
            text = " ".join(st.query.split())
            short = text if len(text) <= 60 else text[:57] + "..."
            raise ReadOnlyError(
                f"layerlake sql is read-only: statement {i} ({kind}: {short}) is refused; only queries "
                "(SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE) run here. To save a result use "
                "--out FILE with --format parquet|csv|json")


# -- relations ---------------------------------------------------------------------------------
def build_relations(engine: "QueryEngine", snap: Snapshot) -> dict[str, Any]:
    """Every relation but ``metrics`` for ``snap``: name -> object to register."""
    from .catalog_frames import extractions_table

    objects: dict[str, Any] = {"extractions": extractions_table(engine.store), "docs": docs_relation(snap),
                               "datasets": datasets_relation(snap), "tokens": tokens_relation(engine, snap)}
    all_eids = tuple(snap.extractions)
    objects["vectors"] = VectorSource(engine, snap, VectorScope(all_eids, name="vectors")).lazy()
    objects["dataset_vectors"] = VectorSource(engine, snap, VectorScope(all_eids, dataset="*",
                                                                        name="dataset_vectors")).lazy()
    for d in snap.dims():
        eids = tuple(e for e, info in snap.extractions.items() if info.d_model == d)
        objects[f"vectors_{d}"] = VectorSource(engine, snap, VectorScope(eids, name=f"vectors_{d}")).lazy()
        objects[f"dataset_vectors_{d}"] = VectorSource(
            engine, snap, VectorScope(eids, dataset="*", name=f"dataset_vectors_{d}")).lazy()
    return objects


def frames_source(name: str, schema: dict[str, Any], frames: Callable[[], Iterator[pl.DataFrame]]) -> pl.LazyFrame:
    """A LazyFrame over ``frames()`` (read when scanned, one frame at a time) with filter/column/limit pushdown."""
    from polars.io.plugins import register_io_source

    def io(with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
           batch_size: int | None) -> Iterator[pl.DataFrame]:
        left = n_rows
        for df in frames():
            if predicate is not None:
                df = df.filter(predicate)
            if with_columns is not None:
                df = df.select(with_columns)
            if left is not None:
                df = df.head(left)
                left -= df.height
            yield df
            if left is not None and left <= 0:
                return

    try:
        return register_io_source(io, schema=schema, explain_name=f"layerlake {name}")
    except TypeError:  # polars without explain labels
        return register_io_source(io, schema=schema)


def docs_relation(snap: Snapshot) -> pl.DataFrame:
    """``docs``: each stored window once, in the shard that serves its tokens, with the document's layers."""
    w = snap.windows.join(snap.token_placement, on=["extraction", "doc_hash", "shard"], how="semi")
    w = w.drop("layers").join(snap.doc_layers, on=["extraction", "doc_hash"], how="left")
    return w.select(["extraction", "shard", "doc_hash", "window", "char_offset", "n_tokens", "row_start",
                     "truncated", "layers"]).sort(["extraction", "shard", "row_start"])


def tokens_relation(engine: "QueryEngine", snap: Snapshot) -> pl.LazyFrame:
    """``tokens``: each committed shard's ``tokens.parquet`` (checked against its commit marker), one at a time.

    Documents a shard holds but another shard serves (store.placement) are left out,
    so every stored token appears once.
    """
    store = engine.store
    served = snap.token_placement

    def frames() -> Iterator[pl.DataFrame]:
        for eid, info in snap.extractions.items():
            mine = served.filter(pl.col("extraction") == eid)
            for sid in info.shards:
                docs = mine.filter(pl.col("shard") == sid).select("doc_hash")
                if docs.height == 0:
                    continue  # every document of this shard is served by another one
                expect = store.shard_manifest(eid, sid).files.get(layout.TOKENS_FILE)
                if expect is None:
                    raise errors.IntegrityError(f"the commit marker of shard {sid} (extraction {eid}) does not list "
                                                f"{layout.TOKENS_FILE}; run `layerlake verify`")
                t = read_parquet(store.fs, *layout.shard_file(eid, sid, layout.TOKENS_FILE), expect=expect)
                df = pl.from_arrow(t).join(docs, on="doc_hash", how="semi")
                yield df.with_columns(pl.lit(eid).alias("extraction"), pl.lit(sid).alias("shard")).select(
                    [pl.col(c).cast(t_) for c, t_ in TOKENS_SCHEMA.items()])

    return frames_source("tokens", TOKENS_SCHEMA, frames)


def datasets_relation(snap: Snapshot) -> Any:
    """``datasets``: every dataset table (read by the store, checked), union by name, ``dataset`` first.

    A dataset whose table cannot be read makes only scans of ``datasets`` fail, with its error.
    """
    try:
        tables = [dataset_rows(name, snap.dataset(name)) for name in snap.dataset_names]
    except LayerlakeError as exc:
        return failing_relation("datasets", DATASETS_EMPTY, exc)
    if not tables:
        return pl.DataFrame(schema=DATASETS_EMPTY)
    return pa.concat_tables(tables, promote_options="permissive")


def dataset_rows(name: str, table: pa.Table) -> pa.Table:
    """One dataset's table with its ``dataset`` column; its own ``dataset`` column becomes ``meta_dataset``."""
    names = [META_PREFIX + c if c == "dataset" else c for c in table.column_names]
    table = table.rename_columns(names)
    return table.add_column(0, "dataset", pa.array([name] * table.num_rows, pa.string()))


def metrics_relation(store: Any, files: list[str]) -> Any:
    """``metrics``: every cache unit read by :func:`~layerlake.queries.metric_cache.read_unit`, in one table."""
    tables = []
    try:
        for rel in files:
            eid, _, fname = rel.rpartition("/")
            tables.append(read_unit(store, eid, fname[: -len(".parquet")]))
    except LayerlakeError as exc:
        return failing_relation("metrics", dict(pl.from_arrow(CACHE_SCHEMA.empty_table()).schema), exc)
    return pa.concat_tables(tables) if tables else CACHE_SCHEMA.empty_table()


def failing_relation(name: str, schema: dict[str, Any], exc: LayerlakeError) -> pl.LazyFrame:
    """A relation whose scan raises ``exc`` (queries that do not read it still run)."""

    def frames() -> Iterator[pl.DataFrame]:
        raise type(exc)(str(exc))

    return frames_source(name, schema, frames)
