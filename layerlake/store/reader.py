"""Reading rows of the lake's Zarr arrays (hidden states, Jacobian sketches): one damage rule, counted bytes.

Every stored array is read through :class:`ChunkReader` (one per lake handle:
``LakeStore.reader``). For each request it reads only the chunks overlapping the
requested rows, in blocks of consecutive chunks (about ``block_bytes`` decoded
at a time, so a full layer streams through a bounded buffer), converts to
float32 while copying into place and never holds a whole layer in its stored
dtype. Every byte fetched from storage goes through a counting store, so
:class:`ReadStats` reports the chunks and bytes that read actually fetched.

Errors: an array whose metadata cannot be opened, a chunk that fails to decode
(checksum, codec) or is missing (read back as the NaN fill value) raise
:class:`IntegrityError` (damage: verify, re-ingest); an ``OSError`` from
storage (permission denied, EIO, network) raises :class:`LakeIOError`.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np
import zarr
from zarr.storage import WrapperStore

from ..errors import IntegrityError, LakeIOError
from . import layout
from .arrays import to_float32
from .fs import LakeFS
from .manifests import ShardManifest
from .safety import check_array
from .shards import check_bytes

log = logging.getLogger(__name__)

BLOCK_BYTES = 32 << 20


@dataclasses.dataclass
class ReadStats:
    """What a read touched. ``bytes_read`` counts stored (compressed) chunk bytes fetched."""

    chunks: int = 0
    bytes_read: int = 0
    metadata_bytes: int = 0
    bytes_decoded: int = 0
    rows: int = 0
    arrays: int = 0
    seconds: float = 0.0
    scans: int = 0

    def add(self, other: "ReadStats") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (f"{self.rows:,} rows from {self.chunks} chunk(s) of {self.arrays} array(s): "
                f"{self.bytes_read:,} bytes read, {self.bytes_decoded:,} decoded, {self.seconds:.3f} s")


@dataclasses.dataclass(frozen=True)
class ArrayRef:
    """One stored array: its folder in the lake, how messages name it and, for shard arrays, where it is listed.

    ``shard`` (extraction id, shard id) and ``member`` (the array's folder inside
    the shard folder) let the reader check the array's ``zarr.json`` against the
    size and crc32c the shard's commit marker lists for it.
    """

    parts: tuple[str, ...]
    what: str
    shard: tuple[str, str] | None = None
    member: str = ""

    @classmethod
    def hidden(cls, eid: str, shard: str, layer: int) -> "ArrayRef":
        """Hidden states of ``layer`` (``[rows, d_model]``)."""
        return cls(layout.hidden_array(eid, shard, layer),
                   f"extraction {eid} shard {shard} layer {int(layer)}", (eid, shard),
                   f"{layout.HIDDEN_GROUP}/{layout.layer_name(layer)}")

    @classmethod
    def sketch(cls, eid: str, shard: str, key: str, layer: int, name: str) -> "ArrayRef":
        """Array ``name`` (``Y``, ``W``, ``Q``, ``B``, ``J`` or ``rows``) of sketch ``key`` at block ``layer``."""
        member = layout.jacobian_member(key, layer, name)
        return cls(layout.jacobian_group(eid, shard) + (member,),
                   f"extraction {eid} shard {shard} sketch {key} block {int(layer)} {name}", (eid, shard),
                   f"{layout.JACOBIAN_GROUP}/{member}")


# the ReadStats of the fill running in this context; zarr runs a read's coroutines on its event-loop
# thread in a copy of the caller's context, so the counting store sees the right one even when reads overlap
_ACTIVE: contextvars.ContextVar[tuple[ReadStats, threading.Lock] | None] = contextvars.ContextVar(
    "layerlake_read_stats", default=None)


def _count(key: str, n: int) -> None:
    active = _ACTIVE.get()
    if active is None:
        return
    stats, lock = active
    with lock:
        if key.startswith("c/") or "/c/" in key or key == "c":
            stats.chunks += 1
            stats.bytes_read += n
        else:
            stats.metadata_bytes += n


class _CountingStore(WrapperStore):  # type: ignore[type-arg]
    """A zarr store that reports the size of every value it returns to the active :class:`ReadStats`."""

    def _with_store(self, store: Any) -> "_CountingStore":
        return type(self)(store)

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        buf = await self._store.get(key, prototype, byte_range)
        if buf is not None:
            _count(key, len(buf))
        return buf

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
        key_ranges = list(key_ranges)
        bufs = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), buf in zip(key_ranges, bufs):
            if buf is not None:
                _count(key, len(buf))
        return bufs


class ChunkReader:
    """Reads rows of stored arrays into float32 outputs; one per lake handle, shared by every read of it."""

    def __init__(self, fs: LakeFS, *, block_bytes: int = BLOCK_BYTES, max_open: int = 512,
                 manifest: Callable[[str, str], ShardManifest] | None = None) -> None:
        self.fs = fs
        #: (extraction, shard) -> its commit marker; shard arrays are then checked against it when opened
        self.manifest = manifest
        self.block_bytes = block_bytes
        self._arrays: collections.OrderedDict[tuple[str, ...], zarr.Array] = collections.OrderedDict()
        self._tail: dict[tuple[str, ...], tuple[int, np.ndarray]] = {}
        self._max_open = max_open
        self._lock = threading.RLock()
        self._trackers: list[ReadStats] = []
        self.last: ReadStats | None = None

    # -- arrays ----------------------------------------------------------------------------
    def array(self, ref: ArrayRef) -> zarr.Array:
        """The opened (and checked) array of ``ref``, cached; a missing or unreadable one raises IntegrityError."""
        with self._lock:
            arr = self._arrays.get(ref.parts)
            if arr is not None:
                self._arrays.move_to_end(ref.parts)
                return arr
        where = self.fs.url_of(*ref.parts)
        man = self._check_metadata(ref, where)
        with _listed_file(where, ref.what):
            try:
                arr = zarr.open_array(_CountingStore(self.fs.zarr_store(*ref.parts, read_only=True)),
                                      mode="r", zarr_format=3)
            except (OSError, MemoryError, KeyboardInterrupt):
                raise
            except Exception as exc:  # unparsable metadata, unknown (e.g. pickle) codecs: refuse, never decode
                raise IntegrityError(f"cannot open {where}: {type(exc).__name__}: {exc}; the array metadata is "
                                     "damaged or not a layerlake array — run `layerlake verify`") from None
        check_array(arr, where=where)
        if man is not None and ref.member.startswith(layout.HIDDEN_GROUP + "/") and (
                int(arr.shape[0]) != man.n_rows or (man.d_model is not None and int(arr.shape[-1]) != man.d_model)):
            raise IntegrityError(f"{where} ({ref.what}) has shape {tuple(arr.shape)}, but its commit marker says "
                                 f"{man.n_rows} rows of width {man.d_model}; run `layerlake verify`")
        with self._lock:
            self._arrays[ref.parts] = arr
            while len(self._arrays) > self._max_open:
                old, _ = self._arrays.popitem(last=False)
                self._tail.pop(old, None)
        return arr

    def _check_metadata(self, ref: ArrayRef, where: str) -> ShardManifest | None:
        """Check a shard array's ``zarr.json`` against its commit marker entry (size, crc32c) before zarr parses it."""
        if ref.shard is None or self.manifest is None:
            return None
        man = self.manifest(*ref.shard)
        rel = f"{ref.member}/zarr.json"
        expect = man.files.get(rel)
        if expect is None or expect.crc32c is None:
            raise IntegrityError(f"{where} ({ref.what}): the shard's commit marker lists no crc32c for {rel}; "
                                 "run `layerlake verify`")
        with _listed_file(f"{where}/zarr.json", ref.what):
            data = self.fs.read_bytes(*ref.parts, "zarr.json")
        problem = check_bytes(data, expect)
        if problem:
            raise IntegrityError(f"{where}/zarr.json ({ref.what}) is damaged: {problem}; run `layerlake verify`")
        return man

    def shape(self, ref: ArrayRef, stats: ReadStats | None = None) -> tuple[int, ...]:
        """Shape of the array (opening it counts its metadata bytes into ``stats``)."""
        with self._reading(stats):
            return tuple(int(n) for n in self.array(ref).shape)

    # -- accounting ------------------------------------------------------------------------
    @contextlib.contextmanager
    def scan(self, what: str = "vectors") -> Iterator[ReadStats]:
        """Account the reads given the yielded stats as one scan (becomes ``last`` and feeds trackers)."""
        stats = ReadStats(scans=1)
        t0 = time.perf_counter()
        try:
            yield stats
        finally:
            stats.seconds += time.perf_counter() - t0
            with self._lock:
                self._tail.clear()  # kept chunks serve consecutive batches of one scan only
                self.last = stats
                for t in self._trackers:
                    t.add(stats)
            log.debug("%s scan: %s", what, stats)

    @contextlib.contextmanager
    def track(self) -> Iterator[ReadStats]:
        """A ``ReadStats`` adding up every scan that ends inside the block."""
        total = ReadStats()
        with self._lock:
            self._trackers.append(total)
        try:
            yield total
        finally:
            with self._lock:
                self._trackers.remove(total)

    @contextlib.contextmanager
    def _reading(self, stats: ReadStats | None) -> Iterator[ReadStats]:
        """Route storage reads inside the block to ``stats`` (a scan of its own when ``None``)."""
        with contextlib.ExitStack() as stack:
            if stats is None:
                stats = stack.enter_context(self.scan("read"))
            token = _ACTIVE.set((stats, threading.Lock()))
            try:
                yield stats
            finally:
                _ACTIVE.reset(token)

    # -- reading ---------------------------------------------------------------------------
    def fill(self, out: np.ndarray, ref: ArrayRef, src_start: np.ndarray, src_stop: np.ndarray,
             dst_start: np.ndarray, stats: ReadStats | None = None) -> None:
        """``out[dst:dst+n] = rows[src_start:src_stop]`` of the array for each range, as float32.

        ``out`` is ``[rows, ...]`` (the array's row shape). Only chunks overlapping a
        range are read, each once per call (the last chunk of a call is kept for the
        next call on the same array within a scan, so consecutive batches do not
        re-read it). Reads count into ``stats`` (a scan of their own when ``None``).
        """
        src_start = np.asarray(src_start, dtype=np.int64)
        src_stop = np.asarray(src_stop, dtype=np.int64)
        dst_start = np.asarray(dst_start, dtype=np.int64)
        keep = src_stop > src_start
        if not keep.all():
            src_start, src_stop, dst_start = src_start[keep], src_stop[keep], dst_start[keep]
        if src_start.size == 0:
            return
        with self._reading(stats) as st:
            self._fill(out, ref, src_start, src_stop, dst_start, st)

    def take(self, ref: ArrayRef, starts: Any, counts: Any, stats: ReadStats | None = None,
             dtype: Any = np.float32) -> np.ndarray:
        """Rows ``[start, start + count)`` of each range, concatenated in the given order, as ``dtype``."""
        starts = np.asarray(starts, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        with self._reading(stats) as st:
            out = np.empty((int(counts.sum()),) + self.shape(ref, st)[1:], dtype=dtype)
            self.fill(out, ref, starts, starts + counts, np.cumsum(counts) - counts, st)
        return out

    def _fill(self, out: np.ndarray, ref: ArrayRef, src_start: np.ndarray, src_stop: np.ndarray,
              dst_start: np.ndarray, stats: ReadStats) -> None:
        key = ref.parts
        arr = self.array(ref)
        n_rows = int(arr.shape[0])
        if int(src_stop.max()) > n_rows or int(src_start.min()) < 0:
            raise IntegrityError(f"rows up to {int(src_stop.max())} requested from {ref.what}, which has {n_rows} "
                                 "rows; run `layerlake verify`")
        logical = arr.attrs.get("dtype", str(arr.dtype))
        convert = logical == "bfloat16"
        order = np.argsort(src_start, kind="stable")
        src_start, src_stop, dst_start = src_start[order], src_stop[order], dst_start[order]
        disjoint = bool(np.all(src_start[1:] >= src_stop[:-1])) if src_start.size > 1 else True

        cr = int(arr.chunks[0])
        n_chunks = -(-n_rows // cr)
        mark = np.zeros(n_chunks + 1, dtype=np.int64)
        np.add.at(mark, src_start // cr, 1)
        np.add.at(mark, (src_stop - 1) // cr + 1, -1)
        needed = np.flatnonzero(np.cumsum(mark)[:n_chunks] > 0)
        row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
        per_block = max(1, self.block_bytes // max(cr * row_bytes, 1))
        tail = self._tail.get(key)
        runs = list(_runs(needed, per_block))
        if tail is not None and bool(np.any(needed == tail[0])):
            # the chunk kept from the previous call is served from memory, the rest is read
            runs = [(tail[0], tail[0])] + list(_runs(needed[needed != tail[0]], per_block))
        for first, last in runs:
            ra, rb = first * cr, min((last + 1) * cr, n_rows)
            if tail is not None and first == last and tail[0] == first:
                raw = tail[1]
            else:
                raw = self._read(arr, ra, rb, ref)
                stats.bytes_decoded += raw.nbytes
                tail = (last, raw[(last - first) * cr:])
            if disjoint:
                i0 = int(np.searchsorted(src_stop, ra, side="right"))
                i1 = int(np.searchsorted(src_start, rb, side="left"))
                sel = slice(i0, i1)
                s0, s1, d0 = src_start[sel], src_stop[sel], dst_start[sel]
            else:
                m = (src_start < rb) & (src_stop > ra)
                s0, s1, d0 = src_start[m], src_stop[m], dst_start[m]
            if s0.size == 0:
                continue
            lo = np.maximum(s0, ra)
            hi = np.minimum(s1, rb)
            dst = d0 + (lo - s0)
            _copy(out, raw, lo - ra, hi - ra, dst, convert, logical)
            stats.rows += int((hi - lo).sum())
        with self._lock:
            if tail is not None:
                self._tail[key] = tail
        stats.arrays += 1

    def _read(self, arr: zarr.Array, start: int, stop: int, ref: ArrayRef) -> np.ndarray:
        """Stored rows ``[start, stop)``; the one place that decides damage vs. I/O failure."""
        what = f"cannot read {ref.what} rows {start}:{stop}"
        try:
            raw = arr[start:stop]
        except OSError as exc:  # the storage failed (permissions, EIO, network), the data may be fine
            raise LakeIOError(f"{what}: {type(exc).__name__}: {exc}; check the storage (permissions, disk, "
                              "network) and retry") from exc
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # zarr raises various codec errors on damaged chunks
            raise IntegrityError(f"{what}: {type(exc).__name__}: {exc}; the chunk is damaged or missing — run "
                                 "`layerlake verify` and re-ingest the affected documents") from exc
        if arr.attrs.get("fill") == "nan" and _has_nan(raw):
            # zarr returns the fill value for a missing chunk file; stored arrays are never NaN
            raise IntegrityError(f"{what}: a chunk file is missing (read back as the NaN fill value); run "
                                 "`layerlake verify` and re-ingest the affected documents")
        return raw


def _runs(chunks: np.ndarray, cap: int) -> Iterator[tuple[int, int]]:
    """Consecutive chunk indices grouped into runs of at most ``cap``."""
    if chunks.size == 0:
        return
    breaks = np.flatnonzero(np.diff(chunks) != 1) + 1
    for seg in np.split(chunks, breaks):
        for i in range(0, len(seg), cap):
            part = seg[i:i + cap]
            yield int(part[0]), int(part[-1])


def _copy(out: np.ndarray, raw: np.ndarray, lo: np.ndarray, hi: np.ndarray, dst: np.ndarray, convert: bool,
          logical: str) -> None:
    lengths = hi - lo
    if lengths.size <= 64 or float(lengths.mean()) >= 16:
        for a, b, d in zip(lo.tolist(), hi.tolist(), dst.tolist()):
            piece = raw[a:b]
            out[d:d + (b - a)] = to_float32(piece, logical) if convert else piece
        return
    # many short ranges: one gather
    src_idx = _aranges(lo, lengths)
    dst_idx = _aranges(dst, lengths)
    piece = raw[src_idx]
    out[dst_idx] = to_float32(piece, logical) if convert else piece


def _aranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(offsets - starts, lengths)


def _has_nan(raw: np.ndarray) -> bool:
    if raw.dtype == np.uint16:  # bfloat16 bits: exponent all ones and a non-zero mantissa
        return bool(np.any((raw & 0x7FFF) > 0x7F80))
    if raw.dtype.kind != "f":
        return False
    return bool(np.isnan(raw).any())


@contextlib.contextmanager
def _listed_file(where: str, what: str) -> Iterator[None]:
    """Reading a file that a commit marker lists: missing is damage, any other OSError a storage failure."""
    try:
        yield
    except FileNotFoundError:
        raise IntegrityError(f"{where} ({what}) is missing though its shard's commit marker lists it; "
                             "run `layerlake verify`") from None
    except OSError as exc:
        raise LakeIOError(f"cannot read {where} ({what}): {type(exc).__name__}: {exc}; check the "
                          "storage (permissions, disk, network) and retry") from exc
