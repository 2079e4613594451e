"""Which committed shard serves each (document, layer): the placement rule, stated once.

**The rule.** Several committed shards may hold the same (document, layer), e.g.
a unit computed twice, or an import next to a local ingest. The one that serves
it is the committed shard with the **smallest shard id** (string order) among
those holding it. A shard holds (document, layer) when its ``docs.parquet``
lists the document and its commit marker lists the layer. Likewise:

- a document's tokens (and losses) come from the smallest-id committed shard
  holding the document at all;
- a (document, Jacobian sketch key, block) comes from the smallest-id committed
  shard holding the document whose commit marker lists the block under the key.

The choice depends only on the set of committed shards, never on listing order,
commit time or how a shard arrived (ingest or import), so every reader, planner,
export and import agrees. Shards that :meth:`LakeStore.doc_index` skips as
damaged hold nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .manifests import ShardManifest


def serving_shard(holders: Iterable[str]) -> str:
    """The rule itself: of the shards holding a thing, the one that serves it."""
    return min(holders)


def serving_rows(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Rows of ``table`` (with a ``shard`` column) in the serving shard of their ``keys`` group (order not kept).

    The vectorised form of :func:`serving_shard`: per distinct ``keys`` the
    smallest shard id is kept, with all of that shard's rows (its windows).
    """
    if table.num_rows == 0:
        return table
    best = table.group_by(list(keys)).aggregate([("shard", "min")]).rename_columns([*keys, "shard"])
    slim = table.select([*keys, "shard"]).append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    keep = slim.join(best, keys=[*keys, "shard"], join_type="left semi").column("_row")  # (joins refuse list columns)
    return table.take(keep.take(pc.sort_indices(keep)))


@dataclasses.dataclass(frozen=True, eq=False)
class Placement:
    """What the committed shards of one extraction hold, and which shard serves what.

    ``index`` is :meth:`LakeStore.doc_index` (one row per shard and document
    window, with the shard's hidden ``layers``); ``sketches`` maps each shard
    in it to its commit marker's sketch keys and blocks.
    """

    index: pa.Table
    sketches: Mapping[str, Mapping[str, tuple[int, ...]]]

    @classmethod
    def build(cls, index: pa.Table, manifests: Iterable[ShardManifest]) -> Placement:
        present = set(index.column("shard").to_pylist())
        return cls(index=index, sketches={m.shard: {k: e.layers for k, e in m.jacobian.items()}
                                          for m in manifests if m.shard in present})

    # -- the folds: what is held ------------------------------------------------------------
    @functools.cached_property
    def layers_held(self) -> dict[str, frozenset[int]]:
        """Document -> every hidden layer some committed shard holds for it (documents held at all)."""
        return _fold(self.index.column("doc_hash").to_pylist(), self.index.column("layers").to_pylist())

    @functools.cached_property
    def shard_docs(self) -> dict[str, frozenset[str]]:
        """Shard -> the documents its ``docs.parquet`` lists."""
        return _fold(self.index.column("shard").to_pylist(), ([h] for h in self.index.column("doc_hash").to_pylist()))

    def blocks_held(self, key: str) -> dict[str, frozenset[int]]:
        """Document -> the blocks sketched under ``key`` for it (documents held at all; empty when none)."""
        return _fold(self.index.column("doc_hash").to_pylist(),
                     (self.sketches.get(sid, {}).get(key, ()) for sid in self.index.column("shard").to_pylist()))

    def sketch_keys(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Sketch key -> {shard: blocks} over the committed shards."""
        out: dict[str, dict[str, tuple[int, ...]]] = {}
        for sid in sorted(self.sketches):
            for key, blocks in self.sketches[sid].items():
                out.setdefault(key, {})[sid] = blocks
        return out

    # -- the rule applied --------------------------------------------------------------------
    def token_shards(self) -> dict[str, str]:
        """Document -> the shard serving its tokens."""
        return self._serving(lambda sid, layers: True)

    def layer_shards(self, layer: int) -> dict[str, str]:
        """Document -> the shard serving ``layer`` of it (documents whose layer is held)."""
        return self._serving(lambda sid, layers: layer in layers)

    def sketch_shards(self, key: str, block: int) -> dict[str, str]:
        """Document -> the shard serving its sketches of ``key`` at ``block``."""
        return self._serving(lambda sid, layers: block in self.sketches.get(sid, {}).get(key, ()))

    def _serving(self, holds: Callable[[str, list[int]], bool]) -> dict[str, str]:
        holders: dict[str, set[str]] = {}
        for h, sid, ls in zip(self.index.column("doc_hash").to_pylist(), self.index.column("shard").to_pylist(),
                              self.index.column("layers").to_pylist()):
            if holds(sid, ls):
                holders.setdefault(h, set()).add(sid)
        return {h: serving_shard(s) for h, s in holders.items()}

    def locate(self, doc_hashes: Sequence[str], layer: int | None = None) -> pa.Table:
        """Index rows serving ``doc_hashes`` (in that order, windows in order): their shard and row range.

        With ``layer``, the shard serving that layer of each document, else the
        one serving its tokens. Documents not held are left out.
        """
        index = self.index
        if layer is not None and index.num_rows:
            index = index.filter(pa.array([layer in ls for ls in index.column("layers").to_pylist()], pa.bool_()))
        order = {h: i for i, h in enumerate(doc_hashes)}
        index = index.filter(pc.is_in(index.column("doc_hash"), value_set=pa.array(list(order), pa.string())))
        sub = serving_rows(index, ["doc_hash"])
        sub = sub.append_column("_order", pa.array([order[h] for h in sub.column("doc_hash").to_pylist()], pa.int64()))
        return sub.sort_by([("_order", "ascending"), ("window", "ascending")]).drop_columns(["_order"])

    def vector_rows(self) -> pa.Table:
        """One row per (layer, document window) in the shard serving that layer.

        Columns: layer, shard, doc_hash, window, row_start, n_tokens.
        """
        t = self.index
        layer = pc.list_flatten(t.column("layers"))
        parents = pc.list_parent_indices(t.column("layers"))
        flat = t.select(["shard", "doc_hash", "window", "row_start", "n_tokens"]).take(parents)
        flat = flat.add_column(0, "layer", layer.cast(pa.int32()))
        return serving_rows(flat, ["layer", "doc_hash"])


def _fold(keys: Iterable[Any], values: Iterable[Iterable[Any]]) -> dict[Any, frozenset[Any]]:
    """``key -> union of its values`` over paired rows."""
    out: dict[Any, set[Any]] = {}
    for k, vs in zip(keys, values):
        out.setdefault(k, set()).update(vs)
    return {k: frozenset(vs) for k, vs in out.items()}
