"""Every metric of the paper 2-5 modules honours its declared invariances (sklearn-style common test)."""

from __future__ import annotations

import numpy as np
import pytest

from layerlake.metrics import list_metrics

MODULES = {
    "layerlake.metrics.correlator",
    "layerlake.metrics.dispersion",
    "layerlake.metrics.everyday",
    "layerlake.metrics.jacobian",
    "layerlake.metrics.matrix_entropy",
    "layerlake.metrics.trajectory",
}
OURS = [m for m in list_metrics() if m.fn.__module__ in MODULES]


def _inputs(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    if kind in ("doc_hidden", "token_cloud"):
        return (rng.standard_normal((11, 6)) + 0.5,)
    if kind == "layer_pair":
        x = rng.standard_normal((12, 5))
        return x, x @ rng.standard_normal((5, 5)) + 0.3 * rng.standard_normal((12, 5))
    if kind == "doc_trajectory":
        return (rng.standard_normal((6, 3, 5)).cumsum(axis=0) * np.exp(0.3 * np.arange(6.0))[:, None, None],)
    if kind == "doc_nll":
        return (rng.uniform(0, 5, 9),)
    raise AssertionError(kind)


def _transform(kind: str, inv: str, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    d = arr.shape[-1]
    if inv == "scale":
        return 3.7 * arr
    if inv == "translation":
        return arr + rng.standard_normal(d)
    if inv == "rotation":
        return arr @ np.linalg.qr(rng.standard_normal((d, d)))[0]
    if inv == "row_scale":
        return arr * rng.uniform(0.1, 10, size=arr.shape[:-1] + (1,))
    if inv == "permutation":
        axis = 1 if kind == "doc_trajectory" else 0
        return np.take(arr, rng.permutation(arr.shape[axis]), axis=axis)
    raise AssertionError(inv)


def test_all_paper_2_to_5_metrics_are_registered():
    assert len(OURS) == 21


@pytest.mark.parametrize("defn", [m for m in OURS if m.invariances], ids=lambda m: m.name)
def test_declared_invariances_hold(defn):
    rng = np.random.default_rng(0)
    args = _inputs(defn.input, rng)
    base = defn(*args)
    for inv in defn.invariances:
        seed = int(rng.integers(2**31))
        moved = tuple(_transform(defn.input, inv, a, np.random.default_rng(seed)) for a in args)
        np.testing.assert_allclose(defn(*moved), base, rtol=1e-8, atol=1e-10, err_msg=f"{defn.name}: {inv}")
