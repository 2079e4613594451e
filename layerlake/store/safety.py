"""Rules that keep an untrusted lake from escaping its folder or running code.

A lake (or an export) from someone else is data only: JSON, Parquet and Zarr v3
with an allow-list of codecs and numeric data types. Nothing is unpickled.
Names and paths taken from manifests are checked against the patterns of
:mod:`.layout` (:func:`~.layout.safe_relpath`) before they are used as paths.
"""

from __future__ import annotations

from typing import Any

from ..errors import IntegrityError

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
    check_zarr_metadata(meta, where=where)
