"""Trajectory shape metrics of paper 5 (METRICS.md 6.4, 6.5; oracles 20-21)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from layerlake.errors import SpecError
from layerlake.metrics import get_metric
from layerlake.metrics.trajectory import (
    expodistance_cv,
    growth_rate,
    growth_rate_per_token,
    line_shape_score,
    line_shape_score_per_token,
    step_ratio_cv_per_token,
)


def _traj(points: list[list[float]]) -> np.ndarray:
    """One token's trajectory [layers, d] -> [layers, 1, d]."""
    return np.asarray(points, dtype=np.float64)[:, None, :]


def _lss_recursive(x: np.ndarray) -> float:
    """Gai & Zhang: x~^{l+1} = x~^l + unit step; LSS = L / ||x~^L - x~^0||."""
    walk = x[0].copy()
    for a, b in itertools.pairwise(x):
        walk = walk + (b - a) / np.linalg.norm(b - a)
    return (len(x) - 1) / np.linalg.norm(walk - x[0])


# --- oracle 20: LSS ----------------------------------------------------------------------------


def test_lss_collinear_steps_of_any_length_is_one():
    u = np.array([0.6, 0.8, 0.0])
    x = np.cumsum([0.0, 1.0, 5.0, 0.01, 2.5])[:, None] * u + np.array([1.0, -2.0, 3.0])
    assert line_shape_score(x[:, None, :]) == pytest.approx(1.0, abs=1e-12)


def test_lss_l_shape_is_sqrt2():
    assert line_shape_score(_traj([[0, 0], [3, 0], [3, 7]])) == pytest.approx(np.sqrt(2), abs=1e-12)


def test_lss_closed_loop_is_inf():
    assert line_shape_score(_traj([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]])) == np.inf
    assert line_shape_score(_traj([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]])) == np.inf


def test_lss_matches_recursive_definition_and_mean_over_tokens():
    traj = np.random.default_rng(0).standard_normal((9, 4, 6)).cumsum(axis=0)
    per_token = line_shape_score_per_token(traj)
    np.testing.assert_allclose(per_token, [_lss_recursive(traj[:, t]) for t in range(4)], rtol=1e-12)
    assert line_shape_score(traj) == pytest.approx(per_token.mean(), rel=1e-15)
    assert np.all(per_token >= 1)


def test_lss_skips_zero_steps_and_static_token_is_nan():
    paused = _traj([[0, 0], [1, 0], [1, 0], [1, 2]])  # a zero step in the middle
    assert line_shape_score(paused) == pytest.approx(np.sqrt(2), abs=1e-12)
    static = np.zeros((4, 1, 3))
    assert np.isnan(line_shape_score(static))
    with pytest.raises(SpecError):
        line_shape_score(np.zeros((1, 2, 3)))


# --- oracle 21: growth rate and step-ratio CV --------------------------------------------------


@pytest.mark.parametrize("r", [1.3, 0.7, 2.0])
@pytest.mark.parametrize("exclude", [(False, False), (True, True), (True, False)])
def test_exponential_trajectory(r, exclude):
    c, u = 2.5, np.array([0.0, 0.6, -0.8])
    traj = (c * r ** np.arange(8.0))[:, None, None] * u  # [layers, 1, d]
    assert growth_rate(traj, *exclude) == pytest.approx(np.log(r), abs=1e-12)
    assert expodistance_cv(traj, *exclude) == pytest.approx(0.0, abs=1e-12)


def test_growth_rate_matches_polyfit_per_token():
    rng = np.random.default_rng(1)
    traj = rng.standard_normal((10, 5, 7)) * np.exp(0.2 * np.arange(10.0))[:, None, None]
    logn = np.log(np.linalg.norm(traj, axis=2))
    for first, last, rows in [(True, True, slice(1, 9)), (False, False, slice(0, 10)), (False, True, slice(0, 9))]:
        expected = [np.polyfit(np.arange(logn[rows].shape[0]), logn[rows, t], 1)[0] for t in range(5)]
        np.testing.assert_allclose(growth_rate_per_token(traj, first, last), expected, rtol=1e-10)
    assert growth_rate(traj) == pytest.approx(np.mean(growth_rate_per_token(traj)))


def test_step_ratio_cv_matches_loop():
    traj = np.random.default_rng(2).standard_normal((7, 3, 4))
    for t in range(3):
        x = traj[1:6, t]  # default exclusions
        steps = [np.linalg.norm(x[i + 1] - x[i]) for i in range(len(x) - 1)]
        logr = [np.log(steps[i + 1] / steps[i]) for i in range(len(steps) - 1)]
        expected = np.std(logr) / abs(np.mean(logr))
        assert step_ratio_cv_per_token(traj)[t] == pytest.approx(expected, rel=1e-10)


def test_equal_steps_give_nan_cv_and_too_few_layers_raise():
    assert np.isnan(expodistance_cv(_traj([[0.0], [1.0], [2.0], [3.0]]), False, False))
    with pytest.raises(SpecError):
        growth_rate(np.ones((3, 1, 2)))  # 1 layer left after excluding first and last
    with pytest.raises(SpecError):
        expodistance_cv(np.ones((4, 1, 2)))


@pytest.mark.parametrize(
    "name,params,provisional",
    [
        ("line_shape_score", {}, False),
        ("growth_rate", {"exclude_first": True, "exclude_last": True}, False),
        ("expodistance_cv", {"exclude_first": True, "exclude_last": True}, True),
    ],
)
def test_registered(name, params, provisional):
    m = get_metric(name)
    assert (m.input, m.granularity, m.params, m.provisional) == ("doc_trajectory", "model", params, provisional)
    traj = np.random.default_rng(3).standard_normal((6, 2, 3)).astype(np.float16)
    assert np.isfinite(m(traj))
