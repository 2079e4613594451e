"""Curvature of a prompt's token trajectory at one layer (METRICS.md 2.6).

The trajectory is the sequence of token vectors of one prompt at one layer;
``v_k = z_{k+1} - z_k`` are its steps and the curvature is the mean angle between
consecutive steps.
"""

from __future__ import annotations

import math

import numpy as np
from numpy import ndarray

from ._validate import as_float64, check_choice
from .entropy import row_normalize
from .registry import metric

CURVATURE_VARIANTS = ("folded", "signed")
CURVATURE_NORMALIZATIONS = ("raw", "logD")

_EPS = np.finfo(np.float64).eps


def step_angles(points: ndarray, folded: bool) -> ndarray:
    """Angles between consecutive steps of ``points: Float[ndarray, "n d"]`` -> ``(n-2,)``.

    ``folded=True`` uses ``arccos(|cos|)`` in [0, pi/2] (official code), ``False`` the
    true angle ``arccos(cos)`` in [0, pi]. A zero-length step (norm below rounding
    noise, ``16 sqrt(d) eps max|points|``) gives angle 0, as in the official code.
    """
    v = np.diff(points, axis=0)
    norms = np.linalg.norm(v, axis=1)
    tol = 16.0 * math.sqrt(points.shape[1]) * _EPS * (np.max(np.abs(points)) if points.size else 0.0)
    a, b = v[1:], v[:-1]
    na, nb = norms[1:], norms[:-1]
    ok = (na > tol) & (nb > tol)
    cos = np.sum(a * b, axis=1) / np.where(ok, na * nb, 1.0)
    if folded:
        cos = np.abs(cos)
    return np.where(ok, np.arccos(np.clip(cos, -1.0, 1.0)), 0.0)


@metric(
    name="curvature",
    input="doc_hidden",
    granularity="document",
    params={"variant": "folded", "normalization": "raw"},
    version="1",
    direction="none",
    invariances=("scale", "translation", "rotation"),
    source=(
        "Skean et al. 2025 'Layer by Layer' (arXiv:2502.02013), official code; "
        "Hosseini & Fedorenko 2023 (signed); METRICS.md 2.6"
    ),
    description=(
        "Mean angle (radians) between consecutive token-to-token steps of a prompt at one layer; "
        "0 = straight trajectory."
    ),
)
def curvature(h: ndarray, *, variant: str = "folded", normalization: str = "raw") -> float:
    """Mean curvature of one document's token trajectory (METRICS.md 2.6).

    ``h: Float[ndarray, "tokens d_model"]`` -> float (radians).

    - ``variant="folded"`` (official code, used for the paper's results):
      ``Z = row_normalize(h)``, angles ``arccos(|cos(v_k, v_{k-1})|)`` in [0, pi/2].
    - ``variant="signed"`` (Hosseini & Fedorenko 2023): raw ``h``, no centring, no
      abs; angles in [0, pi].

    ``normalization="logD"`` divides by log d_model (the official 'logD' key).
    Oracles: straight line 0 (both); zig-zag: signed pi, folded 0; i.i.d. points in
    high D: signed -> 2 pi / 3, folded -> pi / 3; random walk: both -> pi / 2.
    Fewer than 3 tokens (no angle): NaN (the official code returns 0).
    """
    check_choice("variant", variant, CURVATURE_VARIANTS)
    check_choice("normalization", normalization, CURVATURE_NORMALIZATIONS)
    h = as_float64(h, "curvature: h", 2)
    n, d = h.shape
    if n < 3:
        return math.nan
    folded = variant == "folded"
    points = row_normalize(h) if folded else h
    value = float(np.mean(step_angles(points, folded)))
    if normalization == "logD":
        return value / math.log(d) if d > 1 else math.nan
    return value
