"""Effective rank family (METRICS.md 2.5, 7.4, oracle 15)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from layerlake.errors import SpecError
from layerlake.metrics.effective_rank import (
    ERANK_METHODS,
    dataset_effective_rank,
    effective_rank,
    prompt_effective_rank,
)
from layerlake.metrics.entropy import prompt_entropy, row_normalize


@pytest.fixture
def rng():
    """A fresh generator per test, so results do not depend on test order."""
    return np.random.default_rng(11)


def ref_erank(z, method):
    s = scipy.linalg.svdvals(z)
    if method == "participation_ratio":
        lam = [v * v for v in s]
        return sum(lam) ** 2 / sum(v * v for v in lam)
    if method == "exp_entropy":
        s = [v * v for v in s]
    total = sum(s)
    p = [v / total for v in s]
    if method == "rankme":
        p = [q + 1e-7 for q in p]
    else:
        p = [q for q in p if q > 1e-15]
    return math.exp(-sum(q * math.log(q) for q in p))


@pytest.mark.parametrize("method", ERANK_METHODS)
def test_oracle_15_identity_and_rank_one(method, rng):
    assert effective_rank(np.eye(7), method) == pytest.approx(7.0, rel=1e-6)
    rank1 = np.outer(rng.normal(size=9), rng.normal(size=5))
    assert effective_rank(rank1, method) == pytest.approx(1.0, rel=1e-5)


def test_oracle_15_roy_vetterli_exceeds_squared_spectrum_entropy(rng):
    s = np.exp(-np.arange(50) / 10.0)
    u, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    z = u * s
    rv, sq = effective_rank(z, "roy_vetterli"), effective_rank(z, "exp_entropy")
    assert rv > sq
    assert rv == pytest.approx(ref_erank(z, "roy_vetterli"), rel=1e-10)


@pytest.mark.parametrize("method", ERANK_METHODS)
def test_effective_rank_matches_reference(method, rng):
    z = rng.normal(size=(12, 7)) @ np.diag([5, 3, 2, 1, 0.5, 0.1, 0.01])
    assert effective_rank(z, method) == pytest.approx(ref_erank(z, method), rel=1e-10)


def test_zero_matrix_has_rank_zero():
    for method in ERANK_METHODS:
        assert effective_rank(np.zeros((3, 4)), method) == 0.0


def test_metrics_apply_row_normalize_and_tie_to_prompt_entropy(rng):
    h = rng.normal(size=(9, 20)) + 5
    assert prompt_effective_rank(h) == pytest.approx(effective_rank(row_normalize(h)), rel=1e-12)
    assert prompt_effective_rank(h, normalize=False) == pytest.approx(effective_rank(h), rel=1e-12)
    clean_raw = prompt_entropy(h, variant="clean", normalization="raw")
    assert prompt_effective_rank(h, method="exp_entropy") == pytest.approx(math.exp(clean_raw), rel=1e-10)
    x = rng.normal(size=(30, 8))
    assert dataset_effective_rank(x, method="rankme") == pytest.approx(
        effective_rank(row_normalize(x), "rankme"), rel=1e-12
    )
    assert math.isnan(prompt_effective_rank(h[:1]))
    with pytest.raises(SpecError, match="method"):
        effective_rank(h, "nope")
