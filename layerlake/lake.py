"""``Lake``: the user-facing handle that ties store, ingest and queries together."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import polars as pl

from .store import JacobianSketch, LakeStore


class Lake:
    """Open or create a lake at a local path or fsspec URL.

    ``mode="a"`` opens or creates (default), ``"r"`` opens read-only (every
    write fails with :class:`layerlake.ReadOnlyError`).
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a",
                 storage_options: dict[str, Any] | None = None) -> None:
        self.store = LakeStore(path, mode=mode, storage_options=storage_options)

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
        from .store.verify import verify_lake
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
        from .queries.engine import engine_for
        from .queries.vectors import dataset_vectors
        return dataset_vectors(engine_for(self), dataset, model, layers, docs)

    # -- SQL ---------------------------------------------------------------------------------
    def sql(self, query: str, params: Any = None) -> Any:
        """Run DuckDB SQL over the committed lake; returns a DuckDB relation (``.pl()``, ``.df()``, ``.arrow()``).

        Relations: extractions, datasets, docs, tokens, metrics, vectors, dataset_vectors (see docs/queries.md).
        """
        from .queries.engine import engine_for
        return engine_for(self).sql_catalog().sql(self, query, params)

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
        from .store.export import export_dataset
        return export_dataset(self.store, dataset, out, models=model, layers=layers, vectors=vectors,
                              license=license, description=description, storage_options=storage_options)

    def import_(self, src: Any, *, storage_options: dict[str, Any] | None = None) -> Any:
        """Verify every checksum of the export at ``src``, then merge it into this lake by content."""
        from .store.importer import import_lake as _import
        return _import(self.store, src, storage_options=storage_options)

    def rm_dataset(self, name: str) -> Any:
        """Remove dataset ``name``; shards stay until :meth:`gc` finds them unreferenced."""
        from .store.gc import remove_dataset
        return remove_dataset(self.store, name)

    def gc(self, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> Any:
        """Delete orphan and unreferenced shards and stale metric cache entries; returns a ``GCReport``."""
        from .store.gc import collect_garbage
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
                    relative_depth: bool = False, **params: Any) -> Any:
        """Draw metric(s) vs layer (one curve per model, mean +- sem bands) to a PNG; returns the path."""
        from .queries.plots import plot_metrics
        return plot_metrics(self, names, dataset, out, model=model, layers=layers,
                            relative_depth=relative_depth, **params)


def import_lake(src: Any, lake: Any, *, storage_options: dict[str, Any] | None = None,
                lake_storage_options: dict[str, Any] | None = None) -> Any:
    """Import the export at ``src`` into ``lake`` (a :class:`Lake`, or a path/URL created if new).

    Every file is verified before the target is created or touched.
    """
    from .store.importer import import_lake as _import
    target = lake.store if isinstance(lake, Lake) else lake
    return _import(target, src, storage_options=storage_options, target_storage_options=lake_storage_options)
