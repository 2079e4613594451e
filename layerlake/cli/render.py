"""What the command line shows: rich tables on the terminal, CSV, JSON lines or Parquet files.

The only place of the package that writes to stdout (library code logs instead).
"""

from __future__ import annotations

import ast
import io
import os
import sys
from collections.abc import Sequence
from typing import Any

import polars as pl

from ..errors import ReadOnlyError, SpecError

FORMATS = ("table", "csv", "json", "parquet")


def console() -> Any:
    from rich.console import Console
    return Console()


# -- layerlake sql ------------------------------------------------------------------------------
BATCH_ROWS = 65536


def write_result(result: Any, *, fmt: str, out: str | None, lake: Any, max_rows: int = 200) -> None:
    """Write a ``lake.sql`` result (``None`` for statements without one) as ``fmt`` to ``out`` or stdout.

    ``table`` computes at most ``max_rows + 1`` rows; csv, json and parquet stream the result
    batch by batch (the whole result is never held). Runs under the result's time limit.
    """
    if fmt not in FORMATS:
        raise SpecError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "parquet" and not out:
        raise SpecError("--format parquet writes a binary file: give --out FILE.parquet")
    if out:
        check_out(out, lake)
    if result is None:
        return
    rel = result.relation
    with result.executing():
        if fmt == "table":
            df = pl.from_arrow(rel.limit(max_rows + 1).fetch_arrow_table())
            _write_text(render_table(df, max_rows=max_rows, more=df.height > max_rows), out)
        elif fmt == "parquet":
            _write_parquet(rel.fetch_record_batch(BATCH_ROWS), out)
        else:
            reader = rel.fetch_record_batch(BATCH_ROWS)
            fh = open(out, "w", encoding="utf-8") if out else sys.stdout
            try:
                first = True
                for batch in reader:
                    df = pl.from_arrow(batch)
                    if fmt == "csv":
                        fh.write(_flatten_nested(df).write_csv(include_header=first))
                    else:
                        fh.write(df.write_ndjson())
                    first = False
                if first and fmt == "csv":  # no rows: the header alone
                    fh.write(pl.from_arrow(reader.schema.empty_table()).write_csv())
            finally:
                if out:
                    fh.close()


def _write_text(text: str, out: str | None) -> None:
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


def _write_parquet(reader: Any, out: str) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(out, reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)


def check_out(out: str, lake: Any) -> None:
    """Refuse an ``--out`` path inside the lake, after resolving ``..``, ``//`` and symlinks."""
    from ..queries.sandbox import is_inside

    lake_fs = lake.store.fs
    inside = lake_fs.contains(out) or lake_fs.contains(os.path.realpath(out))
    if lake_fs.protocol in ("file", "local"):
        inside = inside or is_inside(out, lake_fs.root)
    if inside:
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


def render_table(df: pl.DataFrame, *, max_rows: int = 200, max_width: int = 60, more: bool = False) -> str:
    """A plain-text table (rich), long vectors shortened to their first values.

    ``more``: ``df`` is the first rows of a longer result (whose length is not known).
    """
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
    if more:
        tail = f"(more than {max_rows:,} rows, {max_rows} shown; use LIMIT or --format csv --out FILE)\n"
    elif df.height > max_rows:
        tail = f"({df.height:,} rows, {max_rows} shown; use LIMIT or --format csv --out FILE)\n"
    else:
        tail = f"({df.height:,} row{'s' if df.height != 1 else ''})\n"
    return buf.getvalue() + tail


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


# -- layerlake metric ---------------------------------------------------------------------------
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


def layer_table(frame: pl.DataFrame, names: Sequence[str], title: str) -> Any:
    """A rich table of ``frame`` (one row per layer, one column per metric in ``names``), 3 decimals."""
    from rich.table import Table
    t = Table(title=title)
    t.add_column("layer")
    for name in names:
        t.add_column(name)
    for row in frame.iter_rows(named=True):
        t.add_row(str(row["layer"]), *(f"{row[n]:.3f}" if row[n] is not None else "-" for n in names))
    return t


# -- layerlake ls -------------------------------------------------------------------------------
def print_summary(info: dict[str, Any]) -> None:
    """The tables of ``layerlake ls``: extractions, their provenance, datasets (``info`` from ``Lake.ls()``)."""
    from rich.table import Table
    con = console()
    t = Table(title=f"extractions in {info['lake']}")
    for col in ("extraction", "model", "revision", "layers", "d_model", "dtype", "documents", "tokens", "MB"):
        t.add_column(col)
    for e in info["extractions"]:
        layers = e["layers"]
        lay = f"{layers[0]}..{layers[-1]} ({len(layers)})" if layers else "-"
        t.add_row(e["extraction"], ", ".join(e["aliases"]) or str(e["model"]), str(e["revision"] or "-"), lay,
                  str(e["d_model"]), str(e["dtype"]), f"{e['documents']:,}", f"{e['tokens']:,}",
                  f"{e['bytes'] / 1e6:,.1f}")
    con.print(t)
    t = Table(title="provenance")
    for col in ("extraction", "model class", "weights", "tokenizer", "capture", "created"):
        t.add_column(col)
    for e in info["extractions"]:
        t.add_row(e["extraction"], str(e.get("model_class") or "-"), (e.get("weights_hash") or "-")[:12],
                  (e.get("tokenizer_hash") or "-")[:12], short_capture(e.get("capture")),
                  str(e.get("created") or "-"))
    con.print(t)
    t = Table(title="datasets")
    for col in ("dataset", "documents", "models"):
        t.add_column(col)
    for d in info["datasets"]:
        t.add_row(d["dataset"], f"{d['documents']:,}", ", ".join(d["models"]))
    con.print(t)


def short_capture(capture: Any) -> str:
    """``{'max_length': 256, ...}`` (or its str form) -> ``len=256 truncate float16``."""
    if isinstance(capture, str):
        try:
            capture = ast.literal_eval(capture)
        except (ValueError, SyntaxError):
            return capture
    if not isinstance(capture, dict):
        return "-"
    parts = [f"len={capture.get('max_length')}", str(capture.get("overflow"))]
    if capture.get("overflow") == "window":
        parts.append(f"stride={capture.get('stride')}")
    parts.append(str(capture.get("dtype")))
    if capture.get("add_special_tokens") is False:
        parts.append("no-special-tokens")
    return " ".join(parts)
