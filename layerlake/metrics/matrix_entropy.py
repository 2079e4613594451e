"""Matrix entropy, coding length and token information gain (paper 4, Tan et al. 2024; METRICS.md 5).

- :func:`matrix_entropy`: von Neumann entropy of ``Z^T Z / N`` over ``log d`` (5.1,
  the sibling Matrix-Entropy code).
- :func:`coding_length_entropy`: lossy coding length ``log det(I + d/eps^2 Sigma)``
  over its maximum for unit rows (5.2).
- :func:`information_gain`: ``log(1 + R_lambda / lambda)`` of the last token given the
  previous ones, via ridge regression (5.3, exact identity with a log-det difference).
- :func:`lasso_token_selection`: which previous tokens a Lasso regression of the last
  token's vector picks (5.3; sklearn.linear_model.Lasso, imported on first use so that
  importing the metrics does not need scikit-learn).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from ..errors import SpecError
from ._validate import as_float64, check_positive
from .registry import metric

_SOURCE = "paper 4 (Tan, Li, Huang 2024), METRICS.md 5"


def _centre_unit_rows(h: np.ndarray) -> np.ndarray:
    """Subtract the mean row, then scale every row to unit norm (METRICS.md 2.1).

    ``[N, d] -> [N, d]``. A row equal to the mean gives NaN (0/0), as in the official
    code. Duplicates ``entropy.row_normalize`` (paper-1 module) until the two merge.
    """
    z = h - h.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return z / np.linalg.norm(z, axis=1, keepdims=True)


def _unit_rows(h: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return h / np.linalg.norm(h, axis=1, keepdims=True)


def _cov_eigenvalues(z: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``z^T z / N`` (``min(N, d)`` of them) from the singular values of z.

    All NaN when ``z`` holds a NaN row (a row equal to the mean before normalising).
    """
    if not np.all(np.isfinite(z)):
        return np.full(min(z.shape), np.nan)
    return np.linalg.svd(z, compute_uv=False) ** 2 / z.shape[0]


@metric(
    name="matrix_entropy",
    input="doc_hidden",
    granularity="document",
    direction="lower",
    invariances=("scale", "translation", "rotation", "permutation"),
    source=_SOURCE + ".1 (code: waltonfuture/Matrix-Entropy)",
    description="S_1 of Z^T Z / N (Z centred, unit rows) divided by log d; in [0, 1].",
)
def matrix_entropy(h: np.ndarray) -> float:
    """Normalised matrix entropy ``H / log d`` of one sentence (METRICS.md 5.1).

    ``h``: ``[tokens, d_model]``, d >= 2. ``Z`` = centred, unit-norm rows;
    eigenvalues of ``Z^T Z / N`` over their sum; ``H = -sum p log p`` (p > 0).
    Note the ``log d`` normaliser (paper 1 uses ``log N``). NaN when a token equals
    the mean token (0/0 in the normalisation, as in the official code). Direction "lower": the
    papers find entropy decreasing with model size.
    """
    h = as_float64(h, "matrix_entropy: h [tokens, d_model]", 2, finite=False, min_rows=2)
    if h.shape[1] < 2:
        raise SpecError(f"matrix_entropy: needs d_model >= 2 (log d normaliser), got shape {h.shape}")
    lam = _cov_eigenvalues(_centre_unit_rows(h))
    if np.isnan(lam).any():
        return float("nan")
    p = lam / lam.sum()
    p = p[p > 0]
    return float(-(p @ np.log(p)) / np.log(h.shape[1]))


