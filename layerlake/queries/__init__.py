"""Queries over the committed lake: DuckDB SQL, Polars frames with pushdown into Zarr chunks.

``engine`` (the per-lake :class:`~layerlake.queries.engine.QueryEngine`, owned
by ``Lake``: snapshot and caches), ``sql`` (the DuckDB catalog built on an engine,
and :func:`register_sql_extension`), ``vectors`` (the vector IO source), ``frames``
(tokens/docs LazyFrames, ``read_vectors``), ``snapshot`` (what queries see:
committed shards only), ``plots`` (drawing metric frames). Arrays are read by the
store's chunk reader (:class:`layerlake.store.ChunkReader`). Functions here take
a store or an engine, never a ``Lake``; nothing here prints (the CLI renders).
"""

from .metric_sql import install_sql_metrics
from .sql import connect, register_sql_extension

register_sql_extension(install_sql_metrics)  # `SELECT * FROM layerlake_metric(...)` computes on first use

__all__ = ["connect", "register_sql_extension"]
