"""Jacobian sketches and block coupling (METRICS.md 6 and 8; oracles 18, 19, 22, 23)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerlake.errors import SpecError
from layerlake.metrics import get_metric
from layerlake.metrics.jacobian import (
    JacobianFactors,
    coupling_matrix,
    coupling_matrix_exact,
    coupling_score,
    linearization_fidelity,
    sketch_reconstruct,
    top_singular_triplets,
)


def _spectral(rng, d, rank=None, decay=0.8):
    """Random d x d matrix with distinct singular values (rank ``rank``)."""
    r = d if rank is None else rank
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.zeros(d)
    s[:r] = 3.0 * decay ** np.arange(r) + 0.05
    return (u * s) @ v.T


def _m_k_reference(j_i, j_j, K, normalization="norm", variant="uv"):
    """Explicit d x d formula of METRICS.md 6.3 from full SVDs."""
    s_i = np.linalg.svd(j_i, compute_uv=False)
    u_j, _, vt_j = np.linalg.svd(j_j)
    left, right = (u_j[:, :K], vt_j[:K].T) if variant == "uv" else (vt_j[:K].T, u_j[:, :K])
    m = left.T @ j_i @ right
    num = np.sqrt(np.sum((np.abs(m) - np.diag(s_i[:K])) ** 2))
    return num / (np.sqrt(np.sum(s_i[:K] ** 2)) if normalization == "norm" else np.sum(s_i[:K]))


def _sketch(rng, a, k, l):
    d = a.shape[0]
    omega, psi = rng.standard_normal((d, k)), rng.standard_normal((d, l))
    return a @ omega, psi.T @ a, psi


# --- oracle 23: sketch exactness ---------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(4, 30),
    rank_frac=st.floats(0.05, 1.0),
    extra_k=st.integers(0, 4),
    extra_l=st.integers(0, 6),
)
def test_sketch_is_exact_when_rank_at_most_k(seed, d, rank_frac, extra_k, extra_l):
    rng = np.random.default_rng(seed)
    rank = max(1, int(rank_frac * d) // 2)
    k = min(rank + extra_k, d)
    l = k + extra_l
    a = _spectral(rng, d, rank)
    q, x = sketch_reconstruct(*_sketch(rng, a, k, l))
    assert q.shape == (d, k) and x.shape == (k, d)
    np.testing.assert_allclose(q.T @ q, np.eye(k), atol=1e-12)
    assert np.linalg.norm(q @ x - a) <= 1e-9 * np.linalg.norm(a)


def test_sketch_reconstruct_batched_equals_loop():
    rng = np.random.default_rng(0)
    d, k, l = 12, 4, 9
    a = np.stack([[_spectral(rng, d, 3) for _ in range(2)] for _ in range(3)])  # [3, 2, d, d]
    omega, psi = rng.standard_normal((d, k)), rng.standard_normal((d, l))
    y, w = a @ omega, psi.T @ a
    q, x = sketch_reconstruct(y, w, psi)
    assert q.shape == (3, 2, d, k) and x.shape == (3, 2, k, d)
    for i in range(3):
        for j in range(2):
            q1, x1 = sketch_reconstruct(y[i, j], w[i, j], psi)
            np.testing.assert_allclose(q[i, j] @ x[i, j], q1 @ x1, atol=1e-10)
            np.testing.assert_allclose(q1 @ x1, a[i, j], atol=1e-9)
    with pytest.raises(SpecError):
        sketch_reconstruct(y[0, 0], w[0, 0, :3], psi[:, :3])  # l < k


def test_top_singular_triplets_match_dense_svd():
    rng = np.random.default_rng(1)
    a = _spectral(rng, 15, 6)
    q, x = sketch_reconstruct(*_sketch(rng, a, 8, 17))
    u, s, v = top_singular_triplets(q, x, 4)
    u_ref, s_ref, vt_ref = np.linalg.svd(a)
    np.testing.assert_allclose(s, s_ref[:4], rtol=1e-10)
    signs = np.sign(np.sum(u * u_ref[:, :4], axis=0))
    np.testing.assert_allclose(u * signs, u_ref[:, :4], atol=1e-9)
    np.testing.assert_allclose(v * signs, vt_ref[:4].T, atol=1e-9)
    with pytest.raises(SpecError):
        top_singular_triplets(q, x, 9)


# --- oracles 18, 19 ----------------------------------------------------------------------------


def test_self_coupling_is_zero_and_invariances():
    rng = np.random.default_rng(2)
    j_a, j_b = _spectral(rng, 10), _spectral(rng, 10)
    exact = coupling_matrix_exact(np.stack([j_a, j_b]), K=4)
    assert abs(exact[0, 0]) < 1e-12 and abs(exact[1, 1]) < 1e-12
    scaled = coupling_matrix_exact(np.stack([5.0 * j_a, 5.0 * j_b]), K=4)
    np.testing.assert_allclose(scaled, exact, atol=1e-12)
    # sign flips of singular vectors: same product Q X with flipped columns / rows
    f = JacobianFactors.from_dense(j_a)
    flip = np.where(rng.random(10) < 0.5, -1.0, 1.0)
    flipped = JacobianFactors(f.Q * flip, flip[:, None] * f.X)
    g = JacobianFactors.from_dense(j_b)
    np.testing.assert_allclose(coupling_matrix([flipped, g], K=4), coupling_matrix([f, g], K=4), atol=1e-12)


@pytest.mark.parametrize("normalization", ["norm", "trace"])
def test_disjoint_diagonal_jacobians_give_one(normalization):
    j_i, j_j = np.diag([5.0, 4, 3, 0, 0, 0]), np.diag([0.0, 0, 0, 3, 2, 1])
    exact = coupling_matrix_exact(np.stack([j_i, j_j]), K=3, normalization=normalization)
    expected_01 = 1.0 if normalization == "norm" else np.sqrt(50) / 12
    assert exact[0, 1] == pytest.approx(expected_01, abs=1e-14)
    factors = [JacobianFactors.from_dense(j_i, rank=3), JacobianFactors.from_dense(j_j, rank=3)]
    np.testing.assert_allclose(coupling_matrix(factors, K=3, normalization=normalization), exact, atol=1e-14)
    assert exact[1, 0] == pytest.approx(1.0 if normalization == "norm" else np.sqrt(14) / 6, abs=1e-14)


# --- factor path vs exact path vs explicit formula ---------------------------------------------


@pytest.mark.parametrize("normalization", ["norm", "trace"])
@pytest.mark.parametrize("variant", ["uv", "vju"])
def test_factor_path_equals_exact_path_and_reference(normalization, variant):
    rng = np.random.default_rng(3)
    js = np.stack([_spectral(rng, 9) for _ in range(4)])
    exact = coupling_matrix_exact(js, K=3, normalization=normalization, variant=variant)
    for i in range(4):
        for j in range(4):
            ref = _m_k_reference(js[i], js[j], 3, normalization, variant)
            assert exact[i, j] == pytest.approx(ref, abs=1e-12)
    factors = [JacobianFactors.from_dense(j) for j in js]
    got = coupling_matrix(factors, K=3, normalization=normalization, variant=variant)
    np.testing.assert_allclose(got, exact, atol=1e-10)
    assert not np.allclose(exact, exact.T)


def test_coupling_from_sketches_equals_exact_when_rank_at_most_k():
    rng = np.random.default_rng(4)
    d, rank, k, l = 20, 5, 7, 15
    js = np.stack([_spectral(rng, d, rank) for _ in range(5)])
    omega, psi = rng.standard_normal((d, k)), rng.standard_normal((d, l))
    q, x = sketch_reconstruct(js @ omega, psi.T @ js, psi)
    factors = [JacobianFactors(q[i], x[i]) for i in range(5)]
    for variant in ("uv", "vju"):
        np.testing.assert_allclose(
            coupling_matrix(factors, K=4, variant=variant),
            coupling_matrix_exact(js, K=4, variant=variant),
            atol=1e-8,
        )


def test_coupling_score_is_mean_off_diagonal():
    m = np.array([[0.0, 0.2, 0.4], [0.6, 0.0, 0.8], [1.0, 0.3, 0.0]])
    assert coupling_score(m) == pytest.approx((0.2 + 0.4 + 0.6 + 0.8 + 1.0 + 0.3) / 6)
    with pytest.raises(SpecError):
        coupling_score(np.zeros((1, 1)))


# --- oracle 22: linearisation fidelity ---------------------------------------------------------


def test_linearization_fidelity_of_linear_blocks_is_one():
    rng = np.random.default_rng(5)
    d = 8
    blocks = [0.3 * rng.standard_normal((d, d)) for _ in range(4)]
    x = x0 = rng.standard_normal(d)
    for a in blocks:  # x^l = x^{l-1} + f^l(x^{l-1}), f^l(x) = A_l x
        x = x + a @ x
    assert linearization_fidelity(blocks, x0, x) == pytest.approx(1.0, abs=1e-12)
    factors = [JacobianFactors.from_dense(a) for a in blocks]
    assert linearization_fidelity(factors, x0, x) == pytest.approx(1.0, abs=1e-12)
    assert linearization_fidelity(blocks[:3], x0, x) < 1.0 - 1e-6
    assert linearization_fidelity(blocks, x0, -x) == pytest.approx(-1.0, abs=1e-12)


# --- JacobianFactors and the registered metrics ------------------------------------------------


def test_jacobian_factors_contract():
    rng = np.random.default_rng(6)
    a = _spectral(rng, 6, 3)
    f = JacobianFactors.from_sketch(*_sketch(rng, a, 4, 9))
    assert (f.d, f.k) == (6, 4)
    np.testing.assert_allclose(f.dense(), a, atol=1e-10)
    np.testing.assert_allclose(f.matvec(np.ones(6)), a @ np.ones(6), atol=1e-10)
    u, s, v = f.top(2)
    assert u.shape == (6, 2) and s.shape == (2,) and v.shape == (6, 2)
    assert f._svd is f._svd  # computed once, cached
    with pytest.raises(ValueError):
        f.Q[0, 0] = 1.0  # read-only
    with pytest.raises(SpecError):
        JacobianFactors(np.ones((6, 3)), np.ones((4, 6)))
    with pytest.raises(SpecError):
        f.top(5)
    half = JacobianFactors(f.Q.astype(np.float16), f.X.astype(np.float16))
    assert half.Q.dtype == np.float64


def test_registered_metrics():
    rng = np.random.default_rng(7)
    factors = [JacobianFactors.from_dense(_spectral(rng, 12)) for _ in range(3)]
    coup = get_metric("coupling")
    assert (coup.input, coup.params) == ("jacobian_sketch", {"K": 10, "normalization": "norm", "variant": "uv"})
    np.testing.assert_allclose(coup(factors), coupling_matrix(factors, K=10))
    np.testing.assert_allclose(coup(factors, K="3", variant="vju"), coupling_matrix(factors, K=3, variant="vju"))
    top = get_metric("top_singular_values")(factors, K=4)
    assert top.shape == (3, 4) and np.all(np.diff(top, axis=1) <= 0)
    score = get_metric("jacobian_coupling_score")(factors)
    assert score == pytest.approx(coupling_score(coupling_matrix(factors)))
    with pytest.raises(SpecError):
        get_metric("coupling")(factors, normalization="max")
