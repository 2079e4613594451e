"""What both executors share: the shard plan and the compute step of one batch.

The shard plan says which batches make which shard. It is a function of the
plan alone (the documents to compute, the capture spec, the batch budget and
``shard_bytes``), so the local and the Ray executor cut the same shards: within
one layer group, in plan order, a shard ends after the first batch at which it
holds ``shard_bytes`` of arrays (hidden states plus Jacobian sketches, both
known before any compute) and no document has a window left for later (a
document never spans shards). On top of that, :func:`compute_shard` ends a
shard early, at such a document boundary, once ``shard_seconds`` have passed
since it began (a slow model still commits regularly); ``shard_seconds=None``
turns that off and leaves exactly the planned shards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ...store import CaptureSpec
from ..batching import Batch, plan_batches, tokenize_documents
from ..capture import BatchOutput, forward_batch
from ..models import LoadedModel
from ..sources import Corpus

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}
SHARD_SECONDS = 120.0  # the default time cut


@dataclasses.dataclass(frozen=True)
class PlannedShard:
    """Consecutive batches of one layer group that become one shard (``index``: its place in the plan)."""

    index: int
    layers: tuple[int, ...]
    batches: tuple[Batch, ...]
    nbytes: int

    @property
    def n_tokens(self) -> int:
        return sum(b.n_tokens for b in self.batches)

    @property
    def n_docs(self) -> int:
        return len({w.doc_order for b in self.batches for w in b.windows})


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Every planned shard, in commit order, and how many documents were truncated."""

    shards: tuple[PlannedShard, ...]
    truncated: int

    @property
    def n_docs(self) -> int:
        return sum(s.n_docs for s in self.shards)


def sketch_capture(spec: CaptureSpec) -> Any:
    """The Jacobian sketch capture of ``spec`` (None without sketches)."""
    if spec.jacobian is None:
        return None
    from ..jacobian import make_capture  # the Jacobian sketch capture (optional part)
    return make_capture(spec.jacobian)


def make_batches(lm: LoadedModel, corpus: Corpus, hashes: Sequence[str], spec: CaptureSpec,
                 batch_tokens: int) -> tuple[list[Batch], int]:
    """The batches of documents ``hashes`` (in corpus order) and how many were truncated."""
    order = {d.doc_hash: i for i, d in enumerate(corpus.documents)}
    todo = sorted(hashes, key=order.__getitem__)
    docs = [corpus.documents[order[h]] for h in todo]
    windows, n_trunc = tokenize_documents(lm.tokenizer, docs, spec, orders=[order[h] for h in todo])
    # no widening of the budget to the longest window: plan_batches gives an oversized window a batch of its
    # own, and a budget that depended on the documents left would change the batches of a resumed ingest
    return plan_batches(windows, batch_tokens), n_trunc


def default_batch_tokens(on_gpu: bool) -> int:
    return 32768 if on_gpu else 4096


def cut_shards(batches: Sequence[Batch], layers: Sequence[int], batch_bytes: Callable[[Batch], int], *,
               shard_bytes: int, first_index: int = 0) -> list[PlannedShard]:
    """Cut one layer group's batches into shards (the rule in the module docstring)."""
    windows: dict[int, int] = {}
    for b in batches:
        for w in b.windows:
            windows[w.doc_order] = windows.get(w.doc_order, 0) + 1
    shards: list[PlannedShard] = []
    buf: list[Batch] = []
    buf_bytes = 0
    left: dict[int, int] = {}  # windows still to come of the open shard's documents
    for b in batches:
        buf.append(b)
        buf_bytes += batch_bytes(b)
        for w in b.windows:
            left[w.doc_order] = left.get(w.doc_order, windows[w.doc_order]) - 1
            if not left[w.doc_order]:
                del left[w.doc_order]
        if not left and buf_bytes >= shard_bytes:
            shards.append(PlannedShard(first_index + len(shards), tuple(layers), tuple(buf), buf_bytes))
            buf, buf_bytes = [], 0
    if buf:
        shards.append(PlannedShard(first_index + len(shards), tuple(layers), tuple(buf), buf_bytes))
    return shards


