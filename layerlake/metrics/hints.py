"""Engine hints attached to registered metrics: vectorised twins and exact view counts.

The registry's optional ``MetricDef.batched`` / ``MetricDef.n_views`` fields are
filled here for metrics registered elsewhere (so the metric modules stay as
they are); a metric that declares them itself keeps its own.

Vectorised twin (``batched``): takes ``hs: Float[ndarray, "docs tokens d_model"]`` (documents of equal
token count) and returns ``Float[ndarray, "docs"]`` equal to the registered
function applied document by document. It is composed of the metric module's
own primitives on stacked matrices (no new math), and attached to the registry
entry as ``MetricDef.batched`` when that metric is registered. A common test
checks twin == per-document function on random data.

``n_views``: InfoNCE and DiME compare exactly two views of each document
(METRICS.md 2.9, 2.11); the engine then feeds views 1 and 2 by default even when
more are stored (LiDAR uses all stored views).

Import this module after the metric modules (``metrics/__init__`` does).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy import ndarray

from ..errors import SpecError
from .registry import REGISTRY


def prompt_entropy_batched(hs: ndarray, *, alpha: float = 1.0, variant: str = "faithful",
                           normalization: str = "maxEntropy") -> ndarray:
    """:func:`layerlake.metrics.entropy.prompt_entropy` of every ``hs[i]`` (METRICS.md 2.3), one batched eigvalsh."""
    from ._validate import check_choice
    from .entropy import ENTROPY_VARIANTS, NORMALIZATIONS, matrix_entropy_from_gram, normalize_entropy, row_normalize

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


def _attach(name: str, **hints: Any) -> None:
    defn = REGISTRY.get(name)
    if defn is None:
        return
    new = {k: v for k, v in hints.items() if getattr(defn, k) is None}
    if new:
        REGISTRY[name] = dataclasses.replace(defn, **new)


BATCHED: dict[str, Callable[..., Any]] = {"prompt_entropy": prompt_entropy_batched}
N_VIEWS: dict[str, int] = {"infonce": 2, "dime": 2}
for _name, _fn in BATCHED.items():
    _attach(_name, batched=_fn)
for _name, _k in N_VIEWS.items():
    _attach(_name, n_views=_k)
