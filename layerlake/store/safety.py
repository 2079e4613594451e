"""Rules that keep an untrusted lake from escaping its folder or running code.

A lake (or an export) from someone else is data only: JSON, Parquet and Zarr v3
with an allow-list of codecs and numeric data types. Nothing is unpickled.
Names and paths taken from manifests are checked against the patterns of
:mod:`.layout` (:func:`~.layout.safe_relpath`) before they are used as paths.

Bounds, checked before anything is allocated (module constants; a lake that
needs more is refused with a message naming the bound):

- JSON files: at most :data:`MAX_JSON_BYTES`, nested at most :data:`MAX_JSON_DEPTH`;
- Zarr arrays: at most :data:`MAX_ARRAY_ELEMENTS` elements, :data:`MAX_CHUNK_ELEMENTS`
  per chunk and :data:`MAX_CHUNKS` chunks (and readers and verify compare the
  shape with the commit marker's row count and ``d_model``);
- Parquet tables: at most one row per :data:`MIN_ROW_BYTES` bytes of file when
  every row carries a distinct hash (a few KB cannot hold 20M rows of them).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import IntegrityError

MAX_JSON_BYTES = 256 << 20
MAX_JSON_DEPTH = 64
MAX_ARRAY_ELEMENTS = 1 << 40
MAX_CHUNK_ELEMENTS = 1 << 28
MAX_CHUNKS = 1 << 24
#: a document hash (128 bits) cannot be stored in fewer bytes, whatever the encoding
MIN_ROW_BYTES = 16

#: Zarr v3 codecs whose decoding is plain arithmetic (no pickle, no object arrays)
SAFE_CODECS = frozenset({"bytes", "blosc", "crc32c", "zstd", "gzip", "transpose", "sharding_indexed"})
SAFE_DATA_TYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                             "float16", "float32", "float64"})


def check_zarr_metadata(meta: Any, *, where: str) -> None:
    """Refuse Zarr metadata that is not plain v3 with safe codecs and numeric data.

    ``meta`` is the parsed ``zarr.json`` (or ``Array.metadata.to_dict()``).
    """
    if not isinstance(meta, dict):
        raise IntegrityError(f"{where}: Zarr metadata is not a JSON object")
    if meta.get("zarr_format", 3) != 3:
        raise IntegrityError(f"{where}: zarr_format {meta.get('zarr_format')!r}, expected 3")
    node = meta.get("node_type")
    if node == "group":
        return
    if node != "array":
        raise IntegrityError(f"{where}: Zarr node_type {node!r}, expected 'array' or 'group'")
    dtype = meta.get("data_type")
    if not isinstance(dtype, str) or dtype not in SAFE_DATA_TYPES:
        raise IntegrityError(f"{where}: Zarr data_type {dtype!r} is not a plain numeric type "
                             f"({', '.join(sorted(SAFE_DATA_TYPES))}); refusing to decode it")
    if meta.get("storage_transformers"):
        raise IntegrityError(f"{where}: Zarr storage_transformers are not allowed")
    _check_codecs(meta.get("codecs"), where)
    _check_shape(meta, where)


def _check_shape(meta: dict[str, Any], where: str) -> None:
    """Refuse shapes and chunk shapes that are not small non-negative integers, or too large to allocate."""
    shape = meta.get("shape")
    grid = meta.get("chunk_grid")
    chunks = grid.get("configuration", {}).get("chunk_shape") if isinstance(grid, dict) else None
    if chunks is None and "chunks" in meta:   # Array.metadata.to_dict() of zarr-python
        chunks = meta["chunks"]
    for name, dims, low in (("shape", shape, 0), ("chunk shape", chunks, 1)):
        if not isinstance(dims, (list, tuple)) or len(dims) > 8 or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= low for n in dims):
            raise IntegrityError(f"{where}: Zarr {name} {dims!r} is not a list of up to 8 integers >= {low}")
    if len(chunks) != len(shape):
        raise IntegrityError(f"{where}: Zarr chunk shape {chunks} does not match shape {shape}")
    for what, count, bound in (("elements", math.prod(shape), MAX_ARRAY_ELEMENTS),
                               ("elements per chunk", math.prod(chunks), MAX_CHUNK_ELEMENTS),
                               ("chunks", math.prod(-(-n // c) for n, c in zip(shape, chunks)), MAX_CHUNKS)):
        if count > bound:
            raise IntegrityError(f"{where}: Zarr array of shape {shape} (chunks {chunks}) has {count:,} {what}, "
                                 f"more than the {bound:,} layerlake allows; refusing to allocate it")


def check_array_shape(shape: Any, *, where: str, rows: int, cols: int | None = None) -> None:
    """Refuse an array whose shape disagrees with its commit marker (``rows`` x ``cols``)."""
    if not shape or shape[0] != rows or (cols is not None and (len(shape) < 2 or shape[1] != cols)):
        want = f"({rows}, {cols})" if cols is not None else f"({rows}, ...)"
        raise IntegrityError(f"{where}: Zarr shape {tuple(shape or ())} disagrees with the commit marker {want}; "
                             "run `layerlake verify`")


def check_rows(num_rows: int, nbytes: int, *, where: str) -> None:
    """Refuse a table of distinct hashes claiming more rows than its ``nbytes`` can hold."""
    bound = nbytes // MIN_ROW_BYTES + 16
    if num_rows > bound:
        raise IntegrityError(f"{where}: claims {num_rows:,} rows in {nbytes:,} bytes (at most {bound:,} rows of "
                             "distinct document hashes fit); refusing to read it")


def check_json_shape(obj: Any, *, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``obj`` if its lists and objects nest at most ``max_depth`` levels, else :class:`IntegrityError`."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                raise IntegrityError(f"{where}: JSON nested deeper than {max_depth} levels; the file is damaged "
                                     "or hostile — run `layerlake verify`")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return obj


def bounded_json_loads(raw: bytes | str, where: str) -> Any:
    """``json.loads`` with the size and depth bounds; JSONDecodeError propagates for the caller to word."""
    if len(raw) > MAX_JSON_BYTES:
        raise IntegrityError(f"{where}: {len(raw):,} bytes of JSON, more than the {MAX_JSON_BYTES >> 20} MiB "
                             "layerlake reads; refusing it")
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{where}: not UTF-8 JSON ({exc.reason} at byte {exc.start}); the file is damaged — "
                             "run `layerlake verify`") from None
    except RecursionError:
        raise IntegrityError(f"{where}: JSON nested too deeply to read; the file is damaged or hostile — run "
                             "`layerlake verify`") from None
    return check_json_shape(obj, where=where)


def _check_codecs(codecs: Any, where: str) -> None:
    if not isinstance(codecs, (list, tuple)):
        raise IntegrityError(f"{where}: Zarr codecs must be a list, got {type(codecs).__name__}")
    for codec in codecs:
        name = codec.get("name") if isinstance(codec, dict) else None
        if name not in SAFE_CODECS:
            raise IntegrityError(f"{where}: Zarr codec {name!r} is not allowed (allowed: {', '.join(sorted(SAFE_CODECS))}); "
                                 "refusing to decode it")
        if name == "sharding_indexed":
            conf = codec.get("configuration") or {}
            _check_codecs(conf.get("codecs", []), where)
            _check_codecs(conf.get("index_codecs", []), where)


def check_array(arr: Any, *, where: str) -> None:
    """:func:`check_zarr_metadata` for an opened ``zarr.Array`` (before any chunk is decoded)."""
    meta = arr.metadata.to_dict()
    meta["codecs"] = [c if isinstance(c, dict) else c.to_dict() for c in meta.get("codecs", ())]
    meta.setdefault("node_type", "array")
    meta["shape"], meta["chunks"] = list(arr.shape), list(arr.chunks)
    meta.pop("chunk_grid", None)
    check_zarr_metadata(meta, where=where)
