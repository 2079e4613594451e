"""Reading vector rows chunk by chunk, counting what is read.

:class:`ChunkReader` fills a caller's float32 output from per-layer Zarr arrays
of committed shards. For each request it reads only the chunks overlapping the
requested rows, in blocks of consecutive chunks (about ``block_bytes`` decoded
at a time, so a full layer streams through a bounded buffer), converts to
float32 while copying into place and never holds a whole layer in its stored
dtype. Every byte fetched from storage goes through a counting store, so
:class:`ReadStats` reports chunks and bytes actually read.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from typing import Any, Iterator

import numpy as np
import zarr
from zarr.storage import WrapperStore

from ..store.safety import check_array
from ..errors import IntegrityError, NotFoundError
from ..store import LakeStore, layout
from ..store.arrays import to_float32

log = logging.getLogger(__name__)

BLOCK_BYTES = 32 << 20


@dataclasses.dataclass
class ReadStats:
    """What a vector read touched. ``bytes_read`` counts stored (compressed) chunk bytes fetched."""

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
        return (f"{self.rows:,} vector rows from {self.chunks} chunk(s) of {self.arrays} array(s): "
                f"{self.bytes_read:,} bytes read, {self.bytes_decoded:,} decoded, {self.seconds:.3f} s")


class _Counter:
    """Thread-safe totals of storage reads (zarr fetches chunks from its own event-loop thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.chunk_gets = 0
        self.chunk_bytes = 0
        self.meta_bytes = 0

    def add(self, key: str, n: int) -> None:
        with self._lock:
            if key.startswith("c/") or "/c/" in key or key == "c":
                self.chunk_gets += 1
                self.chunk_bytes += n
            else:
                self.meta_bytes += n

    def totals(self) -> tuple[int, int, int]:
        with self._lock:
            return self.chunk_gets, self.chunk_bytes, self.meta_bytes


class _CountingStore(WrapperStore):  # type: ignore[type-arg]
    """A zarr store that reports the size of every value it returns."""

    def __init__(self, store: Any, counter: _Counter | None = None) -> None:
        super().__init__(store)
        self._counter = counter if counter is not None else _Counter()

    def _with_store(self, store: Any) -> "_CountingStore":
        return type(self)(store, self._counter)

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        buf = await self._store.get(key, prototype, byte_range)
        if buf is not None:
            self._counter.add(key, len(buf))
        return buf

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
        key_ranges = list(key_ranges)
        bufs = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), buf in zip(key_ranges, bufs):
            if buf is not None:
                self._counter.add(key, len(buf))
        return bufs


