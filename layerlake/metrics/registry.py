"""The metric registry: every metric is a pure function plus a declaration.

A :class:`MetricDef` says what a metric consumes (``input``), at which
granularity it produces numbers, its parameters with defaults, a version (part
of cache keys), its direction and declared invariances. The lazy metric engine
(``layerlake.queries``) reads only the declaration to decide what to load.

Input kinds (what the engine passes as the first positional argument(s)):

- ``"doc_hidden"``: ``h: Float[ndarray, "tokens d_model"]`` (one document, one layer)
  -> float. Layer value = mean over documents (``per="doc"`` keeps them).
- ``"doc_nll"``: ``nll: Float[ndarray, "tokens"]`` (one document; NaN-free) -> float.
- ``"pooled"``: ``x: Float[ndarray, "docs d_model"]`` (masked-mean pooled documents
  of a dataset, one layer) -> float.
- ``"token_cloud"``: ``x: Float[ndarray, "tokens d_model"]`` (all tokens of the
  dataset at one layer, possibly subsampled by the engine) -> float.
- ``"views"``: ``v: Float[ndarray, "docs views d_model"]`` (mean-pooled augmented
  views of each original document, one layer) -> float.
- ``"layer_pair"``: ``x, y: Float[ndarray, "n d"]`` (same n rows, two layers or two
  models) -> float.
- ``"doc_trajectory"``: ``traj: Float[ndarray, "layers tokens d_model"]`` (one
  document, all requested layers in order) -> float (one value per document;
  the engine reports it once per model, not per layer).
- ``"jacobian_sketch"``: ``factors: Sequence[JacobianFactors]`` (one per layer, in
  layer order, for one token) -> ndarray (e.g. an L x L coupling matrix).

Optional engine hints (both default ``None``), declared by each metric in its own
``@metric(...)`` declaration:

- ``batched``: for ``"doc_hidden"`` metrics, a vectorised twin of ``fn`` taking
  ``hs: Float[ndarray, "docs tokens d_model"]`` (documents of EQUAL token count,
  same parameters) and returning ``Float[ndarray, "docs"]`` equal to ``fn`` applied
  document by document. The engine groups documents by token count and uses it
  when present (e.g. one batched ``eigvalsh`` for prompt entropy); a common test
  checks twin == function on random data.
- ``n_views``: for ``"views"`` metrics that need an exact number of views per
  document (InfoNCE, DiME: 2); the engine then feeds the first ``n_views``
  augmented views unless the caller picks others.

Parameters are canonical after :meth:`MetricDef.resolve_params`: a value takes the
type of its declared default (CLI strings are parsed; ``alpha=1`` for a float
parameter becomes ``1.0``; ``K=3.0`` for an int parameter becomes ``3``; numpy
scalars become Python numbers), so equal values give equal cache keys.

Granularities: ``"token"``, ``"document"``, ``"layer"``, ``"layer_pair"``, ``"model"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import NotFoundError, SpecError

INPUT_KINDS = (
    "doc_hidden",
    "doc_nll",
    "pooled",
    "token_cloud",
    "views",
    "layer_pair",
    "doc_trajectory",
    "jacobian_sketch",
)
GRANULARITIES = ("token", "document", "layer", "layer_pair", "model")
DIRECTIONS = ("higher", "lower", "none")
INVARIANCES = (
    "scale",  # x -> a x, a > 0 (global)
    "translation",  # x -> x + b (same b for every row)
    "rotation",  # x -> x R, R orthogonal
    "row_scale",  # each row rescaled by its own positive factor
    "permutation",  # reordering the rows (documents/tokens) of the input
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricDef:
    """Declaration of one metric. Frozen; validated on creation."""

    name: str
    fn: Callable[..., Any]
    input: str
    granularity: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    version: str = "1"
    direction: str = "none"
    invariances: tuple[str, ...] = ()
    source: str = ""
    description: str = ""
    provisional: bool = False
    batched: Callable[..., Any] | None = None
    n_views: int | None = None

    def __post_init__(self) -> None:
        if self.input not in INPUT_KINDS:
            raise SpecError(f"metric {self.name!r}: input {self.input!r} is not one of {INPUT_KINDS}")
        if self.granularity not in GRANULARITIES:
            raise SpecError(
                f"metric {self.name!r}: granularity {self.granularity!r} is not one of {GRANULARITIES}"
            )
        if self.direction not in DIRECTIONS:
            raise SpecError(f"metric {self.name!r}: direction {self.direction!r} is not one of {DIRECTIONS}")
        bad = [i for i in self.invariances if i not in INVARIANCES]
        if bad:
            raise SpecError(f"metric {self.name!r}: unknown invariances {bad}; valid: {INVARIANCES}")
        object.__setattr__(self, "params", dict(self.params))

    def resolve_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given``, canonicalised; unknown names raise listing the valid ones."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise SpecError(
                f"metric {self.name!r} has no parameter(s) {unknown}; valid parameters: "
                f"{sorted(self.params) or 'none'}"
            )
        out = dict(self.params)
        for key, value in given.items():
            default = self.params[key]
            out[key] = _canonical(self.name, key, value, default)
        return out

    def non_default_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Only the parameters that differ from the defaults (used in cache keys)."""
        resolved = self.resolve_params(given)
        return {k: v for k, v in sorted(resolved.items()) if v != self.params[k]}

    def __call__(self, *args: Any, **params: Any) -> Any:
        return self.fn(*args, **self.resolve_params(params))


def _canonical(metric: str, key: str, value: Any, default: Any) -> Any:
    """``value`` in the type of the declared ``default``: equal values, one representation."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        value = _parse(metric, key, value, default)
    if isinstance(default, bool) or isinstance(value, bool):
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, int) and isinstance(value, float):
        if not value.is_integer():
            raise SpecError(f"metric {metric!r}: parameter {key}={value!r} must be an integer (default {default})")
        return int(value)
    return value


def _parse(metric: str, key: str, value: str, default: Any) -> Any:
    """A CLI string in the type of the default value."""
    if isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(type(default[0])(v) for v in value.split(",")) if default else tuple(value.split(","))
    except ValueError:
        raise SpecError(
            f"metric {metric!r}: parameter {key}={value!r} is not a valid {type(default).__name__}"
        ) from None
    return value


REGISTRY: dict[str, MetricDef] = {}


def register(defn: MetricDef) -> MetricDef:
    """Add a metric to the registry (names are unique)."""
    if defn.name in REGISTRY:
        raise SpecError(f"metric {defn.name!r} is registered twice")
    REGISTRY[defn.name] = defn
    return defn


def metric(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of :func:`register`; returns the function unchanged."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        register(MetricDef(fn=fn, **kwargs))
        return fn

    return wrap


def get_metric(name: str) -> MetricDef:
    """Look a metric up by name; the error lists the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise NotFoundError(
            f"unknown metric {name!r}; valid metrics: {', '.join(sorted(REGISTRY))}"
        ) from None


def list_metrics() -> list[MetricDef]:
    return [REGISTRY[k] for k in sorted(REGISTRY)]
