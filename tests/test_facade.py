"""The facade: a Lake owns its store, engine and SQL catalog; plotting draws frames it is given."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

import layerlake as ll
from layerlake.queries.engine import QueryEngine
from layerlake.queries.plots import plot_metrics, split_params


def test_lake_owns_one_engine_and_one_sql_catalog(tmp_path):
    lake = ll.Lake(tmp_path / "lake")
    assert isinstance(lake.engine, QueryEngine) and lake.engine.store is lake.store
    catalog = lake.sql_catalog
    assert catalog is lake.sql_catalog and catalog.engine is lake.engine
    assert lake.sql("SELECT count(*) FROM extractions").fetchall() == [(0,)]
    assert lake.sql_catalog is catalog
    assert ll.Lake(tmp_path / "lake").engine is not lake.engine  # one engine per handle


def test_sql_read_only_refuses_writes_that_a_session_may_run(tmp_path):
    lake = ll.Lake(tmp_path / "lake")
    assert lake.sql("CREATE TABLE t AS SELECT 42 AS x; SELECT x FROM t").fetchall() == [(42,)]
    with pytest.raises(duckdb.CatalogException, match="t does not exist"):  # every call runs on a fresh connection
        lake.sql("SELECT x FROM t")
    with pytest.raises(ll.ReadOnlyError, match="read-only: statement 1 \\(CREATE"):
        lake.sql("CREATE TABLE u AS SELECT 1 AS x", read_only=True)
    assert lake.sql("SELECT 42 AS x", read_only=True).fetchall() == [(42,)]


def _frame(eid: str, model: str, values: list[float]) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame({"model": [model] * n, "extraction": [eid] * n, "layer": list(range(n)),
                         "layer2": pl.Series([None] * n, dtype=pl.Int32), "value": values, "sem": [0.1] * n})


def test_plot_metrics_draws_given_frames_with_relative_depth(tmp_path):
    frames = {"mean_norm": pl.concat([_frame("e1", "a", [1.0, 2.0, 3.0]), _frame("e2", "b", [1.0, 1.5, 2.0, 2.5, 3.0])])}
    out = plot_metrics(frames, tmp_path / "p.png", dataset="d", relative_depth=True, depths={"e1": 2, "e2": 4})
    assert out == tmp_path / "p.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ll.SpecError, match=r"blocks of extraction\(s\) \['e2'\]"):
        plot_metrics(frames, tmp_path / "q.png", dataset="d", relative_depth=True, depths={"e1": 2})


def test_split_params_routes_each_parameter_to_the_metrics_that_take_it():
    assert split_params(["prompt_entropy", "mean_norm"], {"alpha": 2.0}) == {"prompt_entropy": {"alpha": 2.0},
                                                                             "mean_norm": {}}
    with pytest.raises(ll.SpecError, match="takes parameter 'nope'"):
        split_params(["mean_norm"], {"nope": 1})
    with pytest.raises(ll.SpecError, match="at least one metric"):
        split_params([], {})
