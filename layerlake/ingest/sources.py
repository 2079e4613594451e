"""Text sources -> documents (text + metadata), in the order given.

Accepted: a list of strings (or of dicts with a text column), a ``.txt`` file
(one document per non-empty line), a folder of ``.txt`` files (one document per
file, sorted by name), ``.jsonl``, ``.parquet``, ``.csv`` (``text_column``), a
polars or pandas DataFrame, or a Hugging Face ``datasets.Dataset``. Every other
column is kept as document metadata. Empty documents are skipped and counted;
repeated texts are kept once (first occurrence) and counted.

Lines of ``.txt`` and ``.jsonl`` files end at ``\n`` (or ``\r\n``) only: other
Unicode line separators (U+2028, ...) are text. Metadata must fit a Parquet
column: nested at most :data:`MAX_META_DEPTH` levels, integers within int64;
anything else is refused before the lake is touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..errors import NotFoundError, SpecError
from ..store import doc_hash

#: how deeply lists and objects may nest in one metadata value
MAX_META_DEPTH = 32
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclasses.dataclass(frozen=True)
class Document:
    text: str
    doc_hash: str
    meta: dict[str, Any]


@dataclasses.dataclass
class Corpus:
    documents: list[Document]
    source: str
    n_empty: int = 0
    n_duplicates: int = 0

    @property
    def meta_columns(self) -> list[str]:
        cols: dict[str, None] = {}
        for d in self.documents:
            for k in d.meta:
                cols.setdefault(k, None)
        return list(cols)


def load_corpus(data: Any, *, text_column: str = "text") -> Corpus:
    """Read ``data`` into a :class:`Corpus`; raises with the input named on bad input."""
    source, rows = _rows(data, text_column)
    docs: list[Document] = []
    seen: set[str] = set()
    n_empty = n_dup = 0
    for i, (text, meta) in enumerate(rows):
        if text is None:
            n_empty += 1
            continue
        if not isinstance(text, str):
            raise SpecError(f"{source}: row {i + 1} has a {type(text).__name__} in text column "
                            f"{text_column!r}, expected a string")
        if not text.strip():
            n_empty += 1
            continue
        try:
            h = doc_hash(text)
        except UnicodeEncodeError as exc:
            raise SpecError(
                f"{source}: row {i + 1} is not valid Unicode text (lone surrogate {text[exc.start]!r} at character "
                f"{exc.start}); decode the source with errors='replace' or fix that row"
            ) from None
        if h in seen:
            n_dup += 1
            continue
        seen.add(h)
        for key, value in meta.items():
            _check_meta(value, source, i + 1, key)
        docs.append(Document(text=text, doc_hash=h, meta=meta))
    if not docs:
        raise SpecError(
            f"{source}: the corpus is empty ({n_empty} empty document(s) skipped); give at least one non-empty text"
        )
    return Corpus(documents=docs, source=source, n_empty=n_empty, n_duplicates=n_dup)


def _check_meta(value: Any, source: str, row: int, key: str) -> None:
    """Refuse a metadata value a Parquet dataset table cannot hold (too deep, an integer beyond int64)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, bool):
            continue
        if isinstance(v, int) and not _INT64[0] <= v <= _INT64[1]:
            raise SpecError(f"{source}: row {row}: metadata {key!r} holds the integer {str(v)[:30]}..., beyond "
                            "int64; store it as a string")
        if isinstance(v, (list, tuple, dict)):
            if depth > MAX_META_DEPTH:
                raise SpecError(f"{source}: row {row}: metadata {key!r} nests lists/objects more than "
                                f"{MAX_META_DEPTH} levels deep; flatten it or store it as a JSON string")
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))


