"""Frozen, validated requests that double as manifest entries and cache keys.

``CaptureSpec`` says what an ingest stores; ``JacobianSketch`` says how block
Jacobians are sketched. Both round-trip through JSON (``to_dict``/``from_dict``).
The *identity* of a capture (what makes two extractions the same) is
``CaptureSpec.identity()``: token-level settings and the storage dtype. Layers
and Jacobian settings are not part of it: they are stored per shard, so asking
for more layers later extends the same extraction (see docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Literal, Union

from ..errors import NotFoundError, SpecError

STORAGE_DTYPES = ("float16", "bfloat16", "float32")
OVERFLOW_MODES = ("truncate", "window", "error")

Positions = Union[Literal["last", "all"], int, tuple[int, ...]]

HIDDEN = "hidden"
BLOCK = "block"
_KINDS = {HIDDEN: ("hidden-state indices", 0, "0 = embeddings"),
          BLOCK: ("blocks", 1, "block l maps hidden_states[l-1] to hidden_states[l]; 0 is the embeddings")}


@dataclasses.dataclass(frozen=True)
class LayerSelection:
    """Which layers a request means: all of them (``indices=None``) or explicit ones, of one kind.

    kind ``"hidden"``: hidden-state indices 0..L (0 = embeddings, L = the last
    block's output); kind ``"block"``: transformer blocks 1..L (block l maps
    ``hidden_states[l-1]`` to ``hidden_states[l]``). :meth:`parse` reads user
    input; :meth:`within` resolves against a model of L blocks (out of range is
    a :class:`SpecError`), :meth:`among` against what is stored (missing is a
    :class:`NotFoundError`).
    """

    indices: tuple[int, ...] | None = None
    kind: str = HIDDEN

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise SpecError(f"layer kind {self.kind!r} must be {HIDDEN!r} or {BLOCK!r}")
        if self.indices is not None:
            idx = tuple(self.indices)
            if not idx or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx):
                raise SpecError(f"layers={self.indices!r}: {self._expected()}")
            object.__setattr__(self, "indices", tuple(sorted(set(idx))))

    @classmethod
    def parse(cls, value: Any, kind: str = HIDDEN) -> "LayerSelection":
        """``"all"``/None, an int, ``"0,3,6"``, a sequence of ints or a LayerSelection of this kind."""
        if isinstance(value, LayerSelection):
            if value.kind != kind:
                raise SpecError(f"layers={value} are {value.kind} indices where {kind} indices are expected")
            return value
        if value is None or (isinstance(value, str) and value == "all"):
            return cls(None, kind)
        raw = value
        bad = SpecError(f"layers={raw!r}: {cls(None, kind)._expected()}")
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
            if not all(p.lstrip("-").isdigit() for p in parts):
                raise bad
            value = [int(p) for p in parts]
        if hasattr(value, "__index__") and not isinstance(value, bool):  # an int or a numpy int
            value = [operator.index(value)]
        try:
            if isinstance(value, (bool, dict)) or any(isinstance(v, bool) for v in value):
                raise TypeError
            items = [operator.index(v) for v in value]  # ints, numpy ints; not floats
        except TypeError:
            raise bad from None
        if not items:
            raise bad
        if min(items) < 0:
            raise SpecError(f"layers={raw!r}: {min(items)} is negative; {cls(None, kind)._expected()}")
        return cls(tuple(items), kind)

    def _expected(self) -> str:
        noun, first, note = _KINDS[self.kind]
        return (f"give 'all' or comma-separated {noun} like '{first},3,6' (valid: {first}..L for a model of "
                f"L blocks; {note})")

    @property
    def is_all(self) -> bool:
        return self.indices is None

    @property
    def value(self) -> Union[Literal["all"], tuple[int, ...]]:
        """The canonical form: ``"all"`` or sorted unique indices."""
        return "all" if self.indices is None else self.indices

    def to_json(self) -> Union[Literal["all"], list[int]]:
        return "all" if self.indices is None else list(self.indices)

    def within(self, n_layers: int, what: str) -> list[int]:
        """The indices for ``what``, a model of ``n_layers`` blocks ("all" = every valid one)."""
        noun, first, note = _KINDS[self.kind]
        if self.indices is None:
            return list(range(first, n_layers + 1))
        bad = [i for i in self.indices if not first <= i <= n_layers]
        if bad:
            raise SpecError(f"layers {','.join(map(str, bad))} out of range for {what}: valid {noun} are "
                            f"{first}..{n_layers} ({note})")
        return list(self.indices)

    def among(self, available: Any, where: str, hint: str = "") -> list[int]:
        """The indices among ``available`` (stored ones; "all" = all of them), else NotFoundError.

        ``where`` completes "layer(s) [..] are not stored ..."; ``hint`` says what to do.
        """
        stored = sorted(set(available))
        if self.indices is None:
            return stored
        bad = [i for i in self.indices if i not in stored]
        if bad:
            noun = "layer" if self.kind == HIDDEN else "block"
            raise NotFoundError(f"{noun}(s) {bad} {where}; stored {noun}s: {stored}" + (f"; {hint}" if hint else ""))
        return list(self.indices)

    def __str__(self) -> str:
        return "all" if self.indices is None else ",".join(map(str, self.indices))


def parse_layers(value: Any, kind: str = HIDDEN) -> Union[Literal["all"], tuple[int, ...]]:
    """``LayerSelection.parse(value, kind).value``: ``"all"`` or sorted unique indices."""
    return LayerSelection.parse(value, kind).value


def _parse_positions(pos: Any) -> Positions:
    """``"last"``, ``"all"``, N (``"5"``) or explicit positions (``"0,-1"``, ``[3]``) -> canonical form."""
    bad = (f"JacobianSketch positions={pos!r} must be 'last', 'all', a positive integer N (sample N per document) "
           "or a list of explicit positions like '0,-1'")
    if isinstance(pos, str) and pos not in ("last", "all"):
        parts = [p.strip() for p in pos.split(",")]
        try:
            if len(parts) == 1:
                pos = int(parts[0])
            else:
                pos = tuple(int(p) for p in parts if p)
        except ValueError:
            raise SpecError(bad) from None
    if isinstance(pos, (list, tuple)):
        if not pos or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos):
            raise SpecError(bad)
        return tuple(sorted(set(pos), key=lambda p: (p < 0, p)))
    if isinstance(pos, bool) or not (isinstance(pos, int) or pos in ("last", "all")):
        raise SpecError(bad)
    if isinstance(pos, int) and pos < 1:
        raise SpecError(f"JacobianSketch positions={pos} must be >= 1 (N positions sampled per document)")
    return pos


@dataclasses.dataclass(frozen=True, kw_only=True)
class JacobianSketch:
    """One-pass sketch of residual block Jacobians (METRICS.md 8.3).

    k: columns of the range sketch Y = Jres Omega (``k >= 1``);
    l: rows of the co-range sketch W = Psi^T Jres (default ``2k + 1``);
    positions: ``"last"`` (last token of each document window), ``"all"``, an
    int N (N positions sampled per window with ``seed``; all of them when the
    window is shorter) or a tuple of explicit positions (negative = from the end,
    e.g. ``(0, -1)``; CLI: ``"0,-1"``, a single one as ``"5,"``); layers: blocks to
    sketch (``"all"`` or block indices 1..L); exact: also store the full d x d Jacobian;
    power_iterations: q > 0 stores ``Q = orth((Jres Jres^T)^q Jres Omega)`` and
    ``B = Q^T Jres`` instead of the one-pass ``Y, W`` (METRICS.md 8.2: (2q + 2) k
    products instead of k + l, far more accurate top singular vectors when the
    spectrum decays slowly; ``l`` is then unused).
    """

    k: int = 21
    l: int | None = None
    positions: Positions = "last"
    layers: LayerSelection = LayerSelection(None, BLOCK)
    seed: int = 0
    exact: bool = False
    power_iterations: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise SpecError(f"JacobianSketch k={self.k!r} must be a positive integer (e.g. 21)")
        l = 2 * self.k + 1 if self.l is None else self.l
        if not isinstance(l, int) or l < self.k:
            raise SpecError(f"JacobianSketch l={self.l!r} must be an integer >= k={self.k} (default 2k+1)")
        object.__setattr__(self, "l", l)
        if not isinstance(self.power_iterations, int) or isinstance(self.power_iterations, bool) \
                or self.power_iterations < 0:
            raise SpecError(f"JacobianSketch power_iterations={self.power_iterations!r} must be an integer >= 0 "
                            "(0 = one-pass sketch; 2-4 for accurate top singular vectors)")
        object.__setattr__(self, "positions", _parse_positions(self.positions))
        object.__setattr__(self, "layers", LayerSelection.parse(self.layers, BLOCK))

    def identity(self) -> dict[str, Any]:
        """What makes two sketches of the same token comparable (layers excluded)."""
        pos = list(self.positions) if isinstance(self.positions, tuple) else self.positions
        out = {"k": self.k, "l": self.l, "positions": pos, "seed": self.seed, "exact": self.exact}
        if self.power_iterations:
            out["power_iterations"] = self.power_iterations
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["layers"] = self.layers.to_json()
        if isinstance(self.positions, tuple):
            d["positions"] = list(self.positions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JacobianSketch":
        return cls(**d)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaptureSpec:
    """What an ingest captures and how it is stored.

    layers: hidden-state indices (0 = embeddings, L = last block) or "all";
    max_length: tokens per forward window (None = the model's limit);
    overflow: what to do with longer documents ("truncate", "window", "error");
    stride: tokens shared by consecutive windows (overflow="window");
    dtype: storage dtype of hidden states.
    """

    layers: LayerSelection = LayerSelection(None, HIDDEN)
    max_length: int | None = None
    overflow: str = "truncate"
    stride: int = 0
    dtype: str = "float16"
    add_special_tokens: bool = True
    jacobian: JacobianSketch | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", LayerSelection.parse(self.layers, HIDDEN))
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise SpecError(f"max_length={self.max_length!r} must be an integer >= 2 (or None for the model's limit)")
        if self.overflow not in OVERFLOW_MODES:
            raise SpecError(f"overflow={self.overflow!r} must be one of {', '.join(OVERFLOW_MODES)}")
        if not isinstance(self.stride, int) or self.stride < 0:
            raise SpecError(f"stride={self.stride!r} must be a non-negative integer (tokens shared by windows)")
        if self.max_length is not None and self.stride >= self.max_length // 2 and self.stride:
            raise SpecError(f"stride={self.stride} must be less than half of max_length={self.max_length}")
        if self.dtype not in STORAGE_DTYPES:
            raise SpecError(f"dtype={self.dtype!r} must be one of {', '.join(STORAGE_DTYPES)}")
        if self.jacobian is not None and not isinstance(self.jacobian, JacobianSketch):
            if isinstance(self.jacobian, dict):
                object.__setattr__(self, "jacobian", JacobianSketch.from_dict(self.jacobian))
            else:
                raise SpecError(f"jacobian={self.jacobian!r} must be a layerlake.JacobianSketch or None")

    def identity(self) -> dict[str, Any]:
        """Settings that change the stored rows or values (layers and Jacobians excluded)."""
        return {
            "max_length": self.max_length,
            "overflow": self.overflow,
            "stride": self.stride if self.overflow == "window" else 0,
            "dtype": self.dtype,
            "add_special_tokens": self.add_special_tokens,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers.to_json(),
            "max_length": self.max_length,
            "overflow": self.overflow,
            "stride": self.stride,
            "dtype": self.dtype,
            "add_special_tokens": self.add_special_tokens,
            "jacobian": self.jacobian.to_dict() if self.jacobian else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CaptureSpec":
        d = dict(d)
        if d.get("jacobian"):
            d["jacobian"] = JacobianSketch.from_dict(d["jacobian"])
        return cls(**d)

    def replace(self, **changes: Any) -> "CaptureSpec":
        return dataclasses.replace(self, **changes)
