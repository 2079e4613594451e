"""Input checks shared by the metric modules (private).

Every metric casts its inputs to float64 (stored activations may be float16)
and rejects wrong shapes, non-finite values and unknown choices with a
:class:`~layerlake.errors.SpecError` that names the thing, the expected and the
actual value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy import ndarray

from ..errors import SpecError


def as_float64(x: Any, name: str, ndim: int, *, finite: bool = True, min_rows: int = 0) -> ndarray:
    """``x`` as a float64 array with exactly ``ndim`` dimensions and at least ``min_rows`` rows.

    ``finite=True`` also rejects NaN and inf; metrics that return NaN for
    degenerate input pass ``finite=False``.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise SpecError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise SpecError(f"{name}: expected at least {min_rows} rows, got shape {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        raise SpecError(
            f"{name}: contains NaN or inf ({int(np.sum(~np.isfinite(arr)))} values); "
            "check the stored activations (float16 overflow?)"
        )
    return arr


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise SpecError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise SpecError(f"{name}={value!r} is not valid; expected one of {tuple(choices)}")


def check_views(v: Any, name: str, exact_views: int | None = None) -> ndarray:
    """``v: Float[ndarray, "docs views d_model"]`` as float64, with the view count checked."""
    arr = as_float64(v, name, 3)
    n_views = arr.shape[1]
    if exact_views is not None and n_views != exact_views:
        raise SpecError(f"{name}: expected {exact_views} views per document, got {n_views} (shape {arr.shape})")
    if n_views < 2:
        raise SpecError(f"{name}: expected at least 2 views per document, got {n_views} (shape {arr.shape})")
    return arr


def check_positive(name: str, value: float) -> None:
    """Raise unless ``value`` > 0."""
    if not value > 0:
        raise SpecError(f"{name} must be > 0, got {value!r}")
