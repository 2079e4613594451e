"""Zarr v3 arrays of the lake: per-layer hidden states and their codecs.

Each array is ``[rows, d]`` with chunks of about 2 MiB, a fast Blosc/LZ4
compressor and a crc32c checksum codec, so a damaged chunk fails to decode
instead of returning wrong numbers. bfloat16 is stored as a ``uint16`` view with
``attrs["dtype"] = "bfloat16"`` and read back exactly.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from .fs import LakeFS

CHUNK_BYTES = 2 * 1024 * 1024
PHYSICAL_DTYPE = {"float16": "float16", "bfloat16": "uint16", "float32": "float32"}
BF16_NAN_BITS = 0x7FC0


def codecs() -> list[Any]:
    return [BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"), Crc32cCodec()]


def chunk_rows(row_bytes: int, n_rows: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, min(max(n_rows, 1), chunk_bytes // max(row_bytes, 1)))


def write_array(group: zarr.Group, name: str, data: np.ndarray, logical_dtype: str,
                attrs: dict[str, Any] | None = None, chunk_bytes: int = CHUNK_BYTES) -> zarr.Array:
    """Create ``group[name]`` holding ``data`` (already in its physical dtype), whole chunks at once."""
    row_bytes = int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize
    chunks = (chunk_rows(row_bytes, data.shape[0], chunk_bytes),) + tuple(data.shape[1:])
    # zarr reads a missing chunk file as fill_value, silently: a NaN fill makes a lost chunk of a float
    # array visible to the chunk reader (stored hidden states are never NaN: capture refuses them)
    fill: Any = 0
    extra: dict[str, Any] = {}
    if data.dtype.kind == "f":
        fill, extra = float("nan"), {"fill": "nan"}
    elif logical_dtype == "bfloat16" and data.dtype == np.uint16:
        fill, extra = BF16_NAN_BITS, {"fill": "nan"}
    # write_empty_chunks: every chunk is stored (a lost chunk file is then always damage), and zarr skips
    # its per-chunk "all fill value?" scan, which halves write throughput with a NaN fill
    arr = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype,
                             compressors=codecs(), fill_value=fill, config={"write_empty_chunks": True},
                             attributes={"dtype": logical_dtype, **extra, **(attrs or {})})
    if data.size:
        arr[...] = data
    return arr


def to_physical(x: np.ndarray, logical_dtype: str) -> np.ndarray:
    """float32 numpy -> physical storage array (used where no torch cast happened)."""
    if logical_dtype == "bfloat16":
        f = np.ascontiguousarray(x, dtype=np.float32)
        bits = f.view(np.uint32)
        # round to nearest even, like torch's float32 -> bfloat16 cast
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        return (rounded >> 16).astype(np.uint16)
    return np.asarray(x, dtype=PHYSICAL_DTYPE[logical_dtype])


def to_float32(raw: np.ndarray, logical_dtype: str) -> np.ndarray:
    """Physical storage array -> float32 (bfloat16 bits widened exactly)."""
    if logical_dtype == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32, copy=False)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((start, stop))
    return merged


def open_group(lake: LakeFS, *parts: str) -> zarr.Group:
    """Open a stored group read-only, Zarr v3 only (no fallback to v2 metadata)."""
    return zarr.open_group(lake.zarr_store(*parts, read_only=True), mode="r", zarr_format=3)


def damaged_chunks(arr: zarr.Array) -> list[tuple[str, str]]:
    """(chunk key relative to the array, error) for every chunk that fails to decode.

    Chunks along the first axis only (arrays of the lake are chunked by rows).
    """
    rows = arr.chunks[0]
    bad = []
    for i, start in enumerate(range(0, arr.shape[0], rows)):
        try:
            arr[start:start + rows]
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # codec errors of every kind mean damage
            key = arr.metadata.encode_chunk_key((i,) + (0,) * (arr.ndim - 1))
            bad.append((key, f"{type(exc).__name__}: {exc}"))
    return bad
