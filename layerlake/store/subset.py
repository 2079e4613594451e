"""Selecting (document, layer) pairs out of committed shards, and rewriting them as new shards.

Export and import both need "these documents with these layers, each pair
once". :func:`plan_picks` chooses, for every wanted pair, the shard readers
use (:mod:`.placement`: the smallest-id committed shard holding it) and groups
the choices per shard; :func:`read_subset` reads one such
group back as a :class:`ShardData` (rows renumbered, arrays in their physical
dtype so values stay bit-identical) ready for :func:`write_shard`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import IntegrityError, NotFoundError
from . import layout
from .arrays import merge_ranges, open_group
from .catalog import LakeStore
from .fs import LakeFS
from .hashing import json_hash
from .manifests import ShardFile, ShardManifest
from .safety import check_array
from .shards import ShardData, check_bytes, read_parquet

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ShardPick:
    """Take ``docs`` with hidden ``layers`` out of committed shard ``shard``.

    ``whole`` means the pick is the entire shard (every document, every layer
    and every Jacobian sketch), so its files can be copied byte for byte.
    ``layers == ()`` takes tokens and losses only.
    """

    shard: str
    docs: frozenset[str]
    layers: tuple[int, ...]
    whole: bool

    def subset_id(self) -> str:
        """Deterministic id of the shard this pick becomes when rewritten."""
        if self.whole:
            return self.shard
        key = json_hash({"docs": sorted(self.docs), "layers": list(self.layers)}, 8)
        return f"{self.shard}-{key}"


def plan_picks(store: LakeStore, eid: str, doc_hashes: Sequence[str], layers: Sequence[int] | None,
               vectors: bool = True, dataset: str | None = None) -> list[ShardPick]:
    """Shard picks covering ``doc_hashes`` x ``layers`` of extraction ``eid``, each pair once.

    ``layers=None`` takes every layer stored for each document. With
    ``vectors=False`` only tokens and losses are taken (one shard per document).
    Raises :class:`NotFoundError` if a document or (document, layer) is not stored
    (:class:`IntegrityError` if it was stored and is lost: ``dataset`` names the
    dataset the documents come from, see :meth:`LakeStore.missing_documents_error`).
    """
    placement = store.placement(eid)
    manifests = {m.shard: m for m in store.shard_manifests(eid)}
    wanted = list(dict.fromkeys(doc_hashes))
    tokens_from = placement.token_shards()
    shard_docs = placement.shard_docs
    by_layer = {layer: placement.layer_shards(layer)
                for layer in sorted({l for ls in placement.layers_held.values() for l in ls})}
    layer_from = {h: {layer: by_layer[layer][h] for layer in ls} for h, ls in placement.layers_held.items()}
    absent = [h for h in wanted if h not in tokens_from]
    if absent:
        raise store.missing_documents_error(eid, None, absent, dataset)
    chosen: dict[str, dict[str, set[int]]] = {}
    if not vectors:
        for h in wanted:
            chosen.setdefault(tokens_from[h], {})[h] = set()
    else:
        missing: list[tuple[str, int]] = []
        for h in wanted:
            have = layer_from.get(h, {})
            want = sorted(have) if layers is None else list(layers)
            for layer in want:
                if layer not in have:
                    missing.append((h, layer))
                    continue
                chosen.setdefault(have[layer], {}).setdefault(h, set()).add(layer)
            if not want:  # a tokens-only document: take its tokens anyway
                chosen.setdefault(tokens_from[h], {}).setdefault(h, set())
        if missing:
            lays = sorted({l for _, l in missing})
            raise NotFoundError(f"{len(missing)} (document, layer) pair(s) are not stored in extraction {eid} "
                                f"(layers {lays}); ingest them first (`layerlake ingest ... --layers "
                                f"{','.join(map(str, lays))}`) or export fewer layers")
    picks: list[ShardPick] = []
    for sid in sorted(chosen):
        groups: dict[tuple[int, ...], set[str]] = {}
        for h, ls in chosen[sid].items():
            groups.setdefault(tuple(sorted(ls)), set()).add(h)
        man = manifests[sid]
        for lays, docs in sorted(groups.items()):
            whole = (docs == shard_docs.get(sid, frozenset()) and list(lays) == sorted(man.layers)
                     and (vectors or not (man.layers or man.jacobian)))
            picks.append(ShardPick(sid, frozenset(docs), lays, whole))
    return picks


def read_subset(fs: LakeFS, eid: str, manifest: ShardManifest, docs: Iterable[str] | None,
                layers: Sequence[int], jacobian_layers: Iterable[int] | None = None) -> ShardData:
    """Documents ``docs`` (all if None) with hidden ``layers`` of one committed shard, as new shard data.

    Rows are renumbered from 0 in the shard's order. Jacobian sketches are kept
    for ``jacobian_layers`` (``None`` = every sketched layer; empty = none): their
    ``rows`` array is remapped and arrays aligned with it filtered alike.
    """
    sid = manifest.shard
    base = layout.shard_dir(eid, sid)
    _check_array_metadata(fs, base, manifest)
    docs_t = read_parquet(fs, *base, layout.DOCS_FILE, expect=_listed(fs, manifest, eid, layout.DOCS_FILE))
    if docs is not None:
        keep = pc.is_in(docs_t.column("doc_hash"), value_set=pa.array(sorted(set(docs)), pa.string()))
        docs_t = docs_t.filter(keep)
    docs_t = docs_t.sort_by([("row_start", "ascending")])
    tokens_all = read_parquet(fs, *base, layout.TOKENS_FILE,
                              expect=_listed(fs, manifest, eid, layout.TOKENS_FILE)).sort_by([("row", "ascending")])
    n_old = tokens_all.num_rows
    if n_old and tokens_all.column("row").to_pylist() != list(range(n_old)):
        raise IntegrityError(f"{fs.url_of(*base, layout.TOKENS_FILE)}: rows are not 0..{n_old - 1}; run `layerlake verify`")
    ranges = [(int(r0), int(r0) + int(n)) for r0, n in zip(docs_t.column("row_start").to_pylist(),
                                                          docs_t.column("n_tokens").to_pylist())]
    old_rows = (np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges])
                if ranges else np.zeros(0, np.int64))
    everything = len(old_rows) == n_old
    tokens = tokens_all.take(pa.array(old_rows))
    tokens = tokens.set_column(tokens.schema.get_field_index("row"), "row",
                               pa.array(np.arange(len(old_rows), dtype=np.int64)))
    new_starts = np.concatenate([[0], np.cumsum([b - a for a, b in ranges])[:-1]]).astype(np.int64) \
        if ranges else np.zeros(0, np.int64)
    docs_t = docs_t.set_column(docs_t.schema.get_field_index("row_start"), "row_start", pa.array(new_starts))
    hidden: dict[int, np.ndarray] = {}
    if layers:
        group = open_group(fs, *base, layout.HIDDEN_GROUP)
        for layer in layers:
            arr = group[layout.layer_name(layer)]
            check_array(arr, where=fs.url_of(*base, layout.HIDDEN_GROUP, layout.layer_name(layer)))
            if everything:
                hidden[int(layer)] = np.asarray(arr[...])
            else:
                parts = [np.asarray(arr[a:b]) for a, b in merge_ranges(ranges)]
                hidden[int(layer)] = (np.concatenate(parts) if parts
                                      else np.zeros((0,) + tuple(arr.shape[1:]), arr.dtype))
    jac = _jacobian_subset(fs, base, manifest, old_rows, n_old, everything, jacobian_layers)
    return ShardData(docs=docs_t, tokens=tokens, hidden=hidden, dtype=manifest.dtype,
                     jacobian=jac, info={"subset_of": sid})


def _jacobian_subset(fs: LakeFS, base: tuple[str, ...], manifest: ShardManifest, old_rows: np.ndarray, n_old: int,
                     everything: bool, jacobian_layers: Iterable[int] | None) -> dict[str, dict[str, Any]]:
    entries = manifest.jacobian
    if not entries:
        return {}
    allowed = None if jacobian_layers is None else {int(l) for l in jacobian_layers}
    if allowed is not None and not allowed:
        return {}
    new_index = np.full(n_old, -1, np.int64)
    new_index[old_rows] = np.arange(len(old_rows), dtype=np.int64)
    group = open_group(fs, *base, layout.JACOBIAN_GROUP)
    out: dict[str, dict[str, Any]] = {}
    for key, entry in entries.items():
        kg = group[key]
        layers_out: dict[int, dict[str, np.ndarray]] = {}
        for layer in entry.layers:
            if allowed is not None and int(layer) not in allowed:
                continue
            lg = kg[layout.layer_name(layer)]
            arrays = {}
            for name, arr in lg.arrays():
                check_array(arr, where=fs.url_of(*base, layout.JACOBIAN_GROUP,
                                                 layout.jacobian_member(key, layer, name)))
                arrays[name] = np.asarray(arr[...])
            if not everything:
                if "rows" not in arrays:
                    log.warning("%s/%s layer %s has no 'rows' array; cannot subset it, dropped",
                                "/".join(base), key, layer)
                    continue
                rows = arrays["rows"].astype(np.int64)
                mask = (rows >= 0) & (rows < n_old)
                mask[mask] = new_index[rows[mask]] >= 0
                n = len(rows)
                arrays = {name: (a[mask] if a.ndim and a.shape[0] == n else a) for name, a in arrays.items()}
                arrays["rows"] = new_index[rows[mask]].astype(arrays["rows"].dtype)
                if not len(arrays["rows"]):
                    continue
            layers_out[int(layer)] = arrays
        if layers_out:
            out[key] = {"attrs": dict(kg.attrs), "layers": layers_out}
    return out


def _listed(fs: LakeFS, manifest: ShardManifest, eid: str, name: str) -> ShardFile:
    """The commit marker's entry for a shard table; IntegrityError when the marker lists none."""
    entry = manifest.files.get(name)
    if entry is None or entry.crc32c is None:
        raise IntegrityError(f"{fs.url_of(*layout.commit_marker(eid, manifest.shard))} lists no crc32c for {name}; "
                             "run `layerlake verify`")
    return entry


def _check_array_metadata(fs: LakeFS, base: tuple[str, ...], manifest: ShardManifest) -> None:
    """Every ``zarr.json`` of the shard against its commit-marker entry, before zarr opens any array."""
    for rel, entry in sorted(manifest.files.items()):
        if not rel.endswith("zarr.json"):
            continue
        try:
            data = fs.read_bytes(*base, rel)
        except FileNotFoundError:
            raise IntegrityError(f"{fs.url_of(*base, rel)} is missing; run `layerlake verify`") from None
        problem = check_bytes(data, entry)
        if problem:
            raise IntegrityError(f"{fs.url_of(*base, rel)} is damaged: {problem}; run `layerlake verify`")
