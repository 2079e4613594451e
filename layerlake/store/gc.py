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
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import posixpath
import time

import pyarrow.parquet as pq

from ..errors import SpecError
from . import layout
from .catalog import LakeStore
from .layout import EXTRACTION_ID_RE, check_dataset_name

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 3600.0


@dataclasses.dataclass(frozen=True)
class GCItem:
    kind: str      # orphan-shard | unreferenced-shard | empty-extraction | stale-metric | temp-file
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
        newest = stats.newest(prefix)
        return newest is not None and now - newest >= grace_seconds

    referenced: set[str] = set()
    linked: set[str] = set()
    for name in store.dataset_names():
        referenced.update(store.dataset_table(name).column("doc_hash").to_pylist())
        linked.update(store.dataset_links(name))

    live_eids: set[str] = set()
    for eid in fs.listdir(layout.EXTRACTIONS):
        base = layout.rel(layout.extraction_dir(eid))
        has_meta = fs.exists(*layout.extraction_meta(eid))
        committed = set(store.commit_ids(eid)) if has_meta else set()
        folders = set(fs.listdir(*layout.shards_dir(eid)))
        found: list[GCItem] = []
        spared = 0
        for sid in sorted(folders - committed):
            folder = layout.rel(layout.shard_dir(eid, sid))
            if not is_old(folder) and stats.exists(folder):
                spared += 1
                continue
            found.append(GCItem("orphan-shard", folder, stats.size(folder),
                                "shard folder without a commit marker (interrupted ingest or import)"))
        docs_of = _docs_per_shard(store, eid) if committed else {}
        for sid in sorted(committed):
            docs = docs_of.get(sid, set())
            if docs & referenced:
                continue
            folder, marker = layout.rel(layout.shard_dir(eid, sid)), layout.rel(layout.commit_marker(eid, sid))
            if not is_old(marker):
                spared += 1
                continue
            nbytes = stats.size(folder) + stats.size(marker)
            found.append(GCItem("unreferenced-shard", folder, nbytes,
                                f"none of its {len(docs)} document(s) belongs to a dataset"))
        left = (committed | folders) - {i.path.rsplit("/", 1)[-1] for i in found}
        if not left and not spared and eid not in linked and (is_old(base) or not stats.exists(base)):
            items.append(GCItem("empty-extraction", base, stats.size(base),
                                "extraction with no shards and no dataset"))
            continue
        items.extend(found)
        young += spared
        if has_meta:
            live_eids.add(eid)

    removed_dirs = tuple(i.path + "/" for i in items)
    for rel, (nbytes, mtime) in sorted(listing.items()):
        if not layout.is_temp(posixpath.basename(rel)) or rel.startswith(removed_dirs):
            continue
        if mtime is not None and now - mtime >= grace_seconds:
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

    report = GCReport(dry_run=dry_run, items=items, kept_young=young, grace_seconds=grace_seconds)
    if not dry_run:
        _delete(store, items)
    log.info(report.summary())
    return report


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


__all__ = ["remove_dataset", "collect_garbage", "GCReport", "GCItem", "RemoveReport", "DEFAULT_GRACE_SECONDS"]
