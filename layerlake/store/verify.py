"""Integrity checks: manifests, checksums, orphans.

``verify_lake`` returns a list of problems (empty = healthy); each names the
file and what is wrong. Zarr chunks are decoded, which validates their crc32c.
A hostile lake is checked with the rules reads apply (:mod:`.safety`), before
anything is decoded: every path a commit marker lists is a safe relative path,
no entry of a shard or dataset folder is a symbolic link or special file, every
``zarr.json`` uses the allowed codecs and data types and a shape within the
bounds and equal to the commit marker's, and the tokens and docs tables have
the shard schemas and the marker's row count.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import crc32c
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from ..errors import LayerlakeError
from . import layout
from .arrays import damaged_chunks, open_group
from .catalog import LakeStore
from .hashing import doc_hash
from .layout import DOCS_FILE, HIDDEN_GROUP, JACOBIAN_GROUP, TOKENS_FILE, WRITER_FILE, safe_relpath
from .manifests import ExtractionManifest, ShardManifest
from .safety import bounded_json_loads, check_array, check_array_shape, check_zarr_metadata
from .sealed import read_sealed
from .shards import DOCS_SCHEMA, TOKENS_SCHEMA


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def verify_lake(store: LakeStore, *, deep: bool = True,
                on_shard: Callable[[str], None] | None = None) -> list[Problem]:
    fs = store.fs
    problems: list[Problem] = []
    for eid in fs.listdir(layout.EXTRACTIONS):
        meta = layout.extraction_meta(eid)
        # list shard folders before commit markers: a shard committed in between is then seen as committed
        # (listing the other way round would report it as an orphan)
        shard_dirs = fs.listdir(*layout.shards_dir(eid))
        if not fs.exists(*meta):
            if fs.listdir(*layout.commits_dir(eid)):
                problems.append(Problem(fs.url_of(*meta),
                                        "missing, but the extraction has committed shards (re-run the ingest that "
                                        "created it to rewrite it)"))
            else:
                problems.append(Problem(fs.url_of(*layout.extraction_dir(eid)),
                                        "extraction folder without extraction.json (orphan)"))
                continue
        else:
            try:
                ExtractionManifest.from_json(fs.read_json(*meta), source=fs.url_of(*meta))
            except LayerlakeError as exc:
                problems.append(Problem(fs.url_of(*meta), str(exc)))
        committed = set()
        for sid in layout.commit_ids(fs.listdir(*layout.commits_dir(eid))):
            committed.add(sid)
            try:
                man = ShardManifest.from_json(fs.read_json(*layout.commit_marker(eid, sid)),
                                              source=fs.url_of(*layout.commit_marker(eid, sid)))
            except (LayerlakeError, OSError) as exc:
                problems.append(Problem(fs.url_of(*layout.commit_marker(eid, sid)), f"unreadable commit marker: {exc}"))
                continue
            unsafe = _unsafe_paths(store, eid, sid, man)
            if unsafe:   # nothing of this shard is opened
                problems.extend(unsafe)
            else:
                bad_meta = _untrusted_metadata(store, eid, sid, man)
                problems.extend(bad_meta + _verify_shard(store, eid, sid, man, deep, decode=not bad_meta))
            if on_shard:
                on_shard(sid)
        for sid in shard_dirs:
            if sid not in committed:
                problems.append(Problem(fs.url_of(*layout.shard_dir(eid, sid)),
                                        "shard without a commit marker (orphan from an interrupted ingest; "
                                        "`layerlake gc` removes it)"))
    for name in store.dataset_names():
        outside = _special(fs, layout.dataset_dir(name))
        if outside:
            problems.extend(outside)
            continue
        try:
            table = store.dataset_table(name)
        except Exception as exc:  # any read failure is a problem to report
            problems.append(Problem(fs.url_of(*layout.dataset_docs(name)), f"unreadable: {exc}"))
            continue
        hashes = table.column("doc_hash").to_pylist()
        if deep and "text" in table.column_names:
            # a dataset table has no checksum of its own, but each row carries one: doc_hash = hash(text)
            bad = sum(1 for h, t in zip(hashes, table.column("text").to_pylist())
                      if not isinstance(t, str) or _text_hash(t) != h)
            if bad:
                problems.append(Problem(fs.url_of(*layout.dataset_docs(name)),
                                        f"{bad} row(s) whose text does not match its doc_hash (file damaged)"))
        try:
            links = store.dataset_links(name)
        except LayerlakeError as exc:  # a damaged link record (_verify_records names it)
            problems.append(Problem(fs.url_of(*layout.links_dir(name)), f"unreadable link: {exc}"))
            continue
        for eid in links:
            if not fs.exists(*layout.extraction_meta(eid)):
                problems.append(Problem(fs.url_of(*layout.link_file(name, eid)),
                                        f"links to missing extraction {eid}"))
                continue
            missing = set(hashes) - store.covered_docs(eid)
            if missing:
                problems.append(Problem(fs.url_of(*layout.dataset_dir(name)),
                                        f"{len(missing)} document(s) missing from extraction {eid} "
                                        "(a commit marker or shard was lost; re-run the ingest)"))
    problems.extend(_verify_records(store))
    problems.extend(_verify_metric_cache(store))
    return problems


def _verify_records(store: LakeStore) -> list[Problem]:
    """Alias and dataset-link records: valid JSON whose crc32c self-checksum (when present) matches."""
    fs = store.fs
    files = [layout.aliases_dir(eid) + (n,) for eid in fs.listdir(layout.EXTRACTIONS)
             for n in fs.listdir(*layout.aliases_dir(eid)) if n.endswith(".json")]
    files += [layout.links_dir(name) + (n,) for name in fs.listdir(layout.DATASETS)
              for n in fs.listdir(*layout.links_dir(name)) if n.endswith(".json")]
    out = []
    for parts in files:
        try:
            obj = fs.read_json(*parts)
        except (LayerlakeError, OSError) as exc:
            out.append(Problem(fs.url_of(*parts), f"unreadable: {exc}"))
            continue
        if not isinstance(obj, dict):
            out.append(Problem(fs.url_of(*parts), f"must be a JSON object, got {type(obj).__name__}"))
    return out


def _verify_metric_cache(store: LakeStore) -> list[Problem]:
    """Metric-cache entries whose content checksum is missing or does not match (a read recomputes them)."""
    fs = store.fs
    out = []
    for eid in fs.listdir(*layout.metrics_dir()):
        for key in sorted(layout.metric_keys(fs.listdir(*layout.metrics_dir(eid)))):
            try:
                read_sealed(fs, *layout.metric_file(eid, key))
            except (LayerlakeError, OSError) as exc:
                out.append(Problem(fs.url_of(*layout.metric_file(eid, key)),
                                   f"damaged metric-cache entry (the next `layerlake metric` recomputes it): {exc}"))
    return out


def _verify_shard(store: LakeStore, eid: str, sid: str, man: ShardManifest, deep: bool, *,
                  decode: bool = True) -> list[Problem]:
    fs = store.fs
    base = layout.shard_dir(eid, sid)
    out: list[Problem] = []
    on_disk = fs.walk_files(*base)
    for rel, info in man.files.items():
        if rel not in on_disk:
            out.append(Problem(fs.url_of(*base, rel), "missing (listed in the commit marker)"))
            continue
        if on_disk[rel] != info.size:
            out.append(Problem(fs.url_of(*base, rel), f"size {on_disk[rel]} != {info.size} in the commit marker"))
            continue
        if info.crc32c is not None and deep:
            data = fs.read_bytes(*base, rel)
            if crc32c.crc32c(data) != info.crc32c:
                out.append(Problem(fs.url_of(*base, rel), "checksum mismatch (file damaged)"))
    for rel in on_disk:
        if rel not in man.files and rel != WRITER_FILE:  # the writer record is not shard data
            out.append(Problem(fs.url_of(*base, rel), "file not listed in the commit marker (orphan)"))
    if deep and decode and not out:
        for group_name in (HIDDEN_GROUP, JACOBIAN_GROUP):
            if any(r.startswith(group_name + "/") for r in on_disk):
                out.extend(_verify_group(fs, base, group_name))
    return out


def _special(fs: Any, folder: tuple[str, ...]) -> list[Problem]:
    """Symbolic links, special files and anything resolving outside the lake under ``folder``."""
    return [Problem(path, f"{why}; a lake holds plain files only (refusing to read it)")
            for path, why in fs.special_entries(*folder)]


def _unsafe_paths(store: LakeStore, eid: str, sid: str, man: ShardManifest) -> list[Problem]:
    """Paths of the commit marker that are not safe relative paths, and links or special files in the shard."""
    fs = store.fs
    marker = fs.url_of(*layout.commit_marker(eid, sid))
    out: list[Problem] = []
    for rel in man.files:
        try:
            safe_relpath(rel, where=marker)
        except LayerlakeError as exc:
            out.append(Problem(marker, str(exc)))
    return out + _special(fs, layout.shard_dir(eid, sid))


def _untrusted_metadata(store: LakeStore, eid: str, sid: str, man: ShardManifest) -> list[Problem]:
    """The checks reads apply before decoding: Zarr codecs, data types, bounds and shapes; table schemas."""
    fs = store.fs
    base = layout.shard_dir(eid, sid)
    out: list[Problem] = []
    for rel in man.files:
        where = fs.url_of(*base, rel)
        try:
            if rel.endswith("zarr.json"):
                meta = bounded_json_loads(fs.read_bytes(*base, rel), where)
                check_zarr_metadata(meta, where=where)
                parts = rel.split("/")
                if parts[0] == HIDDEN_GROUP and len(parts) == 3 and meta.get("node_type") == "array":
                    check_array_shape(meta.get("shape"), where=where, rows=man.n_rows, cols=man.d_model)
            elif rel in (DOCS_FILE, TOKENS_FILE):
                out += _check_table(fs, base, rel, man)
        except FileNotFoundError:
            continue   # reported as missing by _verify_shard
        except LayerlakeError as exc:
            out.append(Problem(where, str(exc)))
        except ValueError as exc:  # json.JSONDecodeError
            out.append(Problem(where, f"not valid JSON ({exc})"))
    return out


def _check_table(fs: Any, base: tuple[str, ...], rel: str, man: ShardManifest) -> list[Problem]:
    """The docs/tokens table has the shard schema, and the tokens table the commit marker's row count."""
    where = fs.url_of(*base, rel)
    try:
        with fs.open(*base, rel) as fh:
            meta = pq.ParquetFile(fh).metadata
            schema = meta.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, ValueError) as exc:
        return [Problem(where, f"not a readable Parquet file ({type(exc).__name__}: {exc})")]
    want = DOCS_SCHEMA if rel == DOCS_FILE else TOKENS_SCHEMA
    got = pa.schema([schema.field(n) for n in schema.names])
    if [(f.name, f.type) for f in got] != [(f.name, f.type) for f in want]:
        return [Problem(where, f"schema {[(f.name, str(f.type)) for f in got]} is not the shard schema "
                               f"{[(f.name, str(f.type)) for f in want]}")]
    if rel == TOKENS_FILE and meta.num_rows != man.n_rows:
        return [Problem(where, f"{meta.num_rows} rows, the commit marker says {man.n_rows}")]
    return []


