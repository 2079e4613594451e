"""``Lake``: the user-facing handle that ties store, ingest and queries together.

A ``Lake`` owns its :class:`~layerlake.store.LakeStore` (``store``), its
:class:`~layerlake.queries.engine.QueryEngine` (``engine``) and, from the first
SQL call, its :class:`~layerlake.queries.sql.SqlCatalog` (``sql_catalog``);
the functions it calls take the store or the engine, never the lake.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import polars as pl

from .queries.engine import QueryEngine
from .store import JacobianSketch, LakeStore

if TYPE_CHECKING:
    from .queries.sql import SqlCatalog


class Lake:
    """Open or create a lake at a local path or fsspec URL.

    ``mode="a"`` opens or creates (default), ``"r"`` opens read-only (every
    write fails with :class:`layerlake.ReadOnlyError`).
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a",
                 storage_options: dict[str, Any] | None = None) -> None:
        self.store = LakeStore(path, mode=mode, storage_options=storage_options)
        self.engine = QueryEngine(self.store)
        self._sql_catalog: SqlCatalog | None = None
        self._sql_lock = threading.Lock()

    @property
    def sql_catalog(self) -> SqlCatalog:
        """This lake's SQL relations (built on first use; each query gets a fresh sandboxed connection)."""
        with self._sql_lock:
            if self._sql_catalog is None:
                from .queries.sql import SqlCatalog
                self._sql_catalog = SqlCatalog(self.engine)
            return self._sql_catalog

    @property
    def url(self) -> str:
        return self.store.fs.url

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    # -- ingest ------------------------------------------------------------------------------
    def ingest(self, model: Any, data: Any, *, dataset: str | None = None, text_column: str = "text",
               layers: Any = "all", max_length: int | None = None, overflow: str = "truncate", stride: int = 0,
               dtype: str = "float16", device: str = "auto", jacobian: JacobianSketch | None = None,
               executor: str = "local", **options: Any) -> Any:
        """Run ``model`` over ``data`` once and store hidden states, losses (and sketches).

        model: Hub id, local directory (``gguf_file=`` for GGUF) or a PreTrainedModel
        (with ``tokenizer=``); data: list of strings, .txt/.jsonl/.parquet/.csv path, folder
        of .txt files, DataFrame or datasets.Dataset. Returns an ``IngestResult``.
        """
        from .ingest import ingest
        return ingest(self.store, model, data, dataset=dataset, text_column=text_column, layers=layers,
                      max_length=max_length, overflow=overflow, stride=stride, dtype=dtype, device=device,
                      jacobian=jacobian, executor=executor, **options)

    # -- catalog -----------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        return self.store.dataset_names()

    def extractions(self) -> pl.DataFrame:
        from .queries.catalog_frames import extractions_table
        return pl.from_arrow(extractions_table(self.store))

    def ls(self) -> dict[str, Any]:
        """Extractions and datasets with document, token and byte counts."""
        from .queries.catalog_frames import lake_summary
        return lake_summary(self.store)

    def verify(self, deep: bool = True) -> list[Any]:
        """Problems found (empty list = healthy): manifests, checksums, orphans."""
        from .store import verify_lake
        return verify_lake(self.store, deep=deep)

    # -- reads -------------------------------------------------------------------------------
    def tokens(self, dataset: str, model: str | None = None) -> pl.LazyFrame:
        from .queries.frames import tokens_frame
        return tokens_frame(self.store, dataset, model)

    def docs(self, dataset: str, model: str | None = None) -> pl.LazyFrame:
        from .queries.frames import docs_frame
        return docs_frame(self.store, dataset, model)

    def read_vectors(self, dataset: str, model: str | None = None, layers: Any = "all",
                     docs: Sequence[str] | None = None) -> np.ndarray:
        """Float32 ``[layers, tokens, d_model]`` (``[tokens, d_model]`` for an int layer) in dataset order."""
        from .queries.frames import read_vectors
        return read_vectors(self.store, dataset, model, layers, docs)

    def vectors(self, dataset: str, model: str | None = None, layers: Any = "all",
                docs: Sequence[str] | None = None) -> pl.LazyFrame:
        """The dataset's token vectors as a LazyFrame (``vec``: ``Array(Float32, d_model)``), pushdown to chunks.

        Rows: layer by layer (in ``layers`` order), documents in dataset order,
        tokens by position. Filters and column selections are pushed into the
        scan: only the chunks holding selected rows are read.
        """
        from .queries.vectors import dataset_vectors
        return dataset_vectors(self.engine, dataset, model, layers, docs)

    # -- SQL ---------------------------------------------------------------------------------
    def sql(self, query: str, params: Any = None, *, read_only: bool = False, limits: Any = None) -> Any:
        """Run DuckDB SQL over the committed lake in a sandbox; returns a relation (``.pl()``, ``.df()``, ``.arrow()``).

        Relations: extractions, datasets, docs, tokens, metrics, vectors, dataset_vectors (see docs/queries.md).
        Each call runs on a fresh sandboxed connection: no file, URL or extension access, configuration
        locked, limits from ``limits`` (a ``SqlLimits``) or ``LAYERLAKE_SQL_*``. ``read_only=True`` also
        refuses every statement but queries. The result is a ``SqlResult`` proxy of the DuckDB relation.
        """
        return self.sql_catalog.sql(query, params, read_only=read_only, limits=limits)

    def last_query_stats(self) -> dict[str, Any] | None:
        """Chunks and bytes read by the last vector scan (``vectors``, SQL vector relations, ``read_vectors``)."""
        last = self.store.reader.last
        return last.as_dict() if last is not None else None

    def track_reads(self) -> Any:
        """Context manager yielding a ``ReadStats`` that adds up every array read inside the block.

        Counts hidden-state and Jacobian-sketch chunks read by ``read_vectors``, ``vectors``,
        SQL vector relations, ``metric`` (cached results read none) and ``jacobians``.
        """
        return self.store.reader.track()

    def jacobians(self, dataset: str, model: str | None = None, layer: int | None = None,
                  rows: Sequence[int] | None = None, K: int | None = None, dense: bool = False, sketch: Any = None,
                  docs: Sequence[str] | None = None) -> Any:
        """Residual block Jacobians of the dataset's sketched tokens at block ``layer``.

        Returns a ``JacobianSet``: low-rank factors ``Jres ~ Q X`` per token, top-``K``
        singular triplets (``U``, ``S``, ``V``; K defaults to min(10, k)), a ``tokens`` frame saying which
        document/position each belongs to, and ``d x d`` arrays only with ``dense=True``.
        """
        from .queries.jacobians import jacobians
        return jacobians(self.store, dataset, model, layer, rows=rows, K=K, dense=dense, sketch=sketch, docs=docs)

    def extraction_id(self, dataset: str | None = None, model: str | None = None) -> str:
        return self.store.resolve_extraction(dataset, model)

    # -- sharing and housekeeping ------------------------------------------------------------
    def export(self, dataset: str, out: Any, *, model: str | Sequence[str] | None = None, layers: Any = None,
               vectors: bool = True, license: str | None = None, description: str | None = None,
               storage_options: dict[str, Any] | None = None) -> Any:
        """Write ``dataset`` (``model``'s extractions, ``layers``) as a self-contained lake at ``out``.

        ``out`` is a new or empty folder or fsspec URL; it gets a dataset card
        (README.md) and a checksum manifest (MANIFEST.json). Returns an ``ExportReport``.
        """
        from .store import export_dataset
        return export_dataset(self.store, dataset, out, models=model, layers=layers, vectors=vectors,
                              license=license, description=description, storage_options=storage_options)

    def import_(self, src: Any, *, storage_options: dict[str, Any] | None = None) -> Any:
        """Verify every checksum of the export at ``src``, then merge it into this lake by content."""
        from .store import import_lake
        return import_lake(self.store, src, storage_options=storage_options)

    def rm_dataset(self, name: str) -> Any:
        """Remove dataset ``name``; shards stay until :meth:`gc` finds them unreferenced."""
        from .store import remove_dataset
        return remove_dataset(self.store, name)

    def gc(self, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> Any:
        """Delete orphan and unreferenced shards and stale metric cache entries; returns a ``GCReport``."""
        from .store import collect_garbage
        return collect_garbage(self.store, dry_run=dry_run, grace_seconds=grace_seconds)
    # -- metrics -----------------------------------------------------------------------------
    def metric(self, name: str, dataset: str, model: Any = None, layers: Any = "all", per: str = "layer",
               executor: str = "local", **params: Any) -> pl.DataFrame:
        """Metric ``name`` (see ``layerlake.metrics.list_metrics()``) per model x layer, lazily cached.

        ``model=None``: every model ingested for ``dataset``; a str or a list picks models.
        ``per="doc"``: one row per document (document-granularity metrics). Other keywords
        are metric parameters (``params={...}`` too) or engine options (``pairs=``,
        ``match=``, ``rows=``, ``max_tokens=``, ``views=``, ``cache=False|"refresh"``).
        Columns: model, extraction, dataset, metric, layer, layer2, value, n, std, sem.
        """
        from .queries.metric_engine import compute_metric
        return compute_metric(self.store, name, dataset, model, layers, per, executor, **params)

    def explain_metric(self, name: str, dataset: str, model: Any = None, layers: Any = "all",
                       per: str = "layer", executor: str = "local", **params: Any) -> Any:
        """What :meth:`metric` would do: cached vs to-compute units and the arrays it would read."""
        from .queries.metric_engine import explain_metric
        return explain_metric(self.store, name, dataset, model, layers, per, executor, **params)

    def plot_metric(self, names: Any, dataset: str, out: Any, model: Any = None, layers: Any = "all",
                    relative_depth: bool = False, *, ncols: int | None = None, title: str | None = None,
                    dpi: int = 130, **params: Any) -> Any:
        """Draw metric(s) vs layer (one curve per model, mean +- sem bands) to a PNG; returns the path.

        Each metric is computed (or read from cache) with :meth:`metric`; ``params`` go
        to the metrics that take them.
        """
        from .queries.plots import layer_counts, plot_metrics, split_params
        names = [names] if isinstance(names, str) else list(names)
        per_metric = split_params(names, params)
        frames = {n: self.metric(n, dataset, model=model, layers=layers, **per_metric[n]) for n in names}
        depths = layer_counts(self.store, frames.values()) if relative_depth else None
        return plot_metrics(frames, out, dataset=dataset, relative_depth=relative_depth, depths=depths,
                            ncols=ncols, title=title, dpi=dpi)


def import_lake(src: Any, lake: Any, *, storage_options: dict[str, Any] | None = None,
                lake_storage_options: dict[str, Any] | None = None) -> Any:
    """Import the export at ``src`` into ``lake`` (a :class:`Lake`, or a path/URL created if new).

    Every file is verified before the target is created or touched.
    """
    from .store import import_lake as import_into
    target = lake.store if isinstance(lake, Lake) else lake
    return import_into(target, src, storage_options=storage_options, target_storage_options=lake_storage_options)
