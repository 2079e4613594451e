"""Correlator statistics of paper 3 (METRICS.md 4, oracle 14)."""

from __future__ import annotations

import numpy as np
import pytest

from layerlake.errors import SpecError
from layerlake.metrics import get_metric
from layerlake.metrics.correlator import correlator_dimension, correlator_lin, correlator_sq


def _loops(h: np.ndarray) -> tuple[float, float]:
    """E_lin and E_sq from explicit double loops over i != j."""
    n = len(h)
    lin = sq = sq_den = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                dot = h[i] @ h[j]
                lin += dot
                sq += dot**2
                sq_den += (h[i] @ h[i]) * (h[j] @ h[j])
    return lin / (n * sum(h[i] @ h[i] for i in range(n))), sq / sq_den


# --- oracle 14 ---------------------------------------------------------------------------------


def test_effective_dimension_of_isotropic_subspace_cloud():
    rng = np.random.default_rng(0)
    d, big_d, n = 7, 200, 3000
    basis, _ = np.linalg.qr(rng.standard_normal((big_d, d)))  # random d-dim subspace of R^D
    h = rng.standard_normal((n, d)) @ basis.T
    assert correlator_dimension(h) == pytest.approx(7.0, abs=0.05)  # METRICS: 6.996 at this size


def test_lin_of_zero_mean_cloud_is_about_zero():
    h = np.random.default_rng(1).standard_normal((3000, 50))
    assert abs(correlator_lin(h)) < 1e-3


@pytest.mark.parametrize("n", [2, 5, 100])
def test_lin_of_identical_vectors_is_exact(n):
    h = np.tile(np.array([0.5, -1.0, 2.0, 0.1]), (n, 1))
    assert correlator_lin(h) == pytest.approx((n - 1) / n, rel=1e-13)
    assert correlator_sq(h) == pytest.approx(1.0, rel=1e-12)


# --- against loops, both Gram branches ---------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 20), (20, 6), (9, 9), (2, 3)])
def test_match_double_loops(shape):
    h = np.random.default_rng(sum(shape)).standard_normal(shape) + 0.3
    lin, sq = _loops(h)
    assert correlator_lin(h) == pytest.approx(lin, rel=1e-11)
    assert correlator_sq(h) == pytest.approx(sq, rel=1e-11)
    assert correlator_dimension(h) == pytest.approx(1.0 / sq, rel=1e-11)


def test_centre_option_matches_loops_on_centred_data():
    h = np.random.default_rng(2).standard_normal((15, 8)) + 5.0
    _, sq = _loops(h - h.mean(axis=0))
    assert correlator_sq(h, centre=True) == pytest.approx(sq, rel=1e-11)
    assert correlator_sq(h) > 0.9  # the common direction dominates the uncentred statistic


def test_float16_and_errors():
    h = np.random.default_rng(3).standard_normal((10, 5)).astype(np.float16)
    _, sq = _loops(h.astype(np.float64))
    assert correlator_sq(h) == pytest.approx(sq, rel=1e-11)
    with pytest.raises(SpecError):
        correlator_lin(np.ones((1, 3)))
    assert np.isnan(correlator_lin(np.zeros((3, 2))))


@pytest.mark.parametrize(
    "name,kind,gran",
    [
        ("correlator_lin", "token_cloud", "layer"),
        ("correlator_sq", "token_cloud", "layer"),
        ("correlator_dimension", "token_cloud", "layer"),
        ("correlator_lin_doc", "doc_hidden", "document"),
        ("correlator_sq_doc", "doc_hidden", "document"),
        ("correlator_dimension_doc", "doc_hidden", "document"),
    ],
)
def test_registered_provisional(name, kind, gran):
    m = get_metric(name)
    assert (m.input, m.granularity, m.provisional) == (kind, gran, True)
    h = np.random.default_rng(4).standard_normal((12, 4))
    direct = {"lin": correlator_lin, "sq": correlator_sq, "dimension": correlator_dimension}
    assert m(h) == direct[name.split("_")[1]](h)