class ChunkReader:
    """Reads rows of hidden-state arrays into float32 outputs; shared by every scan of one lake handle."""

    def __init__(self, store: LakeStore, *, block_bytes: int = BLOCK_BYTES, max_open: int = 512) -> None:
        self.store = store
        self.block_bytes = block_bytes
        self.counter = _Counter()
        self._arrays: collections.OrderedDict[tuple[str, str, int], zarr.Array] = collections.OrderedDict()
        self._tail: dict[tuple[str, str, int], tuple[int, np.ndarray]] = {}
        self._max_open = max_open
        self._lock = threading.RLock()
        self._trackers: list[ReadStats] = []
        self.last: ReadStats | None = None

    # -- arrays ----------------------------------------------------------------------------
    def array(self, eid: str, shard: str, layer: int) -> zarr.Array:
        key = (eid, shard, int(layer))
        with self._lock:
            arr = self._arrays.get(key)
            if arr is not None:
                self._arrays.move_to_end(key)
                return arr
        parts = layout.hidden_array(eid, shard, layer)
        where = self.store.fs.url_of(*parts)
        try:
            arr = zarr.open_array(_CountingStore(self.store.fs.zarr_store(*parts, read_only=True), self.counter),
                                  mode="r", zarr_format=3)
        except FileNotFoundError:
            raise NotFoundError(f"shard {shard} of extraction {eid} has no layer {layer} "
                                f"({where} is missing); run `layerlake verify`") from None
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # unparsable metadata, unknown (e.g. pickle) codecs: refuse, never decode
            raise IntegrityError(f"cannot open {where}: {type(exc).__name__}: {exc}; the array metadata is damaged "
                                 "or not a layerlake array — run `layerlake verify`") from None
        check_array(arr, where=where)
        with self._lock:
            self._arrays[key] = arr
            while len(self._arrays) > self._max_open:
                old, _ = self._arrays.popitem(last=False)
                self._tail.pop(old, None)
        return arr

    # -- accounting ------------------------------------------------------------------------
    @contextlib.contextmanager
    def scan(self, what: str = "vectors") -> Iterator[ReadStats]:
        """Account the reads done inside the block as one scan (becomes ``last`` and feeds trackers)."""
        stats = ReadStats(scans=1)
        before = self.counter.totals()
        t0 = time.perf_counter()
        try:
            yield stats
        finally:
            after = self.counter.totals()
            stats.chunks += after[0] - before[0]
            stats.bytes_read += after[1] - before[1]
            stats.metadata_bytes += after[2] - before[2]
            stats.seconds += time.perf_counter() - t0
            with self._lock:
                self._tail.clear()  # kept chunks serve consecutive batches of one scan only
                self.last = stats
                for t in self._trackers:
                    t.add(stats)
            log.debug("%s scan: %s", what, stats)

    @contextlib.contextmanager
    def track(self) -> Iterator[ReadStats]:
        total = ReadStats()
        with self._lock:
            self._trackers.append(total)
        try:
            yield total
        finally:
            with self._lock:
                self._trackers.remove(total)

    # -- reading ---------------------------------------------------------------------------
    def fill(self, out: np.ndarray, eid: str, shard: str, layer: int, src_start: np.ndarray, src_stop: np.ndarray,
             dst_start: np.ndarray, stats: ReadStats | None = None) -> None:
        """``out[dst:dst+n] = rows[src_start:src_stop]`` of the layer array for each range, as float32.

        ``out`` is ``[rows, d_model]`` float32. Only chunks overlapping a range
        are read, each once per call (the last chunk of a call is kept for the
        next call on the same array, so consecutive batches do not re-read it).
        """
        src_start = np.asarray(src_start, dtype=np.int64)
        src_stop = np.asarray(src_stop, dtype=np.int64)
        dst_start = np.asarray(dst_start, dtype=np.int64)
        keep = src_stop > src_start
        if not keep.all():
            src_start, src_stop, dst_start = src_start[keep], src_stop[keep], dst_start[keep]
        if src_start.size == 0:
            return
        key = (eid, shard, int(layer))
        arr = self.array(eid, shard, layer)
        n_rows = int(arr.shape[0])
        if int(src_stop.max()) > n_rows or int(src_start.min()) < 0:
            raise IntegrityError(f"rows up to {int(src_stop.max())} requested from extraction {eid} shard {shard} "
                                 f"layer {layer}, which has {n_rows} rows; run `layerlake verify`")
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
                raw = self._read(arr, ra, rb, eid, shard, layer)
                if stats is not None:
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
            if stats is not None:
                stats.rows += int((hi - lo).sum())
        with self._lock:
            if tail is not None:
                self._tail[key] = tail
        if stats is not None:
            stats.arrays += 1

    def _read(self, arr: zarr.Array, start: int, stop: int, eid: str, shard: str, layer: int) -> np.ndarray:
        try:
            raw = arr[start:stop]
            if arr.attrs.get("fill") == "nan" and _has_nan(raw):
                # zarr returns the fill value for a missing chunk file; stored hidden states are never NaN
                raise IntegrityError(
                    f"cannot read extraction {eid} shard {shard} layer {layer} rows {start}:{stop}: a chunk file is "
                    "missing (read back as the NaN fill value); run `layerlake verify` and re-ingest the affected "
                    "documents")
            return raw
        except IntegrityError:
            raise
        except Exception as exc:  # zarr raises various codec errors on damaged chunks
            if isinstance(exc, (KeyboardInterrupt, MemoryError)):
                raise
            raise IntegrityError(
                f"cannot read extraction {eid} shard {shard} layer {layer} rows {start}:{stop}: "
                f"{type(exc).__name__}: {exc}; the chunk is damaged or missing — run `layerlake verify` and "
                "re-ingest the affected documents") from exc


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
    return bool(np.isnan(raw).any())
