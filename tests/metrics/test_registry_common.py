"""One common test suite for every registered metric (scikit-learn ``test_common`` style).

For each metric in ``REGISTRY`` it checks the declaration (input kind, granularity,
direction, source, description, version), that the defaults resolve and match the
function's signature, that an unknown parameter raises a SpecError listing the valid
ones, that the output is finite on generic random input of the declared kind, and
that each declared invariance holds.

Generic inputs follow the input kinds of ``layerlake/metrics/registry.py``. The
invariance transforms act on the feature (last) axis; "rows" are documents or tokens:
axis 0 except for ``doc_trajectory`` (tokens, axis 1). For ``layer_pair`` the same
transform is applied to both inputs (they share ``n`` and ``d``). A new input kind
needs a generator here; the test fails loudly until it has one.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from layerlake.errors import NotFoundError, SpecError
from layerlake.metrics import REGISTRY, MetricDef, get_metric
from layerlake.metrics.registry import DIRECTIONS, GRANULARITIES, INPUT_KINDS

NAMES = sorted(REGISTRY)
SKETCH_REASON = (
    "jacobian_sketch inputs are Sequence[JacobianFactors]; registry.py defines no generic way to "
    "build them and the five vector-space invariances do not apply to Jacobian factors"
)


# --- generic inputs per kind ---------------------------------------------------------------------
# Each entry: list of shape variants; each variant builds a tuple of positional arrays.


def _matrix(n: int, d: int) -> Callable[[np.random.Generator], tuple[np.ndarray, ...]]:
    return lambda rng: (rng.normal(size=(n, d)),)


GENERATORS: dict[str, list[Callable[[np.random.Generator], tuple[Any, ...]]]] = {
    "doc_hidden": [_matrix(24, 10), _matrix(10, 24)],
    "doc_nll": [lambda rng: (rng.exponential(2.0, size=17),)],
    "pooled": [_matrix(30, 8), _matrix(12, 20)],
    "token_cloud": [_matrix(80, 6), _matrix(40, 16)],
    "views": [lambda rng: (rng.normal(size=(12, 2, 8)),), lambda rng: (rng.normal(size=(6, 2, 14)),)],
    "layer_pair": [
        lambda rng: (rng.normal(size=(20, 8)), rng.normal(size=(20, 8))),
        lambda rng: (rng.normal(size=(9, 15)), rng.normal(size=(9, 15))),
    ],
    "doc_trajectory": [lambda rng: (rng.normal(size=(6, 7, 10)),)],
}
ROW_AXIS = {"doc_trajectory": 1}


def _inputs(kind: str, variant: int) -> tuple[Any, ...]:
    if kind not in GENERATORS:
        pytest.fail(f"no generic input for input kind {kind!r}: add a generator to {__file__}")
    return GENERATORS[kind][variant](np.random.default_rng(1000 + variant))


def _variants(kind: str) -> range:
    return range(len(GENERATORS.get(kind, [None])))


def _transform(kind: str, invariance: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Apply one invariance transform (same parameters to every positional array)."""
    rng = np.random.default_rng(7)
    d = args[0].shape[-1]
    one_d = args[0].ndim == 1
    if invariance == "scale":
        return tuple(2.5 * a for a in args)
    if invariance == "translation":
        shift = rng.normal(size=() if one_d else d) * 3.0
        return tuple(a + shift for a in args)
    if invariance == "rotation":
        if one_d:
            pytest.skip(f"rotation is not defined for 1-D {kind} input")
        r, _ = np.linalg.qr(rng.normal(size=(d, d)))
        return tuple(a @ r for a in args)
    if invariance == "row_scale":
        if one_d:
            pytest.skip(f"row_scale is not defined for 1-D {kind} input")
        factors = rng.uniform(0.3, 3.0, size=args[0].shape[:-1] + (1,))
        return tuple(a * factors for a in args)
    if invariance == "permutation":
        axis = ROW_AXIS.get(kind, 0)
        order = rng.permutation(args[0].shape[axis])
        return tuple(np.take(a, order, axis=axis) for a in args)
    raise AssertionError(f"unknown invariance {invariance!r}")


