"""Intrinsic dimension: TwoNN, MLE, GRIDE (METRICS.md 2.7, 7.1-7.3, oracles 12-13)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import curve_fit, minimize_scalar
from scipy.spatial.distance import cdist
from scipy.special import betaln

from layerlake.errors import SpecError
from layerlake.metrics.entropy import row_normalize
from layerlake.metrics.intrinsic_dim import (
    dataset_gride_id,
    dataset_mle_id,
    dataset_twonn_id,
    gride,
    gride_from_mu,
    gride_id,
    knn_distances,
    mle_id,
    mle_levina_bickel,
    twonn,
    twonn_from_mu,
    twonn_id,
)


@pytest.fixture
def rng():
    """A fresh generator per test, so results do not depend on test order."""
    return np.random.default_rng(2024)


def ref_sorted_distances(x):
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)


def ref_twonn_base(mu, fraction=0.9):
    """DADApy-style: curve_fit of y = m x on the smallest fraction of log mu."""
    n = len(mu)
    n_eff = int(n * fraction)
    x = np.sort(np.log(mu))[:n_eff]
    y = -np.log(1 - np.arange(1, n_eff + 1) / n)
    (slope,), _ = curve_fit(lambda t, m: m * t, x, y)
    return slope


def ref_mle(x, k1, k2, mg=False):
    t = ref_sorted_distances(x)
    per_k = []
    for k in range(k1, k2 + 1):
        local = []
        for i in range(len(x)):
            s = sum(math.log(t[i, k - 1] / t[i, j]) for j in range(k - 1)) / (k - 1)
            local.append(s)
        per_k.append(1 / np.mean(local) if mg else np.mean([1 / s for s in local]))
    return float(np.mean(per_k))


def ref_gride(mu, n1, n2):
    def nll(d):
        return -np.sum(
            np.log(d) + (n2 - n1 - 1) * np.log(mu**d - 1) - betaln(n2 - n1, n1) - (d * (n2 - 1) + 1) * np.log(mu)
        )

    return minimize_scalar(nll, bounds=(0.01, 100), method="bounded", options={"xatol": 1e-10}).x


# --- neighbours ------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [3, 40])  # kd-tree path and brute-force path
def test_knn_distances_match_cdist(d, rng):
    x = rng.normal(size=(150, d))
    np.testing.assert_allclose(knn_distances(x, 6), ref_sorted_distances(x)[:, :6], rtol=1e-12)


def test_knn_distances_rejects_bad_k():
    with pytest.raises(SpecError):
        knn_distances(np.eye(3), 3)


# --- TwoNN -----------------------------------------------------------------------------------


def test_oracle_12_pareto_ratios_recover_dimension(rng):
    d = 7
    mu = (1 - rng.random(100_000)) ** (-1 / d)  # exact Pareto(d) sample
    assert twonn_from_mu(mu, "mle") == pytest.approx(d, rel=0.02)
    assert twonn_from_mu(mu, "base") == pytest.approx(d, rel=0.02)
    assert gride_from_mu(mu, 1, 2) == pytest.approx(d, rel=0.02)


@pytest.mark.parametrize("d", [2, 5])
def test_oracle_13_uniform_cube(d):
    x = np.random.default_rng(d).random((2000, d))
    assert twonn(x) == pytest.approx(d, rel=0.10)


def test_oracle_13_line_in_high_dimension(rng):
    t = rng.random(2000)
    x = np.outer(t, rng.normal(size=50)) + rng.normal(size=50)
    assert twonn(x) == pytest.approx(1.0, rel=0.10)
    assert mle_levina_bickel(x) == pytest.approx(1.0, rel=0.10)
    assert gride(x, 2) == pytest.approx(1.0, rel=0.10)


def test_twonn_matches_reference_fit(rng):
    x = rng.normal(size=(300, 4))
    r = ref_sorted_distances(x)
    mu = r[:, 1] / r[:, 0]
    assert twonn(x) == pytest.approx(ref_twonn_base(mu), rel=1e-8)
    assert twonn(x, "mle") == pytest.approx((len(mu) - 1) / np.sum(np.log(mu)), rel=1e-12)
    assert twonn(x, fraction=0.5) == pytest.approx(ref_twonn_base(mu, 0.5), rel=1e-8)


def test_duplicates_are_removed(rng):
    x = rng.normal(size=(200, 3))
    with_dups = np.concatenate([x, x[:50], x[:10]])
    assert twonn(with_dups) == pytest.approx(twonn(x), rel=1e-12)
    assert mle_levina_bickel(with_dups) == pytest.approx(mle_levina_bickel(x), rel=1e-12)
    assert gride(with_dups, 3) == pytest.approx(gride(x, 3), rel=1e-12)


def test_too_few_points_give_nan(rng):
    assert math.isnan(twonn(np.ones((10, 3))))
    assert math.isnan(twonn(rng.normal(size=(2, 3))))
    assert math.isnan(gride(rng.normal(size=(4, 3)), 2))
    assert math.isnan(mle_levina_bickel(rng.normal(size=(2, 3))))


# --- MLE -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mg", [False, True])
def test_mle_matches_loop_reference(mg, rng):
    x = rng.normal(size=(60, 5))
    assert mle_levina_bickel(x, 4, 8, mg) == pytest.approx(ref_mle(x, 4, 8, mg), rel=1e-10)


def test_mle_k_range_is_clipped_to_available_neighbours(rng):
    x = rng.normal(size=(12, 5))
    assert mle_levina_bickel(x, 10, 20) == pytest.approx(ref_mle(x, 10, 11), rel=1e-10)
    assert mle_levina_bickel(x, 15, 20) == pytest.approx(ref_mle(x, 11, 11), rel=1e-10)
    with pytest.raises(SpecError):
        mle_levina_bickel(x, 1, 5)


# --- GRIDE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n1,n2", [(1, 2), (2, 4), (3, 5), (4, 8)])
def test_gride_matches_direct_likelihood_maximisation(n1, n2, rng):
    x = rng.random((400, 3))
    r = ref_sorted_distances(x)
    mu = r[:, n2 - 1] / r[:, n1 - 1]
    assert gride(x, n1, n2) == pytest.approx(ref_gride(mu, n1, n2), rel=1e-6)


def test_gride_n1_1_equals_twonn_mle_with_n(rng):
    mu = 1 + rng.random(500) * 3
    assert gride_from_mu(mu, 1, 2) == pytest.approx(len(mu) / np.sum(np.log(mu)), rel=1e-10)
    with pytest.raises(SpecError):
        gride(rng.normal(size=(10, 2)), 3, 2)


# --- registered wrappers ---------------------------------------------------------------------


def test_per_prompt_metrics_apply_row_normalize(rng):
    h = rng.normal(size=(80, 12)) * 4 + 1
    z = row_normalize(h)
    assert twonn_id(h) == pytest.approx(twonn(z), rel=1e-12)
    assert twonn_id(h, normalize=False) == pytest.approx(twonn(h), rel=1e-12)
    assert twonn_id(h, normalization="logN") == pytest.approx(twonn(z) / math.log(80), rel=1e-12)
    assert mle_id(h) == pytest.approx(mle_levina_bickel(z), rel=1e-12)
    assert gride_id(h, n1=2) == pytest.approx(gride(z, 2, 4), rel=1e-12)


def test_dataset_metrics_use_the_raw_cloud(rng):
    x = rng.normal(size=(120, 5)) + 3
    assert dataset_twonn_id(x) == pytest.approx(twonn(x), rel=1e-12)
    assert dataset_mle_id(x, k_min=5, k_max=9) == pytest.approx(mle_levina_bickel(x, 5, 9), rel=1e-12)
    assert dataset_gride_id(x, n1=2, n2=6) == pytest.approx(gride(x, 2, 6), rel=1e-12)
