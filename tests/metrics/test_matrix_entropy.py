"""Paper 4: matrix entropy, coding length, ridge information gain, Lasso (METRICS.md 5, oracles 16-17)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigvalsh

from layerlake.errors import SpecError
from layerlake.metrics import get_metric
from layerlake.metrics.matrix_entropy import (
    coding_length_entropy,
    information_gain,
    lasso_alpha_max,
    lasso_coefficients,
    lasso_nonzero_fraction,
    lasso_token_selection,
    matrix_entropy,
)


def _normalize_loop(h: np.ndarray) -> np.ndarray:
    mean = h.mean(axis=0)
    return np.array([(row - mean) / np.linalg.norm(row - mean) for row in h])


def _entropy_reference(h: np.ndarray) -> float:
    """Explicit d x d covariance, eigvalsh, Shannon entropy over log d."""
    z = _normalize_loop(h)
    cov = z.T @ z / len(z)
    lam = np.clip(eigvalsh(cov), 0, None)
    p = lam[lam > 1e-15] / lam.sum()
    return float(-(p * np.log(p)).sum() / np.log(h.shape[1]))


def _signed_basis(d: int) -> np.ndarray:
    return np.vstack([np.eye(d), -np.eye(d)])


# --- 5.1 matrix entropy, oracle 17 -------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 5, 16])
def test_signed_basis_has_normalised_entropy_one(d):
    assert matrix_entropy(_signed_basis(d)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(12, 5), (4, 10), (30, 30)])
def test_matrix_entropy_matches_explicit_covariance(shape):
    h = np.random.default_rng(sum(shape)).standard_normal(shape) * 3 + 1
    assert matrix_entropy(h) == pytest.approx(_entropy_reference(h), abs=1e-10)


def test_matrix_entropy_rank_one_cloud_is_zero_and_errors():
    h = np.outer([1.0, 2.0, 4.0, 7.0], [1.0, 2.0, -1.0])
    assert matrix_entropy(h) == pytest.approx(0.0, abs=1e-12)
    h_mean_row = np.outer(np.arange(1.0, 6.0), [1.0, 2.0, -1.0])  # row 3 equals the mean: 0/0
    assert np.isnan(matrix_entropy(h_mean_row))
    assert np.isnan(coding_length_entropy(h_mean_row))
    with pytest.raises(SpecError):
        matrix_entropy(np.ones((5, 1)))


# --- 5.2 coding length -------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
def test_coding_length_matches_slogdet_and_max_is_one(eps):
    h = np.random.default_rng(5).standard_normal((9, 6))
    z = _normalize_loop(h)
    d = h.shape[1]
    _, logdet = np.linalg.slogdet(np.eye(d) + d / eps**2 * (z.T @ z / len(z)))
    expected = logdet / (d * np.log(1 + 1 / eps**2))
    assert coding_length_entropy(h, eps=eps) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < 1
    assert coding_length_entropy(_signed_basis(6), eps=eps) == pytest.approx(1.0, abs=1e-12)


def test_coding_length_rank_one_closed_form_and_uncentred():
    d, eps = 4, 0.5
    h = np.tile([1.0, 0.0, 0.0, 0.0], (3, 1))  # uncentred: every unit row is e_1
    expected = np.log1p(d / eps**2) / (d * np.log1p(1 / eps**2))
    assert coding_length_entropy(h, eps=eps, centre=False) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(SpecError):
        coding_length_entropy(h, eps=0.0)


# --- 5.3 information gain, oracle 16 -----------------------------------------------------------


@pytest.mark.parametrize("n,d,lam", [(6, 10, 0.5), (12, 5, 2.0), (2, 3, 1.0)])
def test_information_gain_equals_logdet_difference(n, d, lam):
    h = np.random.default_rng(n * d).standard_normal((n, d))
    zc, z = h[:-1].T, h[-1]
    base = lam * np.eye(d) + zc @ zc.T
    expected = np.linalg.slogdet(base + np.outer(z, z))[1] - np.linalg.slogdet(base)[1]
    assert information_gain(h, lam, unit_rows=False) == pytest.approx(expected, abs=1e-10)


def test_information_gain_equals_ridge_formula():
    rng = np.random.default_rng(7)
    h = rng.standard_normal((8, 12))
    lam = 0.3
    zc, z = h[:-1].T, h[-1]
    # ridge via the augmented least-squares problem [Z; sqrt(lam) I] w = [z; 0]
    a = np.vstack([zc, np.sqrt(lam) * np.eye(zc.shape[1])])
    w = np.linalg.lstsq(a, np.concatenate([z, np.zeros(zc.shape[1])]), rcond=None)[0]
    r = np.sum((z - zc @ w) ** 2) + lam * w @ w
    assert information_gain(h, lam, unit_rows=False) == pytest.approx(np.log1p(r / lam), abs=1e-12)
    unit = h / np.linalg.norm(h, axis=1, keepdims=True)
    assert information_gain(h, lam) == pytest.approx(information_gain(unit, lam, unit_rows=False), abs=1e-12)


def test_information_gain_edge_cases():
    z = np.array([[3.0, 4.0]])
    assert information_gain(z, 2.0, unit_rows=False) == pytest.approx(np.log1p(25 / 2))
    repeated = np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0]])  # last token repeats the context
    s, lam = 5.0, 0.1  # R = lam s / (lam + s), so IG = log(1 + s / (lam + s)) -> log 2 as lam -> 0
    assert information_gain(repeated, lam, unit_rows=False) == pytest.approx(np.log1p(s / (lam + s)), abs=1e-12)
    with pytest.raises(SpecError):
        information_gain(z, 0.0)


# --- 5.3 Lasso ---------------------------------------------------------------------------------


def test_lasso_orthonormal_context_is_soft_thresholding():
    d, coefs = 8, np.array([0.9, -0.5, 0.05, 0.0, 0.3])
    context = np.eye(d)[: len(coefs)]  # previous tokens e_1..e_5 (orthonormal columns of Z)
    h = np.vstack([context, coefs @ context])
    alpha = 0.02  # threshold d * alpha = 0.16
    expected = np.sign(coefs) * np.maximum(np.abs(coefs) - d * alpha, 0)
    np.testing.assert_allclose(lasso_coefficients(h, alpha, unit_rows=False), expected, atol=1e-7)
    idx, w = lasso_token_selection(h, alpha, top_k=2, unit_rows=False)
    np.testing.assert_array_equal(idx, [0, 1])
    np.testing.assert_allclose(w, expected[[0, 1]], atol=1e-7)
    idx_all, _ = lasso_token_selection(h, alpha, unit_rows=False)
    np.testing.assert_array_equal(idx_all, [0, 1, 4])
    assert lasso_alpha_max(h, unit_rows=False) == pytest.approx(0.9 / d)


def test_lasso_satisfies_kkt_conditions():
    rng = np.random.default_rng(8)
    h = rng.standard_normal((15, 40))
    alpha = 0.2 * lasso_alpha_max(h)
    w = lasso_coefficients(h, alpha)
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    zc, z = u[:-1].T, u[-1]
    grad = zc.T @ (z - zc @ w) / zc.shape[0]
    nz = w != 0
    assert nz.any() and not nz.all()
    np.testing.assert_allclose(grad[nz], alpha * np.sign(w[nz]), atol=1e-6)
    assert np.all(np.abs(grad[~nz]) <= alpha + 1e-6)


def test_lasso_nonzero_fraction():
    d, coefs = 8, np.array([0.9, -0.5, 0.05, 0.0, 0.3])
    h = np.vstack([np.eye(d)[:5], coefs @ np.eye(d)[:5]])
    # alpha = ratio * 0.9 / d: a weight survives iff |c| > ratio * 0.9
    assert lasso_nonzero_fraction(h, alpha_ratio=0.4, unit_rows=False) == pytest.approx(2 / 5)
    assert lasso_nonzero_fraction(h, alpha_ratio=0.1, unit_rows=False) == pytest.approx(3 / 5)
    assert lasso_nonzero_fraction(h, alpha_ratio=1.0, unit_rows=False) == 0.0
    m = get_metric("lasso_nonzero_fraction")
    assert (m.input, m.granularity, m.params) == ("doc_hidden", "document", {"alpha_ratio": 0.1, "unit_rows": True})


def test_registered_defaults():
    assert get_metric("coding_length_entropy").params == {"eps": 0.5, "centre": True}
    assert get_metric("information_gain").params == {"lam": 1.0, "unit_rows": True}
    h = np.random.default_rng(9).standard_normal((6, 4))
    assert get_metric("matrix_entropy")(h) == matrix_entropy(h)
    assert get_metric("information_gain")(h, lam="0.5") == information_gain(h, 0.5)