def _lines(text: str) -> list[str]:
    """The lines of a text file: split at ``\n``, a trailing ``\r`` removed (not at U+2028 and the like)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _rows(data: Any, text_column: str) -> tuple[str, Iterable[tuple[Any, dict[str, Any]]]]:
    if isinstance(data, (str, os.PathLike)):
        return _rows_from_path(Path(data), text_column)
    if isinstance(data, dict):
        raise SpecError("a dict is not a corpus; pass a list of strings, a file path or a DataFrame")
    mod = type(data).__module__
    if mod.startswith("polars"):
        return "DataFrame", _rows_from_records(data.to_dicts(), text_column, "polars DataFrame", list(data.columns))
    if mod.startswith("pandas"):
        records = data.to_dict(orient="records")
        return "DataFrame", _rows_from_records(records, text_column, "pandas DataFrame", list(map(str, data.columns)))
    if mod.startswith("datasets"):
        cols = list(data.column_names)
        return "Dataset", _rows_from_records(iter(data), text_column, "datasets.Dataset", cols)
    if isinstance(data, (list, tuple)) or hasattr(data, "__iter__"):
        items = list(data)
        if items and all(isinstance(x, dict) for x in items):
            cols = list(items[0])
            return "list", _rows_from_records(items, text_column, "list of dicts", cols)
        for i, x in enumerate(items):
            if x is not None and not isinstance(x, str):
                raise SpecError(f"list item {i} is a {type(x).__name__}; a corpus list holds strings (or dicts)")
        return "list", [(x, {}) for x in items]
    raise SpecError(f"cannot read a corpus from {type(data).__name__}; pass a list of strings, a path or a DataFrame")


def _rows_from_records(records: Iterable[dict[str, Any]], text_column: str, what: str,
                       columns: list[str]) -> list[tuple[Any, dict[str, Any]]]:
    if text_column not in columns:
        raise SpecError(f"{what} has no text column {text_column!r}; columns: {columns}; pass text_column=")
    out = []
    for r in records:
        meta = {k: _plain(v) for k, v in r.items() if k != text_column}
        out.append((r.get(text_column), meta))
    return out


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, (list, dict, str, bytes)):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return v
    return v


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(
            f"{path}: line {line} is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
            "convert the file to UTF-8 (e.g. iconv -t UTF-8)"
        ) from None


def _rows_from_path(path: Path, text_column: str) -> tuple[str, list[tuple[Any, dict[str, Any]]]]:
    if not path.exists():
        raise NotFoundError(f"corpus {path} does not exist; check the path")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise SpecError(f"corpus folder {path} has no .txt files; put one document per .txt file there")
        return str(path), [(_read_text(p), {"file": str(p.relative_to(path))}) for p in files]
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text", ".md"):
        text = _read_text(path)
        return str(path), [(line, {"line": i + 1}) for i, line in enumerate(_lines(text)) if line.strip()]
    if suffix in (".jsonl", ".ndjson"):
        text = _read_text(path)
        rows = []
        columns: dict[str, None] = {}
        for i, line in enumerate(_lines(text)):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SpecError(f"{path}: line {i + 1} is not valid JSON ({exc.msg}); fix or remove that line") from None
            except RecursionError:
                raise SpecError(f"{path}: line {i + 1} nests JSON too deeply to read; flatten that line") from None
            if not isinstance(rec, dict):
                raise SpecError(f"{path}: line {i + 1} is a JSON {type(rec).__name__}, expected an object")
            columns.update(dict.fromkeys(rec))
            rows.append(rec)
        if rows and text_column not in columns:
            raise SpecError(f"{path} has no text column {text_column!r}; columns: {list(columns)}; pass text_column=")
        return str(path), [(r.get(text_column), {k: v for k, v in r.items() if k != text_column}) for r in rows]
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise SpecError(f"{path}: cannot read as Parquet ({exc})") from None
        return str(path), _rows_from_records(table.to_pylist(), text_column, str(path), table.column_names)
    if suffix in (".csv", ".tsv"):
        import pyarrow.csv as pacsv
        _read_text(path)  # validates encoding with a line number
        opts = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True)
        try:
            table = pacsv.read_csv(path, parse_options=opts)
        except Exception as exc:
            raise SpecError(f"{path}: cannot parse as CSV ({exc})") from None
        return str(path), _rows_from_records(table.to_pylist(), text_column, str(path), table.column_names)
    raise SpecError(f"corpus {path}: unsupported file type {suffix!r}; use .txt, .jsonl, .parquet, .csv or a folder")
