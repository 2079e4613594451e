"""Parameter canonicalisation: a value takes its declared default's type, so equal values are one value."""

from __future__ import annotations

import numpy as np
import pytest

from layerlake.errors import SpecError
from layerlake.metrics import get_metric


def test_ints_for_float_parameters_become_floats():
    got = get_metric("prompt_entropy").resolve_params({"alpha": 2})
    assert got["alpha"] == 2.0 and type(got["alpha"]) is float
    assert get_metric("prompt_entropy").non_default_params({"alpha": 1}) == {}


def test_integral_floats_for_int_parameters_become_ints():
    got = get_metric("coupling").resolve_params({"K": 3.0})
    assert got["K"] == 3 and type(got["K"]) is int
    with pytest.raises(SpecError, match="K=3.5 must be an integer"):
        get_metric("coupling").resolve_params({"K": 3.5})


def test_numpy_scalars_and_strings_are_canonical():
    defn = get_metric("dataset_mle_id")
    got = defn.resolve_params({"k_min": np.int64(5), "k_max": "30", "normalize": "true"})
    assert got["k_min"] == 5 and type(got["k_min"]) is int
    assert got["k_max"] == 30 and type(got["k_max"]) is int and got["normalize"] is True
    alpha = get_metric("dataset_entropy").resolve_params({"alpha": np.float32(0.5)})["alpha"]
    assert alpha == 0.5 and type(alpha) is float


def test_bools_are_left_alone():
    assert get_metric("linear_cka").resolve_params({"debiased": True})["debiased"] is True