def _verify_group(fs: Any, base: tuple[str, ...], group_name: str) -> list[Problem]:
    """Decode every chunk of every array in a shard's Zarr group; name each damaged chunk file."""
    out = []
    try:
        group = open_group(fs, *base, group_name)
        arrays = _all_arrays(group)
    except Exception as exc:  # any failure to open means damaged metadata
        return [Problem(fs.url_of(*base, group_name), f"cannot open: {type(exc).__name__}: {exc}")]
    for path, arr in arrays:
        try:
            check_array(arr, where=fs.url_of(*base, group_name, path))
            bad = damaged_chunks(arr)
        except Exception as exc:
            out.append(Problem(fs.url_of(*base, group_name, path), f"cannot read: {type(exc).__name__}: {exc}"))
            continue
        for key, why in bad:
            out.append(Problem(fs.url_of(*base, group_name, path, key), f"chunk fails to decode ({why})"))
    return out


def _text_hash(text: str) -> str | None:
    try:
        return doc_hash(text)
    except UnicodeEncodeError:
        return None


def _all_arrays(group: zarr.Group, prefix: str = "") -> list[tuple[str, zarr.Array]]:
    found = []
    for name, member in group.members():
        path = f"{prefix}{name}"
        if isinstance(member, zarr.Array):
            found.append((path, member))
        else:
            found.extend(_all_arrays(member, path + "/"))
    return found
