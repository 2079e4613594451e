"""Matrix-based entropy (paper 1, "Layer by Layer"): primitives, prompt and dataset entropy.

Definitions follow METRICS.md sections 2.1-2.4 (official code of Skean et al. 2025
and the ``repitl`` library). Everything is computed in float64.

Primitives
----------
- :func:`row_normalize` (2.1): centre over rows, unit-norm each row.
- :func:`spectrum_entropy`: Renyi/von Neumann entropy of a non-negative spectrum.
- :func:`matrix_entropy_from_gram` (2.2): entropy of the trace-normalised eigenvalues of
  a PSD-ish matrix; accepts stacked matrices ``(..., n, n)`` (one batched ``eigvalsh``).
- :func:`normalize_entropy`: the official ``maxEntropy`` / ``logN`` / ... divisors.
"""

from __future__ import annotations

import math

import numpy as np
from numpy import ndarray

from ..errors import SpecError
from ._validate import as_float64, check_choice
from .registry import metric

NORMALIZATIONS = ("maxEntropy", "raw", "logN", "logD", "logNlogD")
ENTROPY_VARIANTS = ("faithful", "clean")

_EPS = np.finfo(np.float64).eps


def row_normalize(x: ndarray) -> ndarray:
    """Centre over rows, then scale every row to unit L2 norm (METRICS.md 2.1).

    ``x: Float[ndarray, "... rows d"]`` -> same shape, float64. The mean is taken
    over the ``rows`` axis (tokens of a prompt, or documents of a batch); stacked
    inputs are normalised matrix by matrix.

    Zero rows: a row equal to the mean (a one-token prompt, identical rows) has no
    direction. The official code divides 0/0 and returns NaN; here such a row is
    left at exactly zero. A centred row counts as zero when its norm is below
    ``16 sqrt(d) eps max|x|`` (rounding noise of the centring), so the rule is
    scale-invariant.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise SpecError(f"row_normalize: expected a (..., rows, d) array, got shape {x.shape}")
    z = x - x.mean(axis=-2, keepdims=True)
    norms = np.linalg.norm(z, axis=-1, keepdims=True)
    scale = np.max(np.abs(x), axis=(-2, -1), keepdims=True) if x.size else np.zeros_like(norms)
    tol = 16.0 * math.sqrt(max(x.shape[-1], 1)) * _EPS * scale
    zero = norms <= tol
    return np.where(zero, 0.0, z / np.where(zero, 1.0, norms))


def spectrum_entropy(eigenvalues: ndarray, alpha: float = 1.0) -> float | ndarray:
    """Entropy of the distribution ``p = lambda / sum(lambda)`` over positive eigenvalues.

    ``eigenvalues: Float[ndarray, "... n"]`` -> float (or ``Float[ndarray, "..."]``).
    alpha = 1: von Neumann/Shannon ``-sum p log p``; alpha != 1: Renyi
    ``log(sum p^alpha) / (1 - alpha)``; alpha = inf: ``-log max p``. Natural log.

    Eigenvalues at or below ``n eps max(lambda)`` are treated as zero (the official
    code keeps every ``lambda > 0``; the two agree to ~1e-13 for alpha = 1, but the
    tolerance stops rounding noise from inflating alpha < 1 entropies).
    A spectrum with no positive value (zero matrix) gives NaN.
    """
    if alpha < 0 or (isinstance(alpha, float) and math.isnan(alpha)):
        raise SpecError(f"alpha must be >= 0, got {alpha!r}")
    lam = np.asarray(eigenvalues, dtype=np.float64)
    top = np.max(lam, axis=-1, keepdims=True, initial=0.0)
    keep = lam > np.maximum(top * lam.shape[-1] * _EPS, 0.0)
    keep &= top > 0
    lam = np.where(keep, lam, 0.0)
    total = lam.sum(axis=-1, keepdims=True)
    p = lam / np.where(total > 0, total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if alpha == 1:
            out = -np.sum(np.where(keep, p * np.log(np.where(keep, p, 1.0)), 0.0), axis=-1)
        elif math.isinf(alpha):
            out = -np.log(np.max(p, axis=-1))
        elif alpha == 0:
            out = np.log(np.sum(keep, axis=-1).astype(np.float64))
        else:
            out = np.log(np.sum(np.where(keep, p**alpha, 0.0), axis=-1)) / (1.0 - alpha)
    out = np.where(total[..., 0] > 0, out, np.nan)
    return float(out) if out.ndim == 0 else out


def matrix_entropy_from_gram(k: ndarray, alpha: float = 1.0, *, frobenius_shortcut: bool = False) -> float | ndarray:
    """Matrix-based alpha-entropy of ``k`` (METRICS.md 2.2, repitl ``matrixAlphaEntropy``).

    ``k: Float[ndarray, "... n n"]`` (symmetric; stacked matrices are decomposed in one
    batched ``eigvalsh``) -> float or ``Float[ndarray, "..."]``. Eigenvalues > 0 are
    renormalised to sum to 1 (so ``k`` need not be trace-normalised), see
    :func:`spectrum_entropy`. Range ``0 <= S <= log rank(k)``.

    ``frobenius_shortcut`` (alpha = 2 only) reproduces repitl's shortcut
    ``-log(sum_ij k_ij^2 / n^2)``, which equals S_2 only when ``trace k = n`` (e.g.
    unit-diagonal kernels); on a trace-1 matrix it returns ``S_2 + 2 log n``.
    """
    k = np.asarray(k, dtype=np.float64)
    if k.ndim < 2 or k.shape[-1] != k.shape[-2]:
        raise SpecError(f"matrix_entropy_from_gram: expected square (..., n, n) matrices, got shape {k.shape}")
    if frobenius_shortcut:
        if alpha != 2:
            raise SpecError(f"frobenius_shortcut is only defined for alpha=2, got alpha={alpha!r}")
        n = k.shape[-1]
        out = -np.log(np.sum(k * k, axis=(-2, -1)) / n**2)
        return float(out) if out.ndim == 0 else out
    k = 0.5 * (k + np.swapaxes(k, -1, -2))
    return spectrum_entropy(np.linalg.eigvalsh(k), alpha)


def normalize_entropy(s: float, normalization: str, n: int, d: int) -> float:
    """Divide an entropy by the official normaliser (METRICS.md 2.3 step 5).

    ``maxEntropy``: ``/ min(log n, log d)``; ``logN``; ``logD``; ``logNlogD``:
    ``/ (log n log d)``; ``raw``: unchanged. A zero divisor (n or d = 1) gives NaN.
    """
    check_choice("normalization", normalization, NORMALIZATIONS)
    if normalization == "raw":
        return float(s)
    log_n, log_d = math.log(n), math.log(d)
    divisor = {
        "maxEntropy": min(log_n, log_d),
        "logN": log_n,
        "logD": log_d,
        "logNlogD": log_n * log_d,
    }[normalization]
    return float(s) / divisor if divisor > 0 else math.nan


def _small_gram(z: ndarray) -> ndarray:
    """``Z Z^T`` (n x n) when n <= d, else ``Z^T Z`` (d x d): the official branch choice."""
    return z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z


def _gram_entropy(z: ndarray, alpha: float, variant: str) -> float:
    """Steps 2-4 of METRICS.md 2.3 on an already normalised ``z`` (n x d)."""
    g = _small_gram(z)
    if variant == "faithful":
        g = np.maximum(g, 0.0)  # official quirk: clamp(G, min=0)
    trace = np.trace(g)
    if trace <= 0:
        return math.nan
    return float(matrix_entropy_from_gram(g / trace, alpha))


def prompt_entropy_batched(hs: ndarray, *, alpha: float = 1.0, variant: str = "faithful",
                           normalization: str = "maxEntropy") -> ndarray:
    """:func:`prompt_entropy` of every ``hs[i]`` (METRICS.md 2.3), one batched ``eigvalsh``.

    ``hs: Float[ndarray, "docs tokens d_model"]`` (documents of equal token count) ->
    ``Float[ndarray, "docs"]``; the registry's ``batched`` twin of :func:`prompt_entropy`.
    """
    check_choice("variant", variant, ENTROPY_VARIANTS)
    check_choice("normalization", normalization, NORMALIZATIONS)
    hs = np.asarray(hs, dtype=np.float64)
    if hs.ndim != 3:
        raise SpecError(f"prompt_entropy_batched: expected [docs, tokens, d_model], got shape {hs.shape}")
    b, n, d = hs.shape
    out = np.full(b, math.nan)
    if n < 2 or b == 0:
        return out
    z = row_normalize(hs)
    zt = np.swapaxes(z, -1, -2)
    g = z @ zt if n <= d else zt @ z  # the official branch choice, per matrix
    if variant == "faithful":
        g = np.maximum(g, 0.0)
    trace = np.trace(g, axis1=-2, axis2=-1)
    ok = trace > 0
    if ok.any():
        s = np.atleast_1d(matrix_entropy_from_gram(g[ok] / trace[ok][:, None, None], alpha))
        out[ok] = [normalize_entropy(float(v), normalization, n, d) for v in s]
    return out


@metric(
    name="prompt_entropy",
    input="doc_hidden",
    granularity="document",
    params={"alpha": 1.0, "variant": "faithful", "normalization": "maxEntropy"},
    version="1",
    direction="none",
    invariances=("scale", "translation", "permutation"),
    source="Skean et al. 2025 'Layer by Layer' (arXiv:2502.02013), official code; METRICS.md 2.3",
    batched=prompt_entropy_batched,
    description=(
        "Matrix entropy of the trace-normalised Gram of a prompt's centred, unit-norm tokens, "
        "divided by min(log N, log D) by default; low = compressed prompt representation."
    ),
)
def prompt_entropy(
    h: ndarray, *, alpha: float = 1.0, variant: str = "faithful", normalization: str = "maxEntropy"
) -> float:
    """Prompt entropy of one document at one layer (METRICS.md 2.3).

    ``h: Float[ndarray, "tokens d_model"]`` -> float.

    1. ``Z = row_normalize(h)``; 2. ``G = Z Z^T`` if N <= D else ``Z^T Z``;
    3. ``variant="faithful"``: ``G = clamp(G, 0)`` (official quirk; N x N and D x D
    branches then disagree, and the maximum becomes log N); ``"clean"``: no clamp
    (paper definition; maximum log(N-1));
    4. entropy of ``G / trace G`` with order ``alpha``; 5. ``normalization``.

    Rotation invariance holds for ``"clean"`` and for ``"faithful"`` with N <= D only,
    so it is not declared. Fewer than 2 tokens, or all tokens identical: NaN.
    """
    check_choice("variant", variant, ENTROPY_VARIANTS)
    check_choice("normalization", normalization, NORMALIZATIONS)
    h = as_float64(h, "prompt_entropy: h", 2)
    n, d = h.shape
    if n < 2:
        return math.nan
    s = _gram_entropy(row_normalize(h), alpha, variant)
    return normalize_entropy(s, normalization, n, d)


@metric(
    name="dataset_entropy",
    input="pooled",
    granularity="layer",
    params={"alpha": 1.0, "variant": "clean", "batch_size": 2, "normalization": "maxEntropy"},
    version="1",
    direction="none",
    invariances=("scale", "translation", "rotation", "permutation"),
    source="Skean et al. 2025 'Layer by Layer' (arXiv:2502.02013), official code; METRICS.md 2.4",
    description=(
        "Matrix entropy of the Gram of a dataset's mean-pooled documents (centred over the "
        "dataset, unit-norm rows), divided by min(log N, log D) by default; low = documents collapse."
    ),
)
def dataset_entropy(
    x: ndarray,
    *,
    alpha: float = 1.0,
    variant: str = "clean",
    batch_size: int = 2,
    normalization: str = "maxEntropy",
) -> float:
    """Dataset entropy of mean-pooled documents at one layer (METRICS.md 2.4).

    ``x: Float[ndarray, "docs d_model"]`` (masked-mean pooled, from the engine) -> float.

    ``variant="clean"`` (default, recommended in METRICS.md): centre over the whole
    dataset, unit-norm rows, no clamp; ``batch_size`` is ignored.
    ``variant="faithful"``: the official code path: :func:`row_normalize` applied to
    consecutive mini-batches of ``batch_size`` documents (default 2, the final
    harness; each pair of centred vectors is then an exact +-pair, and a last
    batch of one document becomes a zero row), then the clamp of 2.3.
    (The official right-padding pooling bug is not reproduced: pooling is the engine's.)
    Fewer than 2 documents: NaN.
    """
    check_choice("variant", variant, ENTROPY_VARIANTS)
    check_choice("normalization", normalization, NORMALIZATIONS)
    if int(batch_size) < 1:
        raise SpecError(f"dataset_entropy: batch_size must be >= 1, got {batch_size!r}")
    x = as_float64(x, "dataset_entropy: x", 2)
    n, d = x.shape
    if n < 2:
        return math.nan
    if variant == "clean":
        z = row_normalize(x)
    else:
        b = int(batch_size)
        z = np.concatenate([row_normalize(x[i : i + b]) for i in range(0, n, b)])
    s = _gram_entropy(z, alpha, variant)
    return normalize_entropy(s, normalization, n, d)
