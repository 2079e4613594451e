"""Dispersion (METRICS.md 3, oracle 11) and the perplexity grouping protocol."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from layerlake.errors import SpecError
from layerlake.metrics import get_metric
from layerlake.metrics.dispersion import correlation_summary, perplexity_groups, representation_dispersion


def _pairwise_reference(h: np.ndarray) -> float:
    """Loop over i < j of cosine similarities (the O(T^2 d) definition)."""
    t = len(h)
    cos = [h[i] @ h[j] / (np.linalg.norm(h[i]) * np.linalg.norm(h[j])) for i in range(t) for j in range(i + 1, t)]
    return 1.0 - float(np.mean(cos))


# --- oracle 11 ---------------------------------------------------------------------------------


def test_identical_vectors_give_zero():
    h = np.tile(np.array([1.0, -2.0, 3.0]), (7, 1))
    assert representation_dispersion(h) == pytest.approx(0.0, abs=1e-12)


def test_orthonormal_set_gives_one():
    assert representation_dispersion(np.eye(6)) == pytest.approx(1.0, abs=1e-12)


def test_antipodal_pair_gives_two():
    x = np.array([[0.3, -1.2, 2.0]])
    assert representation_dispersion(np.vstack([x, -x])) == pytest.approx(2.0, abs=1e-12)


@pytest.mark.parametrize("n", [3, 5, 9])
def test_regular_simplex_gives_n_over_n_minus_1(n):
    simplex = np.eye(n) - 1.0 / n  # centred orthonormal basis
    assert representation_dispersion(simplex) == pytest.approx(n / (n - 1), abs=1e-12)
    if n == 5:
        assert representation_dispersion(simplex) == pytest.approx(1.25, abs=1e-12)


def test_isotropic_gaussian_high_dimension_is_about_one():
    h = np.random.default_rng(0).standard_normal((64, 4000))
    assert representation_dispersion(h) == pytest.approx(1.0, abs=0.01)


# --- against the pairwise loop, dtypes, edge cases ---------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3), (10, 4), (33, 17)])
def test_matches_pairwise_loop(shape):
    h = np.random.default_rng(1).standard_normal(shape) + 0.5
    assert representation_dispersion(h) == pytest.approx(_pairwise_reference(h), abs=1e-12)


def test_float16_input_is_cast():
    h = np.random.default_rng(2).standard_normal((12, 8)).astype(np.float16)
    assert representation_dispersion(h) == pytest.approx(_pairwise_reference(h.astype(np.float64)), abs=1e-12)


def test_zero_row_gives_nan_and_one_row_raises():
    assert np.isnan(representation_dispersion(np.array([[1.0, 0.0], [0.0, 0.0]])))
    with pytest.raises(SpecError):
        representation_dispersion(np.ones((1, 4)))
    with pytest.raises(SpecError):
        representation_dispersion(np.ones(4))


def test_registered():
    m = get_metric("representation_dispersion")
    assert (m.input, m.granularity, m.direction) == ("doc_hidden", "document", "higher")
    h = np.random.default_rng(3).standard_normal((5, 4))
    assert m(h) == representation_dispersion(h)


# --- hypothesis: invariances -------------------------------------------------------------------


@st.composite
def _cloud(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    t, d = draw(st.integers(2, 12)), draw(st.integers(1, 8))
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((t, d)) * draw(st.floats(1e-3, 1e3)) + draw(st.floats(-2, 2))
    h[np.linalg.norm(h, axis=1) < 1e-6] = 1.0
    return h, rng


@settings(max_examples=60, deadline=None)
@given(_cloud())
def test_invariances(cloud):
    h, rng = cloud
    base = representation_dispersion(h)
    scales = rng.uniform(1e-3, 1e3, size=(len(h), 1))
    rot, _ = np.linalg.qr(rng.standard_normal((h.shape[1], h.shape[1])))
    perm = rng.permutation(len(h))
    assert representation_dispersion(h * scales) == pytest.approx(base, abs=1e-9)
    assert representation_dispersion(h @ rot) == pytest.approx(base, abs=1e-9)
    assert representation_dispersion(h[perm]) == pytest.approx(base, abs=1e-9)
    assert -1e-12 <= base <= 2 + 1e-12


# --- perplexity grouping (3.2) -----------------------------------------------------------------


def _groups_reference(ppl, values, group_size, n_groups):
    """Direct transcription of the protocol with Python lists and bisect."""
    data = sorted(enumerate(ppl), key=lambda iv: iv[1])
    groups = []
    for start in range(0, len(data), group_size):
        chunk = data[start : start + group_size]
        if len(chunk) < group_size:
            break
        groups.append((float(np.mean([p for _, p in chunk])), [i for i, _ in chunk]))
    means = [g[0] for g in groups]
    if len(groups) <= n_groups:
        picked = range(len(groups))
    else:
        chosen = set()
        for target in np.linspace(means[0], means[-1], n_groups):
            pos = min(bisect.bisect_left(means, target), len(means) - 1)
            if pos > 0 and abs(means[pos - 1] - target) < abs(means[pos] - target):
                chosen.add(pos - 1)
            else:
                chosen.add(pos)
        picked = sorted(chosen)
    return (
        np.array([groups[g][0] for g in picked]),
        np.array([np.mean([values[i] for i in groups[g][1]]) for g in picked]),
    )


@pytest.mark.parametrize("n_chunks,group_size,n_groups", [(1055, 10, 20), (1000, 10, 100), (987, 7, 30)])
def test_perplexity_groups_match_reference(n_chunks, group_size, n_groups):
    rng = np.random.default_rng(n_chunks)
    ppl = np.exp(rng.normal(2.5, 0.6, n_chunks))
    values = rng.uniform(0, 2, n_chunks)
    got = perplexity_groups(ppl, values, group_size=group_size, n_groups=n_groups)
    ref_ppl, ref_val = _groups_reference(ppl, values, group_size, n_groups)
    np.testing.assert_allclose(got.mean_ppl, ref_ppl, rtol=1e-12)
    np.testing.assert_allclose(got.mean_value, ref_val, rtol=1e-12)
    assert got.members.shape == (len(ref_ppl), group_size)
    assert np.all(np.diff(got.mean_ppl) >= 0)


def test_perplexity_groups_small_example():
    ppl = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 100.0])  # tail chunk (100) dropped with size 2
    values = np.array([50.0, 10.0, 30.0, 20.0, 40.0, 60.0, 0.0])
    got = perplexity_groups(ppl, values, group_size=2, n_groups=10)
    np.testing.assert_allclose(got.mean_ppl, [1.5, 3.5, 5.5])
    np.testing.assert_allclose(got.mean_value, [15.0, 35.0, 55.0])
    capped = perplexity_groups(ppl, values, group_size=2, n_groups=10, max_ppl=5.5)
    np.testing.assert_allclose(capped.mean_ppl, [1.5, 3.5])
    with pytest.raises(SpecError):
        perplexity_groups(ppl, values[:-1])
    with pytest.raises(SpecError):
        perplexity_groups(ppl, values, group_size=8)


def test_correlation_summary_matches_scipy():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(40)
    y = -0.7 * x + rng.standard_normal(40)
    s = correlation_summary(x, y)
    assert s["n"] == 40
    assert s["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    rank_r = np.corrcoef(stats.rankdata(x), stats.rankdata(y))[0, 1]
    assert s["spearman_rho"] == pytest.approx(rank_r, abs=1e-12)
    assert 0 <= s["pearson_p"] < 0.05 and 0 <= s["spearman_p"] < 0.05
