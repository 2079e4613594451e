"""The local executor: this process computes the shard plan while a writer thread commits shards."""

from __future__ import annotations

import time
from typing import Any

from ...progress import track
from ...store import CaptureSpec, LakeStore
from ..models import LoadedModel
from ..sources import Corpus
from ..writer import ShardWriter
from .core import BatchStep, compute_shard, default_batch_tokens, plan_shards, token_text_table


def run_local(store: LakeStore, eid: str, lm: LoadedModel, corpus: Corpus, groups: dict[tuple[int, ...], list[str]],
              spec: CaptureSpec, *, batch_tokens: int | None, shard_bytes: int,
              shard_seconds: float | None) -> dict[str, Any]:
    """Compute every planned shard in this process, in plan order.

    Returns ``tokens``, ``shards``, ``bytes``, ``truncated`` and ``compute_seconds``.
    """
    stats: dict[str, Any] = {"tokens": 0, "shards": 0, "bytes": 0, "truncated": 0, "compute_seconds": 0.0}
    if not groups:
        return stats
    t_start = time.monotonic()
    plan = plan_shards(lm, corpus, groups, spec, batch_tokens=batch_tokens or default_batch_tokens(
        lm.device.type == "cuda"), shard_bytes=shard_bytes)
    stats["truncated"] = plan.truncated
    step = BatchStep(lm, spec)
    token_text = token_text_table(lm.tokenizer)
    with track(f"ingest {lm.ref}", total=plan.n_docs, unit="docs") as tr:

        def committed(man: dict[str, Any]) -> None:
            stats["shards"] += 1
            stats["bytes"] += man.bytes
            tr.add_bytes(man.bytes)

        writer: ShardWriter | None = None
        try:
            for shard in plan.shards:
                if writer is None or writer.layers != list(shard.layers):
                    if writer is not None:
                        writer.close()
                    writer = ShardWriter(store, eid, layers=list(shard.layers), dtype=spec.dtype,
                                         token_text=token_text, on_commit=committed,
                                         info={"device": str(lm.device)})
                done_docs: set[int] = set()
                for out, end in compute_shard(shard, step, shard_seconds):
                    writer.put(out, end_shard=end)
                    new_docs = {w.doc_order for w in out.batch.windows} - done_docs
                    done_docs |= new_docs
                    stats["tokens"] += out.batch.n_tokens
                    tr.advance(len(new_docs), tokens=out.batch.n_tokens)
            if writer is not None:
                writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    stats["compute_seconds"] = time.monotonic() - t_start
    return stats
