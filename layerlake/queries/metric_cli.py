"""Helpers of the ``layerlake metric`` / ``layerlake plot`` commands: parse ``--param``, write results."""

from __future__ import annotations

import sys
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


def write_frame(frame: pl.DataFrame, fmt: str, out: str | None, title: str = "",
                drop: Sequence[str] = ()) -> str | None:
    """Write ``frame`` as table/csv/json/parquet to ``out`` or stdout; returns a note for the user."""
    if fmt == "parquet":
        if not out:
            raise SpecError("--format parquet needs --out FILE.parquet")
        frame.write_parquet(out)
        return f"wrote {frame.height} row(s) to {out}"
    if fmt == "csv":
        text = frame.write_csv()
    elif fmt == "json":
        text = frame.write_json()
    elif fmt == "table":
        if out:
            text = frame.write_csv()
        else:
            print_table(frame.drop([c for c in drop if c in frame.columns]), title)
            return None
    else:
        raise SpecError(f"--format {fmt!r} must be table, csv, json or parquet")
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
        return f"wrote {frame.height} row(s) to {out}"
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return None


def print_table(frame: pl.DataFrame, title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    cols = [c for c in frame.columns if frame[c].null_count() < frame.height or c in ("value",)]
    t = Table(title=title or None)
    for c in cols:
        t.add_column(c, justify="right" if frame[c].dtype.is_numeric() else "left")
    for row in frame.select(cols).iter_rows():
        t.add_row(*(_fmt(v) for v in row))
    Console(file=sys.stdout, width=200).print(t)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