@metric(
    name="coding_length_entropy",
    input="doc_hidden",
    granularity="document",
    params={"eps": 0.5, "centre": True},
    direction="lower",
    invariances=("scale", "translation", "rotation", "permutation"),
    source=_SOURCE + ".2 (constants and eps UNVERIFIED)",
    description="log det(I + d/eps^2 Z^T Z / N) / (d log(1 + 1/eps^2)), Z unit rows; in (0, 1].",
)
def coding_length_entropy(h: np.ndarray, eps: float = 0.5, centre: bool = True) -> float:
    """Normalised lossy coding length ``L_eps / L_max`` (METRICS.md 5.2).

    ``h``: ``[tokens, d_model]``. ``Z`` = unit rows (centred first when ``centre``,
    the same ``Z`` as :func:`matrix_entropy`), ``Sigma = Z^T Z / N``. The prefactor
    ``(N + d) / 2`` cancels in the ratio, so the value is
    ``sum_k log(1 + d/eps^2 lambda_k) / (d log(1 + 1/eps^2))``, 1 iff ``Sigma = I/d``.
    Default ``eps = 0.5`` (our choice, the middle of the {0.1, 0.5, 1} grid METRICS
    asks to report; the paper's value is unverified).
    """
    check_positive("coding_length_entropy: eps", eps)
    h = as_float64(h, "coding_length_entropy: h [tokens, d_model]", 2, finite=False, min_rows=2 if centre else 1)
    d = h.shape[1]
    lam = _cov_eigenvalues(_centre_unit_rows(h) if centre else _unit_rows(h))
    scale = d / eps**2
    return float(np.sum(np.log1p(scale * lam)) / (d * np.log1p(1.0 / eps**2)))


def _context_and_target(h: np.ndarray, name: str, unit_rows: bool) -> tuple[np.ndarray, np.ndarray]:
    """Split ``h`` [N, d] into the context matrix ``Z = h[:-1].T`` [d, N-1] and ``z = h[-1]`` [d]."""
    h = as_float64(h, f"{name}: h [tokens, d_model]", 2, finite=False, min_rows=1)
    if unit_rows:
        h = _unit_rows(h)
    return h[:-1].T, h[-1]


@metric(
    name="information_gain",
    input="doc_hidden",
    granularity="document",
    params={"lam": 1.0, "unit_rows": True},
    invariances=("scale", "row_scale", "rotation"),
    source=_SOURCE + ".3 (identity DERIVED; lambda UNVERIFIED)",
    description="log(1 + R_lambda / lambda): ridge residual of the last token on the previous ones.",
)
def information_gain(h: np.ndarray, lam: float = 1.0, unit_rows: bool = True) -> float:
    """Information gain of the last token given the previous ones (METRICS.md 5.3).

    ``h``: ``[tokens, d_model]``; ``Z = h[:-1]^T`` (``[d, N-1]``), ``z = h[-1]``.
    ``R = min_w ||z - Z w||^2 + lam ||w||^2`` (ridge) and
    ``IG = log(1 + R / lam) = log det(lam I + ZZ^T + zz^T) - log det(lam I + ZZ^T)``.
    Solved in the smaller of the two spaces: the (N-1) x (N-1) ridge system, or, when
    N - 1 > d, ``R = lam z^T (lam I + Z Z^T)^{-1} z`` (d x d); O(d N min(N, d) + min(N, d)^3).
    ``unit_rows`` (default, our choice) scales every token vector to unit norm first
    so that ``lam`` has a fixed meaning; a 1-token input gives ``log(1 + ||z||^2/lam)``.
    """
    check_positive("information_gain: lam", lam)
    zc, z = _context_and_target(h, "information_gain", unit_rows)
    d, n_ctx = zc.shape
    if n_ctx == 0:
        resid = float(z @ z)
    elif n_ctx > d:
        resid = lam * float(z @ linalg.solve(zc @ zc.T + lam * np.eye(d), z, assume_a="pos"))
    else:
        w = linalg.solve(zc.T @ zc + lam * np.eye(n_ctx), zc.T @ z, assume_a="pos")
        r = z - zc @ w
        resid = float(r @ r + lam * (w @ w))  # both terms >= 0: no cancellation
    return float(np.log1p(resid / lam))


