"""A metric asked for from lake.sql is computed on first use and then visible in `metrics`."""

from __future__ import annotations

import numpy as np

import layerlake as ll


def test_layerlake_metric_from_sql(tmp_path, tiny_gpt2, corpus):
    lake = ll.Lake(tmp_path / "lake")
    lake.ingest(str(tiny_gpt2), corpus[:6], dataset="d", max_length=48)
    assert lake.sql("SELECT count(*) FROM metrics").fetchall() == [(0,)]
    rows = lake.sql("SELECT layer, value FROM layerlake_metric('curvature', 'd') ORDER BY layer").fetchall()
    want = lake.metric("curvature", dataset="d").sort("layer")
    assert [r[0] for r in rows] == want["layer"].to_list()
    np.testing.assert_allclose([r[1] for r in rows], want["value"].to_numpy())
    n = lake.sql("SELECT count(DISTINCT layer) FROM metrics WHERE metric = 'curvature'").fetchall()[0][0]
    assert n == want.height