def plan_shards(lm: LoadedModel, corpus: Corpus, groups: dict[tuple[int, ...], list[str]], spec: CaptureSpec, *,
                batch_tokens: int, shard_bytes: int) -> ShardPlan:
    """The shards of ``groups`` (missing layers -> documents), layer groups in sorted order.

    Checks explicit Jacobian positions against every window before any compute.
    """
    sketch = sketch_capture(spec)
    if sketch is not None:
        sketch.prepare(lm)
    itemsize = ITEMSIZE[spec.dtype]
    shards: list[PlannedShard] = []
    truncated = 0
    for layers, hashes in sorted(groups.items()):
        batches, n_trunc = make_batches(lm, corpus, hashes, spec, batch_tokens)
        truncated += n_trunc
        if sketch is not None:
            sketch.check_windows([w for b in batches for w in b.windows])

        def batch_bytes(b: Batch, n_layers: int = len(layers)) -> int:
            hidden = b.n_tokens * lm.d_model * itemsize * n_layers
            return hidden + (sketch.batch_bytes(b) if sketch is not None else 0)

        shards.extend(cut_shards(batches, layers, batch_bytes, shard_bytes=shard_bytes, first_index=len(shards)))
    return ShardPlan(tuple(shards), truncated)


class BatchStep:
    """The compute of one batch: forward pass, cast to the storage dtype, nll and Jacobian sketches."""

    def __init__(self, lm: LoadedModel, spec: CaptureSpec) -> None:
        self.lm = lm
        self.dtype = spec.dtype
        self.sketch = sketch_capture(spec)
        if self.sketch is not None:
            self.sketch.prepare(lm)

    def __call__(self, batch: Batch, layers: Sequence[int]) -> BatchOutput:
        layers = list(layers)
        with self.sketch.recording(self.lm) if self.sketch is not None else contextlib.nullcontext():
            out, hs, ids, mask = forward_batch(self.lm, batch, layers, self.dtype)
        if self.sketch is not None:
            out.extra["jacobian"] = self.sketch(self.lm, batch, hs, ids, mask, layers)
        return out


def compute_shard(shard: PlannedShard, step: BatchStep, shard_seconds: float | None,
                  clock: Callable[[], float] = time.monotonic) -> Iterator[tuple[BatchOutput, bool]]:
    """Compute a planned shard batch by batch; yields ``(output, ends_a_shard)``.

    The last batch ends the shard; with ``shard_seconds``, so does an earlier
    batch after which no document has windows left, once that many seconds
    have passed since the (part) shard began.
    """
    windows: dict[int, int] = {}
    for b in shard.batches:
        for w in b.windows:
            windows[w.doc_order] = windows.get(w.doc_order, 0) + 1
    left: dict[int, int] = {}
    started = clock()
    for j, batch in enumerate(shard.batches):
        out = step(batch, shard.layers)
        for w in batch.windows:
            left[w.doc_order] = left.get(w.doc_order, windows[w.doc_order]) - 1
            if not left[w.doc_order]:
                del left[w.doc_order]
        end = j == len(shard.batches) - 1 or (shard_seconds is not None and not left
                                              and clock() - started >= shard_seconds)
        if end:
            started = clock()
        yield out, end


def token_text_table(tokenizer: Any) -> Callable[[np.ndarray], list[str]]:
    """Decoded text of each token id, decoded once per id on first sight.

    Only ids that occur are decoded: decoding a whole vocabulary up front costs
    about half a second for a 30k vocabulary, as much as a second of forward
    passes of a small model.
    """
    cache: dict[int, str] = {}

    def lookup(ids: np.ndarray) -> list[str]:
        ids = np.asarray(ids)
        if not ids.size:
            return []
        uniq, inverse = np.unique(ids, return_inverse=True)
        new = [int(i) for i in uniq if int(i) not in cache]
        if new:
            pieces = tokenizer.batch_decode([[i] for i in new], skip_special_tokens=False,
                                            clean_up_tokenization_spaces=False)
            cache.update(zip(new, pieces))
        table = np.asarray([cache[int(i)] for i in uniq], dtype=object)
        return table[inverse.reshape(-1)].tolist()

    return lookup
