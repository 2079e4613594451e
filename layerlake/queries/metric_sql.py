"""Asking for a metric from SQL: the ``layerlake_metric(...)`` table macro.

``install_sql_metrics(conn, engine)`` registers, on a DuckDB connection:

- ``layerlake_metric_rows(name, dataset, model, layers, per, params)``: a Python
  scalar UDF that runs the metric engine (cache first, compute on first use) and
  returns the result as a ``LIST(STRUCT(...))``;
- ``layerlake_metric(name, dataset, model := NULL, layers := 'all', per := 'layer',
  params := '{}')``: a table macro unnesting it, so that ::

      SELECT layer, value, sem FROM layerlake_metric('prompt_entropy', 'wiki', params := '{"alpha": 2}')

  returns the same rows as ``lake.metric("prompt_entropy", dataset="wiki", alpha=2)``.

``model``: NULL (every model of the dataset), one model, or several separated by
``|`` (or a JSON list). ``layers``: ``'all'`` or ``'0,3,6'``. ``params``: a JSON
object of metric parameters and engine options (``{"pairs": [[0, 6]]}``).
Computed units land in the cache, which the ``metrics`` view shows.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import SpecError
from .metric_engine import compute_metric


ROW_FIELDS = {
    "model": "VARCHAR", "extraction": "VARCHAR", "dataset": "VARCHAR", "metric": "VARCHAR",
    "layer": "INTEGER", "layer2": "INTEGER", "doc_hash": "VARCHAR", "value": "DOUBLE", "n": "BIGINT",
    "std": "DOUBLE", "sem": "DOUBLE",
}

MACRO_SQL = (
    "CREATE OR REPLACE MACRO layerlake_metric(name, dataset, model := NULL, layers := 'all', per := 'layer', "
    "params := '{}') AS TABLE SELECT unnest(layerlake_metric_rows(name, dataset, model, layers, per, params), "
    "recursive := true)"
)


def _models(value: str | None) -> Any:
    if value is None or value == "":
        return None
    value = value.strip()
    if value.startswith("["):
        return [str(v) for v in json.loads(value)]
    parts = [p.strip() for p in value.split("|") if p.strip()]
    return parts[0] if len(parts) == 1 else parts


def install_sql_metrics(conn: Any, engine: Any) -> None:
    """Register ``layerlake_metric(...)`` on a fresh DuckDB connection ``conn`` for the lake of ``engine`` (a QueryEngine).

    Called on every sandboxed connection before it is locked (the UDF runs in Python, outside the sandbox).
    """
    store = engine.store

    def rows(name: str, dataset: str, model: str | None, layers: str | None, per: str | None,
             params: str | None) -> list[dict[str, Any]]:
        try:
            kwargs = json.loads(params) if params else {}
        except json.JSONDecodeError as exc:
            raise SpecError(f"layerlake_metric: params={params!r} is not a JSON object ({exc.msg})") from None
        if not isinstance(kwargs, dict):
            raise SpecError(f"layerlake_metric: params={params!r} must be a JSON object like '{{\"alpha\": 2}}'")
        frame = compute_metric(store, name, dataset, _models(model), layers or "all", per or "layer", **kwargs)
        out = []
        for r in frame.iter_rows(named=True):
            out.append({k: r.get(k) for k in ROW_FIELDS})
        return out

    struct = conn.struct_type(dict(ROW_FIELDS))
    conn.create_function("layerlake_metric_rows", rows, ["VARCHAR"] * 6, conn.list_type(struct),
                         null_handling="special", side_effects=True)
    conn.execute(MACRO_SQL)
