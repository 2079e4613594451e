"""Intrinsic dimension estimators: TwoNN, MLE (Levina-Bickel) and GRIDE (METRICS.md 2.7, 7.1-7.3).

All estimators read nearest-neighbour distances of a point cloud
``x: Float[ndarray, "points d"]``. Duplicate points (distance 0 to a neighbour)
would make neighbour-distance ratios infinite or undefined, so exact duplicate rows
are removed first (DADApy ``remove_identical_points`` behaviour); the estimate is that
of the set of distinct points. Too few distinct points for an estimator gives NaN.

Registered per-prompt metrics (input ``doc_hidden``) apply the paper-1
:func:`~layerlake.metrics.entropy.row_normalize` first (``normalize=True``, as the
official code does); dataset-wide metrics (input ``token_cloud``) default to the raw
cloud. The official code sets layer 0 to 0; that is the caller's choice here.
"""

from __future__ import annotations

import math

import numpy as np
from numpy import ndarray
from scipy.optimize import brentq
from scipy.spatial import cKDTree

from ..errors import SpecError
from ._validate import as_float64, check_choice
from .entropy import row_normalize
from .registry import metric

TWONN_ALGORITHMS = ("base", "mle")
_KDTREE_MAX_DIM = 10
_CHUNK_BYTES = 64 * 2**20  # working memory per block of the brute-force search


def unique_points(x: ndarray) -> ndarray:
    """Distinct rows of ``x: Float[ndarray, "n d"]`` (order not preserved)."""
    return np.unique(x, axis=0) if x.shape[0] > 1 else x


