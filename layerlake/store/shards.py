"""Append-only shards, committed atomically (data first, marker last).

A shard is a folder (:func:`.layout.shard_dir`) holding ``docs.parquet``,
``tokens.parquet``, ``hidden.zarr/`` and optionally ``jacobian.zarr/``. It
becomes visible only when its commit marker (:func:`.layout.commit_marker`,
listing every file with its size and the Parquet files' crc32c) is written.
A failure before that removes the partial shard; a crash leaves an orphan
folder that readers ignore and ``verify``/``gc`` report.
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

from ..errors import IntegrityError, LayerlakeError
from . import layout
from .arrays import chunk_rows, write_array
from .fs import LakeFS, canonical_json
from .layout import WRITER_FILE
from .manifests import ShardFile, ShardManifest

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
                commit: bool = True) -> ShardManifest:
    """Write and commit one shard; returns its commit manifest.

    The same as :func:`write_shard_data` followed by :func:`commit_shard`; a
    failure of either removes the partial shard folder. With ``commit=False``
    only the data is written: the caller commits later with :func:`commit_shard`
    (import writes every shard first and all markers last).
    """
    manifest = write_shard_data(lake, eid, shard, shard_id=shard_id)
    if not commit:
        return manifest
    try:
        commit_shard(lake, eid, manifest)
    except BaseException:
        abandon_shard(lake, eid, manifest.shard)
        raise
    return manifest


def abandon_shard(lake: LakeFS, eid: str, sid: str) -> None:
    """Remove a written but uncommitted shard folder (best effort).

    Never removes a shard whose commit marker exists: a marker write that
    raised may still have landed (an object store timing out on the reply).
    """
    try:
        if lake.exists(*layout.commit_marker(eid, sid)):
            return
    except Exception as exc:  # cannot tell: keep the data, an orphan is harmless
        log.warning("not removing shard %s of %s: cannot check its commit marker (%s)", sid, eid, exc)
        return
    _remove_partial(lake, layout.shard_dir(eid, sid))


def write_shard_data(lake: LakeFS, eid: str, shard: ShardData, *, shard_id: str | None = None) -> ShardManifest:
    """Write one shard's files (not yet visible) and return the manifest that commits it.

    Used directly by executors whose workers write data while a driver commits
    (:func:`commit_shard`). A failure removes the partial shard folder; a crash
    leaves an orphan folder that readers ignore.
    """
    builder = ShardBuilder(lake, eid, shard.dtype, shard_id=shard_id)
    try:
        for layer, arr in sorted(shard.hidden.items()):
            if arr.shape[0] != shard.n_rows:
                raise LayerlakeError(f"layer {layer}: {arr.shape[0]} rows but tokens has {shard.n_rows}")
            builder.append_hidden(layer, arr)
        return builder.finish(shard.docs, shard.tokens, jacobian=shard.jacobian, info=shard.info)
    except BaseException:
        builder.abandon()
        raise


class ShardBuilder:
    """Writes one shard progressively: hidden-state rows as they come, tables and manifest at the end.

    ``append_hidden`` buffers rows per layer and writes every whole chunk as
    soon as it is complete (a write smaller than a chunk would re-read and
    rewrite it), so an ingest's writer thread stores data while the model
    computes instead of all at once at the end. Nothing is visible until the
    caller commits the manifest :meth:`finish` returns; :meth:`abandon`
    removes the partial folder.
    """

    def __init__(self, lake: LakeFS, eid: str, dtype: str, *, shard_id: str | None = None) -> None:
        lake.check_writable()
        self.lake = lake
        self.eid = eid
        self.dtype = dtype
        self.sid = shard_id or new_shard_id(lake)
        self.base = layout.shard_dir(eid, self.sid)
        claim_shard_folder(lake, eid, self.sid)
        self._group: zarr.Group | None = None
        self._arrays: dict[int, zarr.Array] = {}
        self._written: dict[int, int] = {}
        self._pending: dict[int, list[np.ndarray]] = {}
        self._pending_rows: dict[int, int] = {}
        self._d_model: int | None = None

    def append_hidden(self, layer: int, rows: np.ndarray) -> None:
        """Append ``[n, d]`` rows (already in the physical storage dtype) to ``layer``."""
        if rows.ndim != 2:
            raise LayerlakeError(f"layer {layer}: expected [rows, d] hidden states, got shape {rows.shape}")
        if self._d_model is None:
            self._d_model = int(rows.shape[1])
        elif rows.shape[1] != self._d_model:
            raise LayerlakeError(f"layer {layer}: width {rows.shape[1]} differs from the shard's {self._d_model}")
        self._pending.setdefault(layer, []).append(rows)
        self._pending_rows[layer] = self._pending_rows.get(layer, 0) + int(rows.shape[0])
        self._write_whole_chunks(layer)

    def _take(self, layer: int, n: int) -> np.ndarray:
        """Remove and return the first ``n`` pending rows of ``layer``."""
        parts = self._pending.pop(layer, [])
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        rest = block[n:]
        self._pending[layer] = [rest] if len(rest) else []
        self._pending_rows[layer] = int(len(rest))
        return block[:n]

    def _write_whole_chunks(self, layer: int) -> None:
        pending = self._pending_rows.get(layer, 0)
        arr = self._arrays.get(layer)
        if arr is not None:
            per_chunk = int(arr.chunks[0])
        else:
            per_chunk = chunk_rows(int(self._d_model or 0) * self._pending[layer][0].dtype.itemsize, 1 << 62)
        if pending >= per_chunk:
            self._store(layer, pending // per_chunk * per_chunk)

    def _store(self, layer: int, n: int) -> None:
        """Write the first ``n`` pending rows of ``layer``, creating its array on the first write."""
        block = self._take(layer, n)
        start = self._written.get(layer, 0)
        arr = self._arrays.get(layer)
        if arr is None:
            group = self._hidden_group()
            self._arrays[layer] = write_array(group, layout.layer_name(layer), block, self.dtype, {"layer": int(layer)})
        else:
            arr.resize((start + len(block),) + tuple(arr.shape[1:]))
            arr[start:start + len(block)] = block
        self._written[layer] = start + int(len(block))

    def _hidden_group(self) -> zarr.Group:
        if self._group is None:
            self._group = zarr.open_group(self.lake.zarr_store(*self.base, layout.HIDDEN_GROUP), mode="w")
        return self._group

    def _flush_hidden(self) -> None:
        """Write every layer's remaining rows (the last, possibly partial chunk)."""
        for layer in sorted(self._pending_rows):
            n = self._pending_rows[layer]
            if n or layer not in self._arrays:  # a layer with no rows at all still gets its (empty) array
                self._store(layer, n)

    def finish(self, docs: pa.Table, tokens: pa.Table, *, jacobian: dict[str, dict[str, Any]] | None = None,
               info: dict[str, Any] | None = None) -> ShardManifest:
        """Write what is left and the tables; return the manifest that commits the shard (not written)."""
        jacobian = jacobian or {}
        self._flush_hidden()
        n_rows = int(tokens.num_rows)
        for layer, n in self._written.items():
            if n != n_rows:
                raise LayerlakeError(f"layer {layer}: {n} rows but tokens has {n_rows}")
        lake, base = self.lake, self.base
        files: dict[str, dict[str, Any]] = {}
        for name, table, schema in ((layout.DOCS_FILE, docs, DOCS_SCHEMA), (layout.TOKENS_FILE, tokens, TOKENS_SCHEMA)):
            data = _parquet_bytes(table.cast(schema))
            lake.write_bytes_atomic(data, *base, name)
            files[name] = {"size": len(data), "crc32c": crc32c.crc32c(data)}
        if jacobian:
            jgroup = zarr.open_group(lake.zarr_store(*base, layout.JACOBIAN_GROUP), mode="w")
            for key, entry in jacobian.items():
                kg = jgroup.create_group(key, attributes=entry.get("attrs", {}))
                for layer, arrays in sorted(entry["layers"].items()):
                    lg = kg.create_group(layout.layer_name(layer), attributes={"layer": int(layer)})
                    for name, arr in arrays.items():
                        write_array(lg, name, np.asarray(arr), str(np.asarray(arr).dtype))
        for rel, size in lake.walk_files(*base).items():
            if layout.has_temp_part(rel) or rel == WRITER_FILE:  # the record is not shard data
                continue
            files.setdefault(rel, {"size": size})
            files[rel]["size"] = size
            if rel.endswith("zarr.json") and "crc32c" not in files[rel]:
                # array metadata is small and a flipped digit there (a shape, a dtype) would misread every chunk
                files[rel]["crc32c"] = crc32c.crc32c(lake.read_bytes(*base, rel))
        return ShardManifest.from_json({
            "format": SHARD_FORMAT,
            "shard": self.sid,
            "extraction": self.eid,
            "n_docs": int(docs.num_rows),
            "n_doc_hashes": len(set(docs.column("doc_hash").to_pylist())),
            "n_rows": n_rows,
            "layers": sorted(int(k) for k in self._arrays),
            "d_model": self._d_model,
            "dtype": self.dtype,
            "jacobian": {k: {"layers": sorted(int(x) for x in v["layers"]), "attrs": v.get("attrs", {})}
                         for k, v in jacobian.items()},
            "files": files,
            "bytes": int(sum(f["size"] for f in files.values())),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "writer": {"host": socket.gethostname(), "pid": os.getpid(), **(info or {})},
        }, source=lake.url_of(*layout.commit_marker(self.eid, self.sid)))

    def abandon(self) -> None:
        """Remove what was written (the shard was never committed)."""
        self._pending.clear()
        self._pending_rows.clear()
        _remove_partial(self.lake, self.base)


