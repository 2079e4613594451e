"""The writer thread: streams batch outputs into shards and commits them.

Batches arrive in plan order through a bounded queue. Hidden states go straight
to the open shard's arrays, whole chunks at a time, while the model computes
the next batches; only the last partial chunks, the Parquet tables and the
commit marker are left for the end of a shard. Where shards end is the
caller's decision (``put(out, end_shard=True)``; see
:mod:`layerlake.ingest.executors.core`). Errors are re-raised in the ingest
thread at the next ``put`` or at ``close``; an aborted shard's folder is removed.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from ..store import abandon_shard, commit_shard, LakeStore, ShardBuilder, ShardData
from .capture import BatchOutput

log = logging.getLogger(__name__)

_STOP = object()


class ShardWriter:
    def __init__(self, store: LakeStore, eid: str, *, layers: list[int], dtype: str,
                 token_text: Callable[[np.ndarray], list[str]], max_queue: int = 4,
                 info: dict[str, Any] | None = None, on_commit: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = store
        self.eid = eid
        self.layers = layers
        self.dtype = dtype
        self.token_text = token_text
        self.info = info or {}
        self.on_commit = on_commit
        self.manifests: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._buf: list[BatchOutput] = []  # outputs of the open shard, their hidden states already handed on
        self._builder: ShardBuilder | None = None
        self._aborting = False
        self._thread = threading.Thread(target=self._run, name="layerlake-writer", daemon=True)
        self._thread.start()

    # -- ingest-thread side ------------------------------------------------------------------
    def put(self, out: BatchOutput, *, end_shard: bool = False) -> None:
        """Queue a batch's output; ``end_shard`` commits the open shard after it."""
        self._raise_if_failed()
        while True:
            try:
                self._q.put((out, end_shard), timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self) -> list[dict[str, Any]]:
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join()
        self._raise_if_failed()
        return self.manifests

    def abort(self) -> None:
        """Stop without committing the open shard, and remove it (used when the ingest fails)."""
        self._aborting = True
        if self._thread.is_alive():
            try:
                while True:
                    self._q.get_nowait()
            except queue.Empty:
                pass
            self._q.put(_STOP)
            self._thread.join(timeout=60)
        if not self._thread.is_alive():
            self._drop_open_shard()

    def _drop_open_shard(self) -> None:
        self._buf = []
        if self._builder is not None:
            builder, self._builder = self._builder, None
            builder.abandon()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    # -- writer-thread side -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                item = self._q.get()
                if item is _STOP:
                    if self._buf and not self._aborting:
                        self._flush()
                    return
                out, end_shard = item
                out.wait()
                self._add(out)
                out.hidden = {}  # stored (or pending in the builder): drop the host copies
                if end_shard:
                    self._flush()
        except BaseException as exc:  # handed to the ingest thread
            self.error = exc
            try:
                self._drop_open_shard()
            except Exception as cleanup_exc:  # keep the original error
                log.warning("could not remove the partial shard: %s", cleanup_exc)
            # drain so a blocked put() can notice the error
            try:
                while True:
                    self._q.get_nowait()
            except queue.Empty:
                pass

    def _add(self, out: BatchOutput) -> None:
        if self._builder is None:
            self._builder = ShardBuilder(self.store.fs, self.eid, self.dtype)
        for layer in self.layers:
            self._builder.append_hidden(layer, out.hidden_numpy(layer, self.dtype))
        self._buf.append(out)

    def _flush(self) -> None:
        builder = self._builder
        assert builder is not None
        docs, tokens, row_offsets = build_tables(self._buf, self.token_text)
        manifest = builder.finish(docs, tokens, jacobian=merge_extra_arrays(self._buf, row_offsets, "jacobian"),
                                  info=self.info)
        try:
            commit_shard(self.store.fs, self.eid, manifest)
        except BaseException:
            abandon_shard(self.store.fs, self.eid, manifest.shard)
            self._builder = None
            raise
        self._builder = None
        self.manifests.append(manifest)
        self._buf = []
        if self.on_commit:
            self.on_commit(manifest)


