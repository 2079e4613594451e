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
        from .queries.frames import read_vectors
        return read_vectors(self.store, dataset, model, layers, docs)

    def extraction_id(self, dataset: str | None = None, model: str | None = None) -> str:
        return self.store.resolve_extraction(dataset, model)

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