def _assert_close(actual: Any, expected: Any, what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        np.asarray(expected, dtype=np.float64),
        rtol=1e-6,
        atol=1e-9,
        err_msg=what,
    )


# --- declaration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_metric_is_classified(name: str) -> None:
    defn = REGISTRY[name]
    assert defn.name == name
    assert defn.input in INPUT_KINDS
    assert defn.granularity in GRANULARITIES
    assert defn.direction in DIRECTIONS
    assert isinstance(defn.version, str) and defn.version.strip()
    assert defn.source.strip(), f"{name}: empty source"
    assert defn.description.strip(), f"{name}: empty description"
    assert callable(defn.fn) and (defn.fn.__doc__ or "").strip(), f"{name}: function has no docstring"
    if name.endswith("_distance"):
        assert defn.direction == "lower", f"{name}: *_distance metrics are lower = closer"


@pytest.mark.parametrize("name", NAMES)
def test_defaults_resolve_and_match_signature(name: str) -> None:
    defn = REGISTRY[name]
    assert defn.resolve_params({}) == dict(defn.params)
    assert defn.non_default_params({}) == {}
    sig = inspect.signature(defn.fn)
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    for key, default in defn.params.items():
        if key not in sig.parameters:
            assert takes_kwargs, f"{name}: declared parameter {key!r} is not accepted by {defn.fn.__name__}"
            continue
        fn_default = sig.parameters[key].default
        if fn_default is not inspect.Parameter.empty:
            assert fn_default == default, f"{name}: {key} default {fn_default!r} != declared {default!r}"


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_lists_valid_ones(name: str) -> None:
    defn = REGISTRY[name]
    with pytest.raises(SpecError) as info:
        defn.resolve_params({"no_such_parameter": 1})
    message = str(info.value)
    assert "no_such_parameter" in message
    for key in defn.params:
        assert key in message


def test_unknown_metric_lists_valid_names() -> None:
    with pytest.raises(NotFoundError) as info:
        get_metric("nope")
    message = str(info.value)
    assert "nope" in message
    for name in NAMES:
        assert name in message


# --- behaviour on generic input ------------------------------------------------------------------


def _cases(with_invariance: bool) -> list[Any]:
    cases = []
    for name in NAMES:
        defn = REGISTRY[name]
        invariances = defn.invariances if with_invariance else (None,)
        for inv in invariances:
            for variant in _variants(defn.input):
                values = (name, variant, inv) if with_invariance else (name, variant)
                marks = [pytest.mark.skip(reason=SKETCH_REASON)] if defn.input == "jacobian_sketch" else []
                ident = "-".join(str(v) for v in values)
                cases.append(pytest.param(*values, marks=marks, id=ident))
    return cases


@pytest.mark.parametrize("name,variant", _cases(with_invariance=False))
def test_output_is_finite_on_generic_input(name: str, variant: int) -> None:
    defn = REGISTRY[name]
    value = defn(*_inputs(defn.input, variant))
    assert np.all(np.isfinite(np.asarray(value, dtype=np.float64))), f"{name} returned {value!r}"


def _check_invariance(defn: MetricDef, variant: int, invariance: str) -> None:
    args = _inputs(defn.input, variant)
    expected = defn(*args)
    actual = defn(*_transform(defn.input, invariance, args))
    _assert_close(actual, expected, f"{defn.name} is declared {invariance}-invariant")


@pytest.mark.parametrize("name,variant,invariance", _cases(with_invariance=True))
def test_declared_invariance_holds(name: str, variant: int, invariance: str) -> None:
    _check_invariance(REGISTRY[name], variant, invariance)


def test_invariance_check_detects_a_false_declaration() -> None:
    """The checker has teeth: faithful prompt entropy is not rotation-invariant when N > D
    (the clamp acts on the D x D covariance), nor row_scale-invariant (centring first)."""
    real = REGISTRY["prompt_entropy"]
    fake = dataclasses.replace(real, name="prompt_entropy_claims_too_much", invariances=("rotation", "row_scale"))
    with pytest.raises(AssertionError):
        _check_invariance(fake, 0, "rotation")  # variant 0: 24 tokens x 10 dims
    with pytest.raises(AssertionError):
        _check_invariance(fake, 1, "row_scale")
