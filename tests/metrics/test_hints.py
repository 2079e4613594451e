"""Engine hints: every registered vectorised twin equals its per-document function."""

from __future__ import annotations

import numpy as np
import pytest

from layerlake.metrics import REGISTRY

BATCHED = sorted(n for n, d in REGISTRY.items() if d.batched is not None)


@pytest.mark.parametrize("name", BATCHED)
@pytest.mark.parametrize("shape", [(5, 3, 16), (4, 40, 8), (3, 12, 12), (2, 1, 6)])
def test_batched_twin_equals_the_function_document_by_document(name, shape):
    defn = REGISTRY[name]
    hs = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    hs[0] = hs[0][:1]  # all tokens equal: a degenerate document
    want = np.array([defn.fn(h, **defn.params) for h in hs], dtype=np.float64)
    got = defn.batched(hs, **defn.params)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, equal_nan=True)


def test_prompt_entropy_twin_all_variants():
    pytest.importorskip("layerlake.metrics.entropy")
    defn = REGISTRY["prompt_entropy"]
    assert defn.batched is not None
    hs = np.random.default_rng(1).normal(size=(6, 20, 10))
    for params in ({"variant": "clean"}, {"alpha": 2.0, "normalization": "raw"}, {"normalization": "logNlogD"}):
        full = defn.resolve_params(params)
        np.testing.assert_allclose(defn.batched(hs, **full), [defn.fn(h, **full) for h in hs], rtol=1e-10)


def test_two_view_metrics_declare_their_view_count():
    pytest.importorskip("layerlake.metrics.augmentation_invariance")
    assert REGISTRY["infonce"].n_views == 2 and REGISTRY["dime"].n_views == 2
    assert REGISTRY["lidar"].n_views is None


def test_hints_are_part_of_each_metric_declaration():
    """No separate hints module patches the registry after import: the declaration carries them."""
    import importlib.util

    from layerlake.metrics import entropy

    assert importlib.util.find_spec("layerlake.metrics.hints") is None
    assert REGISTRY["prompt_entropy"].batched is entropy.prompt_entropy_batched
    assert sorted(n for n, d in REGISTRY.items() if d.n_views is not None) == ["dime", "infonce"]
