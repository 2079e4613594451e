"""The lake as a catalog: lake.json, extractions, committed shards, datasets.

Readers trust commit markers only. Everything here is read from disk on demand
and cached per set of commit markers, so a lake written concurrently shows the
shards committed at the time of the call.
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FormatVersionError, IntegrityError, LayerlakeError, NotFoundError, SpecError
from . import layout
from .fs import FileStat, LakeFS, unseal_json
from .sealed import read_sealed, sealed_parquet
from .hashing import json_hash
from .layout import check_dataset_name
from .manifests import ExtractionManifest, ShardFile, ShardManifest
from .placement import Placement
from .reader import ChunkReader
from .shards import DOCS_SCHEMA, check_bytes, read_parquet

log = logging.getLogger(__name__)

FORMAT_NAME = "layerlake"
FORMAT_VERSION = "1.1"  # 1.1: lake.json carries its crc32c; JSON files and dataset tables are checksummed


class LakeStore:
    """Open (or create) a lake and read/write its catalog."""

    def __init__(self, url: Any, *, mode: str = "a", storage_options: dict[str, Any] | None = None) -> None:
        if mode not in ("r", "a", "w"):
            raise SpecError(f"mode={mode!r} must be 'r' (read-only), 'a' (open or create) or 'w'")
        self.fs = LakeFS(url, read_only=(mode == "r"), storage_options=storage_options)
        self.mode = mode
        self._doc_cache: dict[str, tuple[tuple[str, ...], pa.Table, Placement]] = {}
        self._manifests: dict[tuple[str, str], ShardManifest] = {}  # commit markers never change once written
        self._damaged: dict[str, dict[str, str]] = {}
        self._checked: set[tuple[str, str, str]] = set()
        self._tables: dict[str, tuple[FileStat, pa.Table]] = {}  # dataset -> (file version checked, table)
        self.reader = ChunkReader(self.fs, manifest=self.shard_manifest)  # every array read of this handle goes through it (counted)
        self._open_or_create()

    # -- lake.json -------------------------------------------------------------------------
    def _open_or_create(self) -> None:
        fs = self.fs
        if fs.exists() and fs.isfile():
            raise SpecError(f"lake path {fs.url} is a file, not a directory; choose a directory path for the lake")
        if fs.exists(layout.LAKE_META):
            where = fs.url_of(layout.LAKE_META)
            raw = fs.read_json(layout.LAKE_META, verify=False)  # the version decides whether a checksum is due
            meta = unseal_json(raw, where)  # a present checksum is checked before any field is trusted
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
                found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
                raise SpecError(f"{where} is not a layerlake lake (format={found!r})")
            version = _version(meta.get("format_version", "0"), where)
            if version[0] > _version(FORMAT_VERSION, where)[0]:
                raise FormatVersionError(
                    f"lake {fs.url} has format version {meta.get('format_version')}, newer than this layerlake "
                    f"supports ({FORMAT_VERSION}); upgrade layerlake (pip install -U layerlake) to open it"
                )
            if version >= (1, 1):
                unseal_json(raw, where, required=True)
            self.meta = meta
            return
        if fs.exists() and any(fs.exists(d) for d in (layout.EXTRACTIONS, layout.DATASETS)):
            raise IntegrityError(f"{fs.url_of(layout.LAKE_META)} is missing but {fs.url} holds a lake's "
                                 f"{layout.EXTRACTIONS}/ or {layout.DATASETS}/ folder; restore lake.json (or run "
                                 "`layerlake verify`) rather than open it as a new lake")
        if self.mode == "r":
            raise NotFoundError(f"no lake at {fs.url} (lake.json missing); create one with mode='a' or `layerlake ingest`")
        if fs.exists() and [n for n in fs.listdir() if not layout.is_temp(n)]:
            # (a leftover .tmp- file is a lake.json write killed before its rename)
            raise SpecError(
                f"{fs.url} exists, is not empty and is not a lake (no lake.json); choose an empty or new directory"
            )
        try:
            fs.makedirs()
        except FileExistsError:
            raise SpecError(f"lake path {fs.url} cannot be created (a file is in the way)") from None
        self.meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                     "created": _now()}
        fs.write_json_atomic(self.meta, layout.LAKE_META)

    # -- extractions -----------------------------------------------------------------------
    def extraction_ids(self) -> list[str]:
        return [e for e in self.fs.listdir(layout.EXTRACTIONS) if self.fs.exists(*layout.extraction_meta(e))]

    def extraction(self, eid: str) -> ExtractionManifest:
        if not self.fs.exists(*layout.extraction_meta(eid)):
            if self.commit_ids(eid):
                raise IntegrityError(
                    f"{self.fs.url_of(*layout.extraction_meta(eid))} is missing but the extraction has "
                    "committed shards; run `layerlake verify`, then re-run the ingest that created it to rewrite it"
                )
            raise NotFoundError(f"no extraction {eid!r} in lake {self.fs.url}; known: {self.extraction_ids()}")
        return ExtractionManifest.from_json(self.fs.read_json(*layout.extraction_meta(eid)),
                                            source=self.fs.url_of(*layout.extraction_meta(eid)))

    def create_extraction(self, eid: str, fields: dict[str, Any]) -> None:
        """Write ``extraction.json`` once (immutable afterwards); ``fields`` are checked as an :class:`ExtractionManifest`."""
        if self.fs.exists(*layout.extraction_meta(eid)):
            return
        manifest = ExtractionManifest.from_json({**fields, "extraction_id": eid, "created": _now()},
                                                source=self.fs.url_of(*layout.extraction_meta(eid)))
        self.fs.write_json_atomic(manifest.to_json(), *layout.extraction_meta(eid))

    def add_alias(self, eid: str, model_ref: str) -> None:
        """Record a model id/path as given by a user, so queries can say ``model=...``."""
        key = json_hash(model_ref, 16)
        if not self.fs.exists(*layout.alias_file(eid, key)):
            self.fs.write_json_atomic({"model": model_ref}, *layout.alias_file(eid, key))

    def aliases(self, eid: str) -> list[str]:
        out = []
        for name in self.fs.listdir(*layout.aliases_dir(eid)):
            if name.endswith(".json"):
                out.append(self.fs.read_json(*layout.aliases_dir(eid), name)["model"])
        return sorted(out)

    def commit_ids(self, eid: str) -> list[str]:
        return layout.commit_ids(self.fs.listdir(*layout.commits_dir(eid)))

    def shard_manifests(self, eid: str) -> list[ShardManifest]:
        """Commit manifests of the committed shards, by shard id."""
        return [self._read_manifest(eid, sid) for sid in sorted(self.commit_ids(eid))]

    def _read_manifest(self, eid: str, sid: str) -> ShardManifest:
        key = (eid, sid)
        if key not in self._manifests:
            where = self.fs.url_of(*layout.commit_marker(eid, sid))
            man = ShardManifest.from_json(self.fs.read_json(*layout.commit_marker(eid, sid)), source=where)
            if man.shard != sid or man.extraction != eid:
                raise IntegrityError(f"{where}: commit marker names shard {man.shard} of extraction {man.extraction}, "
                                     f"not shard {sid} of {eid}; run `layerlake verify`")
            self._manifests[key] = man
        return self._manifests[key]

    def doc_index(self, eid: str) -> pa.Table:
        """One row per (shard, document window) over all committed shards.

        Columns: docs.parquet's plus ``shard`` (id) and ``layers`` (list of the
        hidden layers that shard holds).
        """
        return self._catalog(eid)[1]

    def placement(self, eid: str) -> Placement:
        """What the readable committed shards of ``eid`` hold and which shard serves what (see :mod:`.placement`).

        Damaged shards are left out (see :meth:`damaged_shards`): a reader that
        needs their documents raises :meth:`missing_documents_error`, a reader of
        the whole extraction calls :meth:`check_shards` first.
        """
        return self._catalog(eid)[2]

    def check_shards(self, eid: str) -> None:
        """IntegrityError naming the first damaged committed shard of ``eid`` (see :meth:`damaged_shards`)."""
        damaged = self.damaged_shards(eid)
        if damaged:
            sid, why = sorted(damaged.items())[0]
            raise IntegrityError(f"extraction {eid}: {len(damaged)} committed shard(s) are damaged, e.g. {sid}: "
                                 f"{why}")

    def _catalog(self, eid: str) -> tuple[tuple[str, ...], pa.Table, Placement]:
        sids = tuple(sorted(self.commit_ids(eid)))
        cached = self._doc_cache.get(eid)
        if cached and cached[0] == sids:
            return cached
        tables = []
        manifests = []
        damaged: dict[str, str] = {}
        for sid in sids:
            try:
                man = self._read_manifest(eid, sid)
                t = self.shard_table(eid, sid, layout.DOCS_FILE)
            except IntegrityError as exc:
                # a damaged shard hides its documents: reads that need them fail naming it (see damaged_shards),
                # the rest of the extraction stays readable, and a re-run ingest recomputes them
                log.warning("skipping damaged shard %s of extraction %s: %s", sid, eid, exc)
                damaged[sid] = str(exc)
                continue
            t = t.append_column("shard", pa.array([sid] * t.num_rows, pa.string()))
            t = t.append_column("layers", pa.array([list(man.layers)] * t.num_rows, pa.list_(pa.int32())))
            tables.append(t)
            manifests.append(man)
        if tables:
            table = pa.concat_tables(tables)
        else:
            table = DOCS_SCHEMA.empty_table().append_column("shard", pa.array([], pa.string())).append_column(
                "layers", pa.array([], pa.list_(pa.int32())))
        self._doc_cache[eid] = entry = (sids, table, Placement.build(table, manifests))
        self._damaged[eid] = damaged
        return entry

    def shard_manifest(self, eid: str, sid: str) -> ShardManifest:
        """The commit marker of one shard; a missing marker means the shard is not committed."""
        if not self.fs.exists(*layout.commit_marker(eid, sid)):
            raise NotFoundError(f"shard {sid} of extraction {eid} is not committed (no commit marker)")
        return self._read_manifest(eid, sid)

    def shard_layers(self, eid: str, sid: str) -> list[int]:
        return list(self.shard_manifest(eid, sid).layers)

    def shard_table(self, eid: str, sid: str, name: str, columns: list[str] | None = None) -> pa.Table:
        """A committed shard's Parquet table (``docs.parquet``, ``tokens.parquet``), checked before it is decoded.

        The file is read once and its size and crc32c compared with its commit
        marker's entry; a file the marker does not list with a crc32c, a
        missing file or any changed byte raises :class:`IntegrityError` naming it.
        """
        return read_parquet(self.fs, *layout.shard_file(eid, sid, name), columns=columns,
                            expect=self._expected(eid, sid, name))

    def _expected(self, eid: str, sid: str, name: str) -> ShardFile:
        expect = self._read_manifest(eid, sid).files.get(name)
        if expect is None or expect.crc32c is None:
            raise IntegrityError(f"the commit marker of shard {sid} (extraction {eid}) lists no crc32c for {name}; "
                                 "the marker is damaged — run `layerlake verify`")
        return expect

    def checked_url(self, eid: str, sid: str, name: str) -> str:
        """URL of a committed shard's Parquet file after checking it against its commit marker.

        The first call per file and lake handle reads it whole and checks its
        size and crc32c (committed files never change, so once is enough);
        damage raises :class:`IntegrityError` naming the file. For scans by
        engines (Polars, DuckDB) that would otherwise return whatever bytes
        they find.
        """
        key = (eid, sid, name)
        if key not in self._checked:
            self.shard_manifest(eid, sid)  # NotFoundError when the shard is not committed
            expect = self._expected(eid, sid, name)
            url = self.fs.url_of(*layout.shard_file(eid, sid, name))
            try:
                data = self.fs.read_bytes(*layout.shard_file(eid, sid, name))
            except FileNotFoundError:
                raise IntegrityError(f"{url} is missing; run `layerlake verify`") from None
            problem = check_bytes(data, expect)
            if problem:
                raise IntegrityError(f"{url} is damaged: {problem}; run `layerlake verify` and re-ingest the "
                                     "affected documents")
            self._checked.add(key)
        return self.fs.url_of(*layout.shard_file(eid, sid, name))

    def damaged_shards(self, eid: str) -> dict[str, str]:
        """Committed shards that :meth:`doc_index` had to skip (shard id -> what is wrong)."""
        self._catalog(eid)
        return dict(self._damaged.get(eid, {}))

    def missing_documents_error(self, eid: str, layer: int | None, missing: Sequence[str],
                                dataset: str | None = None, what: str | None = None) -> LayerlakeError:
        """The error for documents that ``eid``'s committed shards do not hold (at ``layer``; None = tokens).

        :class:`IntegrityError` when they were stored and are gone (a damaged shard,
        or ``dataset`` was ingested into ``eid`` with that layer: a lost commit
        marker): damage, not a request for something never computed.
        :class:`NotFoundError` otherwise. ``what`` names what is missing
        (default: the layer or tokens).
        """
        n = len(missing)
        whose = f"of dataset {dataset!r} " if dataset is not None else ""
        damaged = self.damaged_shards(eid)
        if damaged:
            sid, why = sorted(damaged.items())[0]
            return IntegrityError(f"{n} document(s) {whose}are in damaged shard(s) of extraction {eid} "
                                  f"({len(damaged)} shard(s), e.g. {sid}: {why})")
        link = self.dataset_links(dataset).get(eid) if dataset is not None else None
        if link is not None and (layer is None or layer in link.get("layers", [])):
            return IntegrityError(
                f"{n} document(s) {whose}that were ingested into extraction {eid} are missing from its committed "
                f"shards, e.g. {list(missing[:2])} (a commit marker or shard was lost); run `layerlake verify`, "
                "then re-run the ingest to recompute them"
            )
        what = what or (f"layer {layer}" if layer is not None else "tokens")
        model = self.extraction(eid).model_name
        return NotFoundError(
            f"{n} document(s) {whose}have no {what} in extraction {eid} ({model}), e.g. {list(missing[:2])}; "
            f"ingest them (e.g. `layerlake ingest ... --layers {layer if layer is not None else 'all'}`)"
        )

    def covered_docs(self, eid: str, layers: Iterable[int] | None = None) -> set[str]:
        """Documents that committed shards hold (with every layer in ``layers``, if given)."""
        held = self.placement(eid).layers_held
        want = set(layers or ())
        return {h for h, ls in held.items() if want <= ls}

    # -- datasets --------------------------------------------------------------------------
    def dataset_names(self) -> list[str]:
        """Datasets with a table, or with links to extractions (then a missing table is damage)."""
        return [n for n in self.fs.listdir(layout.DATASETS)
                if self.fs.exists(*layout.dataset_docs(n)) or self.fs.listdir(*layout.links_dir(n))]

    def dataset_table(self, name: str) -> pa.Table:
        """The dataset's documents in order: ``ordinal``, ``doc_hash``, ``text`` + metadata.

        Checked against the content checksum the file carries (:mod:`.sealed`)
        once per version of the file and handle; damage, or a missing table of a
        dataset that has links, raises :class:`IntegrityError` naming the file.
        """
        parts = layout.dataset_docs(name)
        try:
            stamp = self.fs.stat(*parts)
        except FileNotFoundError:
            if self.fs.listdir(*layout.links_dir(name)):
                raise IntegrityError(f"{self.fs.url_of(*parts)} is missing but dataset {name!r} is linked to "
                                     "extractions; run `layerlake verify`, then re-run its ingest") from None
            raise NotFoundError(
                f"no dataset {name!r} in lake {self.fs.url}; known datasets: {', '.join(self.dataset_names()) or 'none'}"
            ) from None
        cached = self._tables.get(name)
        if cached is not None and cached[0] == stamp and stamp.version is not None:
            return cached[1]
        table = read_sealed(self.fs, *parts, required=False, distinct_rows=True)
        self._tables[name] = (stamp, table)
        return table

    def write_dataset(self, name: str, table: pa.Table) -> pa.Table:
        """Create the dataset or append documents it does not hold yet (atomic replace)."""
        check_dataset_name(name)
        if "doc_hash" not in table.column_names:
            raise LayerlakeError("dataset table needs a doc_hash column")
        if self.fs.exists(*layout.dataset_docs(name)):
            old = self.dataset_table(name)
            seen = set(old.column("doc_hash").to_pylist())
            keep = pc.invert(pc.is_in(table.column("doc_hash"), value_set=pa.array(sorted(seen), pa.string())))
            new = table.filter(keep)
            if new.num_rows == 0:
                return old
            new = new.drop_columns(["ordinal"]) if "ordinal" in new.column_names else new
            new = new.add_column(0, "ordinal", pa.array(range(old.num_rows, old.num_rows + new.num_rows), pa.int64()))
            merged = pa.concat_tables([old, new], promote_options="permissive")
        else:
            merged = table.drop_columns(["ordinal"]) if "ordinal" in table.column_names else table
            merged = merged.add_column(0, "ordinal", pa.array(range(merged.num_rows), pa.int64()))
        self.fs.write_bytes_atomic(sealed_parquet(merged), *layout.dataset_docs(name))
        return merged

    def link_dataset(self, name: str, eid: str, record: dict[str, Any]) -> None:
        """Record that dataset ``name`` has been ingested into extraction ``eid``."""
        self.fs.write_json_atomic({**record, "extraction": eid, "dataset": name, "updated": _now()},
                                  *layout.link_file(name, eid))

    def dataset_links(self, name: str) -> dict[str, dict[str, Any]]:
        out = {}
        for n in self.fs.listdir(*layout.links_dir(name)):
            if n.endswith(".json"):
                out[n[:-5]] = self.fs.read_json(*layout.links_dir(name), n)
        return out

    # -- resolution ------------------------------------------------------------------------
    def resolve_extraction(self, dataset: str | None, model: str | None) -> str:
        """Map ``model=`` (id/path as given at ingest, or an extraction id) to an extraction id."""
        if dataset is not None:
            links = self.dataset_links(dataset) if dataset in self.dataset_names() else None
            if links is None:
                self.dataset_table(dataset)  # raises NotFoundError listing datasets
            candidates = sorted(links)
        else:
            candidates = self.extraction_ids()
        if model is None:
            if len(candidates) == 1:
                return candidates[0]
            if not candidates:
                raise NotFoundError(f"dataset {dataset!r} has not been ingested with any model yet")
            raise SpecError(
                f"dataset {dataset!r} has {len(candidates)} extractions; pass model= one of: "
                + "; ".join(f"{c} ({', '.join(self.aliases(c))})" for c in candidates)
            )
        model = str(model)
        if model in candidates:
            return model
        matches = [c for c in candidates if model in self.aliases(c)]
        if not matches:
            prefix = [c for c in candidates if c.startswith(model)] if len(model) >= 6 else []
            matches = prefix
        if len(matches) == 1:
            return matches[0]
        valid = sorted({a for c in candidates for a in self.aliases(c)} | set(candidates))
        what = f"dataset {dataset!r}" if dataset else f"lake {self.fs.url}"
        if not matches:
            raise NotFoundError(f"model {model!r} is not ingested for {what}; valid models: {', '.join(valid) or 'none'}")
        raise SpecError(f"model {model!r} matches several extractions of {what} ({matches}); pass an extraction id")

    def locate(self, eid: str, doc_hashes: list[str], layer: int | None = None) -> pa.Table:
        """Rows of ``doc_index`` serving ``doc_hashes`` (in that order, windows in order).

        With ``layer``, the shard serving that layer of each document, else the
        one serving its tokens: the smallest-id committed shard holding it
        (:mod:`.placement`). Documents not held are left out.
        """
        return self.placement(eid).locate(doc_hashes, layer)


def _version(value: Any, where: str) -> tuple[int, ...]:
    """A ``"major.minor"`` format version as a tuple; IntegrityError naming the file when it is not one."""
    try:
        return tuple(int(p) for p in str(value).split("."))
    except ValueError:
        raise IntegrityError(f"{where}: bad format_version {value!r}; run `layerlake verify`") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
