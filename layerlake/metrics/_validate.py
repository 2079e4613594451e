"""Input checks shared by the metric modules: cast to float64, check shapes.

Raise :class:`~layerlake.errors.SpecError` with the expected and the actual shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SpecError


def as_f64(a: Any, ndim: int, name: str, *, min_rows: int = 1) -> np.ndarray:
    """``a`` as a float64 array with ``ndim`` dimensions and at least ``min_rows`` rows.

    Float16/float32 inputs are cast (metrics always compute in float64).
    """
    out = np.asarray(a, dtype=np.float64)
    if out.ndim != ndim:
        raise SpecError(f"{name}: expected a {ndim}-d array, got shape {out.shape}")
    if out.shape[0] < min_rows:
        raise SpecError(f"{name}: expected at least {min_rows} rows, got shape {out.shape}")
    return out


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise if a string parameter is not one of ``choices``."""
    if value not in choices:
        raise SpecError(f"{name}={value!r} is not one of {choices}")


def check_positive(name: str, value: float) -> None:
    """Raise unless ``value`` > 0."""
    if not value > 0:
        raise SpecError(f"{name} must be > 0, got {value!r}")
