"""LayerSelection: one parser for every ``layers=`` input, with the kind (hidden state / block) explicit."""

from __future__ import annotations

import numpy as np
import pytest

import layerlake as ll
from layerlake.store import CaptureSpec, JacobianSketch, LayerSelection, parse_layers
from layerlake.store.specs import BLOCK, HIDDEN


@pytest.mark.parametrize("value, indices", [
    ("all", None), (None, None), (3, (3,)), ("0,3,6", (0, 3, 6)), (" 6, 0 ,3", (0, 3, 6)), ([2, 1, 2], (1, 2)),
    ((0,), (0,)), (np.int64(4), (4,)), ([np.int32(1)], (1,)), ("7", (7,)),
])
def test_valid_inputs(value, indices):
    sel = LayerSelection.parse(value)
    assert sel.indices == indices and sel.kind == HIDDEN
    assert parse_layers(value) == ("all" if indices is None else indices)


@pytest.mark.parametrize("value", ["0,,1", "0,3,", "", "-1", "1,-2", "x", "1.5", [], [-1], [True], True, 1.5,
                                   [0.5], {"a": 1}])
@pytest.mark.parametrize("kind", [HIDDEN, BLOCK])
def test_bad_inputs_are_one_line_spec_errors(value, kind):
    with pytest.raises(ll.SpecError) as err:
        LayerSelection.parse(value, kind)
    msg = str(err.value)
    assert repr(value) in msg and "\n" not in msg
    assert ("0..L" if kind == HIDDEN else "1..L") in msg


def test_kinds_resolve_against_a_model():
    assert LayerSelection.parse("all").within(3, "m") == [0, 1, 2, 3]
    assert LayerSelection.parse("all", BLOCK).within(3, "m") == [1, 2, 3]
    assert LayerSelection.parse("0,3").within(3, "m") == [0, 3]
    with pytest.raises(ll.SpecError, match=r"layers 4 out of range for model m: valid hidden-state indices are 0\.\.3"):
        LayerSelection.parse("0,4").within(3, "model m")
    with pytest.raises(ll.SpecError, match=r"layers 0 out of range for m: valid blocks are 1\.\.3"):
        LayerSelection.parse("0,1", BLOCK).within(3, "m")


def test_resolve_against_what_is_stored():
    assert LayerSelection.parse("all").among([3, 1], "x") == [1, 3]
    assert LayerSelection.parse([1]).among([3, 1], "x") == [1]
    with pytest.raises(ll.NotFoundError, match=r"layer\(s\) \[2\] are not stored in e; stored layers: \[1, 3\]; do"):
        LayerSelection.parse("1,2").among([1, 3], "are not stored in e", "do")
    with pytest.raises(ll.NotFoundError, match=r"block\(s\) \[2\] have no sketch; stored blocks: \[1\]"):
        LayerSelection.parse("2", BLOCK).among([1], "have no sketch")


def test_specs_carry_their_kind_and_round_trip():
    spec = CaptureSpec(layers="0,3", jacobian=JacobianSketch(k=2, layers="2,1"))
    assert spec.layers == LayerSelection((0, 3), HIDDEN)
    assert spec.jacobian.layers == LayerSelection((1, 2), BLOCK)
    assert spec.to_dict()["layers"] == [0, 3] and spec.to_dict()["jacobian"]["layers"] == [1, 2]
    assert CaptureSpec.from_dict(spec.to_dict()) == spec
    assert CaptureSpec().to_dict()["layers"] == "all" and JacobianSketch().layers.is_all
    with pytest.raises(ll.SpecError, match="block indices are expected|blocks"):
        JacobianSketch(layers=LayerSelection((1,), HIDDEN))
