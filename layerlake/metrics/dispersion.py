"""Representation dispersion (paper 2, Li et al. 2025; METRICS.md section 3).

Dispersion of a chunk = average pairwise cosine distance among its token vectors,
computed in O(T d) from the norm of the sum of unit rows. The perplexity grouping
protocol of 3.2 (sort chunks by perplexity, groups of consecutive chunks, groups
picked near equally spaced perplexity targets) is a pure helper here; the
correlation summary uses scipy.stats.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

from ..errors import SpecError
from ._validate import as_float64
from .registry import metric


@metric(
    name="representation_dispersion",
    input="doc_hidden",
    granularity="document",
    direction="higher",
    invariances=("scale", "row_scale", "rotation", "permutation"),
    source="paper 2 (Li et al. 2025), METRICS.md 3.1",
    description="1 - mean_{i<j} cos(h_i, h_j) over the tokens of a chunk; range [0, 2], ~1 isotropic.",
)
def representation_dispersion(h: np.ndarray) -> float:
    """Average pairwise cosine distance of the rows of ``h`` (METRICS.md 3.1).

    ``h``: ``[tokens, d_model]`` (no centring, no pooling), at least 2 rows.
    Uses ``sum_{i != j} cos_ij = ||sum_i u_i||^2 - sum_i ||u_i||^2`` with unit rows
    ``u_i``, so the cost is O(T d). A zero row makes the result NaN (0/0, as in the
    official code).
    """
    h = as_float64(h, "representation_dispersion: h [tokens, d_model]", 2, finite=False, min_rows=2)
    t = h.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        u = h / np.linalg.norm(h, axis=1, keepdims=True)
    total = u.sum(axis=0)
    off_diag = float(total @ total) - float(np.einsum("ij,ij->", u, u))
    return 1.0 - off_diag / (t * (t - 1))


class PerplexityGroups(NamedTuple):
    """Selected groups of :func:`perplexity_groups`, in increasing perplexity."""

    mean_ppl: np.ndarray  # [groups] mean perplexity of each selected group
    mean_value: np.ndarray  # [groups] mean metric value of each selected group
    members: np.ndarray  # [groups, group_size] indices into the input chunks


def perplexity_groups(
    ppl: np.ndarray,
    values: np.ndarray,
    group_size: int = 100,
    n_groups: int = 100,
    max_ppl: float | None = None,
) -> PerplexityGroups:
    """Group chunks by perplexity and sample groups uniformly in PPL (METRICS.md 3.2 steps 3-5).

    ``ppl``, ``values``: ``[chunks]`` (perplexity and metric value of each chunk).
    Steps: stable-sort chunks by PPL; cut into consecutive groups of ``group_size``
    (the incomplete tail is dropped); if there are more than ``n_groups`` groups,
    for each of ``n_groups`` equally spaced targets between the smallest and the
    largest group mean PPL pick the group whose mean is nearest (ties go to the
    larger mean; a group picked twice is kept once, so fewer than ``n_groups`` may
    come back). Groups with mean PPL >= ``max_ppl`` are then discarded (the paper
    uses 25 for wikitext; ``None`` keeps all).
    """
    ppl = as_float64(ppl, "perplexity_groups: ppl [chunks]", 1, finite=False, min_rows=1)
    values = as_float64(values, "perplexity_groups: values [chunks]", 1, finite=False, min_rows=1)
    if ppl.shape != values.shape:
        raise SpecError(f"perplexity_groups: ppl {ppl.shape} and values {values.shape} differ in length")
    if not np.all(np.isfinite(ppl)):
        raise SpecError("perplexity_groups: ppl contains NaN or inf; drop those chunks first")
    if group_size < 1 or n_groups < 1:
        raise SpecError(f"perplexity_groups: group_size={group_size} and n_groups={n_groups} must be >= 1")
    n_full = len(ppl) // group_size
    if n_full == 0:
        raise SpecError(f"perplexity_groups: {len(ppl)} chunks do not fill one group of {group_size}")
    order = np.argsort(ppl, kind="stable")
    members = order[: n_full * group_size].reshape(n_full, group_size)
    group_ppl = ppl[members].mean(axis=1)  # non-decreasing
    if n_full > n_groups:
        targets = np.linspace(group_ppl[0], group_ppl[-1], n_groups)
        pos = np.minimum(np.searchsorted(group_ppl, targets, side="left"), n_full - 1)
        left = np.maximum(pos - 1, 0)
        take_left = (pos > 0) & (np.abs(group_ppl[left] - targets) < np.abs(group_ppl[pos] - targets))
        chosen = np.unique(np.where(take_left, left, pos))
    else:
        chosen = np.arange(n_full)
    if max_ppl is not None:
        chosen = chosen[group_ppl[chosen] < max_ppl]
    members = members[chosen]
    return PerplexityGroups(group_ppl[chosen], values[members].mean(axis=1), members)


def correlation_summary(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of ``x`` and ``y`` (``[n]`` each, n >= 3), via scipy.stats.

    Used for dispersion vs group perplexity (METRICS.md 3.2 step 5). Returns
    ``{"n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"}``.
    """
    x = as_float64(x, "correlation_summary: x [n]", 1, finite=False, min_rows=3)
    y = as_float64(y, "correlation_summary: y [n]", 1, finite=False, min_rows=3)
    if x.shape != y.shape:
        raise SpecError(f"correlation_summary: x {x.shape} and y {y.shape} differ in length")
    pr = stats.pearsonr(x, y)
    sr = stats.spearmanr(x, y)
    return {
        "n": len(x),
        "pearson_r": float(pr.statistic),
        "pearson_p": float(pr.pvalue),
        "spearman_rho": float(sr.statistic),
        "spearman_p": float(sr.pvalue),
    }