def knn_distances(x: ndarray, k: int) -> ndarray:
    """Sorted distances from every point to its ``k`` nearest OTHER points.

    ``x: Float[ndarray, "n d"]`` (rows assumed distinct) -> ``Float[ndarray, "n k"]``.
    Low dimension: ``scipy.spatial.cKDTree``. Otherwise a chunked brute force whose
    candidates come from BLAS squared distances and whose returned distances are
    recomputed exactly from differences (no cancellation error for close points).
    """
    n, d = x.shape
    if not 1 <= k <= n - 1:
        raise SpecError(f"knn_distances: need 1 <= k <= n-1, got k={k}, n={n}")
    if d <= _KDTREE_MAX_DIM:
        dist, _ = cKDTree(x).query(x, k=k + 1)
        return np.sort(dist[:, 1:], axis=1)
    m = min(n - 1, k + 8)  # candidate pool absorbs rounding-order errors
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty((n, k))
    chunk = max(1, _CHUNK_BYTES // (8 * max(n, m * d)))
    for start in range(0, n, chunk):
        block = x[start : start + chunk]
        rows = np.arange(start, start + block.shape[0])
        d2 = sq[rows, None] + sq[None, :] - 2.0 * block @ x.T
        d2[np.arange(block.shape[0]), rows] = np.inf
        cand = np.argpartition(d2, m - 1, axis=1)[:, :m]
        exact = np.linalg.norm(x[cand] - block[:, None, :], axis=2)
        out[start : start + block.shape[0]] = np.sort(exact, axis=1)[:, :k]
    return out


def twonn_from_mu(mu: ndarray, algorithm: str = "base", fraction: float = 0.9) -> float:
    """TwoNN estimate from ratios ``mu = r2 / r1`` (METRICS.md 7.1).

    ``"base"`` (DADApy default): sort ``log mu``, keep the smallest
    ``floor(fraction N)``, regress ``-log(1 - i/N)`` on them through the origin.
    ``"mle"``: ``(N - 1) / sum log mu`` over all ratios (DADApy 'ml', unbiased).
    """
    check_choice("algorithm", algorithm, TWONN_ALGORITHMS)
    log_mu = np.log(np.asarray(mu, dtype=np.float64))
    n = log_mu.shape[0]
    if algorithm == "mle":
        total = float(np.sum(log_mu))
        return (n - 1) / total if total > 0 else math.nan
    if not 0.0 < fraction < 1.0:
        raise SpecError(f"twonn: fraction must be in (0, 1) for algorithm='base', got {fraction!r}")
    n_eff = int(n * fraction)
    if n_eff < 1:
        return math.nan
    xs = np.sort(log_mu)[:n_eff]
    ys = -np.log1p(-np.arange(1, n_eff + 1) / n)
    sxx = float(xs @ xs)
    return float(xs @ ys) / sxx if sxx > 0 else math.nan


def twonn(x: ndarray, algorithm: str = "base", fraction: float = 0.9) -> float:
    """TwoNN intrinsic dimension of ``x: Float[ndarray, "n d"]`` (Facco et al. 2017; 7.1).

    Fewer than 3 distinct points: NaN.
    """
    pts = unique_points(as_float64(x, "twonn: x", 2))
    if pts.shape[0] < 3:
        return math.nan
    r = knn_distances(pts, 2)
    return twonn_from_mu(r[:, 1] / r[:, 0], algorithm, fraction)


def mle_levina_bickel(x: ndarray, k_min: int = 10, k_max: int = 20, mackay_ghahramani: bool = False) -> float:
    """Levina-Bickel MLE of ``x: Float[ndarray, "n d"]``, averaged over k in [k_min, k_max] (7.2).

    ``m_k(x) = [ (1/(k-1)) sum_{j<k} log(T_k / T_j) ]^-1``; global value = mean over
    points (Levina-Bickel) or the inverse of the mean inverse (``mackay_ghahramani``).
    The k range is clipped to the ``n - 1`` available neighbours; if fewer than 2
    neighbours remain: NaN.
    """
    if not 2 <= k_min <= k_max:
        raise SpecError(f"mle_levina_bickel: need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    pts = unique_points(as_float64(x, "mle_levina_bickel: x", 2))
    hi = min(int(k_max), pts.shape[0] - 1)
    lo = min(int(k_min), hi)
    if lo < 2:
        return math.nan
    log_t = np.log(knn_distances(pts, hi))
    estimates = []
    for k in range(lo, hi + 1):
        inv = np.mean(log_t[:, k - 1 : k] - log_t[:, : k - 1], axis=1)  # 1 / m_k(x)
        with np.errstate(divide="ignore"):
            estimates.append(1.0 / np.mean(inv) if mackay_ghahramani else float(np.mean(1.0 / inv)))
    return float(np.mean(estimates))


def gride_from_mu(mu: ndarray, n1: int, n2: int) -> float:
    """GRIDE maximum-likelihood dimension from ``mu = r_n2 / r_n1`` (Denti et al. 2022; 7.3).

    Density ``f(mu) = d (mu^d - 1)^(n2-n1-1) / (B(n2-n1, n1) mu^(d(n2-1)+1))``; the
    log-likelihood is concave in d, so its maximiser is the unique root of the score
    ``N/d + (n2-n1-1) sum L/(1 - e^(-d L)) - (n2-1) sum L`` (``L = log mu``), found by
    ``scipy.optimize.brentq``. n1 = 1, n2 = 2 gives ``N / sum log mu``.
    """
    log_mu = np.log(np.asarray(mu, dtype=np.float64))
    n, extra = log_mu.shape[0], n2 - n1 - 1
    total = float(np.sum(log_mu))
    if n == 0 or total <= 0:
        return math.nan
    positive = log_mu > 0

    def score(d: float) -> float:
        denom = -np.expm1(-d * np.where(positive, log_mu, 1.0))
        ratio = np.where(positive, log_mu / denom, 1.0 / d)  # limit L -> 0 is 1/d
        return n / d + extra * float(np.sum(ratio)) - (n2 - 1) * total

    lo, hi = 1e-8, 1.0
    while score(hi) > 0:
        hi *= 2.0
        if hi > 1e8:
            return math.inf
    return float(brentq(score, lo, hi, xtol=1e-12, rtol=1e-12))


def gride(x: ndarray, n1: int = 1, n2: int = 0) -> float:
    """GRIDE intrinsic dimension of ``x: Float[ndarray, "n d"]`` at scale ``n1`` (7.3).

    ``n2 = 0`` means ``2 n1``. Needs ``n2 < n`` distinct points, else NaN.
    """
    n1, n2 = int(n1), int(n2) or 2 * int(n1)
    if not 1 <= n1 < n2:
        raise SpecError(f"gride: need 1 <= n1 < n2, got n1={n1}, n2={n2}")
    pts = unique_points(as_float64(x, "gride: x", 2))
    if pts.shape[0] <= n2:
        return math.nan
    r = knn_distances(pts, n2)
    return gride_from_mu(r[:, n2 - 1] / r[:, n1 - 1], n1, n2)


def _cloud(x: ndarray, name: str, normalize: bool) -> ndarray:
    x = as_float64(x, name, 2)
    return row_normalize(x) if normalize and x.shape[0] > 1 else x


_ID_COMMON = {"version": "1", "direction": "none", "invariances": ("scale", "translation", "rotation", "permutation")}
_PER_PROMPT = {"input": "doc_hidden", "granularity": "document", **_ID_COMMON}
_DATASET = {"input": "token_cloud", "granularity": "layer", **_ID_COMMON}
_SRC_TWONN = "Facco et al. 2017 (TwoNN), DADApy compute_id_2NN; Skean et al. 2025; METRICS.md 2.7, 7.1"
_SRC_MLE = "Levina & Bickel 2004; MacKay & Ghahramani 2005; METRICS.md 7.2"
_SRC_GRIDE = "Denti et al. 2022 (GRIDE); METRICS.md 7.3"


@metric(
    name="twonn_id",
    params={"algorithm": "base", "fraction": 0.9, "normalize": True, "normalization": "raw"},
    source=_SRC_TWONN,
    description="TwoNN intrinsic dimension of one prompt's token cloud (paper-1 normalised).",
    **_PER_PROMPT,
)
def twonn_id(
    h: ndarray, *, algorithm: str = "base", fraction: float = 0.9, normalize: bool = True, normalization: str = "raw"
) -> float:
    """TwoNN ID of one document at one layer (METRICS.md 2.7).

    ``h: Float[ndarray, "tokens d_model"]`` -> float. ``normalization="logN"`` divides
    by log(tokens) (the official 'logN' key).
    """
    check_choice("normalization", normalization, ("raw", "logN"))
    value = twonn(_cloud(h, "twonn_id: h", normalize), algorithm, fraction)
    if normalization == "logN":
        n = np.shape(h)[0]
        return value / math.log(n) if n > 1 else math.nan
    return value


@metric(
    name="mle_id",
    params={"k_min": 10, "k_max": 20, "mackay_ghahramani": False, "normalize": True},
    source=_SRC_MLE,
    description="Levina-Bickel MLE intrinsic dimension of one prompt's token cloud (paper-1 normalised).",
    **_PER_PROMPT,
)
def mle_id(
    h: ndarray, *, k_min: int = 10, k_max: int = 20, mackay_ghahramani: bool = False, normalize: bool = True
) -> float:
    """MLE ID of one document at one layer (METRICS.md 7.2); ``h: Float[ndarray, "tokens d_model"]``."""
    return mle_levina_bickel(_cloud(h, "mle_id: h", normalize), k_min, k_max, mackay_ghahramani)


@metric(
    name="gride_id",
    params={"n1": 1, "n2": 0, "normalize": True},
    source=_SRC_GRIDE,
    description="GRIDE intrinsic dimension at neighbour scale n1 of one prompt's token cloud (n2=0: 2*n1).",
    **_PER_PROMPT,
)
def gride_id(h: ndarray, *, n1: int = 1, n2: int = 0, normalize: bool = True) -> float:
    """GRIDE ID of one document at one layer (METRICS.md 7.3); ``h: Float[ndarray, "tokens d_model"]``."""
    return gride(_cloud(h, "gride_id: h", normalize), n1, n2)


@metric(
    name="dataset_twonn_id",
    params={"algorithm": "base", "fraction": 0.9, "normalize": False},
    source=_SRC_TWONN,
    description="TwoNN intrinsic dimension of all tokens of a dataset at one layer.",
    **_DATASET,
)
def dataset_twonn_id(x: ndarray, *, algorithm: str = "base", fraction: float = 0.9, normalize: bool = False) -> float:
    """TwoNN ID of a layer's token cloud (METRICS.md 7.1); ``x: Float[ndarray, "tokens d_model"]``."""
    return twonn(_cloud(x, "dataset_twonn_id: x", normalize), algorithm, fraction)


@metric(
    name="dataset_mle_id",
    params={"k_min": 10, "k_max": 20, "mackay_ghahramani": False, "normalize": False},
    source=_SRC_MLE,
    description="Levina-Bickel MLE intrinsic dimension of all tokens of a dataset at one layer.",
    **_DATASET,
)
def dataset_mle_id(
    x: ndarray, *, k_min: int = 10, k_max: int = 20, mackay_ghahramani: bool = False, normalize: bool = False
) -> float:
    """MLE ID of a layer's token cloud (METRICS.md 7.2); ``x: Float[ndarray, "tokens d_model"]``."""
    return mle_levina_bickel(_cloud(x, "dataset_mle_id: x", normalize), k_min, k_max, mackay_ghahramani)


@metric(
    name="dataset_gride_id",
    params={"n1": 1, "n2": 0, "normalize": False},
    source=_SRC_GRIDE,
    description="GRIDE intrinsic dimension at neighbour scale n1 of all tokens of a dataset at one layer.",
    **_DATASET,
)
def dataset_gride_id(x: ndarray, *, n1: int = 1, n2: int = 0, normalize: bool = False) -> float:
    """GRIDE ID of a layer's token cloud (METRICS.md 7.3); ``x: Float[ndarray, "tokens d_model"]``."""
    return gride(_cloud(x, "dataset_gride_id: x", normalize), n1, n2)