def commit_shard(lake: LakeFS, eid: str, manifest: ShardManifest, *, check_files: bool = False) -> None:
    """Make a written shard visible: write its commit marker (one atomic write, the last one).

    With ``check_files``, first check that every file the manifest lists is
    visible here with its size (a driver committing what a worker on another
    machine wrote: catches a lake path that is not shared between machines).
    """
    sid = manifest.shard
    if check_files:
        on_disk = lake.walk_files(*layout.shard_dir(eid, sid))
        bad = [rel for rel, info in manifest.files.items() if on_disk.get(rel) != info.size]
        if bad:
            host = manifest.writer.get("host", "?")
            raise IntegrityError(
                f"shard {sid} written on host {host} is not visible from here: {len(bad)} file(s) missing or of "
                f"another size under {lake.url_of(*layout.shard_dir(eid, sid))} (e.g. {bad[0]}); the lake must "
                "be on a file system shared by every worker (NFS, ...) or on an object store"
            )
    lake.write_json_atomic(manifest.to_json(), *layout.commit_marker(eid, sid))


def writer_record() -> dict[str, Any]:
    """The process writing a shard folder (host, pid, start time), stored in it as ``writer.json``.

    Not listed in the commit marker: it is not shard data, exports leave it out.
    """
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def claim_shard_folder(lake: LakeFS, eid: str, sid: str) -> None:
    """Create shard folder ``sid`` holding this process's writer record, before any of its data.

    The record lets a later ingest remove the folder if this process dies before
    the commit, so the folder must never exist without it (:meth:`LakeFS.create_dir`:
    built under ``extractions/<eid>/.tmp-*`` and renamed where folders can be,
    one put of the record on object stores).
    """
    record = canonical_json(writer_record()).encode()
    lake.create_dir({WRITER_FILE: record}, *layout.shard_dir(eid, sid), stage_in=layout.staging_dir(eid))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but not ours, or cannot tell: assume alive
        return True
    return True


