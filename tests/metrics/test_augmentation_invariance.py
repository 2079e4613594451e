"""InfoNCE, LiDAR and DiME (METRICS.md 2.9-2.11, oracles 7-9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from layerlake.errors import SpecError
from layerlake.metrics.augmentation_invariance import (
    difference_of_entropies,
    dime,
    exact_permutations,
    infonce,
    lidar,
    lidar_matrix,
    lidar_spectrum,
    prepare_views,
)
from layerlake.metrics.entropy import matrix_entropy_from_gram, row_normalize


@pytest.fixture
def rng():
    """A fresh generator per test, so results do not depend on test order."""
    return np.random.default_rng(99)


def orthonormal(n, d, rng):
    q, _ = np.linalg.qr(rng.normal(size=(d, n)))
    return q.T


# --- references --------------------------------------------------------------------------------


def ref_ntxent(a, b, tau):
    z = np.concatenate([a, b])
    n2 = len(z)
    losses = []
    for i in range(n2):
        pos = (i + len(a)) % n2
        num = math.exp(z[i] @ z[pos] / tau)
        den = sum(math.exp(z[i] @ z[j] / tau) for j in range(n2) if j != i)
        losses.append(-math.log(num / den))
    return sum(losses) / n2


def ref_ce(a, b, tau):
    losses = []
    for i in range(len(a)):
        logits = [a[i] @ b[j] / tau for j in range(len(b))]
        losses.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
    return sum(losses) / len(a)


def ref_lidar_entropy(v, delta):
    n, k, d = v.shape
    mu = v.mean(axis=(0, 1))
    means = [v[i].mean(axis=0) for i in range(n)]
    sb = sum(np.outer(m - mu, m - mu) for m in means) / n
    sw = sum(np.outer(v[i, j] - means[i], v[i, j] - means[i]) for i in range(n) for j in range(k)) / (n * k)
    sw = sw + delta * np.eye(d)
    inv_sqrt = scipy.linalg.fractional_matrix_power(sw, -0.5).real
    lam = scipy.linalg.eigvalsh(inv_sqrt @ sb @ inv_sqrt)
    lam = lam[lam > 1e-12 * lam.max()]
    p = lam / lam.sum()
    return -float(np.sum(p * np.log(p)))


# --- InfoNCE -----------------------------------------------------------------------------------


def test_oracle_7_identical_orthonormal_views(rng):
    n = 4
    a = orthonormal(n, 16, rng)
    v = np.stack([a, a], axis=1)
    assert infonce(v, version="ce", normalize=False) == pytest.approx(1.36190e-4, rel=1e-5)
    assert infonce(v, version="ce", normalize=False) == pytest.approx(math.log(1 + (n - 1) * math.exp(-10)), rel=1e-9)
    assert infonce(v, normalize=False) == pytest.approx(2.72362e-4, rel=1e-5)
    assert infonce(v, normalize=False) == pytest.approx(math.log(1 + 2 * (n - 1) * math.exp(-10)), rel=1e-9)


def test_oracle_7_independent_views_give_log_n(rng):
    n, d = 16, 20000
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    assert infonce(np.stack([a, b], 1), version="ce", normalize=False) == pytest.approx(math.log(n), rel=0.02)


@pytest.mark.parametrize("version", ["ntxent", "ce"])
@pytest.mark.parametrize("normalize", [True, False])
def test_infonce_matches_loop_reference(version, normalize, rng):
    v = rng.normal(size=(7, 2, 5))
    pv = prepare_views(v, "v", normalize, 2)
    a, b = pv[:, 0], pv[:, 1]
    ref = ref_ntxent(a, b, 0.5) if version == "ntxent" else ref_ce(a, b, 0.5)
    assert infonce(v, version=version, tau=0.5, normalize=normalize) == pytest.approx(ref, rel=1e-10)


def test_views_normalisation_is_per_view(rng):
    v = rng.normal(size=(6, 3, 4)) + 2
    pv = prepare_views(v, "v", True)
    for k in range(3):
        np.testing.assert_allclose(pv[:, k], row_normalize(v[:, k]), atol=1e-14)


def test_infonce_rejects_wrong_view_count(rng):
    with pytest.raises(SpecError, match="2 views"):
        infonce(rng.normal(size=(5, 3, 4)))
    with pytest.raises(SpecError, match="3-D"):
        infonce(rng.normal(size=(5, 4)))
    with pytest.raises(SpecError, match="tau"):
        infonce(rng.normal(size=(5, 2, 4)), tau=0.0)


# --- LiDAR -------------------------------------------------------------------------------------


def test_oracle_9_orthonormal_means_identical_views():
    n = 5
    v = np.stack([np.eye(n)] * 4, axis=1)  # class means e_1..e_N, D = N, views identical
    assert lidar(v, normalize=False, normalization="raw") == pytest.approx(1.386294, abs=1e-6)
    assert lidar(v, normalize=False, normalization="raw") == pytest.approx(math.log(n - 1), abs=1e-9)
    expected = (np.eye(n) - np.ones((n, n)) / n) / (n * 1e-4)
    np.testing.assert_allclose(lidar_matrix(v, 1e-4), expected, atol=1e-8)


@pytest.mark.parametrize("normalize", [True, False])
def test_lidar_matches_loop_reference(normalize, rng):
    v = rng.normal(size=(8, 4, 5))
    pv = prepare_views(v, "v", normalize)
    expected = ref_lidar_entropy(pv, 1e-4) / min(math.log(8), math.log(5))
    assert lidar(v, normalize=normalize) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("shape", [(6, 3, 11), (15, 2, 4)])  # docs < d (dual route) and docs >= d
def test_lidar_spectrum_equals_matrix_spectrum(shape, rng):
    v = rng.normal(size=shape)
    full = np.sort(np.linalg.eigvalsh(lidar_matrix(v)))[::-1]
    dual = np.sort(lidar_spectrum(v))[::-1]
    k = min(len(full), len(dual))
    np.testing.assert_allclose(dual[:k], full[:k], rtol=1e-9, atol=1e-9 * full[0])
    np.testing.assert_allclose(full[k:], 0.0, atol=1e-9 * full[0])


def test_lidar_bad_delta(rng):
    with pytest.raises(SpecError, match="delta"):
        lidar(rng.normal(size=(4, 2, 3)), delta=0.0)


# --- DiME --------------------------------------------------------------------------------------


def test_oracle_8_identity_and_all_ones():
    n = 6
    perms = np.random.default_rng(0).permuted(np.tile(np.arange(n), (10, 1)), axis=1)
    assert difference_of_entropies(np.eye(n), np.eye(n), perms) == pytest.approx(0.0, abs=1e-12)
    k = np.random.default_rng(1).normal(size=(n, 3))
    assert difference_of_entropies(k @ k.T, np.ones((n, n)), perms) == pytest.approx(0.0, abs=1e-12)


def test_oracle_8_exact_expectation_over_all_permutations():
    j = np.ones((2, 2))
    k = scipy.linalg.block_diag(j, j)
    assert matrix_entropy_from_gram(k * k) == pytest.approx(math.log(2), abs=1e-12)
    perms = exact_permutations(4)
    assert perms.shape == (24, 4)
    assert difference_of_entropies(k, k, perms) == pytest.approx(0.462098, abs=1e-6)
    assert difference_of_entropies(k, k, perms) == pytest.approx(2 / 3 * math.log(2), abs=1e-12)


def test_exact_permutations_bounds():
    assert exact_permutations(1).tolist() == [[0]]
    with pytest.raises(SpecError):
        exact_permutations(9)


def test_dime_matches_loop_reference(rng):
    v = rng.normal(size=(6, 2, 9))
    pv = prepare_views(v, "v", True, 2)
    a, b = pv[:, 0], pv[:, 1]
    ka, kb = a @ a.T, b @ b.T
    draw = np.random.default_rng(3)
    perms = [draw.permutation(6) for _ in range(5)]
    joint = matrix_entropy_from_gram(ka * kb)
    shuffled = [matrix_entropy_from_gram(ka * kb[np.ix_(p, p)]) for p in perms]
    expected = (np.mean(shuffled) - joint) / math.log(6)
    assert dime(v, n_permutations=5, seed=3) == pytest.approx(expected, rel=1e-10)


def test_dime_faithful_switches_to_feature_covariances_when_n_exceeds_d(rng):
    v = rng.normal(size=(12, 2, 4))
    pv = prepare_views(v, "v", True, 2)
    a, b = pv[:, 0], pv[:, 1]
    draw = np.random.default_rng(0)
    perms = np.stack([draw.permutation(4) for _ in range(10)])
    expected = difference_of_entropies(a.T @ a, b.T @ b, perms) / math.log(4)
    assert dime(v, variant="faithful") == pytest.approx(expected, rel=1e-10)
    assert dime(v, variant="faithful") != pytest.approx(dime(v, variant="clean"))
    small = rng.normal(size=(5, 2, 9))  # N <= D: both variants agree
    assert dime(small, variant="faithful") == pytest.approx(dime(small), rel=1e-12)


def test_dime_is_seeded(rng):
    v = rng.normal(size=(8, 2, 10))
    assert dime(v, seed=5) == dime(v, seed=5)
    assert dime(v, seed=5) != dime(v, seed=6)
