"""Self-checked Parquet tables (dataset tables, metric-cache entries): a content crc32c inside the file.

A table that is replaced whole by one atomic write has no commit marker to hold
its checksum, and a second file would not be replaced in the same write. So the
file carries it: :func:`sealed_parquet` stores the crc32c of the table's content
(:func:`content_crc32c`: names, types and values, schema metadata left out) under
:data:`CONTENT_KEY` in the Parquet schema metadata, and :func:`read_sealed`
decodes the file, recomputes it and raises :class:`IntegrityError` naming the
file when it differs. Any changed byte either leaves the decoded values as they
were (then they are the original values) or changes them, their schema or the
stored checksum (then the check fails).
"""

from __future__ import annotations

import io

import crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import IntegrityError
from .fs import LakeFS
from .safety import check_rows

#: the schema-metadata key holding a sealed table's content crc32c (decimal)
CONTENT_KEY = b"layerlake.content_crc32c"


def content_crc32c(table: pa.Table) -> int:
    """crc32c of the table's column names, types and values (schema metadata and chunking left out).

    Computed from the values, not from a serialisation, so it does not depend
    on how a Parquet reader lays out buffers: per column its type, validity,
    and the values (fixed-width types as bytes with nulls zeroed, strings and
    binaries as lengths and bytes, other types through their Python values).
    """
    crc = crc32c.crc32c(str(table.num_rows).encode())
    for name, col in zip(table.column_names, table.columns):
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        crc = crc32c.crc32c(f"{name}\0{_type_name(arr.type)}\0".encode(), crc)
        crc = crc32c.crc32c(np.asarray(arr.is_valid(), dtype=np.bool_).tobytes(), crc)
        crc = crc32c.crc32c(_value_bytes(arr), crc)
    return crc


def _type_name(t: pa.DataType) -> str:
    """The type without the names Parquet does not keep (a list's item field is read back as ``element``)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"{type(t).__name__}<{_type_name(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ",".join(f"{t.field(i).name}:{_type_name(t.field(i).type)}" for i in range(t.num_fields)) + ">"
    if pa.types.is_map(t):
        return f"map<{_type_name(t.key_type)},{_type_name(t.item_type)}>"
    return str(t)


def _value_bytes(arr: pa.Array) -> bytes:
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        flat = arr.cast(pa.large_binary()).fill_null(b"")
        offsets = np.frombuffer(flat.buffers()[1], dtype=np.int64)[flat.offset:flat.offset + len(flat) + 1]
        data = flat.buffers()[2]
        body = b"" if data is None or len(flat) == 0 else data.to_pybytes()[int(offsets[0]):int(offsets[-1])]
        return np.diff(offsets).astype(np.int64).tobytes() + body
    if pa.types.is_boolean(t):
        return np.asarray(arr.fill_null(False), dtype=np.bool_).tobytes()
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return arr.fill_null(pa.scalar(0, t)).to_numpy(zero_copy_only=False).tobytes()
    return repr(arr.to_pylist()).encode()


def sealed_parquet(table: pa.Table) -> bytes:
    """Parquet bytes of ``table`` (zstd) with its content crc32c in the schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta[CONTENT_KEY] = str(content_crc32c(table)).encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd")
    return buf.getvalue()


def read_sealed(fs: LakeFS, *parts: str, required: bool = True, distinct_rows: bool = False) -> pa.Table:
    """A sealed table, checked; IntegrityError naming the file if it is missing, undecodable or changed.

    A file without the checksum (written before tables were sealed) is returned
    unchecked unless ``required``. The checksum key is removed from the result. ``distinct_rows``: each row
    holds a distinct document hash, so a row count the file's size cannot hold is refused before decoding.
    """
    url = fs.url_of(*parts)
    try:
        data = fs.read_bytes(*parts)
    except FileNotFoundError:
        raise IntegrityError(f"{url} is missing; run `layerlake verify`") from None
    try:
        if distinct_rows:
            check_rows(pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows, len(data), where=url)
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, ValueError, OSError) as exc:  # bytes in memory: any failure is damage
        raise IntegrityError(f"cannot read {url}: {type(exc).__name__}: {exc}; the file is damaged or truncated — "
                             "run `layerlake verify`") from None
    meta = dict(table.schema.metadata or {})
    stored = meta.pop(CONTENT_KEY, None)
    table = table.replace_schema_metadata(meta or None)
    if stored is None:
        if required:
            raise IntegrityError(f"{url} has no content checksum ({CONTENT_KEY.decode()}); the file is damaged or "
                                 "was not written by layerlake — run `layerlake verify`")
        return table
    if stored != str(content_crc32c(table)).encode():
        raise IntegrityError(f"{url} is damaged: its content checksum does not match its values; run "
                             "`layerlake verify`")
    return table
