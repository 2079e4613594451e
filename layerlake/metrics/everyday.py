"""Everyday metrics: perplexity, vector norm, layer-to-layer cosine, linear CKA.

Standard estimators without a paper section of their own (METRICS.md 1 conventions:
natural log, float64). CKA follows Kornblith et al. 2019; the debiased form uses the
unbiased HSIC estimator of Song et al. 2012 (as in Nguyen et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import SpecError
from ._validate import as_float64
from .registry import metric


@metric(
    name="perplexity",
    input="doc_nll",
    granularity="document",
    direction="lower",
    invariances=("permutation",),
    source="standard; METRICS.md 3.2 step 2 (chunk perplexity)",
    description="exp(mean next-token NLL) of one document; the mean over documents is NOT corpus perplexity.",
)
def perplexity(nll: np.ndarray) -> float:
    """Document perplexity ``exp(mean_t nll_t)``; ``nll``: ``[tokens]`` in nats (METRICS.md 3.2).

    The engine's layer/dataset value for ``doc_nll`` metrics is the mean over
    documents of these numbers (document-weighted). The corpus perplexity,
    ``exp`` of the token-weighted mean NLL, is :func:`corpus_perplexity`.
    """
    nll = as_float64(nll, "perplexity: nll [tokens]", 1, finite=False, min_rows=1)
    return float(np.exp(nll.mean()))


def corpus_perplexity(nlls: Sequence[np.ndarray]) -> float:
    """Token-weighted perplexity ``exp(sum_docs sum_t nll / total tokens)`` of ``[tokens_i]`` arrays."""
    if len(nlls) == 0:
        raise SpecError("corpus_perplexity: got no documents")
    parts = [as_float64(x, f"corpus_perplexity: nlls[{i}] [tokens]", 1, finite=False, min_rows=1)
             for i, x in enumerate(nlls)]
    return float(np.exp(sum(p.sum() for p in parts) / sum(len(p) for p in parts)))


@metric(
    name="mean_norm",
    input="doc_hidden",
    granularity="document",
    invariances=("rotation", "permutation"),
    source="standard",
    description="Mean L2 norm of the token vectors of one document.",
)
def mean_norm(h: np.ndarray) -> float:
    """``mean_i ||h_i||`` for ``h``: ``[tokens, d_model]``."""
    h = as_float64(h, "mean_norm: h [tokens, d_model]", 2, finite=False, min_rows=1)
    return float(np.linalg.norm(h, axis=1).mean())


def _pair(x: np.ndarray, y: np.ndarray, name: str, same_d: bool, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    x = as_float64(x, f"{name}: x [n, d]", 2, finite=False, min_rows=min_rows)
    y = as_float64(y, f"{name}: y [n, d]", 2, finite=False, min_rows=min_rows)
    if x.shape[0] != y.shape[0] or (same_d and x.shape[1] != y.shape[1]):
        what = "shapes" if same_d else "row counts"
        raise SpecError(f"{name}: x {x.shape} and y {y.shape} have different {what}")
    return x, y


@metric(
    name="layer_cosine",
    input="layer_pair",
    granularity="layer_pair",
    invariances=("scale", "row_scale", "rotation", "permutation"),
    source="standard",
    description="Mean over rows of cos(x_i, y_i) (same token/document at two layers).",
)
def layer_cosine(x: np.ndarray, y: np.ndarray) -> float:
    """``mean_i cos(x_i, y_i)``; ``x``, ``y``: ``[n, d]``. A zero row gives NaN."""
    x, y = _pair(x, y, "layer_cosine", same_d=True)
    num = np.einsum("ij,ij->i", x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.mean(num / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))))


def _debias(xty: float, rows_x: np.ndarray, rows_y: np.ndarray, n: int) -> float:
    """Unbiased HSIC (times n(n-3)) from feature-space quantities of centred x, y."""
    return xty - n / (n - 2.0) * float(rows_x @ rows_y) + rows_x.sum() * rows_y.sum() / ((n - 1.0) * (n - 2.0))


def _unbiased_centre_gram(k: np.ndarray) -> np.ndarray:
    """Gram with zero diagonal, centred so that <K~, L~> is n(n-3) x the unbiased HSIC."""
    n = k.shape[0]
    k = k.copy()
    np.fill_diagonal(k, 0.0)
    means = k.sum(axis=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    k -= means[:, None] + means[None, :]
    np.fill_diagonal(k, 0.0)
    return k


@metric(
    name="linear_cka",
    input="layer_pair",
    granularity="layer_pair",
    params={"debiased": False},
    invariances=("scale", "translation", "rotation", "permutation"),
    source="Kornblith et al. 2019 (debiased: Song et al. 2012 HSIC_u)",
    description="Linear CKA ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) of column-centred x, y.",
)
def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA of ``x`` ``[n, d1]`` and ``y`` ``[n, d2]`` (rows = the same items).

    Columns are centred; feature-space form (O(n d1 d2)) when ``n`` exceeds both
    widths, else the n x n Gram form (O(n^2 (d1 + d2))). ``debiased=True`` replaces
    each HSIC by the unbiased estimator (needs n >= 4; may be slightly negative,
    and NaN when a self-HSIC estimate is negative).
    """
    x, y = _pair(x, y, "linear_cka", same_d=False, min_rows=4 if debiased else 2)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    n = x.shape[0]
    if n > max(x.shape[1], y.shape[1]):
        xy = float(np.sum((y.T @ x) ** 2))
        xx = float(np.sum((x.T @ x) ** 2))
        yy = float(np.sum((y.T @ y) ** 2))
        if debiased:
            rx, ry = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
            xy, xx, yy = _debias(xy, rx, ry, n), _debias(xx, rx, rx, n), _debias(yy, ry, ry, n)
    else:
        kx, ky = x @ x.T, y @ y.T
        if debiased:
            kx, ky = _unbiased_centre_gram(kx), _unbiased_centre_gram(ky)
        xy, xx, yy = float(np.sum(kx * ky)), float(np.sum(kx * kx)), float(np.sum(ky * ky))
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(xy / np.sqrt(xx * yy))
