"""Shape of token trajectories across layers (paper 5, Aubry et al. 2025; METRICS.md 6.4, 6.5).

Input ``traj``: ``[layers, tokens, d_model]`` = one document, the requested layers
in order. Every function first computes one value per token (``*_per_token``,
``[tokens]``) and the registered metric is the arithmetic MEAN over the document's
tokens (a single inf/NaN token makes the mean inf/NaN). The layer axis is the row
index 0..layers-1, so pass consecutive layers when slopes should be per layer.
"""

from __future__ import annotations

import numpy as np

from ..errors import SpecError
from ._validate import as_float64
from .registry import metric

_SOURCE = "paper 5 (Aubry et al. 2025), METRICS.md "
_LOOP_TOL = 1e-12  # ||sum of unit steps|| <= _LOOP_TOL * steps counts as a closed loop


def _traj(traj: np.ndarray, name: str, min_layers: int) -> np.ndarray:
    traj = as_float64(traj, f"{name}: traj [layers, tokens, d_model]", 3, finite=False, min_rows=1)
    if traj.shape[0] < min_layers:
        raise SpecError(f"{name}: needs at least {min_layers} layers, got shape {traj.shape}")
    return traj


def _kept(traj: np.ndarray, exclude_first: bool, exclude_last: bool, name: str, need: int) -> np.ndarray:
    """Rows of ``traj`` left after dropping the first (embedding) / last (final-norm) layer."""
    lo, hi = int(exclude_first), traj.shape[0] - int(exclude_last)
    if hi - lo < need:
        raise SpecError(
            f"{name}: {traj.shape[0]} layers leave {max(hi - lo, 0)} after exclude_first={exclude_first}, "
            f"exclude_last={exclude_last}; need at least {need}"
        )
    return traj[lo:hi]


def line_shape_score_per_token(traj: np.ndarray) -> np.ndarray:
    """LSS of every token, ``[layers, tokens, d] -> [tokens]`` (METRICS.md 6.4).

    ``LSS = n / ||sum_l u_l||`` with ``u_l`` the unit step directions
    ``(x^{l+1} - x^l) / ||x^{l+1} - x^l||`` and ``n`` the number of steps. >= 1;
    1 = straight. Zero-length steps are skipped (not counted in ``n``); a closed
    loop (``||sum u|| <= 1e-12 n``) gives inf; a token that never moves gives NaN.
    """
    traj = _traj(traj, "line_shape_score", 2)
    steps = np.diff(traj, axis=0)
    lens = np.linalg.norm(steps, axis=2)
    moving = lens > 0
    unit = np.divide(steps, lens[..., None], out=np.zeros_like(steps), where=moving[..., None])
    n = moving.sum(axis=0).astype(np.float64)
    resultant = np.linalg.norm(unit.sum(axis=0), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lss = n / resultant
    lss[(resultant <= _LOOP_TOL * n) & (n > 0)] = np.inf
    lss[n == 0] = np.nan
    return lss


@metric(
    name="line_shape_score",
    input="doc_trajectory",
    granularity="model",
    direction="lower",
    invariances=("scale", "translation", "rotation"),
    source=_SOURCE + "6.4 (Gai & Zhang 2021)",
    description="Mean over tokens of L / ||sum of unit layer-step directions||; 1 = straight.",
)
def line_shape_score(traj: np.ndarray) -> float:
    """Mean over the document's tokens of :func:`line_shape_score_per_token` (METRICS.md 6.4)."""
    return float(np.mean(line_shape_score_per_token(traj)))


def growth_rate_per_token(traj: np.ndarray, exclude_first: bool = True, exclude_last: bool = True) -> np.ndarray:
    """Least-squares slope of ``log ||x^l||`` vs ``l``, ``[layers, tokens, d] -> [tokens]`` (METRICS.md 6.5).

    By default the first (embedding) and the last (final-norm) layer are excluded;
    at least 2 layers must remain. ``x^l = c r^l u`` gives exactly ``log r``. A zero
    vector gives log 0 = -inf and a NaN/inf slope.
    """
    traj = _traj(traj, "growth_rate", 2)
    kept = _kept(traj, exclude_first, exclude_last, "growth_rate", 2)
    with np.errstate(divide="ignore"):
        logn = np.log(np.linalg.norm(kept, axis=2))  # [layers', tokens]
    layer = np.arange(kept.shape[0], dtype=np.float64)
    layer -= layer.mean()
    with np.errstate(invalid="ignore"):
        return (layer @ (logn - logn.mean(axis=0))) / (layer @ layer)


@metric(
    name="growth_rate",
    input="doc_trajectory",
    granularity="model",
    params={"exclude_first": True, "exclude_last": True},
    invariances=("scale", "rotation"),
    source=_SOURCE + "6.5 (definition UNVERIFIED)",
    description="Mean over tokens of the slope of log ||x^l|| vs layer (per-layer exponential growth rate).",
)
def growth_rate(traj: np.ndarray, exclude_first: bool = True, exclude_last: bool = True) -> float:
    """Mean over tokens of :func:`growth_rate_per_token` (METRICS.md 6.5)."""
    return float(np.mean(growth_rate_per_token(traj, exclude_first, exclude_last)))


def step_ratio_cv_per_token(traj: np.ndarray, exclude_first: bool = True, exclude_last: bool = True) -> np.ndarray:
    """``std_l(log r_l) / |mean_l(log r_l)|`` per token, ``[layers, tokens, d] -> [tokens]`` (METRICS.md 6.5).

    ``r_l = ||x^{l+1} - x^l|| / ||x^l - x^{l-1}||`` over the kept layers (same
    exclusions as :func:`growth_rate_per_token`; at least 3 must remain); population
    std (ddof 0). Exact exponential spacing gives 0. Equal steps (mean 0) give NaN
    when the std is 0 too, else inf; a zero-length step gives NaN.
    """
    traj = _traj(traj, "step_ratio_cv", 3)
    kept = _kept(traj, exclude_first, exclude_last, "step_ratio_cv", 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_step = np.log(np.linalg.norm(np.diff(kept, axis=0), axis=2))  # [steps, tokens]
        log_ratio = np.diff(log_step, axis=0)
        return np.std(log_ratio, axis=0) / np.abs(np.mean(log_ratio, axis=0))


@metric(
    name="expodistance_cv",
    input="doc_trajectory",
    granularity="model",
    params={"exclude_first": True, "exclude_last": True},
    invariances=("scale", "translation", "rotation"),
    source=_SOURCE + "6.5 (reconstruction by analogy with Li & Papyan 2023; UNVERIFIED)",
    description="Mean over tokens of the CV of log step-length ratios; 0 = exact exponential spacing.",
    provisional=True,
)
def expodistance_cv(traj: np.ndarray, exclude_first: bool = True, exclude_last: bool = True) -> float:
    """Mean over tokens of :func:`step_ratio_cv_per_token` (METRICS.md 6.5, provisional)."""
    return float(np.mean(step_ratio_cv_per_token(traj, exclude_first, exclude_last)))