def remove_dead_writers_shards(lake: LakeFS, eid: str) -> list[str]:
    """Remove uncommitted shard folders of ``eid`` whose writer process on this host is gone.

    A SIGKILLed ingest leaves the shard it was writing as an orphan folder
    (invisible to readers); the ingest that resumes the job removes it, so the
    resumed lake verifies clean. Folders written by a live process, by another
    host, or without a writer record are left alone (``layerlake gc`` removes
    those after its grace period). Returns the removed shard ids.
    """
    host = socket.gethostname()
    removed = []
    staging = layout.staging_dir(eid)
    for name in lake.listdir(*staging):  # a writer killed while claiming its folder
        if layout.is_temp(name) and _dead_local_writer(lake, host, *staging, name):
            lake.rm(*staging, name)
    committed = set(layout.commit_ids(lake.listdir(*layout.commits_dir(eid))))
    for sid in lake.listdir(*layout.shards_dir(eid)):
        if sid in committed:
            continue
        if not _dead_local_writer(lake, host, *layout.shard_dir(eid, sid)):
            continue
        abandon_shard(lake, eid, sid)  # re-checks the commit marker first
        if not lake.exists(*layout.shard_dir(eid, sid)):
            removed.append(sid)
            log.info("removed shard %s of %s left uncommitted by a dead process", sid, eid)
    return removed


