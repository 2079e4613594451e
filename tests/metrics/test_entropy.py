"""Prompt/dataset entropy and the matrix-entropy primitives (METRICS.md 2.1-2.4, oracles 1-5, 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from layerlake.errors import SpecError
from layerlake.metrics.entropy import (
    dataset_entropy,
    matrix_entropy_from_gram,
    normalize_entropy,
    prompt_entropy,
    row_normalize,
    spectrum_entropy,
)


@pytest.fixture
def rng():
    """A fresh generator per test, so results do not depend on test order."""
    return np.random.default_rng(1234)


# --- independent reference implementations (loops / scipy) ---------------------------------


def ref_row_normalize(x):
    n = len(x)
    mean = [sum(x[i][j] for i in range(n)) / n for j in range(len(x[0]))]
    out = []
    for row in x:
        c = [row[j] - mean[j] for j in range(len(row))]
        norm = math.sqrt(sum(v * v for v in c))
        out.append([v / norm for v in c])
    return np.array(out)


def ref_entropy(k, alpha=1.0):
    lam = scipy.linalg.eigh(k, eigvals_only=True)
    lam = [v for v in lam if v > 1e-12 * max(lam)]
    total = sum(lam)
    p = [v / total for v in lam]
    if alpha == 1:
        return -sum(q * math.log(q) for q in p)
    return math.log(sum(q**alpha for q in p)) / (1 - alpha)


def ref_prompt_entropy(h, clamp):
    z = ref_row_normalize(h)
    n, d = z.shape
    g = z @ z.T if n <= d else z.T @ z
    if clamp:
        g = np.array([[max(v, 0.0) for v in row] for row in g])
    return ref_entropy(g / np.trace(g)) / min(math.log(n), math.log(d))


# --- primitives ----------------------------------------------------------------------------


def test_row_normalize_centres_and_unit_norms(rng):
    x = rng.normal(size=(7, 5)) * 3 + 10
    z = row_normalize(x)
    np.testing.assert_allclose(z, ref_row_normalize(x.tolist()), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-12)


def test_row_normalize_zero_rows_stay_zero_without_nan():
    z = row_normalize(np.array([[1.0, 2.0, 3.0]]))  # one-token prompt
    assert np.all(z == 0.0)
    z = row_normalize(np.tile([0.1, 0.2, 0.7], (4, 1)))  # identical rows, inexact mean
    assert np.all(z == 0.0)
    x = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])  # middle row equals the mean
    z = row_normalize(x)
    assert not np.any(np.isnan(z))
    np.testing.assert_array_equal(z, [[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])


def test_row_normalize_stacked_matches_per_matrix(rng):
    x = rng.normal(size=(3, 6, 4))
    np.testing.assert_allclose(row_normalize(x), np.stack([row_normalize(m) for m in x]), atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (6, 4), elements=st.floats(-1e3, 1e3)))
def test_row_normalize_property_rows_unit_or_zero(x):
    z = row_normalize(x)
    assert np.all(np.isfinite(z))
    norms = np.linalg.norm(z, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-9) | (norms == 0))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("n", [1, 4, 9])
def test_oracle_1_identity_gram_has_entropy_log_n(n, alpha):
    assert matrix_entropy_from_gram(np.eye(n) / n, alpha) == pytest.approx(math.log(n), abs=1e-12)


def test_oracle_2_rank_one_and_block_diagonal(rng):
    u = rng.normal(size=6)
    assert matrix_entropy_from_gram(np.outer(u, u)) == pytest.approx(0.0, abs=1e-12)
    m, b = 3, 4
    k = scipy.linalg.block_diag(*[np.ones((b, b))] * m)
    for alpha in (1.0, 2.0):
        assert matrix_entropy_from_gram(k, alpha) == pytest.approx(math.log(m), abs=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 4.0])
def test_matrix_entropy_matches_reference(alpha, rng):
    a = rng.normal(size=(9, 5))
    k = a @ a.T
    assert matrix_entropy_from_gram(k, alpha) == pytest.approx(ref_entropy(k, alpha), abs=1e-10)


def test_matrix_entropy_batched_equals_loop(rng):
    a = rng.normal(size=(5, 8, 3))
    k = a @ np.swapaxes(a, 1, 2)
    batched = matrix_entropy_from_gram(k, 1.0)
    assert batched.shape == (5,)
    np.testing.assert_allclose(batched, [matrix_entropy_from_gram(m) for m in k], atol=1e-13)


def test_spectrum_entropy_special_orders_and_zero():
    p = np.array([0.5, 0.25, 0.25])
    assert spectrum_entropy(p, math.inf) == pytest.approx(math.log(2))
    assert spectrum_entropy(p, 0.0) == pytest.approx(math.log(3))
    assert math.isnan(spectrum_entropy(np.zeros(3)))
    with pytest.raises(SpecError):
        spectrum_entropy(p, -1.0)


def test_frobenius_shortcut_reproduces_repitl(rng):
    a = rng.normal(size=(6, 3))
    k = a @ a.T
    k = k / np.trace(k)  # trace 1 -> shortcut returns S_2 + 2 log n
    n = k.shape[0]
    assert matrix_entropy_from_gram(k, 2.0, frobenius_shortcut=True) == pytest.approx(
        matrix_entropy_from_gram(k, 2.0) + 2 * math.log(n), abs=1e-12
    )
    unit = k * n  # trace n -> shortcut equals S_2
    assert matrix_entropy_from_gram(unit, 2.0, frobenius_shortcut=True) == pytest.approx(
        matrix_entropy_from_gram(unit, 2.0), abs=1e-12
    )
    with pytest.raises(SpecError):
        matrix_entropy_from_gram(k, 1.0, frobenius_shortcut=True)


# --- prompt entropy --------------------------------------------------------------------------


def test_oracle_3_orthonormal_tokens():
    h = np.eye(8)
    assert prompt_entropy(h, normalization="raw") == pytest.approx(2.0794, abs=1e-4)
    assert prompt_entropy(h, normalization="raw") == pytest.approx(math.log(8), abs=1e-12)
    assert prompt_entropy(h, variant="clean", normalization="raw") == pytest.approx(math.log(7), abs=1e-12)
    assert prompt_entropy(h, variant="clean", normalization="raw") == pytest.approx(1.9459, abs=1e-4)


def test_oracle_4_branches_agree_without_clamp_only(rng):
    h = rng.normal(size=(50, 20))
    z = row_normalize(h)
    small, big = z.T @ z, z @ z.T
    assert matrix_entropy_from_gram(small) == pytest.approx(matrix_entropy_from_gram(big), abs=1e-12)
    clamped = [matrix_entropy_from_gram(np.maximum(g, 0)) for g in (small, big)]
    assert abs(clamped[0] - clamped[1]) > 0.1


@pytest.mark.parametrize("variant", ["faithful", "clean"])
def test_oracle_5_scale_translation_invariance(variant, rng):
    h = rng.normal(size=(12, 30))
    b = rng.normal(size=30)
    base = prompt_entropy(h, variant=variant)
    assert prompt_entropy(3.7 * h + b, variant=variant) == pytest.approx(base, abs=1e-10)


def test_oracle_10_max_entropy_normalisation_of_identity():
    # oracle 1 with N < D: the normalised value is 1
    s = matrix_entropy_from_gram(np.eye(6) / 6)
    assert normalize_entropy(s, "maxEntropy", 6, 32) == pytest.approx(1.0, abs=1e-12)
    h = np.eye(6, 32)  # 6 orthonormal tokens in D = 32: official clamp value log N -> 1
    assert prompt_entropy(h) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(10, 25), (30, 8)])
@pytest.mark.parametrize("variant", ["faithful", "clean"])
def test_prompt_entropy_matches_reference(shape, variant, rng):
    h = rng.normal(size=shape)
    expected = ref_prompt_entropy(h.tolist(), clamp=variant == "faithful")
    assert prompt_entropy(h, variant=variant) == pytest.approx(expected, abs=1e-10)


def test_prompt_entropy_normalisations(rng):
    h = rng.normal(size=(10, 25))
    raw = prompt_entropy(h, normalization="raw")
    n, d = h.shape
    assert prompt_entropy(h, normalization="logN") == pytest.approx(raw / math.log(n))
    assert prompt_entropy(h, normalization="logD") == pytest.approx(raw / math.log(d))
    assert prompt_entropy(h, normalization="logNlogD") == pytest.approx(raw / (math.log(n) * math.log(d)))
    assert prompt_entropy(h) == pytest.approx(raw / math.log(n))


def test_prompt_entropy_degenerate_inputs_give_nan():
    assert math.isnan(prompt_entropy(np.ones((1, 5))))
    assert math.isnan(prompt_entropy(np.zeros((0, 5))))
    assert math.isnan(prompt_entropy(np.tile([1.0, 2.0], (5, 1))))  # all tokens identical


def test_prompt_entropy_accepts_float16(rng):
    h = rng.normal(size=(9, 16)).astype(np.float16)
    assert prompt_entropy(h) == pytest.approx(prompt_entropy(h.astype(np.float64)), abs=1e-12)


def test_prompt_entropy_rejects_bad_input():
    with pytest.raises(SpecError, match="variant"):
        prompt_entropy(np.eye(3), variant="nope")
    with pytest.raises(SpecError, match="normalization"):
        prompt_entropy(np.eye(3), normalization="nope")
    with pytest.raises(SpecError, match="2-D"):
        prompt_entropy(np.ones(3))
    with pytest.raises(SpecError, match="NaN"):
        prompt_entropy(np.full((3, 3), np.nan))


# --- dataset entropy -------------------------------------------------------------------------


def test_dataset_entropy_clean_matches_reference(rng):
    x = rng.normal(size=(40, 12))
    assert dataset_entropy(x) == pytest.approx(ref_prompt_entropy(x.tolist(), clamp=False), abs=1e-10)


def test_dataset_entropy_faithful_per_batch_centring(rng):
    x = rng.normal(size=(9, 20))
    batch = 4
    z = np.concatenate([row_normalize(x[i : i + batch]) for i in range(0, 9, batch)])  # last batch: 1 row -> 0
    assert np.all(z[-1] == 0)
    g = np.maximum(z @ z.T, 0)
    expected = ref_entropy(g / np.trace(g)) / math.log(9)
    assert dataset_entropy(x, variant="faithful", batch_size=batch) == pytest.approx(expected, abs=1e-10)


def test_dataset_entropy_faithful_batch_two_gives_antipodal_pairs(rng):
    x = rng.normal(size=(10, 30))
    # pairs centred -> +-u: each pair spans one direction, the clamp removes the -1 entries
    value = dataset_entropy(x, variant="faithful", normalization="raw")
    assert np.isfinite(value) and 0 < value <= math.log(10) + 1e-12


def test_dataset_entropy_degenerate_and_bad_params():
    assert math.isnan(dataset_entropy(np.ones((1, 4))))
    with pytest.raises(SpecError, match="batch_size"):
        dataset_entropy(np.eye(4), variant="faithful", batch_size=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 12), st.integers(0, 2**32 - 1), st.floats(0.25, 4.0))
def test_prompt_entropy_bounds_property(n, d, seed, alpha):
    h = np.random.default_rng(seed).normal(size=(n, d))
    clean = prompt_entropy(h, variant="clean", normalization="raw", alpha=alpha)
    faithful = prompt_entropy(h, normalization="raw", alpha=alpha)
    assert -1e-12 <= clean <= math.log(min(n - 1, d)) + 1e-9
    assert -1e-12 <= faithful <= math.log(min(n, d)) + 1e-9
