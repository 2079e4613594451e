"""The per-lake query engine: snapshot and caches (arrays are read by ``store.reader``).

Each :class:`layerlake.Lake` creates one (``lake.engine``); query functions take
it (or the store) as an argument. Caches hold only immutable things (committed
shards never change), keyed by extraction and shard id. The SQL catalog is built
on top of an engine (:class:`layerlake.queries.sql.SqlCatalog`), not inside it.
"""

from __future__ import annotations

import collections
import threading

import pyarrow as pa

from ..errors import IntegrityError
from ..store import LakeStore, layout
from .snapshot import Snapshot, state_key

_TOKEN_COLUMNS = ["row", "position", "token_id", "token", "nll"]


class QueryEngine:
    def __init__(self, store: LakeStore) -> None:
        self.store = store
        self._snapshot: Snapshot | None = None
        self._lock = threading.RLock()
        self._tokens: collections.OrderedDict[tuple[str, str], pa.Table] = collections.OrderedDict()
        self._token_bytes = 0
        self.token_cache_bytes = 256 << 20

    def snapshot(self, refresh: bool = True) -> Snapshot:
        """The current committed state (rebuilt only when commit markers, datasets or metric files changed)."""
        with self._lock:
            if self._snapshot is not None and not refresh:
                return self._snapshot
            key = state_key(self.store)
            if self._snapshot is None or self._snapshot.key != key:
                self._snapshot = Snapshot(self.store, key)
            return self._snapshot

    def token_table(self, eid: str, shard: str) -> pa.Table:
        """``tokens.parquet`` of a committed shard (row, position, token_id, token, nll), row-indexed, cached."""
        key = (eid, shard)
        with self._lock:
            t = self._tokens.get(key)
            if t is not None:
                self._tokens.move_to_end(key)
                return t
        t = self.store.shard_table(eid, shard, layout.TOKENS_FILE, columns=_TOKEN_COLUMNS)
        rows = t.column("row").to_numpy()
        if rows.size and not (rows[0] == 0 and rows[-1] == rows.size - 1 and (rows[1:] > rows[:-1]).all()):
            raise IntegrityError(f"tokens.parquet of extraction {eid} shard {shard} is not ordered by row 0..n-1; "
                                 "run `layerlake verify`")
        t = t.combine_chunks()
        with self._lock:
            self._tokens[key] = t
            self._token_bytes += t.nbytes
            while self._token_bytes > self.token_cache_bytes and len(self._tokens) > 1:
                _, old = self._tokens.popitem(last=False)
                self._token_bytes -= old.nbytes
        return t

