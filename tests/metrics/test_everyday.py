"""Perplexity, mean norm, layer cosine and linear CKA against straightforward implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from layerlake.errors import SpecError
from layerlake.metrics import get_metric
from layerlake.metrics.everyday import corpus_perplexity, layer_cosine, linear_cka, mean_norm, perplexity


def test_perplexity_and_corpus_perplexity():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.5])
    assert perplexity(a) == pytest.approx(math.exp(2.0), rel=1e-15)
    assert corpus_perplexity([a, b]) == pytest.approx(math.exp(6.5 / 4), rel=1e-15)
    doc_mean = (perplexity(a) + perplexity(b)) / 2  # what a mean over documents gives
    assert corpus_perplexity([a, b]) != pytest.approx(doc_mean)
    assert perplexity(np.float16([0.25, 0.75])) == pytest.approx(math.exp(0.5))
    with pytest.raises(SpecError):
        perplexity(np.array([]))
    with pytest.raises(SpecError):
        corpus_perplexity([])


def test_mean_norm_and_layer_cosine_match_loops():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    assert mean_norm(x) == pytest.approx(sum(math.sqrt(sum(v * v for v in row)) for row in x) / 7)
    cos = [x[i] @ y[i] / (np.linalg.norm(x[i]) * np.linalg.norm(y[i])) for i in range(7)]
    assert layer_cosine(x, y) == pytest.approx(np.mean(cos), abs=1e-14)
    assert layer_cosine(x, 3 * x) == pytest.approx(1.0)
    with pytest.raises(SpecError):
        layer_cosine(x, y[:, :4])


def _hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h))


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012) unbiased estimator."""
    n = len(k)
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    term = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term -= 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return float(term / (n * (n - 3)))


def _cka_reference(x, y, hsic):
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


@pytest.mark.parametrize("n,d1,d2", [(20, 5, 3), (6, 10, 12), (9, 9, 4)])  # feature-space and Gram branches
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_matches_hsic_definition(n, d1, d2, debiased):
    rng = np.random.default_rng(n + d1 + d2)
    x = rng.standard_normal((n, d1)) + 2.0
    y = x[:, :1] @ rng.standard_normal((1, d2)) + rng.standard_normal((n, d2))
    hsic = _hsic_unbiased if debiased else _hsic_biased
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(_cka_reference(xc, yc, hsic), abs=1e-10)


def test_linear_cka_properties():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 6)), rng.standard_normal((30, 4))
    rot, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    base = linear_cka(x, y)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(3 * x @ rot + 1.5, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, y, debiased=True) == pytest.approx(
        _cka_reference(x - x.mean(0), y - y.mean(0), _hsic_unbiased)
    )
    assert linear_cka(x, x, debiased=True) == pytest.approx(1.0)
    with pytest.raises(SpecError):
        linear_cka(x[:3], y[:3], debiased=True)


def test_registered():
    assert get_metric("perplexity").input == "doc_nll"
    assert get_metric("linear_cka").params == {"debiased": False}
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    assert get_metric("linear_cka")(x, y, debiased="true") == linear_cka(x, y, debiased=True)
    assert get_metric("layer_cosine").granularity == "layer_pair"
