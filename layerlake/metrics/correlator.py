"""Token "correlator" statistics (paper 3, Song et al. 2025; METRICS.md section 4). PROVISIONAL.

The paper's formula could not be verified; these are the two variants proposed in
METRICS.md section 4 (all metrics here are registered with ``provisional=True``):

- ``E_lin = sum_{i != j} <h_i, h_j> / (n sum_i ||h_i||^2)``, O(n d);
- ``E_sq = sum_{i != j} <h_i, h_j>^2 / sum_{i != j} ||h_i||^2 ||h_j||^2``, O(n d min(n, d));
- ``d_eff = 1 / E_sq`` (-> participation ratio of the second-moment matrix).

Each is registered twice: on the dataset-wide ``token_cloud`` (granularity
"layer") and per document on ``doc_hidden`` (granularity "document").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._validate import as_float64
from .registry import metric

_SOURCE = "paper 3 (Song et al. 2025), METRICS.md 4 (formula UNVERIFIED, proposal)"


def correlator_lin(h: np.ndarray) -> float:
    """``E_lin`` of the rows of ``h`` (``[n, d]``, n >= 2), METRICS.md 4. O(n d).

    ``sum_{i != j} <h_i, h_j> = ||sum_i h_i||^2 - sum_i ||h_i||^2``. n identical
    vectors give ``(n - 1) / n``; zero-mean clouds give ~0. All-zero input: NaN.
    """
    h = as_float64(h, "correlator_lin: h [n, d]", 2, finite=False, min_rows=2)
    sq = float(np.einsum("ij,ij->", h, h))
    total = h.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((total @ total - sq) / (h.shape[0] * sq))


def correlator_sq(h: np.ndarray, centre: bool = False) -> float:
    """``E_sq`` of the rows of ``h`` (``[n, d]``, n >= 2), METRICS.md 4.

    Numerator ``||G||_F^2 - sum_i ||h_i||^4`` with G the n x n Gram when n <= d,
    else the d x d second-moment matrix ``h^T h`` (same Frobenius norm), so the cost
    is O(n d min(n, d)). ``centre=True`` subtracts the mean row first (our option:
    uncentred clouds with a large common direction give E_sq ~ 1).
    """
    h = as_float64(h, "correlator_sq: h [n, d]", 2, finite=False, min_rows=2)
    if centre:
        h = h - h.mean(axis=0)
    n, d = h.shape
    gram = h @ h.T if n <= d else h.T @ h
    row_sq = np.einsum("ij,ij->i", h, h)
    num = float(np.einsum("ij,ij->", gram, gram)) - float(row_sq @ row_sq)
    den = float(row_sq.sum()) ** 2 - float(row_sq @ row_sq)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(num / den)


def correlator_dimension(h: np.ndarray, centre: bool = False) -> float:
    """``d_eff = 1 / E_sq`` (METRICS.md 4): ~d for an isotropic cloud in a d-dim subspace."""
    e_sq = correlator_sq(h, centre=centre)
    with np.errstate(divide="ignore"):
        return float(np.float64(1.0) / e_sq)


_INV = ("scale", "rotation", "permutation")


def _register_both(fn: Callable[..., float], params: dict[str, bool], description: str) -> None:
    """Register ``fn`` on the dataset token cloud and, with suffix ``_doc``, per document."""
    for kind, granularity, suffix in (("token_cloud", "layer", ""), ("doc_hidden", "document", "_doc")):
        metric(
            name=fn.__name__ + suffix,
            input=kind,
            granularity=granularity,
            params=params,
            invariances=_INV,
            source=_SOURCE,
            description=description + " (provisional)",
            provisional=True,
        )(fn)


_register_both(correlator_lin, {}, "E_lin = sum_{i!=j} <h_i,h_j> / (n sum ||h_i||^2)")
_register_both(correlator_sq, {"centre": False}, "E_sq = sum_{i!=j} <h_i,h_j>^2 / sum_{i!=j} ||h_i||^2 ||h_j||^2")
_register_both(correlator_dimension, {"centre": False}, "d_eff = 1 / E_sq, participation-ratio dimension")
