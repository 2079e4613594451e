"""Effective rank family (METRICS.md 2.5 and 7.4).

All four estimators read the singular values ``sigma`` of a matrix ``Z`` (n x d):

- ``"roy_vetterli"`` (Roy & Vetterli 2007): ``exp(H(p))``, ``p = sigma / sum sigma``;
- ``"rankme"`` (Garrido et al. 2023): the same with ``p = sigma / ||sigma||_1 + 1e-7``
  over all ``min(n, d)`` singular values (zeros included, as in RankMe);
- ``"exp_entropy"``: ``exp(S_1)`` of the squared spectrum ``lambda = sigma^2``, i.e. of
  the Gram ``Z Z^T`` (paper 1's view, 2.5); smaller than Roy-Vetterli unless flat;
- ``"participation_ratio"``: ``(sum lambda)^2 / sum lambda^2 = exp(S_2)``.

A zero matrix has effective rank 0 for every method.
"""

from __future__ import annotations

import math

import numpy as np
from numpy import ndarray

from ._validate import as_float64, check_choice
from .entropy import row_normalize, spectrum_entropy
from .registry import metric

ERANK_METHODS = ("roy_vetterli", "rankme", "exp_entropy", "participation_ratio")
RANKME_EPS = 1e-7


def effective_rank(z: ndarray, method: str = "roy_vetterli") -> float:
    """Effective rank of ``z: Float[ndarray, "n d"]`` (no preprocessing) -> float.

    See the module docstring for the methods (METRICS.md 7.4). Oracles: the identity
    I_N gives N for every method; a rank-1 matrix gives 1 (RankMe: 1 + O(n 1e-7)).
    """
    check_choice("method", method, ERANK_METHODS)
    z = as_float64(z, "effective_rank: z", 2)
    sigma = np.linalg.svd(z, compute_uv=False) if z.size else np.zeros(0)
    if sigma.size == 0 or sigma[0] <= 0:
        return 0.0
    if method == "roy_vetterli":
        return math.exp(spectrum_entropy(sigma, 1.0))
    if method == "rankme":
        p = sigma / sigma.sum() + RANKME_EPS
        return math.exp(-float(np.sum(p * np.log(p))))
    lam = sigma**2
    if method == "exp_entropy":
        return math.exp(spectrum_entropy(lam, 1.0))
    return float(lam.sum() ** 2 / np.sum(lam**2))


def _erank_metric(x: ndarray, name: str, method: str, normalize: bool) -> float:
    x = as_float64(x, name, 2)
    if normalize:
        if x.shape[0] < 2:
            return math.nan
        x = row_normalize(x)
    return effective_rank(x, method)


_COMMON = {
    "params": {"method": "roy_vetterli", "normalize": True},
    "version": "1",
    "direction": "higher",
    "invariances": ("scale", "translation", "rotation", "permutation"),
}


@metric(
    name="effective_rank",
    input="doc_hidden",
    granularity="document",
    source="Roy & Vetterli 2007; Garrido et al. 2023 (RankMe); Skean et al. 2025; METRICS.md 2.5, 7.4",
    description=(
        "Effective rank of one prompt's token matrix (after the paper-1 row normalisation "
        "by default): how many directions the tokens spread over."
    ),
    **_COMMON,
)
def prompt_effective_rank(h: ndarray, *, method: str = "roy_vetterli", normalize: bool = True) -> float:
    """Effective rank of one document at one layer (METRICS.md 2.5, 7.4).

    ``h: Float[ndarray, "tokens d_model"]`` -> float. ``normalize=True`` applies
    :func:`~layerlake.metrics.entropy.row_normalize` first (so ``exp_entropy`` equals
    ``exp`` of the raw clean prompt entropy); ``False`` uses ``h`` as is (RankMe
    convention, not translation-invariant). Fewer than 2 tokens with normalize: NaN.
    """
    return _erank_metric(h, "effective_rank: h", method, normalize)


@metric(
    name="dataset_effective_rank",
    input="pooled",
    granularity="layer",
    source="Roy & Vetterli 2007; Garrido et al. 2023 (RankMe); Skean et al. 2025; METRICS.md 2.5, 7.4",
    description=(
        "Effective rank of a dataset's mean-pooled documents (after centring over the dataset "
        "and unit-norming rows by default); RankMe-style collapse measure."
    ),
    **_COMMON,
)
def dataset_effective_rank(x: ndarray, *, method: str = "roy_vetterli", normalize: bool = True) -> float:
    """Effective rank of pooled documents at one layer (METRICS.md 2.5, 7.4).

    ``x: Float[ndarray, "docs d_model"]`` -> float; ``normalize`` as in
    :func:`prompt_effective_rank` (centring over the whole dataset). Fewer than 2
    documents with normalize: NaN.
    """
    return _erank_metric(x, "dataset_effective_rank: x", method, normalize)
