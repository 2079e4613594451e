"""Augmentation-invariance metrics of paper 1: InfoNCE, LiDAR and DiME (METRICS.md 2.8-2.11).

Input kind ``"views"``: ``v: Float[ndarray, "docs views d_model"]``, the mean-pooled
representations of augmented views of each original document (views come from
:mod:`layerlake.ingest.augment`). With ``normalize=True`` (default) each view's
documents go through :func:`~layerlake.metrics.entropy.row_normalize` separately
(centre over documents, unit-norm rows), the processing step of METRICS.md 2.8.
The official code centres per mini-batch; here the centring is over all documents.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy import ndarray
from scipy.special import logsumexp

from ..errors import SpecError
from ._validate import check_choice, check_views
from .entropy import (
    ENTROPY_VARIANTS,
    NORMALIZATIONS,
    matrix_entropy_from_gram,
    normalize_entropy,
    row_normalize,
    spectrum_entropy,
)
from .registry import metric

INFONCE_VERSIONS = ("ntxent", "ce")
_MAX_EXACT_N = 8

_SRC = "Skean et al. 2025 'Layer by Layer' (arXiv:2502.02013), official code"


def prepare_views(v: ndarray, name: str, normalize: bool, exact_views: int | None = None) -> ndarray:
    """Views as float64 ``(docs, views, d)``, each view row-normalised over docs if asked."""
    arr = check_views(v, name, exact_views)
    if normalize:
        arr = np.swapaxes(row_normalize(np.swapaxes(arr, 0, 1)), 0, 1)
    return arr


@metric(
    name="infonce",
    input="views",
    granularity="layer",
    params={"version": "ntxent", "tau": 0.1, "normalize": True},
    version="1",
    direction="lower",
    invariances=("scale", "translation", "rotation", "permutation"),
    source=f"{_SRC}; Chen et al. 2020 (NT-Xent); METRICS.md 2.9",
    description="InfoNCE loss between two augmented views of each document; lower = more augmentation-invariant.",
    n_views=2,
)
def infonce(v: ndarray, *, version: str = "ntxent", tau: float = 0.1, normalize: bool = True) -> float:
    """InfoNCE between the 2 views of every document (METRICS.md 2.9).

    ``v: Float[ndarray, "docs 2 d_model"]`` -> float (nats).

    - ``version="ntxent"`` (v1, used for the stored wikitext results): symmetric
      SimCLR loss over the 2N rows ``Z = [A; B]``, logits ``z_i . z_j / tau``, 2N - 2
      negatives per anchor, mean over the 2N anchors; chance ~ log(2N - 1).
    - ``version="ce"`` (v2): cross-entropy of ``A B^T / tau`` with identity targets
      (N - 1 negatives); chance ~ log N.

    ``normalize=False`` uses the views as given (pass unit vectors for cosine logits).
    Fewer than 2 documents: NaN.
    """
    check_choice("version", version, INFONCE_VERSIONS)
    if not tau > 0:
        raise SpecError(f"infonce: tau must be > 0, got {tau!r}")
    v = prepare_views(v, "infonce: v", normalize, exact_views=2)
    n = v.shape[0]
    if n < 2:
        return math.nan
    a, b = v[:, 0], v[:, 1]
    if version == "ce":
        logits = a @ b.T / tau
        return float(np.mean(logsumexp(logits, axis=1) - np.diag(logits)))
    z = np.concatenate([a, b])
    s = z @ z.T / tau
    positives = s[np.arange(2 * n), (np.arange(2 * n) + n) % (2 * n)]
    np.fill_diagonal(s, -np.inf)
    return float(np.mean(logsumexp(s, axis=1) - positives))


def _scatters(v: ndarray, delta: float) -> tuple[ndarray, ndarray]:
    """Centred class means ``M / sqrt(N)`` (so ``Sigma_b = M^T M``) and ``Sigma_w + delta I``."""
    n, n_views, d = v.shape
    class_means = v.mean(axis=1)
    centred_means = (class_means - class_means.mean(axis=0)) / np.sqrt(n)
    resid = (v - class_means[:, None, :]).reshape(n * n_views, d)
    within = resid.T @ resid / (n * n_views) + delta * np.eye(d)
    return centred_means, within


def lidar_matrix(v: ndarray, delta: float = 1e-4) -> ndarray:
    """``Sigma_w^-1/2 Sigma_b Sigma_w^-1/2`` of ``v: Float[ndarray, "docs views d"]`` -> ``(d, d)``.

    Between-class scatter of the per-document view means, within-class scatter of the
    views around their document's mean plus ``delta I``; inverse square root from
    ``eigh`` (METRICS.md 2.10, Thilak et al. 2023).
    """
    means, within = _scatters(v, delta)
    w, u = np.linalg.eigh(within)
    inv_sqrt = (u / np.sqrt(w)) @ u.T
    out = inv_sqrt @ (means.T @ means) @ inv_sqrt
    return 0.5 * (out + out.T)


def lidar_spectrum(v: ndarray, delta: float = 1e-4) -> ndarray:
    """Eigenvalues of :func:`lidar_matrix` without forming it when docs < d.

    With ``Sigma_b = M^T M`` and ``Sigma_w = U diag(w) U^T``, the non-zero eigenvalues of
    ``Sigma_w^-1/2 Sigma_b Sigma_w^-1/2`` are those of ``Y Y^T`` with
    ``Y = M U diag(w^-1/2)`` (docs x docs): one ``eigh`` of the d x d within-scatter
    instead of two d x d decompositions.
    """
    means, within = _scatters(v, delta)
    w, u = np.linalg.eigh(within)
    y = (means @ u) / np.sqrt(w)
    small = y @ y.T if y.shape[0] < y.shape[1] else y.T @ y
    return np.linalg.eigvalsh(0.5 * (small + small.T))


@metric(
    name="lidar",
    input="views",
    granularity="layer",
    params={"delta": 1e-4, "alpha": 1.0, "normalize": True, "normalization": "maxEntropy"},
    version="1",
    direction="higher",
    invariances=("scale", "translation", "rotation", "permutation"),
    source=f"{_SRC}; Thilak et al. 2023 (LiDAR, arXiv:2312.04000); METRICS.md 2.10",
    description=(
        "Entropy of the LDA matrix between documents (classes) and their augmented views "
        "(log of the LiDAR effective rank), / min(log N, log D) by default."
    ),
)
def lidar(
    v: ndarray, *, delta: float = 1e-4, alpha: float = 1.0, normalize: bool = True, normalization: str = "maxEntropy"
) -> float:
    """LiDAR of ``v: Float[ndarray, "docs views d_model"]`` (views >= 2) -> float (METRICS.md 2.10).

    ``S_alpha(Sigma_w^-1/2 Sigma_b Sigma_w^-1/2)`` (see :func:`lidar_matrix`), then
    ``normalization`` with N = docs, D = d_model (computed via :func:`lidar_spectrum`).
    The original LiDAR reports
    ``exp`` of this entropy (with 1e-7 added to p). Cost O(N A D^2 + D^3).
    Fewer than 2 documents: NaN.
    """
    check_choice("normalization", normalization, NORMALIZATIONS)
    if not delta > 0:
        raise SpecError(f"lidar: delta must be > 0, got {delta!r}")
    v = prepare_views(v, "lidar: v", normalize)
    n, _, d = v.shape
    if n < 2:
        return math.nan
    s = spectrum_entropy(lidar_spectrum(v, delta), alpha)
    return normalize_entropy(s, normalization, n, d)


def exact_permutations(n: int) -> ndarray:
    """All ``n!`` permutations of ``range(n)`` as ``Int[ndarray, "n_fact n"]`` (n <= 8).

    Pass them to :func:`difference_of_entropies` for the exact expectation of DiME
    (oracle 8 of METRICS.md section 10).
    """
    if not 1 <= n <= _MAX_EXACT_N:
        raise SpecError(f"exact_permutations: n must be in [1, {_MAX_EXACT_N}] (n! rows), got {n}")
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp)


def difference_of_entropies(k_a: ndarray, k_b: ndarray, permutations: ndarray, alpha: float = 1.0) -> float:
    """``mean_P S(K_A o P K_B P^T) - S(K_A o K_B)`` over the given permutations (repitl ``doe``).

    ``k_a, k_b: Float[ndarray, "n n"]``; ``permutations: Int[ndarray, "n_perm n"]``.
    ``o`` is the Hadamard product; entropies of trace-normalised matrices (2.2).
    """
    perms = np.asarray(permutations, dtype=np.intp)
    joint = matrix_entropy_from_gram(k_a * k_b, alpha)
    permuted = k_b[perms[:, :, None], perms[:, None, :]]  # (n_perm, n, n)
    return float(np.mean(matrix_entropy_from_gram(k_a[None] * permuted, alpha)) - joint)


@metric(
    name="dime",
    input="views",
    granularity="layer",
    params={
        "alpha": 1.0,
        "n_permutations": 10,
        "seed": 0,
        "variant": "clean",
        "normalize": True,
        "normalization": "maxEntropy",
    },
    version="1",
    direction="higher",
    invariances=("scale", "translation", "rotation"),
    source=f"{_SRC}; Skean et al. 2023 (DiME, arXiv:2301.08164); METRICS.md 2.11",
    description=(
        "Difference of matrix entropies between shuffled and aligned pairs of view Grams: "
        "how much information the two views of each document share; / min(log N, log D) by default."
    ),
    n_views=2,
)
def dime(
    v: ndarray,
    *,
    alpha: float = 1.0,
    n_permutations: int = 10,
    seed: int = 0,
    variant: str = "clean",
    normalize: bool = True,
    normalization: str = "maxEntropy",
) -> float:
    """DiME of ``v: Float[ndarray, "docs 2 d_model"]`` -> float (METRICS.md 2.11).

    ``K_A = A A^T``, ``K_B = B B^T``; the expectation over random permutations P of
    the documents is estimated with ``n_permutations`` draws of
    ``numpy.random.default_rng(seed)``. ``variant="faithful"`` reproduces the official
    switch to the D x D covariances ``A^T A`` when N > D (the permutation then
    shuffles feature dimensions); ``"clean"`` always uses the N x N Grams (identical
    when N <= D). Not permutation-invariant: reordering the documents changes which
    random permutations are drawn (the exact expectation is invariant).
    Fewer than 2 documents: NaN.
    """
    check_choice("variant", variant, ENTROPY_VARIANTS)
    check_choice("normalization", normalization, NORMALIZATIONS)
    if int(n_permutations) < 1:
        raise SpecError(f"dime: n_permutations must be >= 1, got {n_permutations!r}")
    v = prepare_views(v, "dime: v", normalize, exact_views=2)
    n, _, d = v.shape
    if n < 2:
        return math.nan
    a, b = v[:, 0], v[:, 1]
    if variant == "faithful" and n > d:
        k_a, k_b = a.T @ a, b.T @ b
    else:
        k_a, k_b = a @ a.T, b @ b.T
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(k_a.shape[0]) for _ in range(int(n_permutations))])
    s = difference_of_entropies(k_a, k_b, perms, alpha)
    return normalize_entropy(s, normalization, n, d)
