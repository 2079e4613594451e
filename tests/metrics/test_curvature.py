"""Curvature (METRICS.md 2.6, oracle 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from layerlake.errors import SpecError
from layerlake.metrics.curvature import curvature, step_angles
from layerlake.metrics.entropy import row_normalize


@pytest.fixture
def rng():
    """A fresh generator per test, so results do not depend on test order."""
    return np.random.default_rng(7)


def ref_curvature(points, folded):
    """Loop version of the official calculate_layer_average_k_curvature."""
    total, count = 0.0, 0
    for k in range(1, len(points) - 1):
        a = points[k + 1] - points[k]
        b = points[k] - points[k - 1]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 or nb == 0:
            angle = 0.0
        else:
            c = float(a @ b) / (na * nb)
            angle = math.acos(min(1.0, max(-1.0, abs(c) if folded else c)))
        total += angle
        count += 1
    return total / count


def test_oracle_6_straight_line_is_zero(rng):
    u = rng.normal(size=16)
    steps = np.cumsum(rng.random(10) + 0.1)
    line = steps[:, None] * u[None, :]
    for folded in (True, False):
        np.testing.assert_allclose(step_angles(line, folded), 0.0, atol=1e-7)
    assert curvature(line, variant="signed") == pytest.approx(0.0, abs=1e-7)
    assert curvature(line) == pytest.approx(0.0, abs=1e-7)  # degenerates to +-u, still 0


def test_oracle_6_zig_zag(rng):
    u = rng.normal(size=8)
    zig = np.array([(k % 2) * u for k in range(9)])
    np.testing.assert_allclose(step_angles(zig, folded=False), math.pi, atol=1e-7)
    np.testing.assert_allclose(step_angles(zig, folded=True), 0.0, atol=1e-7)
    assert curvature(zig, variant="signed") == pytest.approx(math.pi, abs=1e-7)


def test_oracle_6_iid_points_in_high_dimension(rng):
    x = rng.normal(size=(400, 2000))
    assert np.mean(step_angles(x, folded=False)) == pytest.approx(2 * math.pi / 3, abs=0.02)
    assert np.mean(step_angles(x, folded=True)) == pytest.approx(math.pi / 3, abs=0.02)
    assert curvature(x, variant="signed") == pytest.approx(2.094, abs=0.02)
    assert curvature(x) == pytest.approx(1.047, abs=0.02)


def test_oracle_6_random_walk(rng):
    walk = np.cumsum(rng.normal(size=(400, 2000)), axis=0)
    for folded in (True, False):
        assert np.mean(step_angles(walk, folded)) == pytest.approx(math.pi / 2, abs=0.02)


@pytest.mark.parametrize("variant", ["folded", "signed"])
def test_curvature_matches_loop_reference(variant, rng):
    h = rng.normal(size=(13, 6))
    folded = variant == "folded"
    points = row_normalize(h) if folded else h
    assert curvature(h, variant=variant) == pytest.approx(ref_curvature(points, folded), abs=1e-12)


def test_zero_length_step_counts_as_zero_angle():
    h = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert curvature(h, variant="signed") == pytest.approx(ref_curvature(h, False)) == 0.0


def test_log_d_normalisation_and_degenerate_cases(rng):
    h = rng.normal(size=(6, 10))
    assert curvature(h, normalization="logD") == pytest.approx(curvature(h) / math.log(10))
    assert math.isnan(curvature(h[:2]))
    with pytest.raises(SpecError, match="variant"):
        curvature(h, variant="true")
