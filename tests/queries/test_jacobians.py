"""Reading Jacobian sketches back: factors, triplets, token mapping, and the coupling metrics from stored data."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import layerlake as ll
from layerlake.errors import NotFoundError, SpecError
from layerlake.metrics.jacobian import coupling_matrix_exact, linearization_fidelity
from layerlake.queries.jacobians import (compute_jacobian_metric, jacobian_factors, read_sketch_arrays,
                                         sketched_tokens)
from layerlake.store.sketch import sketch_matrices

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world, said the program.",
         "Another document that is a bit longer than the others, for sure."]
D = 64


@pytest.fixture(scope="module")
def full_lake(tmp_path_factory, tiny_llama):
    """k = l = d: the sketch spans the whole space, so Q X must equal the stored exact Jacobian."""
    lake = ll.Lake(tmp_path_factory.mktemp("jac") / "lake")
    spec = ll.JacobianSketch(k=D, l=D, positions=2, exact=True)
    lake.ingest(str(tiny_llama), TEXTS, dataset="d", jacobian=spec)
    return lake, spec


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory, tiny_gpt2):
    lake = ll.Lake(tmp_path_factory.mktemp("jac") / "lake")
    spec = ll.JacobianSketch(k=6, positions="all", exact=True, layers=(1, 2))
    lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", layers=[0, 1, 2], jacobian=spec)
    return lake, spec


def test_full_rank_sketch_reconstructs_the_stored_exact_jacobian(full_lake):
    lake, spec = full_lake
    js = lake.jacobians("d", layer=2, K=5, dense=True)
    assert len(js) == 6 and js.dense.shape == (6, D, D) and js.exact.shape == (6, D, D)
    # float32 products, amplified by cond(Psi^T Q) of a square 64 x 64 Gaussian: ~1e-4 relative
    for dense, exact in zip(js.dense, js.exact):
        assert np.abs(dense - exact).max() <= 1e-3 * np.abs(exact).max()
    s_exact = np.linalg.svd(js.exact, compute_uv=False)[:, :5]
    np.testing.assert_allclose(js.S, s_exact, rtol=1e-3)
    for u, s, v, exact in zip(js.U, js.S, js.V, js.exact):
        np.testing.assert_allclose(u.T @ exact @ v, np.diag(s), atol=1e-3 * s[0])


def test_stored_sketches_are_the_exact_jacobian_times_the_test_matrices(small_lake):
    lake, spec = small_lake
    js = lake.jacobians("d", layer=1, K=3, dense=True)
    toks = sketched_tokens(lake.store, "d", js.extraction, js.key, 1)
    arrays = read_sketch_arrays(lake.store, js.extraction, js.key, 1, toks)
    omega, psi = sketch_matrices(D, spec.k, spec.l, spec.seed)
    for y, w, jres in zip(arrays["Y"], arrays["W"], js.exact):
        scale = np.abs(jres).max() * np.sqrt(D)
        assert np.abs(y - jres @ omega).max() <= 1e-5 * scale
        assert np.abs(w - psi.T @ jres).max() <= 1e-5 * scale


def test_tokens_frame_rows_and_selection(small_lake):
    lake, _ = small_lake
    js = lake.jacobians("d", layer=2, K=2)
    toks = lake.tokens("d").collect()
    assert len(js) == toks.height  # positions="all"
    assert js.tokens.select(["doc_hash", "position", "token"]).equals(toks.select(["doc_hash", "position", "token"]))
    sub = lake.jacobians("d", layer=2, K=2, rows=[0, -1])
    assert sub.tokens["position"].to_list() == [0, toks["position"][-1]]
    np.testing.assert_allclose(sub.S, js.S[[0, -1]])
    one = lake.jacobians("d", layer=2, K=2, docs=[toks["doc_hash"][0]])
    assert one.tokens["doc_hash"].n_unique() == 1
    with pytest.raises(SpecError, match="K=7 must be in 1..k=6"):
        lake.jacobians("d", layer=2, K=7)
    with pytest.raises(SpecError, match="rows .* out of range"):
        lake.jacobians("d", layer=2, rows=[10_000])
    with pytest.raises(NotFoundError, match="no block 3"):
        lake.jacobians("d", layer=3)


def test_no_sketch_is_a_clear_error(lake, tiny_gpt2):
    lake.ingest(str(tiny_gpt2), TEXTS[:1], dataset="plain", layers=[0])
    with pytest.raises(NotFoundError, match="holds no Jacobian sketches; ingest with"):
        lake.jacobians("plain", layer=1)


def test_jacobian_factors_in_layer_order(small_lake):
    lake, _ = small_lake
    eid = lake.extraction_id("d")
    facs = jacobian_factors(lake.store, "d", eid, "all")
    toks = lake.tokens("d").collect()
    assert list(facs) == list(zip(toks["doc_hash"], toks["window"], toks["position"]))
    assert all(len(v) == 2 and v[0].k == 6 for v in facs.values())
    exact = jacobian_factors(lake.store, "d", eid, [2], exact=True)
    js = lake.jacobians("d", layer=2, K=2, dense=True)
    np.testing.assert_allclose(np.stack([f[0].dense() for f in exact.values()]), js.exact, atol=1e-9)


def test_coupling_metrics_from_full_rank_sketches_equal_the_exact_path(full_lake):
    lake, _ = full_lake
    eid = lake.extraction_id("d")
    exact = jacobian_factors(lake.store, "d", eid, "all", exact=True)
    J = [np.stack([f.dense() for f in facs]) for facs in exact.values()]  # per token [L, d, d]
    want = np.mean([coupling_matrix_exact(j, K=4) for j in J], axis=0)
    got = compute_jacobian_metric(lake, "coupling", "d", K=4)
    assert got.columns[:4] == ["metric", "extraction", "model", "sketch"]
    assert got.height == 9 and set(got["n"]) == {6}
    mat = got.sort(["layer", "layer2"])["value"].to_numpy().reshape(3, 3)
    np.testing.assert_allclose(mat, want, atol=1e-3)
    score = compute_jacobian_metric(lake, "jacobian_coupling_score", "d", K=4)
    assert score.height == 1
    assert score["value"][0] == pytest.approx(want[~np.eye(3, dtype=bool)].mean(), abs=1e-3)
    tsv = compute_jacobian_metric(lake, "top_singular_values", "d", K=3)
    s = np.mean([np.linalg.svd(j, compute_uv=False)[:, :3] for j in J], axis=0)
    np.testing.assert_allclose(tsv.sort(["layer", "rank"])["value"].to_numpy().reshape(3, 3), s, rtol=1e-3)
    vju = compute_jacobian_metric(lake, "coupling", "d", K=4, variant="vju", normalization="trace")
    want_vju = np.mean([coupling_matrix_exact(j, K=4, variant="vju", normalization="trace") for j in J], axis=0)
    np.testing.assert_allclose(vju.sort(["layer", "layer2"])["value"].to_numpy().reshape(3, 3), want_vju, atol=1e-3)


def test_token_coupling_and_linearization_fidelity(small_lake):
    lake, _ = small_lake
    tc = compute_jacobian_metric(lake, "token_coupling", "d", K=3)
    assert tc["layer"].to_list() == [1, 2] and tc["n"].to_list() == [3, 3]
    assert ((tc["value"] > 0) & (tc["value"] < 2)).all()
    # linearisation with the stored exact Jacobians equals the pure function on the same data
    lin = compute_jacobian_metric(lake, "linearization_fidelity", "d", exact=True)
    eid = lake.extraction_id("d")
    facs = jacobian_factors(lake.store, "d", eid, [1, 2], exact=True)
    hid = lake.read_vectors("d", layers=[0, 2])
    want = np.mean([linearization_fidelity(f, hid[0, i], hid[1, i]) for i, f in enumerate(facs.values())])
    assert lin["value"][0] == pytest.approx(want, rel=1e-9)
    assert (lin["layer"][0], lin["layer2"][0]) == (1, 2)
    approx = compute_jacobian_metric(lake, "linearization_fidelity", "d")  # rank-6 factors
    assert -1 <= approx["value"][0] <= 1
    with pytest.raises(NotFoundError, match="unknown Jacobian metric"):
        compute_jacobian_metric(lake, "nope", "d")
    with pytest.raises(SpecError, match="no parameter"):
        compute_jacobian_metric(lake, "coupling", "d", Kx=3)


def test_metric_frames_are_polars(small_lake):
    lake, _ = small_lake
    out = compute_jacobian_metric(lake, "top_singular_values", "d", layers=[2], K=2)
    assert isinstance(out, pl.DataFrame) and out["layer"].to_list() == [2, 2] and out["rank"].to_list() == [1, 2]


def test_power_iteration_sketch_is_read_as_factors(lake, tiny_gpt2):
    """k = d with power iterations: Q is a full basis, so Q B equals the exact Jres."""
    exact = ll.JacobianSketch(k=2, positions=(1, -1), exact=True, layers=(1,))
    power = ll.JacobianSketch(k=D, l=D, positions=(1, -1), power_iterations=1, layers=(1,))
    for spec in (exact, power):
        lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", layers=[0], jacobian=spec)
    js = lake.jacobians("d", layer=1, K=2, dense=True, sketch=power)
    ref = lake.jacobians("d", layer=1, K=2, dense=True, sketch=exact)
    assert js.exact is None and len(js) == 6
    cols = ["doc_hash", "position"]
    assert js.tokens.select(cols).equals(ref.tokens.select(cols)), (js.tokens, ref.tokens)
    for dense, jres in zip(js.dense, ref.exact):
        assert np.abs(dense - jres).max() <= 1e-4 * np.abs(jres).max()
    np.testing.assert_allclose(js.S, np.linalg.svd(ref.exact, compute_uv=False)[:, :2], rtol=1e-4)
