"""Import an export (or any lake with a MANIFEST.json) into a lake: verify everything, then merge by content.

Phase 1 (:func:`verify_export`, no writes): every path in ``MANIFEST.json`` is
checked against strict patterns (no ``..``, absolute paths, hidden files;
local sources must hold no symbolic links), every file's size and SHA-256 is
checked, JSON and Parquet are parsed and cross-checked (commit markers list
exactly the shard's files; extraction ids match the model fingerprint and
capture spec; dataset ``doc_hash`` match their text; Zarr metadata uses only
safe codecs and numeric types). Any failure raises
:class:`~layerlake.IntegrityError` naming the file, before the target is touched.

Phase 2 (:func:`import_lake`): for each source shard, the (document, layer)
pairs the target does not hold yet are written: whole shards are copied (bytes
re-hashed while copying), partly covered shards are staged to a local temporary
folder (re-hashed) and only their missing pairs rewritten; fully covered shards
are skipped. Shard data is written first (invisible without commit markers),
then extraction manifests, then all commit markers, then datasets and links.
Any error in phase 2 removes what was written, so the target is left as it was.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import logging
import re
import shutil
import tempfile
from typing import Any

import crc32c
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import FormatVersionError, IntegrityError, NotFoundError
from ..progress import track
from . import layout
from .catalog import FORMAT_NAME, FORMAT_VERSION, LakeStore
from .export import EXPORT_FORMAT, EXPORT_VERSION
from .fs import LakeFS
from .hashing import doc_hash, extraction_id, json_hash
from .layout import (DATASET_NAME_RE, DOCS_FILE, EXPORT_MANIFEST, HIDDEN_GROUP, LAKE_META, SHARD_ID_RE,
                     TOKENS_FILE, check_name, parse_file, safe_relpath)
from .manifests import ExtractionManifest, ShardManifest
from .safety import bounded_json_loads, check_array_shape, check_rows, check_zarr_metadata
from .shards import DOCS_SCHEMA, TOKENS_SCHEMA, claim_shard_folder, commit_shard, write_shard
from .subset import read_subset
from .transfer import copy_file

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 256 << 20
CACHE_LIMIT = 512 << 20


@dataclasses.dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclasses.dataclass
class SourceExtraction:
    meta: ExtractionManifest
    shards: dict[str, ShardManifest]           # sid -> commit manifest
    shard_docs: dict[str, list[str]]           # sid -> doc hashes (docs.parquet)
    aliases: list[str]                         # relative paths of alias files


@dataclasses.dataclass
class SourceDataset:
    table: pa.Table
    links: dict[str, dict[str, Any]]


@dataclasses.dataclass
class VerifiedExport:
    """An export whose every file has been checked; read small files from here (hash-checked bytes)."""

    src: LakeFS
    manifest: dict[str, Any]
    files: dict[str, FileEntry]
    extractions: dict[str, SourceExtraction]
    datasets: dict[str, SourceDataset]
    cache: dict[str, bytes]

    @property
    def url(self) -> str:
        return self.src.url

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    def read(self, rel: str) -> bytes:
        if rel in self.cache:
            return self.cache[rel]
        data = self.src.read_bytes(rel)
        _check_bytes(self.src, rel, data, self.files[rel])
        return data


@dataclasses.dataclass
class ImportReport:
    source: str
    target: str
    files_verified: int
    bytes_verified: int
    extractions_new: list[str]
    extractions_existing: list[str]
    shards_copied: int
    shards_rewritten: int
    shards_skipped: int
    bytes_written: int
    datasets: dict[str, int]        # dataset -> documents added

    def summary(self) -> str:
        ds = ", ".join(f"{k} (+{v} docs)" for k, v in sorted(self.datasets.items())) or "none"
        return (f"imported {self.source} into {self.target}: verified {self.files_verified} files "
                f"({self.bytes_verified / 1e6:,.1f} MB); extractions new {len(self.extractions_new)}, existing "
                f"{len(self.extractions_existing)}; shards copied {self.shards_copied}, rewritten "
                f"{self.shards_rewritten}, skipped (already present) {self.shards_skipped}; "
                f"{self.bytes_written / 1e6:,.1f} MB written; datasets: {ds}")


# -- phase 1: verify ------------------------------------------------------------------------------
def verify_export(src: Any, *, storage_options: dict[str, Any] | None = None) -> VerifiedExport:
    """Check every path, size, checksum and manifest of an export; writes nothing."""
    fs = src if isinstance(src, LakeFS) else LakeFS(src, read_only=True, storage_options=storage_options)
    if not fs.exists(EXPORT_MANIFEST):
        if not fs.exists():
            raise NotFoundError(f"import source {fs.url} does not exist")
        raise NotFoundError(f"{fs.url_of(EXPORT_MANIFEST)} is missing: {fs.url} is not a layerlake export "
                            "(create one with `layerlake export`)")
    special = fs.special_entries()
    if special:
        path, why = special[0]
        raise IntegrityError(f"{path}: {why}; an export must hold plain files only inside its folder "
                             "(refusing the import)")
    if fs.size(EXPORT_MANIFEST) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{fs.url_of(EXPORT_MANIFEST)} is larger than {MAX_MANIFEST_BYTES >> 20} MiB; refusing it")
    manifest = _parse_json(fs.read_bytes(EXPORT_MANIFEST), fs.url_of(EXPORT_MANIFEST))
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise IntegrityError(f"{fs.url_of(EXPORT_MANIFEST)}: format is not {EXPORT_FORMAT!r}")
    if not isinstance(manifest.get("format_version"), int) or manifest["format_version"] > EXPORT_VERSION:
        raise FormatVersionError(f"{fs.url_of(EXPORT_MANIFEST)}: export format version "
                                 f"{manifest.get('format_version')!r} is newer than this layerlake reads "
                                 f"({EXPORT_VERSION}); upgrade layerlake")
    raw_files = manifest.get("files")
    if not isinstance(raw_files, dict) or not raw_files:
        raise IntegrityError(f"{fs.url_of(EXPORT_MANIFEST)}: 'files' must be a non-empty object")
    files: dict[str, FileEntry] = {}
    for rel, entry in raw_files.items():
        safe_relpath(rel, where=fs.url_of(EXPORT_MANIFEST))
        if parse_file(rel) is None:
            raise IntegrityError(f"{fs.url_of(EXPORT_MANIFEST)}: unexpected file {rel!r} (not part of the lake layout); "
                                 "refusing the import")
        if not (isinstance(entry, dict) and isinstance(entry.get("size"), int) and entry["size"] >= 0
                and isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
            raise IntegrityError(f"{fs.url_of(EXPORT_MANIFEST)}: entry for {rel!r} needs an integer size and a sha256")
        files[rel] = FileEntry(entry["size"], entry["sha256"])
    if LAKE_META not in files:
        raise IntegrityError(f"{fs.url_of(EXPORT_MANIFEST)}: {LAKE_META} is not listed")

    present = fs.walk_files()
    for rel, entry in sorted(files.items()):
        if rel not in present:
            raise IntegrityError(f"{fs.url_of(rel)}: missing (listed in {EXPORT_MANIFEST}); the export is incomplete")
        if present[rel] != entry.size:
            raise IntegrityError(f"{fs.url_of(rel)}: size {present[rel]} bytes, {EXPORT_MANIFEST} says {entry.size}; "
                                 "the file is damaged or truncated")
    extra = sorted(set(present) - set(files) - {EXPORT_MANIFEST})
    if extra:
        log.warning("%s: %d file(s) not listed in %s are ignored (e.g. %s)", fs.url, len(extra), EXPORT_MANIFEST,
                    extra[0])

    cache: dict[str, bytes] = {}
    cached = 0
    with track(f"verify {fs.url}", total=len(files), unit="files") as tr:
        for rel, entry in sorted(files.items()):
            data = fs.read_bytes(rel)
            _check_bytes(fs, rel, data, entry)
            if _is_control(rel) and cached + len(data) <= CACHE_LIMIT:
                cache[rel] = data
                cached += len(data)
            tr.advance(1, nbytes=len(data))
    ve = VerifiedExport(src=fs, manifest=manifest, files=files, extractions={}, datasets={}, cache=cache)
    _check_structure(ve)
    return ve


def _is_control(rel: str) -> bool:
    return rel.endswith((".json", ".parquet", ".md"))


def _check_bytes(fs: LakeFS, rel: str, data: bytes, entry: FileEntry) -> None:
    if len(data) != entry.size:
        raise IntegrityError(f"{fs.url_of(rel)}: size {len(data)} bytes, {EXPORT_MANIFEST} says {entry.size}; "
                             "the file is damaged or truncated")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise IntegrityError(f"{fs.url_of(rel)}: sha256 {digest[:16]}... does not match {EXPORT_MANIFEST} "
                             f"({entry.sha256[:16]}...); the file is damaged")


def _parse_json(data: bytes, where: str) -> Any:
    try:
        return bounded_json_loads(data, where)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{where}: not valid JSON ({exc})") from None


def _parquet(ve: VerifiedExport, rel: str) -> pa.Table:
    """A Parquet file of the export, its row count checked against its size before it is decoded."""
    try:
        data = ve.read(rel)
        check_rows(pq.read_metadata(io.BytesIO(data)).num_rows, len(data), where=ve.src.url_of(rel))
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise IntegrityError(f"{ve.src.url_of(rel)}: not a readable Parquet file ({exc})") from None


def _check_structure(ve: VerifiedExport) -> None:
    fs = ve.src
    where = fs.url_of(LAKE_META)
    lake_meta = _parse_json(ve.read(LAKE_META), where)
    if not isinstance(lake_meta, dict) or lake_meta.get("format") != FORMAT_NAME:
        raise IntegrityError(f"{where}: not a layerlake lake")
    try:
        major = int(str(lake_meta.get("format_version", "0")).split(".")[0])
    except ValueError:
        raise IntegrityError(f"{where}: bad format_version {lake_meta.get('format_version')!r}") from None
    if major > int(FORMAT_VERSION.split(".")[0]):
        raise FormatVersionError(f"{where}: lake format {lake_meta.get('format_version')} is newer "
                                 f"than this layerlake supports ({FORMAT_VERSION}); upgrade layerlake")
    per_shard: dict[tuple[str, str], dict[str, int]] = {}
    commits: dict[tuple[str, str], str] = {}
    hidden_shapes: dict[tuple[str, str], list[tuple[str, Any]]] = collections.defaultdict(list)
    eids: set[str] = set()
    for rel, entry in ve.files.items():
        f = parse_file(rel)
        assert f is not None
        if f.extraction:
            eids.add(f.extraction)
        if f.shard and f.inner:
            per_shard.setdefault((f.extraction or "", f.shard), {})[f.inner] = entry.size
        if f.commit:
            commits[(f.extraction or "", f.commit)] = rel
        if rel.endswith("/zarr.json"):
            zmeta = _parse_json(ve.read(rel), fs.url_of(rel))
            check_zarr_metadata(zmeta, where=fs.url_of(rel))
            if f.shard and f.inner and f.inner.count("/") == 2 and f.inner.startswith(HIDDEN_GROUP + "/") \
                    and zmeta.get("node_type") == "array":
                hidden_shapes[(f.extraction or "", f.shard)].append((rel, zmeta.get("shape")))
    for key in per_shard:
        if key not in commits:
            raise IntegrityError(f"{fs.url_of(*layout.shard_dir(*key))}: shard without a commit "
                                 "marker; refusing the import")
    for eid in sorted(eids):
        rel = layout.rel(layout.extraction_meta(eid))
        if rel not in ve.files:
            raise IntegrityError(f"{fs.url_of(rel)}: missing for extraction {eid}")
        meta = ExtractionManifest.from_json(_parse_json(ve.read(rel), fs.url_of(rel)), source=fs.url_of(rel))
        if not isinstance(meta.fingerprint, str) or meta.capture is None:
            raise IntegrityError(f"{fs.url_of(rel)}: needs model.fingerprint and capture")
        expected = extraction_id(meta.fingerprint, dict(meta.capture))
        if expected != eid or meta.extraction_id != eid:
            raise IntegrityError(f"{fs.url_of(rel)}: extraction id {eid} does not match its model fingerprint and "
                                 f"capture spec (expected {expected}); refusing the import")
        aliases = sorted(r for r in ve.files if r.startswith(layout.rel(layout.aliases_dir(eid)) + "/"))
        for a in aliases:
            am = _parse_json(ve.read(a), fs.url_of(a))
            if not isinstance(am, dict) or not isinstance(am.get("model"), str):
                raise IntegrityError(f"{fs.url_of(a)}: alias needs a 'model' string")
        ext = SourceExtraction(meta=meta, shards={}, shard_docs={}, aliases=aliases)
        for (e, sid), crel in sorted(commits.items()):
            if e != eid:
                continue
            ext.shards[sid] = man = _check_commit(ve, eid, sid, _parse_json(ve.read(crel), fs.url_of(crel)),
                                                  per_shard.get((eid, sid), {}), crel)
            for zrel, shape in hidden_shapes[(eid, sid)]:
                check_array_shape(shape, where=fs.url_of(zrel), rows=man.n_rows, cols=man.d_model)
            docs = _parquet(ve, layout.rel(layout.shard_file(eid, sid, DOCS_FILE)))
            if not set(DOCS_SCHEMA.names) <= set(docs.column_names):
                raise IntegrityError(f"{fs.url_of(*layout.shard_file(eid, sid, DOCS_FILE))}: columns "
                                     f"{docs.column_names}, expected {DOCS_SCHEMA.names}")
            ext.shard_docs[sid] = list(dict.fromkeys(docs.column("doc_hash").to_pylist()))
            trel = layout.rel(layout.shard_file(eid, sid, TOKENS_FILE))
            try:
                tmeta = pq.read_metadata(io.BytesIO(ve.read(trel)))
            except (pa.ArrowException, OSError) as exc:
                raise IntegrityError(f"{fs.url_of(trel)}: not a readable Parquet file ({exc})") from None
            if not set(TOKENS_SCHEMA.names) <= set(tmeta.schema.names) or tmeta.num_rows != man.n_rows:
                raise IntegrityError(f"{fs.url_of(trel)}: columns/rows do not match the commit marker")
        ve.extractions[eid] = ext
    datasets = {f.dataset for f in map(parse_file, ve.files) if f and f.dataset}
    for name in sorted(datasets):
        check_name(name, DATASET_NAME_RE, "dataset name", where=fs.url_of(EXPORT_MANIFEST))
        rel = layout.rel(layout.dataset_docs(name))
        if rel not in ve.files:
            raise IntegrityError(f"{fs.url_of(rel)}: missing for dataset {name!r}")
        table = _parquet(ve, rel)
        if not {"ordinal", "doc_hash", "text"} <= set(table.column_names):
            raise IntegrityError(f"{fs.url_of(rel)}: needs ordinal, doc_hash and text columns")
        for i, (h, text) in enumerate(zip(table.column("doc_hash").to_pylist(), table.column("text").to_pylist())):
            if not isinstance(text, str) or doc_hash(text) != h:
                raise IntegrityError(f"{fs.url_of(rel)}: row {i}: doc_hash {h!r} is not the hash of its text; "
                                     "refusing the import")
        links = {}
        for lrel in sorted(r for r in ve.files if r.startswith(layout.rel(layout.links_dir(name)) + "/")):
            leid = lrel.rsplit("/", 1)[-1][:-5]
            if leid not in ve.extractions:
                raise IntegrityError(f"{fs.url_of(lrel)}: links to extraction {leid}, which the export does not hold")
            rec = _parse_json(ve.read(lrel), fs.url_of(lrel))
            if not isinstance(rec, dict):
                raise IntegrityError(f"{fs.url_of(lrel)}: not a JSON object")
            links[leid] = rec
        ve.datasets[name] = SourceDataset(table=table, links=links)


def _check_commit(ve: VerifiedExport, eid: str, sid: str, raw: Any, on_disk: dict[str, int],
                  rel: str) -> ShardManifest:
    fs = ve.src
    where = fs.url_of(rel)
    check_name(sid, SHARD_ID_RE, "shard id", where=where)
    man = ShardManifest.from_json(raw, source=where)  # types, counts, names, Jacobian keys
    if man.shard != sid or man.extraction != eid:
        raise IntegrityError(f"{where}: commit marker does not name shard {sid} of extraction {eid}")
    files = man.files
    if set(files) != set(on_disk):
        diff = sorted(set(files) ^ set(on_disk))[:3]
        raise IntegrityError(f"{where}: commit marker and {EXPORT_MANIFEST} list different files for shard {sid} "
                             f"(e.g. {diff})")
    if not {DOCS_FILE, TOKENS_FILE} <= set(files):
        raise IntegrityError(f"{where}: shard {sid} lacks {DOCS_FILE} or {TOKENS_FILE}")
    for inner, info in files.items():
        if info.size != on_disk[inner]:
            raise IntegrityError(f"{fs.url_of(*layout.shard_file(eid, sid, inner))}: size does not match the "
                                 "commit marker")
        if info.crc32c is not None:
            if crc32c.crc32c(ve.read(layout.rel(layout.shard_file(eid, sid, inner)))) != info.crc32c:
                raise IntegrityError(f"{fs.url_of(*layout.shard_file(eid, sid, inner))}: crc32c does not match "
                                     "the commit marker")
    return man


# -- phase 2: merge -------------------------------------------------------------------------------
class _Undo:
    """What phase 2 wrote, so a failure can put the target back as it was."""

    def __init__(self, fs: LakeFS) -> None:
        self.fs = fs
        self.created_paths: list[tuple[str, ...]] = []   # removed recursively
        self.restore: list[tuple[tuple[str, ...], bytes | None]] = []  # previous content (None = did not exist)

    def created(self, *parts: str) -> None:
        self.created_paths.append(parts)

    def replacing(self, *parts: str) -> None:
        old = self.fs.read_bytes(*parts) if self.fs.exists(*parts) else None
        self.restore.append((parts, old))

    def rollback(self) -> None:
        for parts, old in reversed(self.restore):
            try:
                if old is None:
                    self.fs.rm(*parts)
                else:
                    self.fs.write_bytes_atomic(old, *parts)
            except Exception as exc:  # keep rolling back the rest
                log.warning("rollback: could not restore %s: %s", self.fs.url_of(*parts), exc)
        for parts in reversed(self.created_paths):
            try:
                self.fs.rm(*parts)
            except Exception as exc:
                log.warning("rollback: could not remove %s: %s", self.fs.url_of(*parts), exc)


def import_lake(target: Any, src: Any, *, storage_options: dict[str, Any] | None = None,
                target_storage_options: dict[str, Any] | None = None) -> ImportReport:
    """Verify the export at ``src``, then merge it into ``target`` (a path/URL, created if new, or a LakeStore).

    Nothing becomes visible in the target before every file of the export has
    been verified; on failure the target is left unchanged.
    """
    if isinstance(target, LakeStore):
        target.fs.check_writable()
    elif hasattr(target, "store") and isinstance(target.store, LakeStore):
        target = target.store
        target.fs.check_writable()
    ve = src if isinstance(src, VerifiedExport) else verify_export(src, storage_options=storage_options)
    if not isinstance(target, LakeStore):
        target = LakeStore(target, mode="a", storage_options=target_storage_options)
    return _merge(target, ve)


def _merge(target: LakeStore, ve: VerifiedExport) -> ImportReport:
    fs = target.fs
    fs.check_writable()
    undo = _Undo(fs)
    report = ImportReport(source=ve.url, target=fs.url, files_verified=len(ve.files), bytes_verified=ve.bytes,
                          extractions_new=[], extractions_existing=[], shards_copied=0, shards_rewritten=0,
                          shards_skipped=0, bytes_written=0, datasets={})
    pending: list[tuple[str, ShardManifest]] = []
    staging = tempfile.mkdtemp(prefix="layerlake-import-")
    for top in (layout.EXTRACTIONS, layout.DATASETS):
        if not fs.exists(top):
            undo.created(top)
    try:
        for eid, ext in sorted(ve.extractions.items()):
            if fs.exists(*layout.extraction_meta(eid)):
                mine = target.extraction(eid)
                if mine.fingerprint != ext.meta.fingerprint or mine.capture != ext.meta.capture:
                    raise IntegrityError(f"{fs.url_of(*layout.extraction_meta(eid))}: extraction {eid} in the "
                                         "target has a different model fingerprint or capture spec than the export")
                report.extractions_existing.append(eid)
            else:
                if fs.exists(*layout.extraction_dir(eid)):
                    undo.created(*layout.extraction_meta(eid))
                else:
                    undo.created(*layout.extraction_dir(eid))
                report.extractions_new.append(eid)
            pending += _merge_shards(target, ve, eid, ext, undo, report, staging)
        # make visible: manifests, then markers, then datasets
        for eid in report.extractions_new:
            rel = layout.extraction_meta(eid)
            fs.write_bytes_atomic(ve.read(layout.rel(rel)), *rel)
        for eid, ext in sorted(ve.extractions.items()):
            for a in ext.aliases:
                if not fs.exists(*a.split("/")):
                    undo.created(*a.split("/"))
                    fs.write_bytes_atomic(ve.read(a), *a.split("/"))
        for eid, man in pending:
            undo.created(*layout.commit_marker(eid, man.shard))
            commit_shard(fs, eid, man)
        for name, ds in sorted(ve.datasets.items()):
            report.datasets[name] = _merge_dataset(target, ve, name, ds, undo)
    except BaseException:
        undo.rollback()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(report.summary())
    return report


def _merge_shards(target: LakeStore, ve: VerifiedExport, eid: str, ext: SourceExtraction, undo: _Undo,
                  report: ImportReport, staging: str) -> list[tuple[str, ShardManifest]]:
    fs = target.fs
    have: dict[str, set[int]] = {}
    docs_have: set[str] = set()
    existing_sids: set[str] = set()
    if fs.exists(*layout.extraction_dir(eid)):
        have = {h: set(ls) for h, ls in target.placement(eid).layers_held.items()}
        docs_have = set(have)
        existing_sids = set(fs.listdir(*layout.shards_dir(eid))) | set(target.commit_ids(eid))
    pending: list[tuple[str, ShardManifest]] = []
    # source shards in placement order, so each pair the target lacks comes from the shard serving it in the export
    for sid in sorted(ext.shards):
        man = ext.shards[sid]
        shard_layers = set(man.layers)
        missing: dict[str, set[int] | None] = {}
        for h in ext.shard_docs[sid]:
            if shard_layers:
                lacking = shard_layers - have.get(h, set())
                if lacking:
                    missing[h] = lacking
            elif h not in docs_have:
                missing[h] = None
        if not missing:
            report.shards_skipped += 1
            continue
        whole = len(missing) == len(ext.shard_docs[sid]) and all(v is None or v == shard_layers
                                                                  for v in missing.values())
        if whole:
            marker = ve.files[layout.rel(layout.commit_marker(eid, sid))]
            new_sid = sid if sid not in existing_sids else f"{sid}-i{marker.sha256[:8]}"
            undo.created(*layout.shard_dir(eid, new_sid))
            # this process writes the folder until its marker lands (an ingest may remove it if we die)
            claim_shard_folder(fs, eid, new_sid)
            for inner in sorted(man.files):
                rel = layout.rel(layout.shard_file(eid, sid, inner))
                dst_rel = layout.rel(layout.shard_file(eid, new_sid, inner))
                entry = ve.files[rel]
                if rel in ve.cache:
                    fs.write_bytes(ve.cache[rel], dst_rel)
                else:
                    copy_file(ve.src, rel, fs, dst_rel, size=entry.size, sha256=entry.sha256)
            new_man = dataclasses.replace(man, shard=new_sid) if new_sid != sid else man
            pending.append((eid, new_man))
            existing_sids.add(new_sid)
            report.shards_copied += 1
            report.bytes_written += man.bytes
        else:
            local = LakeFS(staging)
            for inner in sorted(man.files):
                rel = layout.rel(layout.shard_file(eid, sid, inner))
                entry = ve.files[rel]
                copy_file(ve.src, rel, local, size=entry.size, sha256=entry.sha256)
            groups: dict[tuple[int, ...], list[str]] = {}
            for h, lacking in missing.items():
                groups.setdefault(tuple(sorted(lacking or ())), []).append(h)
            for lays, docs in sorted(groups.items()):
                new_sid = f"{sid}-{json_hash({'docs': sorted(docs), 'layers': list(lays)}, 8)}"
                data = read_subset(local, eid, man, docs, list(lays), jacobian_layers=lays)
                undo.created(*layout.shard_dir(eid, new_sid))
                new_man = write_shard(fs, eid, data, shard_id=new_sid, commit=False)
                pending.append((eid, new_man))
                existing_sids.add(new_sid)
                report.shards_rewritten += 1
                report.bytes_written += new_man.bytes
            local.rm(layout.EXTRACTIONS)
        for h, lacking in missing.items():
            have.setdefault(h, set()).update(lacking or ())
            docs_have.add(h)
    return pending


def _merge_dataset(target: LakeStore, ve: VerifiedExport, name: str, ds: SourceDataset, undo: _Undo) -> int:
    fs = target.fs
    rel = layout.dataset_docs(name)
    if not fs.exists(*layout.dataset_dir(name)):
        undo.created(*layout.dataset_dir(name))
    if fs.exists(*rel):
        before = target.dataset_table(name).num_rows
        undo.replacing(*rel)
        added = target.write_dataset(name, ds.table).num_rows - before
    else:
        fs.write_bytes_atomic(ve.read(layout.rel(rel)), *rel)
        added = ds.table.num_rows
    for eid, rec in sorted(ds.links.items()):
        lrel = layout.link_file(name, eid)
        record = {k: v for k, v in rec.items() if k not in ("extraction", "dataset", "updated")}
        if fs.exists(*lrel):
            old = {k: v for k, v in fs.read_json(*lrel).items() if k not in ("extraction", "dataset", "updated")}
            merged = dict(old)
            merged["layers"] = sorted(set(old.get("layers") or []) | set(record.get("layers") or []))
            merged["n_docs"] = target.dataset_table(name).num_rows
            if merged == old:
                continue
            record = merged
        undo.replacing(*lrel)
        target.link_dataset(name, eid, record)
    return added


__all__ = ["verify_export", "import_lake", "VerifiedExport", "ImportReport"]
