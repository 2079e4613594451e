"""Housekeeping: remove a dataset, collect garbage (orphan and unreferenced shards, stale metric cache).

``remove_dataset`` deletes only the dataset's own folder (its document list and
links). Shards are shared by content between datasets, so it never deletes
them; ``collect_garbage`` decides:

- shard folders without a commit marker (left by an interrupted ingest or
  import) whose newest file is older than ``grace_seconds``;
- committed shards none of whose documents belongs to any dataset any more,
  when their commit marker is older than ``grace_seconds`` (an ingest commits
  shards before it records its dataset, so young shards are never touched);
- extractions left with no shard, no dataset link and nothing young in them;
- metric cache entries under ``metrics/`` whose extraction is gone: the cache's
  own files (:func:`.layout.metric_file`) name it in their path; for other files
  put there (SQL reads every Parquet file under ``metrics/``) it is read from an
  ``extraction=<id>`` or ``<id>`` path component, a JSON file's ``extraction``
  key, or a Parquet file's ``extraction`` column; files whose extraction cannot
  be told are kept;
- temporary files of interrupted atomic writes (``.tmp-*``).

Deleting a shard removes its commit marker first (it disappears at once for
readers), then its folder. Everything is computed from one listing of the lake.

A running ingest is never raced, whatever the order of listings:

- an ingest holds a lease on its extraction (:func:`hold_lease`: its writer
  record under ``extractions/<eid>/leases/``, from before ``extraction.json`` is
  written until it ends); nothing of a leased extraction is collected while the
  lease names a live process of this host, or, from another host, while the
  lease is younger than the grace period. Leases of dead processes are removed;

- what the listing does not hold (created after it) is young, never an orphan;
- a shard folder whose writer record (``writer.json``), or a committed shard
  whose commit marker's ``writer``, names another live process of this host is kept
  for as long as that process lives, however old its files; writers on other
  hosts are protected by the grace period only;
- right before deleting, the commit marker of an orphan is looked up again, the
  datasets are read again (after the liveness check, so an ingest that recorded
  its dataset and exited is seen), and an extraction is removed only if no file
  appeared in it since the listing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import posixpath
import socket
import time
from typing import Any, Mapping

import pyarrow.parquet as pq

from ..errors import LayerlakeError, SpecError
from . import layout
from .catalog import LakeStore
from .fs import LakeFS, canonical_json
from .hashing import json_hash
from .shards import writer_record
from .layout import EXTRACTION_ID_RE, check_dataset_name

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 3600.0
#: an unreadable lease younger than this is being written, whatever the grace period
PARTIAL_LEASE_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class GCItem:
    kind: str      # orphan-shard | unreferenced-shard | empty-extraction | stale-lease | stale-metric | temp-file
    path: str
    bytes: int
    reason: str


@dataclasses.dataclass
class GCReport:
    dry_run: bool
    items: list[GCItem]
    kept_young: int          # candidates spared because they are younger than the grace period
    grace_seconds: float

    @property
    def bytes_freed(self) -> int:
        return sum(i.bytes for i in self.items)

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        kinds: dict[str, int] = {}
        for i in self.items:
            kinds[i.kind] = kinds.get(i.kind, 0) + 1
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing to remove"
        young = (f"; {self.kept_young} candidate(s) younger than {self.grace_seconds:g} s kept "
                 "(a running ingest may still need them)") if self.kept_young else ""
        return f"gc {verb} {self.bytes_freed / 1e6:,.2f} MB ({self.bytes_freed:,} bytes): {what}{young}"


@dataclasses.dataclass
class RemoveReport:
    dataset: str
    documents: int
    links: list[str]

    def summary(self) -> str:
        return (f"removed dataset {self.dataset!r} ({self.documents} documents, linked to {len(self.links)} "
                "extraction(s)); shards are kept until `layerlake gc` finds them unreferenced")


def remove_dataset(store: LakeStore, name: str) -> RemoveReport:
    """Delete dataset ``name`` (documents other datasets use stay; shards are left to gc)."""
    store.fs.check_writable()
    check_dataset_name(name)
    table = store.dataset_table(name)  # NotFoundError listing the datasets
    links = sorted(store.dataset_links(name))
    fs = store.fs
    fs.rm(*layout.dataset_docs(name))   # the dataset disappears here
    fs.rm(*layout.dataset_dir(name))
    return RemoveReport(dataset=name, documents=table.num_rows, links=links)


def collect_garbage(store: LakeStore, *, grace_seconds: float = DEFAULT_GRACE_SECONDS,
                    dry_run: bool = False, now: float | None = None) -> GCReport:
    """Find (and unless ``dry_run``, delete) what no reader can reach; see the module docstring."""
    if grace_seconds < 0:
        raise SpecError(f"grace_seconds={grace_seconds} must be >= 0")
    if not dry_run:
        store.fs.check_writable()
    fs = store.fs
    now = time.time() if now is None else now
    listing = _listing(store)
    stats = _Stats(listing)
    items: list[GCItem] = []
    young = 0

    def is_old(prefix: str) -> bool:
        """Whether everything under ``prefix`` is older than the grace period (absent from the listing: no)."""
        newest = stats.newest(prefix)
        return newest is not None and now - newest >= grace_seconds

    writer_alive = _LivenessCache()

    referenced: set[str] = set()
    linked: set[str] = set()
    for name in store.dataset_names():
        referenced.update(store.dataset_table(name).column("doc_hash").to_pylist())
        linked.update(store.dataset_links(name))

    live_eids: set[str] = set()
    held_dirs: list[str] = []   # extractions an ingest is writing: their temporary files are its own
    for eid in fs.listdir(layout.EXTRACTIONS):
        base = layout.rel(layout.extraction_dir(eid))
        has_meta = fs.exists(*layout.extraction_meta(eid))
        held, stale = _leases(store, eid, writer_alive, now, grace_seconds)
        items.extend(stale)
        if held:
            young += 1   # an ingest is running on it: keep everything of the extraction
            live_eids.add(eid)
            held_dirs.append(base + "/")
            continue
        committed = set(store.commit_ids(eid)) if has_meta else set()
        folders = set(fs.listdir(*layout.shards_dir(eid)))
        found: list[GCItem] = []
        spared = 0
        for sid in sorted(folders - committed):
            folder = layout.rel(layout.shard_dir(eid, sid))
            if not is_old(folder) or writer_alive(_writer_record(store, layout.shard_dir(eid, sid))):
                spared += 1   # young, created after the listing, or its writer is still running
                continue
            found.append(GCItem("orphan-shard", folder, stats.size(folder),
                                "shard folder without a commit marker (interrupted ingest or import)"))
        docs_of = _docs_per_shard(store, eid) if committed else {}
        writers = {m.shard: m.writer for m in store.shard_manifests(eid)} if committed else {}
        for sid in sorted(committed):
            docs = docs_of.get(sid, set())
            if docs & referenced:
                continue
            folder, marker = layout.rel(layout.shard_dir(eid, sid)), layout.rel(layout.commit_marker(eid, sid))
            if not is_old(marker) or writer_alive(writers.get(sid)):
                spared += 1   # an ingest commits its shards before it records its dataset
                continue
            nbytes = stats.size(folder) + stats.size(marker)
            found.append(GCItem("unreferenced-shard", folder, nbytes,
                                f"none of its {len(docs)} document(s) belongs to a dataset"))
        left = (committed | folders) - {i.path.rsplit("/", 1)[-1] for i in found}
        if not left and not spared and eid not in linked and (is_old(base) or not stats.exists(base)) \
                and not _live_writer_inside(store, eid, writer_alive):
            items.append(GCItem("empty-extraction", base, stats.size(base),
                                "extraction with no shards and no dataset"))
            continue
        items.extend(found)
        young += spared
        if has_meta:
            live_eids.add(eid)

    removed_dirs = tuple(i.path + "/" for i in items)
    writing = None   # whether an ingest of this host is running (its atomic writes are in progress)
    held_prefixes = tuple(held_dirs)
    for rel, (nbytes, mtime) in sorted(listing.items()):
        if not layout.is_temp(posixpath.basename(rel)) or rel.startswith(removed_dirs):
            continue
        if rel.startswith(held_prefixes):
            young += 1
            continue
        if writing is None:
            writing = _live_writer_anywhere(store, listing, writer_alive)
        if not writing and mtime is not None and now - mtime >= grace_seconds:
            items.append(GCItem("temp-file", rel, nbytes, "temporary file of an interrupted write"))
        else:
            young += 1

    for rel, (nbytes, mtime) in sorted(listing.items()):
        if not rel.startswith(layout.METRICS + "/") or layout.is_temp(posixpath.basename(rel)):
            continue
        eids = _metric_entry_extractions(store, rel)
        if not eids or eids & live_eids:
            continue
        if mtime is None or now - mtime < grace_seconds:
            young += 1
            continue
        items.append(GCItem("stale-metric", rel, nbytes, f"cached for extraction(s) {sorted(eids)} that are gone"))

    if not dry_run:
        items, late = _recheck(store, items, listing, writer_alive)
        young += late
    report = GCReport(dry_run=dry_run, items=items, kept_young=young, grace_seconds=grace_seconds)
    if not dry_run:
        _delete(store, items)
    log.info(report.summary())
    return report


class _LivenessCache:
    """Whether a writer record names another live process of this host (other hosts: unknown, so False).

    This process is not counted: its own writes are done by the time it runs gc.
    """

    def __init__(self) -> None:
        self._host = socket.gethostname()
        self._seen: dict[int, bool] = {}

    def __call__(self, record: Any) -> bool:
        if not isinstance(record, Mapping) or record.get("host") != self._host:
            return False
        pid = record.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return False
        if pid not in self._seen:
            self._seen[pid] = pid != os.getpid() and _pid_alive(pid)
        return self._seen[pid]

    def forget(self) -> None:
        self._seen.clear()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours, or cannot tell: assume alive
        return True
    return True


def _writer_record(store: LakeStore, path: tuple[str, ...]) -> Any:
    """The ``writer.json`` of a folder (or a lease file), or None when it has none or it cannot be read."""
    if not path[-1].endswith(".json"):
        path = (*path, layout.WRITER_FILE)
    try:
        return store.fs.read_json(*path)
    except (OSError, LayerlakeError):
        return None


def _live_writer_inside(store: LakeStore, eid: str, writer_alive: _LivenessCache) -> bool:
    """Whether a folder being written in extraction ``eid`` (shard or claim in progress) has a live writer."""
    base = layout.extraction_dir(eid)
    for rel in store.fs.walk_files(*base):
        parts = (*base, *rel.split("/"))
        if parts[:-1] == layout.leases_dir(eid) and writer_alive(_writer_record(store, parts)):
            return True
        if parts[-1] == layout.WRITER_FILE and writer_alive(_writer_record(store, parts[:-1])):
            return True
    return False


def hold_lease(fs: LakeFS, eid: str) -> tuple[str, ...] | None:
    """Record that this process writes extraction ``eid``: gc keeps the extraction until :func:`release_lease`.

    Returns the lease's path parts (None on a read-only lake: nothing is written
    there). Leases that dead processes of this host left on ``eid`` (a killed
    ingest being resumed) are removed here; elsewhere gc removes them, on other
    hosts after the grace period.
    """
    if fs.read_only:
        return None
    record = writer_record()
    parts = layout.lease_file(eid, json_hash(record, 16))
    data = canonical_json(record).encode()
    for attempt in range(3):
        try:   # written in place, not through a temporary file a concurrent gc could take for garbage
            fs.write_bytes(data, *parts)
            break
        except FileNotFoundError:   # a concurrent gc removed the empty folder just created: create it again
            if attempt == 2:
                raise
    _remove_dead_local_leases(fs, eid, keep=parts[-1])
    return parts


def _remove_dead_local_leases(fs: LakeFS, eid: str, keep: str) -> None:
    """Remove the leases on ``eid`` whose writer is a process of this host that no longer runs."""
    host, writer_alive = socket.gethostname(), _LivenessCache()
    for name in fs.listdir(*layout.leases_dir(eid)):
        if name == keep or layout.is_temp(name):
            continue
        parts = (*layout.leases_dir(eid), name)
        try:
            record = fs.read_json(*parts)
        except (OSError, LayerlakeError):   # being written, or damaged: gc decides once it is old
            continue
        if isinstance(record, Mapping) and record.get("host") == host and record.get("pid") != os.getpid() \
                and not writer_alive(record):
            try:
                fs.rm(*parts)
            except FileNotFoundError:   # a concurrent gc removed it first
                pass


def release_lease(fs: LakeFS, parts: tuple[str, ...] | None) -> None:
    """Remove a lease taken with :func:`hold_lease`."""
    if parts is not None:
        fs.rm(*parts)


def _leases(store: LakeStore, eid: str, writer_alive: _LivenessCache, now: float,
            grace_seconds: float) -> tuple[bool, list[GCItem]]:
    """(whether a running ingest holds ``eid``, the leases of ingests that are gone)."""
    fs = store.fs
    held = False
    stale: list[GCItem] = []
    host = socket.gethostname()
    for name in fs.listdir(*layout.leases_dir(eid)):
        parts = (*layout.leases_dir(eid), name)
        if layout.is_temp(name):
            continue
        try:
            st = fs.stat(*parts)
        except OSError:
            continue   # removed meanwhile
        try:
            record = fs.read_json(*parts)
        except (OSError, LayerlakeError):   # being written (or damaged): a lease until it is clearly old
            if st.mtime is None or now - st.mtime < max(grace_seconds, PARTIAL_LEASE_SECONDS):
                held = True
            continue
        local = isinstance(record, Mapping) and record.get("host") == host
        if writer_alive(record) or (isinstance(record, Mapping) and record.get("pid") == os.getpid() and local):
            held = True
        elif local or st.mtime is not None and now - st.mtime >= grace_seconds:
            stale.append(GCItem("stale-lease", layout.rel(parts), st.size, "lease of an ingest that is gone"))
        else:
            held = True   # another host's ingest: protected for the grace period
    return held, stale


def _live_writer_anywhere(store: LakeStore, listing: dict[str, tuple[int, float | None]],
                          writer_alive: _LivenessCache) -> bool:
    """Whether an ingest lease or a shard folder (committed or not) of the listing names a live local process."""
    for rel in listing:
        parts = tuple(rel.split("/"))
        if parts[0] != layout.EXTRACTIONS:
            continue
        if parts[-1] == layout.WRITER_FILE and writer_alive(_writer_record(store, parts[:-1])):
            return True
        is_lease = len(parts) == 4 and parts[:3] == layout.leases_dir(parts[1])
        if is_lease and writer_alive(_writer_record(store, parts)):
            return True
    return False


def _recheck(store: LakeStore, items: list[GCItem], listing: dict[str, tuple[int, float | None]],
             writer_alive: _LivenessCache) -> tuple[list[GCItem], int]:
    """Drop candidates an ingest claimed since the listing; returns (still garbage, spared)."""
    writer_alive.forget()
    fs = store.fs
    keep: list[GCItem] = []
    spared = 0
    fresh: list[GCItem] = []
    for item in items:
        parts = tuple(item.path.split("/"))
        if item.kind == "orphan-shard" and (fs.exists(*layout.commit_marker(parts[1], parts[3]))
                                            or writer_alive(_writer_record(store, parts))):
            spared += 1
        elif item.kind == "unreferenced-shard" and writer_alive(_commit_writer(store, parts[1], parts[3])):
            spared += 1
        elif item.kind == "empty-extraction" and (
                _live_writer_inside(store, parts[1], writer_alive)
                or any(layout.rel((*parts, r)) not in listing for r in fs.walk_files(*parts))):
            spared += 1
        else:
            fresh.append(item)
    # datasets read after the liveness checks: an ingest that recorded its dataset and exited is seen here
    referenced: set[str] = set()
    linked: set[str] = set()
    for name in store.dataset_names():
        referenced.update(store.dataset_table(name).column("doc_hash").to_pylist())
        linked.update(store.dataset_links(name))
    docs_cache: dict[str, dict[str, set[str]]] = {}
    for item in fresh:
        parts = tuple(item.path.split("/"))
        if item.kind == "unreferenced-shard":
            eid = parts[1]
            if eid not in docs_cache:
                docs_cache[eid] = _docs_per_shard(store, eid)
            if docs_cache[eid].get(parts[3], set()) & referenced:
                spared += 1
                continue
        if item.kind == "empty-extraction" and parts[1] in linked:
            spared += 1
            continue
        keep.append(item)
    return keep, spared


def _commit_writer(store: LakeStore, eid: str, sid: str) -> Any:
    try:
        return store.fs.read_json(*layout.commit_marker(eid, sid)).get("writer")
    except (OSError, LayerlakeError, AttributeError):
        return None


class _Stats:
    """Sizes and newest modification times of folders, from one listing."""

    def __init__(self, listing: dict[str, tuple[int, float | None]]) -> None:
        self._size: dict[str, int] = {}
        self._newest: dict[str, float | None] = {}
        self._unknown: set[str] = set()
        for rel, (nbytes, mtime) in listing.items():
            parts = rel.split("/")
            for depth in range(1, len(parts) + 1):
                key = "/".join(parts[:depth])
                self._size[key] = self._size.get(key, 0) + nbytes
                if mtime is None:
                    self._unknown.add(key)
                else:
                    prev = self._newest.get(key)
                    self._newest[key] = mtime if prev is None else max(prev, mtime)

    def exists(self, prefix: str) -> bool:
        return prefix in self._size

    def size(self, prefix: str) -> int:
        return self._size.get(prefix, 0)

    def newest(self, prefix: str) -> float | None:
        """Newest modification time under ``prefix``; None if empty or any time is unknown (keep it)."""
        if prefix in self._unknown:
            return None
        return self._newest.get(prefix)


def _delete(store: LakeStore, items: list[GCItem]) -> None:
    fs = store.fs
    for item in items:
        parts = tuple(item.path.split("/"))
        if item.kind == "unreferenced-shard":
            fs.rm(*layout.commit_marker(parts[1], parts[3]))   # invisible to readers first
        elif item.kind == "empty-extraction":
            fs.rm(*layout.commits_dir(parts[1]))
            fs.rm(*layout.extraction_meta(parts[1]))
        fs.rm(*parts)


def _listing(store: LakeStore) -> dict[str, tuple[int, float | None]]:
    """Every file of the lake -> (size, modification time as a POSIX timestamp or None)."""
    return {rel: (st.size, st.mtime) for rel, st in store.fs.walk_stats().items()}


def _docs_per_shard(store: LakeStore, eid: str) -> dict[str, set[str]]:
    return {sid: set(docs) for sid, docs in store.placement(eid).shard_docs.items()}


def _metric_entry_extractions(store: LakeStore, rel: str) -> set[str]:
    """Extraction ids a file under ``metrics/`` belongs to; empty when they cannot be told."""
    own = layout.metric_file_extraction(rel)
    if own is not None:
        return {own}
    found = set()
    for part in rel.split("/")[1:]:
        value = part.split("=", 1)[1] if part.startswith("extraction=") else part
        if EXTRACTION_ID_RE.match(value):
            found.add(value)
    if found:
        return found
    try:
        if rel.endswith(".json"):
            obj = json.loads(store.fs.read_bytes(*rel.split("/")))
            value = obj.get("extraction") if isinstance(obj, dict) else None
            vals = value if isinstance(value, list) else [value]
            return {v for v in vals if isinstance(v, str) and EXTRACTION_ID_RE.match(v)}
        if rel.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(store.fs.read_bytes(*rel.split("/"))))
            if "extraction" in table.column_names:
                return {v for v in table.column("extraction").unique().to_pylist()
                        if isinstance(v, str) and EXTRACTION_ID_RE.match(v)}
    except (OSError, ValueError) as exc:  # unreadable entries are kept; verify reports damage
        log.debug("metric cache entry %s unreadable: %s", rel, exc)
    return set()


__all__ = ["remove_dataset", "collect_garbage", "hold_lease", "release_lease", "GCReport", "GCItem", "RemoveReport", "DEFAULT_GRACE_SECONDS"]
