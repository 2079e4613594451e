"""Arguments of the ``layerlake metric`` / ``layerlake plot`` commands: parse ``--param``, list the metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from ..errors import SpecError
from ..metrics import list_metrics


def parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    """``["alpha=2", "pairs=0:3,3:6"]`` -> ``{"alpha": "2", "pairs": "0:3,3:6"}`` (typed later by the registry)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SpecError(f"--param {item!r} must look like key=value (e.g. --param alpha=2)")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise SpecError(f"--param {item!r} has an empty key")
        out[key] = value.strip()
    return out


def metric_listing() -> pl.DataFrame:
    return pl.DataFrame([{"metric": d.name, "input": d.input, "granularity": d.granularity,
                          "params": ", ".join(f"{k}={v!r}" for k, v in d.params.items()),
                          "direction": d.direction, "source": d.source} for d in list_metrics()])
