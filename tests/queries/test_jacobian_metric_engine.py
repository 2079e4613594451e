"""Jacobian metrics through lake.metric: same numbers as the sketch reader, cached."""

from __future__ import annotations

import numpy as np
import pytest

import layerlake as ll
from layerlake.queries.jacobians import compute_jacobian_metric


@pytest.fixture(scope="module")
def sketched(tmp_path_factory, tiny_gpt2, corpus):
    lake = ll.Lake(tmp_path_factory.mktemp("jm") / "lake")
    lake.ingest(str(tiny_gpt2), corpus[:4], dataset="d", max_length=32, jacobian=ll.JacobianSketch(k=6))
    return lake


def test_coupling_matches_the_reader_and_is_cached(sketched, monkeypatch):
    got = sketched.metric("coupling", dataset="d", K=3)
    want = compute_jacobian_metric(sketched, "coupling", "d", K=3)
    assert got.height == want.height == 9  # 3 blocks x 3 blocks
    np.testing.assert_allclose(got.sort(["layer", "layer2"])["value"].to_numpy(),
                               want.sort(["layer", "layer2"])["value"].to_numpy())
    import layerlake.queries.metric_compute as compute
    monkeypatch.setattr(compute, "sketch_metric_rows", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    again = sketched.metric("coupling", dataset="d", K=3)  # served from the cache: no recomputation
    assert again.equals(got)
    cached = sketched.sql("SELECT count(*) FROM metrics WHERE metric = 'coupling'").fetchall()[0][0]
    assert cached == 9


def test_score_and_singular_values(sketched):
    score = sketched.metric("jacobian_coupling_score", dataset="d", K=3)
    assert score.height == 1 and score["layer"].is_null().all() and 0 <= score["value"][0] <= 2
    sv = sketched.metric("top_singular_values", dataset="d", K=3)
    assert sorted(set(sv["layer2"].to_list())) == [1, 2, 3]
    per_layer = sv.sort(["layer", "layer2"])["value"].to_numpy().reshape(3, 3)
    assert (np.diff(per_layer, axis=1) <= 1e-9).all()  # singular values come sorted
    with pytest.raises(ll.SpecError, match="per='layer'"):
        sketched.metric("coupling", dataset="d", per="doc")
