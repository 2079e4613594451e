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
