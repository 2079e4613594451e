"""Append-only shards, committed atomically (data first, marker last).

A shard is ``extractions/<eid>/shards/<sid>/`` holding ``docs.parquet``,
``tokens.parquet``, ``hidden.zarr/`` and optionally ``jacobian.zarr/``. It
becomes visible only when ``extractions/<eid>/commits/<sid>.json`` (the commit
marker, listing every file with its size and the Parquet files' crc32c) is
written. A failure before that removes the partial shard; a crash leaves an
orphan folder that readers ignore and ``verify``/``gc`` report.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import logging
import os
import socket
from typing import Any

import crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from ..errors import LayerlakeError
from .arrays import write_array, zarr_store
from .fs import LakeFS

log = logging.getLogger(__name__)

SHARD_FORMAT = 1

DOCS_SCHEMA = pa.schema([
    ("doc_hash", pa.string()),
    ("window", pa.int32()),
    ("char_offset", pa.int64()),
    ("n_tokens", pa.int32()),
    ("row_start", pa.int64()),
    ("truncated", pa.bool_()),
])

TOKENS_SCHEMA = pa.schema([
    ("row", pa.int64()),
    ("doc_hash", pa.string()),
    ("window", pa.int32()),
    ("position", pa.int32()),
    ("token_id", pa.int32()),
    ("token", pa.string()),
    ("nll", pa.float32()),
])


@dataclasses.dataclass
class ShardData:
    """Everything one shard stores; rows are shard-local (0..n_rows-1).

    hidden: layer -> ``[n_rows, d_model]`` array already in its physical
    storage dtype; jacobian: sketch key -> {"layers": {layer: {name: array}},
    "attrs": {...}} written to ``jacobian.zarr/<key>/layer_<l>/<name>``.
    """

    docs: pa.Table
    tokens: pa.Table
    hidden: dict[int, np.ndarray]
    dtype: str
    jacobian: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return self.tokens.num_rows


def write_shard(lake: LakeFS, eid: str, shard: ShardData, *, shard_id: str | None = None,
                commit: bool = True) -> dict[str, Any]:
    """Write and commit one shard; returns its commit manifest.

    With ``commit=False`` the data is written but the marker is not: the caller
    commits later with :func:`commit_shard` (import writes every shard first and
    all markers last) and removes the folder itself if it gives up.
    """
    lake.check_writable()
    sid = shard_id or _new_shard_id(lake)
    base = ("extractions", eid, "shards", sid)
    files: dict[str, dict[str, Any]] = {}
    try:
        for name, table, schema in (("docs.parquet", shard.docs, DOCS_SCHEMA),
                                    ("tokens.parquet", shard.tokens, TOKENS_SCHEMA)):
            data = _parquet_bytes(table.cast(schema))
            lake.write_bytes_atomic(data, *base, name)
            files[name] = {"size": len(data), "crc32c": crc32c.crc32c(data)}
        d_model = None
        if shard.hidden:
            group = zarr.open_group(zarr_store(lake, *base, "hidden.zarr"), mode="w")
            for layer, arr in sorted(shard.hidden.items()):
                if arr.shape[0] != shard.n_rows:
                    raise LayerlakeError(f"layer {layer}: {arr.shape[0]} rows but tokens has {shard.n_rows}")
                d_model = int(arr.shape[1])
                write_array(group, f"layer_{layer}", arr, shard.dtype, {"layer": int(layer)})
        if shard.jacobian:
            jgroup = zarr.open_group(zarr_store(lake, *base, "jacobian.zarr"), mode="w")
            for key, entry in shard.jacobian.items():
                kg = jgroup.create_group(key, attributes=entry.get("attrs", {}))
                for layer, arrays in sorted(entry["layers"].items()):
                    lg = kg.create_group(f"layer_{layer}", attributes={"layer": int(layer)})
                    for name, arr in arrays.items():
                        write_array(lg, name, np.asarray(arr), str(np.asarray(arr).dtype))
        for rel, size in lake.walk_files(*base).items():
            if rel.startswith(".tmp-") or "/.tmp-" in rel:
                continue
            files.setdefault(rel, {"size": size})
            files[rel]["size"] = size
        manifest = {
            "format": SHARD_FORMAT,
            "shard": sid,
            "extraction": eid,
            "n_docs": int(shard.docs.num_rows),
            "n_doc_hashes": len(set(shard.docs.column("doc_hash").to_pylist())),
            "n_rows": int(shard.n_rows),
            "layers": sorted(int(k) for k in shard.hidden),
            "d_model": d_model,
            "dtype": shard.dtype,
            "jacobian": {k: {"layers": sorted(int(x) for x in v["layers"]), "attrs": v.get("attrs", {})}
                         for k, v in shard.jacobian.items()},
            "files": files,
            "bytes": int(sum(f["size"] for f in files.values())),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "writer": {"host": socket.gethostname(), "pid": os.getpid(), **shard.info},
        }
        if commit:
            commit_shard(lake, eid, manifest)
    except BaseException:
        try:
            lake.rm(*base)
        except Exception as cleanup_exc:  # report, but keep the original error
            log.warning("could not remove partial shard %s: %s", "/".join(base), cleanup_exc)
        raise
    return manifest


def commit_shard(lake: LakeFS, eid: str, manifest: dict[str, Any]) -> None:
    """Write the commit marker that makes a fully written shard visible."""
    lake.write_json_atomic(manifest, "extractions", eid, "commits", f"{manifest['shard']}.json")


def _new_shard_id(lake: LakeFS) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{lake.new_id()[:10]}"


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_parquet(lake: LakeFS, *parts: str, columns: list[str] | None = None) -> pa.Table:
    if lake.is_local:
        return pq.read_table(lake.path(*parts), columns=columns)
    return pq.read_table(lake.path(*parts), columns=columns, filesystem=lake.fs)