def lasso_coefficients(h: np.ndarray, alpha: float, unit_rows: bool = True) -> np.ndarray:
    """Lasso weights ``[tokens - 1]`` of the last token on the previous ones (METRICS.md 5.3).

    Solves ``min_w 1/(2d) ||z - Z w||^2 + alpha ||w||_1`` (sklearn convention, no
    intercept; hidden dimensions are the samples) with sklearn.linear_model.Lasso.
    Deterministic (cyclic coordinate descent).
    """
    check_positive("lasso_coefficients: alpha", alpha)
    zc, z = _context_and_target(h, "lasso_coefficients", unit_rows)
    if zc.shape[1] == 0:
        raise SpecError("lasso_coefficients: h needs at least 2 tokens (a context and a target)")
    try:
        from sklearn.linear_model import Lasso
    except ImportError as exc:
        raise ImportError("lasso_coefficients needs scikit-learn: pip install scikit-learn") from exc
    model = Lasso(alpha=alpha, fit_intercept=False, max_iter=10_000, tol=1e-8)
    model.fit(zc, z)
    return np.asarray(model.coef_, dtype=np.float64)


def lasso_token_selection(
    h: np.ndarray, alpha: float, top_k: int | None = None, unit_rows: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Previous tokens picked by the Lasso of :func:`lasso_coefficients` (METRICS.md 5.3).

    Returns ``(indices, weights)``: ``indices`` ``[k]`` (int, positions 0..N-2 of
    the previous tokens) of the non-zero weights sorted by decreasing ``|w|`` (ties
    by position), at most ``top_k`` of them (``None`` = all non-zero), and
    ``weights`` ``[k]`` = the signed weights at those positions.
    """
    if top_k is not None and top_k < 0:
        raise SpecError(f"lasso_token_selection: top_k must be >= 0 or None, got {top_k}")
    coef = lasso_coefficients(h, alpha, unit_rows=unit_rows)
    nz = np.flatnonzero(coef)
    idx = nz[np.argsort(-np.abs(coef[nz]), kind="stable")]
    if top_k is not None:
        idx = idx[:top_k]
    return idx, coef[idx]


def lasso_alpha_max(h: np.ndarray, unit_rows: bool = True) -> float:
    """Smallest ``alpha`` at which every Lasso weight is zero: ``max_i |<z_i, z>| / d``."""
    zc, z = _context_and_target(h, "lasso_alpha_max", unit_rows)
    return float(np.max(np.abs(zc.T @ z)) / zc.shape[0]) if zc.shape[1] else 0.0


@metric(
    name="lasso_nonzero_fraction",
    input="doc_hidden",
    granularity="document",
    params={"alpha_ratio": 0.1, "unit_rows": True},
    invariances=("scale", "row_scale", "rotation"),
    source=_SOURCE + ".3 (protocol UNVERIFIED)",
    description="Fraction of previous tokens with a non-zero Lasso weight, alpha = alpha_ratio * alpha_max.",
)
def lasso_nonzero_fraction(h: np.ndarray, alpha_ratio: float = 0.1, unit_rows: bool = True) -> float:
    """Fraction of the N-1 previous tokens the Lasso selects (our scalar summary of 5.3).

    ``alpha = alpha_ratio * alpha_max(h)`` so that the penalty does not depend on
    ``d`` or on the vectors' scale (``alpha_ratio >= 1`` selects nothing). Small
    values = the last token is explained by few previous tokens. NaN when
    ``alpha_max`` is 0 (the target is orthogonal to every context token).
    """
    check_positive("lasso_nonzero_fraction: alpha_ratio", alpha_ratio)
    amax = lasso_alpha_max(h, unit_rows=unit_rows)
    n_prev = np.asarray(h).shape[0] - 1
    if n_prev < 1:
        raise SpecError("lasso_nonzero_fraction: h needs at least 2 tokens (a context and a target)")
    if amax == 0.0:
        return float("nan")
    idx, _ = lasso_token_selection(h, alpha_ratio * amax, unit_rows=unit_rows)
    return len(idx) / n_prev
