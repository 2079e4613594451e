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
from typing import Any, Literal, Union

from ..errors import SpecError

STORAGE_DTYPES = ("float16", "bfloat16", "float32")
OVERFLOW_MODES = ("truncate", "window", "error")

Layers = Union[Literal["all"], tuple[int, ...]]
Positions = Union[Literal["last", "all"], int, tuple[int, ...]]


def parse_layers(value: Any) -> Layers:
    """``"all"``, ``"0,3,6"``, an int or a sequence of ints -> canonical form."""
    if value is None or value == "all":
        return "all"
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise SpecError(f"layers={value!r} is not 'all' or a comma-separated list of integers like 0,3,6") from None
    if isinstance(value, int):
        value = [value]
    try:
        layers = tuple(sorted({int(v) for v in value}))
    except (TypeError, ValueError):
        raise SpecError(f"layers={value!r} is not 'all' or a list of integers") from None
    if not layers:
        raise SpecError("layers is empty; give 'all' or at least one layer index")
    if layers[0] < 0:
        raise SpecError(f"layer {layers[0]} is negative; layer indices start at 0 (0 = embeddings)")
    return layers


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
    layers: Layers = "all"
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
        object.__setattr__(self, "layers", parse_layers(self.layers))

    def identity(self) -> dict[str, Any]:
        """What makes two sketches of the same token comparable (layers excluded)."""
        pos = list(self.positions) if isinstance(self.positions, tuple) else self.positions
        out = {"k": self.k, "l": self.l, "positions": pos, "seed": self.seed, "exact": self.exact}
        if self.power_iterations:
            out["power_iterations"] = self.power_iterations
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers) if self.layers != "all" else "all"
        if isinstance(self.positions, tuple):
            d["positions"] = list(self.positions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JacobianSketch":
        d = dict(d)
        if isinstance(d.get("layers"), list):
            d["layers"] = tuple(d["layers"])
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

    layers: Layers = "all"
    max_length: int | None = None
    overflow: str = "truncate"
    stride: int = 0
    dtype: str = "float16"
    add_special_tokens: bool = True
    jacobian: JacobianSketch | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", parse_layers(self.layers))
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
            "layers": list(self.layers) if self.layers != "all" else "all",
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
        if isinstance(d.get("layers"), list):
            d["layers"] = tuple(d["layers"])
        if d.get("jacobian"):
            d["jacobian"] = JacobianSketch.from_dict(d["jacobian"])
        return cls(**d)

    def replace(self, **changes: Any) -> "CaptureSpec":
        return dataclasses.replace(self, **changes)
