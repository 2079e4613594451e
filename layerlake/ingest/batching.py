"""Tokenization into windows and token-budget batching with length bucketing.

The batch plan is a pure function of the documents to compute: documents are
ordered by (longest window desc, request order) with a document's windows kept
together, then cut greedily into batches under a padded-token budget. Shards
commit whole batches in plan order, so after a crash the remaining documents
are a suffix of the plan and re-planning them reproduces the same batches
(hence bit-identical values on resume).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ..errors import SpecError
from ..store import CaptureSpec
from .sources import Document

TOKENIZE_CHUNK = 512


@dataclasses.dataclass(frozen=True)
class Window:
    doc_order: int
    doc_hash: str
    window: int
    char_offset: int
    input_ids: tuple[int, ...]
    truncated: bool

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


@dataclasses.dataclass(frozen=True)
class Batch:
    index: int
    windows: tuple[Window, ...]

    @property
    def n_tokens(self) -> int:
        return sum(w.n_tokens for w in self.windows)

    @property
    def padded_len(self) -> int:
        return max(w.n_tokens for w in self.windows)


def model_max_length(model: Any, tokenizer: Any) -> int | None:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    limits = [getattr(cfg, k, None) for k in ("max_position_embeddings", "n_positions", "n_ctx")]
    limits = [int(x) for x in limits if isinstance(x, int) and x > 0]
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:
        limits.append(tml)
    return min(limits) if limits else None


def tokenize_documents(tokenizer: Any, docs: Sequence[Document], spec: CaptureSpec,
                       orders: Sequence[int] | None = None) -> tuple[list[Window], int]:
    """Windows of every document (request order kept); returns (windows, n_truncated)."""
    max_len = spec.max_length
    out: list[Window] = []
    n_trunc = 0
    orders = list(orders) if orders is not None else list(range(len(docs)))
    for start in range(0, len(docs), TOKENIZE_CHUNK):
        chunk = docs[start:start + TOKENIZE_CHUNK]
        texts = [d.text for d in chunk]
        kw: dict[str, Any] = {"add_special_tokens": spec.add_special_tokens, "return_offsets_mapping": True,
                              "return_attention_mask": False, "return_token_type_ids": False}
        if max_len is not None and spec.overflow != "error":
            kw.update(truncation=True, max_length=max_len, return_overflowing_tokens=True,
                      stride=spec.stride if spec.overflow == "window" else 0)
        enc = tokenizer(texts, **kw)
        mapping = enc.get("overflow_to_sample_mapping") or list(range(len(texts)))
        per_doc: dict[int, list[tuple[list[int], list[tuple[int, int]]]]] = {}
        for ids, offs, j in zip(enc["input_ids"], enc["offset_mapping"], mapping):
            per_doc.setdefault(int(j), []).append((list(ids), list(offs)))
        for j, doc in enumerate(chunk):
            wins = per_doc.get(j, [])
            if spec.overflow == "error" and max_len is not None and wins and len(wins[0][0]) > max_len:
                raise SpecError(
                    f"document {orders[start + j]} ({doc.doc_hash[:12]}) has {len(wins[0][0])} tokens, more than "
                    f"max_length={max_len}; use --overflow truncate|window or a larger --max-length"
                )
            truncated = spec.overflow == "truncate" and len(wins) > 1
            if spec.overflow == "truncate":
                wins = wins[:1]
            n_trunc += truncated
            for w, (ids, offs) in enumerate(wins):
                if not ids:
                    continue
                char_offset = next((a for a, b in offs if b > a), 0)
                out.append(Window(orders[start + j], doc.doc_hash, w, int(char_offset), tuple(ids), truncated))
    return out, n_trunc


def plan_batches(windows: Sequence[Window], token_budget: int, max_batch: int = 128) -> list[Batch]:
    """Greedy batches under ``token_budget`` padded tokens, longest documents first."""
    if token_budget < 1:
        raise SpecError(f"batch token budget {token_budget} must be positive")
    by_doc: dict[int, list[Window]] = {}
    for w in windows:
        by_doc.setdefault(w.doc_order, []).append(w)
    doc_keys = sorted(by_doc, key=lambda o: (-max(w.n_tokens for w in by_doc[o]), o))
    ordered = [w for o in doc_keys for w in sorted(by_doc[o], key=lambda w: w.window)]
    batches: list[Batch] = []
    cur: list[Window] = []
    cur_max = 0
    for w in ordered:
        new_max = max(cur_max, w.n_tokens)
        if cur and (new_max * (len(cur) + 1) > token_budget or len(cur) >= max_batch):
            batches.append(Batch(len(batches), tuple(cur)))
            cur, new_max = [], w.n_tokens
        cur.append(w)
        cur_max = new_max
    if cur:
        batches.append(Batch(len(batches), tuple(cur)))
    return batches
