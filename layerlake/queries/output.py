"""Writing a query result for the CLI: a table on the terminal, CSV, JSON lines or Parquet."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

import polars as pl

from ..errors import ReadOnlyError, SpecError

FORMATS = ("table", "csv", "json", "parquet")


def write_result(rel: Any, *, fmt: str, out: str | None, lake_fs: Any, max_rows: int = 200) -> None:
    """Write a DuckDB relation (``None`` for statements without a result) as ``fmt`` to ``out`` or stdout."""
    if fmt not in FORMATS:
        raise SpecError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "parquet" and not out:
        raise SpecError("--format parquet writes a binary file: give --out FILE.parquet")
    if out:
        _check_out(out, lake_fs)
    if rel is None:
        return
    if fmt == "parquet":
        rel.write_parquet(out)
        return
    df = rel.pl()
    if fmt == "table":
        text = render_table(df, max_rows=max_rows)
    elif fmt == "csv":
        buf = io.StringIO()
        _flatten_nested(df).write_csv(buf)
        text = buf.getvalue()
    else:
        buf = io.StringIO()
        df.write_ndjson(buf)
        text = buf.getvalue()
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


def _check_out(out: str, lake_fs: Any) -> None:
    if lake_fs.contains(os.path.abspath(out)):
        raise ReadOnlyError(f"--out {out} is inside the lake {lake_fs.url}; the lake is written only by ingest — "
                            "choose a path outside it")


def _flatten_nested(df: pl.DataFrame) -> pl.DataFrame:
    """CSV has no lists: list and array columns become ``[v1, v2, ...]`` text, structs their JSON."""
    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Array):
            col = pl.col(name).arr.to_list()
        elif isinstance(dtype, pl.List):
            col = pl.col(name)
        elif isinstance(dtype, pl.Struct):
            exprs.append(pl.col(name).struct.json_encode())
            continue
        else:
            continue
        text = col.list.eval(pl.element().cast(pl.String)).list.join(", ")
        exprs.append(pl.concat_str([pl.lit("["), text, pl.lit("]")]).alias(name))
    return df.with_columns(exprs) if exprs else df


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_scalar(x) for x in v) + "]"
    return str(v)


def render_table(df: pl.DataFrame, *, max_rows: int = 200, max_width: int = 60) -> str:
    """A plain-text table (rich), long vectors shortened to their first values."""
    from rich.console import Console
    from rich.table import Table

    t = Table(show_lines=False)
    for name, dtype in df.schema.items():
        t.add_column(f"{name}\n{_type_name(dtype)}", overflow="fold", max_width=max_width)
    for row in df.head(max_rows).iter_rows():
        t.add_row(*[_cell(v) for v in row])
    buf = io.StringIO()
    width = int(os.environ.get("COLUMNS", "160") or 160)
    Console(file=buf, width=width, force_terminal=False, no_color=True).print(t)
    more = f"({df.height:,} rows, {max_rows} shown; use LIMIT or --format csv --out FILE)\n" \
        if df.height > max_rows else f"({df.height:,} row{'s' if df.height != 1 else ''})\n"
    return buf.getvalue() + more


def _type_name(dtype: Any) -> str:
    if isinstance(dtype, pl.Array):
        return f"float[{dtype.size}]" if dtype.inner == pl.Float32 else str(dtype)
    return str(dtype).lower()


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, pl.Series):
        v = v.to_list()
    if isinstance(v, list):
        head = ", ".join(_fmt_scalar(x) for x in v[:4])
        return f"[{head}{', …' if len(v) > 4 else ''}] ({len(v)})" if len(v) > 4 else f"[{head}]"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