def _dead_local_writer(lake: LakeFS, host: str, *folder: str) -> bool:
    """Whether ``folder``'s writer record names a process of this host that is gone."""
    try:
        rec = lake.read_json(*folder, WRITER_FILE)
    except (OSError, IntegrityError):  # no record (older layerlake, not a shard folder) or unreadable: keep
        return False
    if not isinstance(rec, dict) or rec.get("host") != host or not isinstance(rec.get("pid"), int):
        return False
    return not _process_alive(rec["pid"])


def _remove_partial(lake: LakeFS, base: tuple[str, ...]) -> None:
    try:
        lake.rm(*base)
    except Exception as cleanup_exc:  # report, but keep the original error
        log.warning("could not remove partial shard %s: %s", "/".join(base), cleanup_exc)


_last_shard_time: list[_dt.datetime] = []


def new_shard_id(lake: LakeFS) -> str:
    """A new shard id: UTC time to the microsecond, then random; later shards of one process sort later.

    The smallest id serves a (document, layer) that several shards hold (see
    :mod:`.placement`), so the time prefix makes an earlier shard win over a
    later one. Ids of format 1.0 lakes (time to the second) sort before any
    id of the same second written since.
    """
    now = _dt.datetime.now(_dt.timezone.utc)
    if _last_shard_time and now <= _last_shard_time[0]:   # the clock did not advance: stay in order
        now = _last_shard_time[0] + _dt.timedelta(microseconds=1)
    _last_shard_time[:] = [now]
    return f"{now.strftime('%Y%m%dT%H%M%S%f')}-{lake.new_id()[:10]}"


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_parquet(lake: LakeFS, *parts: str, expect: ShardFile, columns: list[str] | None = None) -> pa.Table:
    """Read a committed Parquet file of the lake; damage raises :class:`IntegrityError` naming the file.

    ``expect`` is the file's entry in its commit marker (``size``, ``crc32c``):
    the whole file is read and checked before it is decoded, so any flipped
    byte is caught, not just the ones Parquet's own structure notices.
    """
    url = lake.url_of(*parts)
    try:
        data = lake.read_bytes(*parts)
        problem = check_bytes(data, expect)
        if problem:
            raise IntegrityError(f"{url} is damaged: {problem}; run `layerlake verify` and re-ingest the "
                                 "affected documents")
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except IntegrityError:
        raise
    except FileNotFoundError:
        raise IntegrityError(f"{url} is missing; run `layerlake verify`") from None
    except (pa.ArrowInvalid, ValueError) as exc:  # not OSError: an I/O hiccup is not damage
        raise IntegrityError(f"cannot read {url}: {type(exc).__name__}: {exc}; the file is damaged or truncated — "
                             "run `layerlake verify`") from None


def check_bytes(data: bytes, expect: ShardFile) -> str | None:
    """What is wrong with ``data`` against a commit-marker entry (size, crc32c), or None."""
    if len(data) != expect.size:
        return f"size {len(data)} != {expect.size} in its commit marker (truncated or overwritten)"
    if expect.crc32c is not None and crc32c.crc32c(data) != expect.crc32c:
        return "crc32c checksum differs from its commit marker (bytes changed)"
    return None

