"""Export one dataset (some models, some layers) as a self-contained lake with a card and checksums.

The export is an ordinary lake (open it with ``Lake(out, mode="r")``) holding
just the selection, plus:

- ``README.md``: a dataset card (models, revisions, weight and tokenizer hashes,
  capture spec, layers, corpus description and license, sizes, how to load);
- ``MANIFEST.json``: every other file with its size and SHA-256, written last,
  so an export without it is incomplete and ``import`` refuses it.

Shards are copied byte for byte when the selection takes them whole (every
document, every layer, every sketch); otherwise the selected rows are rewritten
as a new shard (rows renumbered, values bit-identical, id ``<shard>-<hash>``).
Each (document, layer) pair is exported once, from the shard readers would use.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
from typing import Any, Sequence

from ..errors import NotFoundError, SpecError
from ..progress import track
from . import layout
from .catalog import LakeStore
from .fs import LakeFS, canonical_json
from .layout import EXPORT_CARD, EXPORT_MANIFEST, WRITER_FILE, safe_relpath
from .shards import write_shard
from .specs import parse_layers
from .subset import ShardPick, plan_picks, read_subset
from .transfer import copy_file, sha256_file

log = logging.getLogger(__name__)

EXPORT_FORMAT = "layerlake-export"
EXPORT_VERSION = 1


@dataclasses.dataclass
class ExportReport:
    out: str
    dataset: str
    extractions: list[str]
    n_docs: int
    n_tokens: int
    layers: dict[str, list[int]]
    shards_copied: int
    shards_rewritten: int
    files: int
    bytes: int

    def summary(self) -> str:
        return (f"exported dataset {self.dataset!r} ({self.n_docs} documents, {self.n_tokens:,} tokens, "
                f"{len(self.extractions)} extraction(s)) to {self.out}: {self.files} files, "
                f"{self.bytes / 1e6:,.1f} MB; {self.shards_copied} shard(s) copied whole, "
                f"{self.shards_rewritten} rewritten from selected rows")


def export_dataset(store: LakeStore, dataset: str, out: Any, *, models: Sequence[str] | str | None = None,
                   layers: Any = None, vectors: bool = True, license: str | None = None,
                   description: str | None = None, storage_options: dict[str, Any] | None = None) -> ExportReport:
    """Write dataset ``dataset`` (with ``models``' extractions, ``layers``) as a new lake at ``out``.

    out: a path/URL of a new or empty folder, or an open :class:`LakeStore`
    (must be writable and empty). models: model ids/paths as given at ingest or
    extraction ids (default: every extraction the dataset was ingested into).
    layers: "all"/None (every stored layer) or a list; vectors=False exports
    tokens and losses only (no hidden states, no Jacobian sketches).
    """
    table = store.dataset_table(dataset)
    hashes = table.column("doc_hash").to_pylist()
    links = store.dataset_links(dataset)
    if models is None:
        eids = sorted(links)
        if not eids:
            raise NotFoundError(f"dataset {dataset!r} has not been ingested with any model; nothing to export")
    else:
        refs = [models] if isinstance(models, str) else list(models)
        eids = list(dict.fromkeys(store.resolve_extraction(dataset, m) for m in refs))
    parsed = None if layers is None else parse_layers(layers)
    layer_list = None if parsed in (None, "all") else list(parsed)
    plans: dict[str, list[ShardPick]] = {eid: plan_picks(store, eid, hashes, layer_list, vectors, dataset=dataset)
                                         for eid in eids}

    target, created = _open_target(out, storage_options)
    try:
        report = _write_export(store, target, dataset, eids, plans, links, vectors, layer_list, license, description)
    except BaseException:
        if created:
            try:
                target.fs.rm()
            except OSError as exc:
                log.warning("could not remove the partial export at %s: %s", target.fs.url, exc)
        raise
    report.n_docs = len(hashes)
    log.info(report.summary())
    return report


def _open_target(out: Any, storage_options: dict[str, Any] | None) -> tuple[LakeStore, bool]:
    if isinstance(out, LakeStore) or hasattr(out, "store") and isinstance(out.store, LakeStore):
        target = out if isinstance(out, LakeStore) else out.store
        target.fs.check_writable()
        created = False
    else:
        probe = LakeFS(out, storage_options=storage_options)
        existed = probe.exists() and bool(probe.listdir())
        if existed and not probe.exists(layout.LAKE_META):
            raise SpecError(f"export target {probe.url} exists and is not empty; give a new or empty folder")
        target = LakeStore(out, mode="a", storage_options=storage_options)
        created = not existed
    if target.extraction_ids() or target.dataset_names() or target.fs.exists(EXPORT_MANIFEST):
        raise SpecError(f"export target {target.fs.url} already holds a lake; export into a new or empty folder "
                        "(to merge into an existing lake, use `layerlake import`)")
    return target, created


def _write_export(store: LakeStore, target: LakeStore, dataset: str, eids: list[str],
                  plans: dict[str, list[ShardPick]], links: dict[str, dict[str, Any]], vectors: bool,
                  layer_list: list[int] | None, license: str | None, description: str | None) -> ExportReport:
    src, dst = store.fs, target.fs
    known: dict[str, tuple[int, str]] = {}  # rel path -> (size, sha256) hashed while copying
    copied = rewritten = 0
    exported_layers: dict[str, list[int]] = {}
    ext_info: dict[str, dict[str, Any]] = {}
    total = sum(len(p) for p in plans.values())
    with track(f"export {dataset}", total=total, unit="shards") as tr:
        for eid in eids:
            rel = layout.rel(layout.extraction_meta(eid))
            known[rel] = copy_file(src, rel, dst)
            for name in src.listdir(*layout.aliases_dir(eid)):
                rel = layout.rel((*layout.aliases_dir(eid), name))
                known[rel] = copy_file(src, rel, dst)
            manifests = {m.shard: m for m in store.shard_manifests(eid)}
            lays: set[int] = set()
            jac_keys: set[str] = set()
            ext_bytes = 0
            for pick in plans[eid]:
                man = manifests[pick.shard]
                if pick.whole:
                    marker = src.url_of(*layout.commit_marker(eid, pick.shard))
                    for rel_in_shard, info in sorted(man.files.items()):
                        safe_relpath(rel_in_shard, where=marker)   # nothing outside the shard is read or written
                        rel = layout.rel(layout.shard_file(eid, pick.shard, rel_in_shard))
                        known[rel] = copy_file(src, rel, dst, size=info.size, crc=info.crc32c)
                    rel = layout.rel(layout.commit_marker(eid, pick.shard))
                    known[rel] = copy_file(src, rel, dst)
                    new_man = man
                    copied += 1
                else:
                    jac_layers = None if layer_list is None and set(pick.layers) == set(man.layers) else pick.layers
                    data = read_subset(src, eid, man, pick.docs, pick.layers,
                                       jacobian_layers=jac_layers if vectors else ())
                    new_man = write_shard(dst, eid, data, shard_id=pick.subset_id())
                    dst.rm(*layout.shard_file(eid, new_man.shard, WRITER_FILE))  # not shard data
                    rewritten += 1
                lays.update(new_man.layers)
                jac_keys.update(new_man.jacobian)
                ext_bytes += new_man.bytes
                tr.advance(1)
                tr.add_bytes(new_man.bytes)
            exported_layers[eid] = sorted(lays)
            ext_info[eid] = {"bytes": ext_bytes, "shards": len(plans[eid]), "jacobian": sorted(jac_keys)}
        rel = layout.rel(layout.dataset_docs(dataset))
        known[rel] = copy_file(src, rel, dst)
        for eid in eids:
            record = {k: v for k, v in links.get(eid, {}).items() if k not in ("extraction", "dataset", "updated")}
            record["layers"] = exported_layers[eid]
            record["exported"] = _now()
            target.link_dataset(dataset, eid, record)
    n_tokens = _dataset_tokens(target, dataset, eids[0]) if eids else 0
    card = dataset_card(store, target, dataset, eids, exported_layers, ext_info, vectors, license, description,
                        n_tokens)
    dst.write_bytes_atomic(card.encode(), EXPORT_CARD)
    files: dict[str, dict[str, Any]] = {}
    for rel in sorted(dst.walk_files()):
        if rel == EXPORT_MANIFEST or layout.is_temp(rel.rsplit("/", 1)[-1]):
            continue
        size, digest = known[rel] if rel in known else sha256_file(dst, rel)
        files[rel] = {"size": size, "sha256": digest}
    manifest = {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "created": _now(), "dataset": dataset,
        "extractions": eids, "layers": {e: exported_layers[e] for e in eids}, "vectors": vectors,
        "license": license, "description": description, "files": files,
        "bytes": int(sum(f["size"] for f in files.values())),
    }
    dst.write_bytes_atomic(canonical_json(manifest, indent=2).encode(), EXPORT_MANIFEST)
    return ExportReport(out=dst.url, dataset=dataset, extractions=eids, n_docs=0, n_tokens=n_tokens,
                        layers=exported_layers, shards_copied=copied, shards_rewritten=rewritten,
                        files=len(files) + 1, bytes=manifest["bytes"])


def _dataset_tokens(target: LakeStore, dataset: str, eid: str) -> int:
    table = target.dataset_table(dataset)
    loc = target.locate(eid, table.column("doc_hash").to_pylist())
    return int(sum(loc.column("n_tokens").to_pylist())) if loc.num_rows else 0


def dataset_card(store: LakeStore, target: LakeStore, dataset: str, eids: list[str],
                 layers: dict[str, list[int]], info: dict[str, dict[str, Any]], vectors: bool,
                 license: str | None, description: str | None, n_tokens: int) -> str:
    """The export's README.md: what it holds, where it came from, how to load it."""
    table = target.dataset_table(dataset)
    total = sum(i["bytes"] for i in info.values())
    lines = [
        f"# {dataset}: layerlake export", "",
        (description or "_No corpus description was given (`layerlake export --description ...`)._"), "",
        f"- **License of the corpus and derived data:** {license or 'not specified (`--license`)'}",
        f"- **Documents:** {table.num_rows:,}; **tokens:** {n_tokens:,}",
        (f"- **Contents:** {'hidden states, per-token losses' if vectors else 'tokens and per-token losses only'}"
         f" for {len(eids)} extraction(s); {total / 1e6:,.1f} MB of shards"),
        f"- **Exported:** {_now()} by layerlake {_version()}",
        f"- **Metadata columns:** {', '.join(c for c in table.column_names if c not in ('ordinal', 'doc_hash'))}",
        "",
        "## Extractions", "",
    ]
    for eid in eids:
        man = store.extraction(eid)
        model = man.model
        capture = man.capture or {}
        aliases = store.aliases(eid)
        lines += [
            f"### `{eid}`: {', '.join(aliases) or model.get('model')}", "",
            "| field | value |", "|---|---|",
            f"| model (as given at ingest) | {', '.join(f'`{a}`' for a in aliases) or model.get('model')} |",
            f"| model class | {model.get('model_class')} |",
            f"| revision | {model.get('revision') or 'not recorded (local files)'} |",
            f"| weights hash (blake2b-128) | `{model.get('weights_hash')}` |",
            f"| tokenizer hash | `{model.get('tokenizer_hash')}` |",
            f"| config hash | `{model.get('config_hash')}` |",
            f"| model fingerprint | `{model.get('fingerprint')}` |",
            f"| model dtype / attention | {model.get('model_dtype')} / {model.get('attn_implementation')} |",
            "| capture spec | " + ", ".join(f"{k}={capture[k]}" for k in sorted(capture)) + " |",
            f"| layers (0 = embeddings) | {_fmt_layers(layers[eid]) if vectors else 'none (tokens only)'} |",
            f"| n_layers / d_model / storage dtype | {man.n_layers} / {man.d_model} / {man.dtype} |",
            f"| Jacobian sketches | {', '.join(info[eid]['jacobian']) or 'none'} |",
            f"| shards / bytes | {info[eid]['shards']} / {info[eid]['bytes']:,} |",
            "",
        ]
    first = (store.aliases(eids[0]) or [eids[0]])[0] if eids else None
    lines += [
        "## How to load", "",
        "Use it in place (read-only), or merge it into your own lake; `import` checks every SHA-256 in",
        "`MANIFEST.json` before anything becomes visible and stores documents already present only once.", "",
        "```python", "import layerlake as ll",
        'lake = ll.Lake("PATH_OR_URL_OF_THIS_FOLDER", mode="r")',
        f"lake.tokens({dataset!r}, model={first!r}).collect()",
    ]
    if vectors and eids and layers[eids[0]]:
        lines.append(f"lake.read_vectors({dataset!r}, model={first!r}, layers={layers[eids[0]][:2]})")
    lines += [
        'll.import_lake("PATH_OR_URL_OF_THIS_FOLDER", "my-lake")   # or: layerlake import SRC --lake my-lake',
        "```", "",
        "## Integrity", "",
        "`MANIFEST.json` lists every file of this folder (except itself) with its size and SHA-256.",
        "The data is JSON, Parquet and Zarr v3 only; nothing in it is executed when it is opened or imported.", "",
    ]
    return "\n".join(lines)


def _fmt_layers(layers: list[int]) -> str:
    return ", ".join(map(str, layers)) if layers else "none"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("layerlake")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


__all__ = ["export_dataset", "ExportReport", "EXPORT_FORMAT", "EXPORT_VERSION"]