def build_tables(outputs: list[BatchOutput],
                 token_text: Callable[[np.ndarray], list[str]]) -> tuple[pa.Table, pa.Table, list[int]]:
    """The ``docs`` and ``tokens`` tables of buffered batch outputs, and each batch's first shard row."""
    doc_cols: dict[str, list[Any]] = {k: [] for k in ("doc_hash", "window", "char_offset", "n_tokens", "row_start",
                                                       "truncated")}
    tok_hash: list[str] = []
    tok_window: list[int] = []
    positions: list[np.ndarray] = []
    token_ids: list[int] = []
    nll_parts: list[np.ndarray] = []
    row = 0
    batch_row_offsets = []
    for out in outputs:
        batch_row_offsets.append(row)
        for w in out.batch.windows:
            doc_cols["doc_hash"].append(w.doc_hash)
            doc_cols["window"].append(w.window)
            doc_cols["char_offset"].append(w.char_offset)
            doc_cols["n_tokens"].append(w.n_tokens)
            doc_cols["row_start"].append(row)
            doc_cols["truncated"].append(w.truncated)
            tok_hash.extend([w.doc_hash] * w.n_tokens)
            tok_window.extend([w.window] * w.n_tokens)
            positions.append(np.arange(w.n_tokens, dtype=np.int32))
            token_ids.extend(w.input_ids)
            row += w.n_tokens
        n = sum(w.n_tokens for w in out.batch.windows)
        nll_parts.append(out.nll.numpy() if out.nll is not None else np.full(n, np.nan, np.float32))
    ids = np.asarray(token_ids, dtype=np.int32)
    nll = np.concatenate(nll_parts) if nll_parts else np.zeros(0, np.float32)
    tokens = pa.table({
        "row": pa.array(np.arange(row, dtype=np.int64)),
        "doc_hash": pa.array(tok_hash, pa.string()),
        "window": pa.array(tok_window, pa.int32()),
        "position": pa.array(np.concatenate(positions) if positions else np.zeros(0, np.int32)),
        "token_id": pa.array(ids),
        "token": pa.array(token_text(ids), pa.string()),
        "nll": pa.array(nll, pa.float32(), mask=np.isnan(nll)),
    })
    return pa.table(doc_cols), tokens, batch_row_offsets


def build_shard(outputs: list[BatchOutput], layers: list[int], dtype: str,
                token_text: Callable[[np.ndarray], list[str]], info: dict[str, Any]) -> ShardData:
    """Assemble buffered batch outputs into one shard's tables and arrays."""
    docs, tokens, batch_row_offsets = build_tables(outputs, token_text)
    hidden = {l: np.concatenate([o.hidden_numpy(l, dtype) for o in outputs]) for l in layers}
    jacobian = merge_extra_arrays(outputs, batch_row_offsets, "jacobian")
    return ShardData(docs=docs, tokens=tokens, hidden=hidden, dtype=dtype, jacobian=jacobian, info=info)


def merge_extra_arrays(outputs: list[BatchOutput], row_offsets: list[int], key: str) -> dict[str, dict[str, Any]]:
    """Concatenate per-batch extra captures ``{name: {"attrs", "layers": {l: {arr: ndarray}}}}``.

    Arrays are concatenated along axis 0; an array named ``rows`` holds
    batch-local token rows and is shifted to shard rows.
    """
    merged: dict[str, dict[str, Any]] = {}
    for out, offset in zip(outputs, row_offsets):
        for name, entry in (out.extra.get(key) or {}).items():
            m = merged.setdefault(name, {"attrs": entry.get("attrs", {}), "layers": {}})
            for layer, arrays in entry["layers"].items():
                slot = m["layers"].setdefault(layer, {})
                for arr_name, arr in arrays.items():
                    arr = np.asarray(arr)
                    if arr_name == "rows":
                        arr = arr + offset
                    slot.setdefault(arr_name, []).append(arr)
    for m in merged.values():
        for layer, arrays in m["layers"].items():
            m["layers"][layer] = {n: np.concatenate(parts) for n, parts in arrays.items()}
    return merged
