"""Residual-Jacobian coupling from low-rank factors (paper 5; METRICS.md 6 and 8).

A residual Jacobian ``Jres = J - I`` (``[d, d]``) is held as :class:`JacobianFactors`
``Q X`` (``Q`` ``[d, k]``, ``X`` ``[k, d]``), e.g. rebuilt from a one-pass sketch
(8.3). Everything here works from the factors without forming ``d x d`` matrices,
except :func:`coupling_matrix_exact`, the full-SVD reference path (6.2/6.3).

Coupling ``m_K(J_i, J_j) = || |U_{j,K}^T J_i V_{j,K}| - diag(s_{i,K}) ||_F / ||s_{i,K}||``
(6.3): row ``i`` = Jacobian being diagonalised, column ``j`` = basis provider.
LOWER = stronger coupling; 0 when ``J_j``'s top-K singular vectors diagonalise ``J_i``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from ..errors import SpecError
from ._validate import as_float64, check_choice
from .registry import metric

NORMALIZATIONS = ("norm", "trace")
VARIANTS = ("uv", "vju")
_SOURCE = "paper 5 (Aubry et al. 2025, code sugolov/coupling), METRICS.md "


def sketch_reconstruct(Y: np.ndarray, W: np.ndarray, Psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild ``Jres ~ Q X`` from a one-pass sketch (Tropp et al. 2017; METRICS.md 8.3).

    ``Y = Jres Omega`` ``[..., d, k]``, ``W = Psi^T Jres`` ``[..., l, d]``, ``Psi``
    ``[d, l]`` (shared test matrix, ``l >= k``); leading dims are batch dims.
    Returns ``Q = orth(Y)`` ``[..., d, k]`` and ``X = (Psi^T Q)^+ W`` ``[..., k, d]``
    (least squares). Exact (to rounding) when ``rank(Jres) <= k``.
    """
    Y = np.asarray(Y, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    Psi = as_float64(Psi, "sketch_reconstruct: Psi [d, l]", 2, finite=False, min_rows=1)
    d, l = Psi.shape
    if Y.ndim < 2 or Y.shape[-2] != d:
        raise SpecError(f"sketch_reconstruct: Y must be [..., d={d}, k], got shape {Y.shape}")
    k = Y.shape[-1]
    if W.shape != Y.shape[:-2] + (l, d):
        raise SpecError(f"sketch_reconstruct: W must be {Y.shape[:-2] + (l, d)} (= [..., l, d]), got {W.shape}")
    if l < k:
        raise SpecError(f"sketch_reconstruct: need l >= k, got l={l} < k={k}; use a wider Psi")
    Q, _ = np.linalg.qr(Y)
    core = np.swapaxes(Psi.T @ Q, -1, -2).reshape(-1, k, l)  # [batch, k, l] = (Psi^T Q)^T
    flat_w = W.reshape(-1, l, d)
    X = np.stack([np.linalg.lstsq(c.T, w, rcond=None)[0] for c, w in zip(core, flat_w)])
    return Q, X.reshape(Y.shape[:-2] + (k, d))


def top_singular_triplets(Q: np.ndarray, X: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``K`` SVD of ``Q X`` without forming it: ``U`` ``[d, K]``, ``S`` ``[K]``, ``V`` ``[d, K]`` (METRICS.md 8.3).

    ``Q`` ``[d, k]``, ``X`` ``[k, d]``, ``K <= k``. ``Q`` is re-orthonormalised
    (``Q = Q' R``, SVD of ``R X``), so it need not be exactly orthonormal. O(d k^2).
    """
    Q = as_float64(Q, "top_singular_triplets: Q [d, k]", 2, finite=False, min_rows=1)
    X = as_float64(X, "top_singular_triplets: X [k, d]", 2, finite=False, min_rows=1)
    if X.shape != (Q.shape[1], Q.shape[0]):
        raise SpecError(f"top_singular_triplets: Q {Q.shape} and X {X.shape} are not [d, k] and [k, d]")
    if not 1 <= K <= Q.shape[1]:
        raise SpecError(f"top_singular_triplets: K={K} must be in [1, k={Q.shape[1]}]")
    q, r = np.linalg.qr(Q)
    u, s, vt = np.linalg.svd(r @ X, full_matrices=False)
    return q @ u[:, :K], s[:K], vt[:K].T


@dataclasses.dataclass(frozen=True, eq=False)
class JacobianFactors:
    """Low-rank factors of one residual Jacobian: ``Jres ~ Q @ X``.

    ``Q``: ``[d, k]`` (orthonormal columns when built by :meth:`from_sketch`), ``X``:
    ``[k, d]``. Arrays are stored as read-only float64 copies. The SVD of ``Q X`` is
    computed once and cached (:meth:`top`). Compared by identity (``eq=False``).
    """

    Q: np.ndarray
    X: np.ndarray

    def __post_init__(self) -> None:
        q = np.array(self.Q, dtype=np.float64)
        x = np.array(self.X, dtype=np.float64)
        if q.ndim != 2 or x.shape != (q.shape[1], q.shape[0]):
            raise SpecError(f"JacobianFactors: Q {q.shape} and X {x.shape} must be [d, k] and [k, d]")
        q.flags.writeable = False
        x.flags.writeable = False
        object.__setattr__(self, "Q", q)
        object.__setattr__(self, "X", x)

    @property
    def d(self) -> int:
        return self.Q.shape[0]

    @property
    def k(self) -> int:
        return self.Q.shape[1]

    @classmethod
    def from_sketch(cls, Y: np.ndarray, W: np.ndarray, Psi: np.ndarray) -> JacobianFactors:
        """Factors of one Jacobian from ``Y`` ``[d, k]``, ``W`` ``[l, d]``, ``Psi`` ``[d, l]`` (8.3)."""
        q, x = sketch_reconstruct(as_float64(Y, "from_sketch: Y [d, k]", 2, finite=False, min_rows=1), W, Psi)
        return cls(q, x)

    @classmethod
    def from_dense(cls, jres: np.ndarray, rank: int | None = None) -> JacobianFactors:
        """Exact factors ``Q = U_r``, ``X = S_r V_r^T`` of a full ``[d, d]`` matrix (``rank=None``: r = d)."""
        jres = as_float64(jres, "from_dense: jres [d, d]", 2, finite=False, min_rows=1)
        if jres.shape[0] != jres.shape[1]:
            raise SpecError(f"from_dense: jres must be square [d, d], got {jres.shape}")
        u, s, vt = np.linalg.svd(jres)
        r = jres.shape[0] if rank is None else rank
        return cls(u[:, :r], s[:r, None] * vt[:r])

    def dense(self) -> np.ndarray:
        """``Q X`` as a ``[d, d]`` array (for tests and small d)."""
        return self.Q @ self.X

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``Q (X v)`` for ``v`` ``[d]`` or ``[d, m]``, O(d k)."""
        return self.Q @ (self.X @ np.asarray(v, dtype=np.float64))

    @functools.cached_property
    def _svd(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return top_singular_triplets(self.Q, self.X, self.k)

    def top(self, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``K`` ``(U [d, K], S [K], V [d, K])`` of ``Q X`` (cached SVD)."""
        if not 1 <= K <= self.k:
            raise SpecError(f"JacobianFactors.top: K={K} must be in [1, k={self.k}]")
        u, s, v = self._svd
        return u[:, :K], s[:K], v[:, :K]


def _m_k(m: np.ndarray, s_i: np.ndarray, normalization: str) -> float:
    """``|| |M| - diag(s_i) ||_F`` over ``||s_i||_2`` ('norm') or ``sum s_i`` ('trace') (6.3)."""
    num = np.linalg.norm(np.abs(m) - np.diag(s_i))
    den = np.linalg.norm(s_i) if normalization == "norm" else np.sum(s_i)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(num / den)


def _check_coupling_args(K: int, normalization: str, variant: str) -> None:
    check_choice("coupling: normalization", normalization, NORMALIZATIONS)
    check_choice("coupling: variant", variant, VARIANTS)
    if K < 1:
        raise SpecError(f"coupling: K must be >= 1, got {K}")


def coupling_matrix(
    factors: Sequence[JacobianFactors], K: int = 10, normalization: str = "norm", variant: str = "uv"
) -> np.ndarray:
    """``[L, L]`` matrix of ``m_K`` between every pair of factored Jacobians (METRICS.md 6.3, 8.4).

    ``M_ij = U_{j,K}^T Q_i X_i V_{j,K}`` at O(d k K) per pair; ``variant="vju"``
    swaps ``U_j`` and ``V_j``. ``s_{i,K}`` = top-K singular values of ``Q_i X_i``.
    Entry ``[i, j]``: ``J_i`` diagonalised in ``J_j``'s basis; not symmetric; the
    diagonal is 0 up to rounding. NaN where ``s_{i,K}`` is all zero.
    """
    _check_coupling_args(K, normalization, variant)
    if len(factors) == 0:
        raise SpecError("coupling_matrix: got no Jacobians")
    tops = [f.top(K) for f in factors]
    out = np.empty((len(factors), len(factors)))
    for j, (u_j, _, v_j) in enumerate(tops):
        left, right = (u_j, v_j) if variant == "uv" else (v_j, u_j)
        for i, f in enumerate(factors):
            out[i, j] = _m_k((left.T @ f.Q) @ (f.X @ right), tops[i][1], normalization)
    return out


def coupling_matrix_exact(
    jacobians: np.ndarray, K: int = 10, normalization: str = "norm", variant: str = "uv"
) -> np.ndarray:
    """Reference path of :func:`coupling_matrix` from full ``[L, d, d]`` residual Jacobians.

    Full ``np.linalg.svd`` of each (as the official packaged code, 6.2), then
    ``M_ij = U_{j,K}^T J_i V_{j,K}``. O(L d^3 + L^2 d^2 K).
    """
    _check_coupling_args(K, normalization, variant)
    J = as_float64(jacobians, "coupling_matrix_exact: jacobians [L, d, d]", 3, finite=False, min_rows=1)
    if J.shape[1] != J.shape[2] or K > J.shape[1]:
        raise SpecError(f"coupling_matrix_exact: need square [L, d, d] with K <= d, got {J.shape}, K={K}")
    u, s, vt = np.linalg.svd(J)
    uk, vk, sk = u[:, :, :K], np.swapaxes(vt[:, :K, :], 1, 2), s[:, :K]
    left, right = (uk, vk) if variant == "uv" else (vk, uk)
    out = np.empty((J.shape[0], J.shape[0]))
    for j in range(J.shape[0]):
        for i in range(J.shape[0]):
            out[i, j] = _m_k(left[j].T @ J[i] @ right[j], sk[i], normalization)
    return out


def coupling_score(matrix: np.ndarray) -> float:
    """Mean of the off-diagonal entries of an ``[L, L]`` coupling matrix (L >= 2).

    Our choice of model-level aggregation (the paper's is unverified, METRICS.md 6.3).
    """
    m = as_float64(matrix, "coupling_score: matrix [L, L]", 2, finite=False, min_rows=1)
    if m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise SpecError(f"coupling_score: need a square [L, L] matrix with L >= 2, got {m.shape}")
    return float(m[~np.eye(m.shape[0], dtype=bool)].mean())


def linearization_fidelity(jres_list: Sequence[np.ndarray | JacobianFactors], x0: np.ndarray, xL: np.ndarray) -> float:
    """``cos(prod_l (I + Jres^l) x0, xL)``, blocks applied in list order (METRICS.md 6.6).

    ``jres_list``: residual Jacobians as ``[d, d]`` arrays or :class:`JacobianFactors`;
    ``x0``, ``xL``: ``[d]``. 1 when every block is linear and ``xL`` is its output.
    (The official code's product covers L-1 blocks while ``xL`` includes the last one.)
    """
    x = as_float64(x0, "linearization_fidelity: x0 [d]", 1, finite=False, min_rows=1)
    target = as_float64(xL, "linearization_fidelity: xL [d]", 1, finite=False, min_rows=1)
    for jres in jres_list:
        x = x + (jres.matvec(x) if isinstance(jres, JacobianFactors) else np.asarray(jres, np.float64) @ x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(x @ target / (np.linalg.norm(x) * np.linalg.norm(target)))


_COUPLING_PARAMS = {"K": 10, "normalization": "norm", "variant": "uv"}


@metric(
    name="coupling",
    input="jacobian_sketch",
    granularity="layer_pair",
    params=_COUPLING_PARAMS,
    direction="lower",
    source=_SOURCE + "6.3, 8.4",
    description="L x L matrix of m_K (row i diagonalised in column j's top-K singular basis); lower = coupled.",
)
def coupling(
    factors: Sequence[JacobianFactors], K: int = 10, normalization: str = "norm", variant: str = "uv"
) -> np.ndarray:
    """:func:`coupling_matrix` of one token's per-layer factors (METRICS.md 6.3): ``[L, L]``."""
    return coupling_matrix(factors, K, normalization, variant)


@metric(
    name="top_singular_values",
    input="jacobian_sketch",
    granularity="layer",
    params={"K": 10},
    source=_SOURCE + "6.2, 6.5 (1/top singular value vs depth)",
    description="Top-K singular values of each layer's residual Jacobian, [L, K].",
)
def top_singular_values(factors: Sequence[JacobianFactors], K: int = 10) -> np.ndarray:
    """``[L, K]``: top-``K`` singular values of every ``Q X`` (METRICS.md 6.2)."""
    if len(factors) == 0:
        raise SpecError("top_singular_values: got no Jacobians")
    return np.stack([f.top(K)[1] for f in factors])


@metric(
    name="jacobian_coupling_score",
    input="jacobian_sketch",
    granularity="model",
    params=_COUPLING_PARAMS,
    direction="lower",
    source=_SOURCE + "6.3 (aggregation UNVERIFIED: our choice)",
    description="Mean off-diagonal m_K of the coupling matrix; lower = stronger coupling.",
)
def jacobian_coupling_score(
    factors: Sequence[JacobianFactors], K: int = 10, normalization: str = "norm", variant: str = "uv"
) -> float:
    """:func:`coupling_score` of :func:`coupling_matrix` (METRICS.md 6.3; needs L >= 2)."""
    return coupling_score(coupling_matrix(factors, K, normalization, variant))
