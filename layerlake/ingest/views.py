"""Augmented views as documents: ``ingest(..., augment=N)``.

For InfoNCE / LiDAR / DiME (METRICS.md 2.8-2.11) every original document gets
``N`` seeded character-level augmentations (:func:`layerlake.ingest.augment.augment_views`).
Each view is stored as an ordinary document of the same dataset, linked to its
original by two metadata columns:

- ``group``: the original's ``doc_hash`` (originals carry their own hash),
- ``view``: ``0`` for the original, ``1..N`` for the augmentations.

Views are content-addressed like any document, so a second ingest with the same
seed reuses them, and asking for more views later keeps the first ones (view
``i`` depends only on the text, the seed and ``i``). Order in the dataset: the
originals first (in the given order), then the views of each original.
A view whose text equals another document (e.g. a text with nothing to
augment) is skipped and counted; the metric engine then uses only the originals
that have every requested view.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from ..errors import SpecError
from ..store import doc_hash
from .sources import Corpus, Document

log = logging.getLogger(__name__)

VIEW_COLUMNS = ("group", "view")


def load_augment() -> Callable[..., list[str]]:
    """The augmentation function ``augment_views(text, n_views, seed) -> [str]`` (tests replace it here)."""
    from .augment import augment_views
    return augment_views


def add_augmented_views(corpus: Corpus, n_views: int, seed: int = 0) -> Corpus:
    """The corpus with ``n_views`` augmented views per document appended (skipped views are logged)."""
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 0:
        raise SpecError(f"augment={n_views!r} must be a non-negative integer (views per document)")
    if n_views == 0:
        return corpus
    clash = [c for c in VIEW_COLUMNS if c in corpus.meta_columns]
    if clash:
        raise SpecError(f"corpus {corpus.source} already has metadata column(s) {clash}, which augment= uses to "
                        "link views to their original; rename those columns")
    fn = load_augment()
    originals = [dataclasses.replace(d, meta={**d.meta, "group": d.doc_hash, "view": 0}) for d in corpus.documents]
    seen = {d.doc_hash for d in originals}
    views: list[Document] = []
    skipped = 0
    for d in corpus.documents:
        texts = fn(d.text, n_views, seed)
        if len(texts) != n_views:
            raise SpecError(f"augment_views returned {len(texts)} views for {n_views} requested")
        for i, text in enumerate(texts, start=1):
            h = doc_hash(text)
            if not text.strip() or h in seen:
                skipped += 1
                continue
            seen.add(h)
            meta: dict[str, Any] = {**{k: v for k, v in d.meta.items()}, "group": d.doc_hash, "view": i}
            views.append(Document(text=text, doc_hash=h, meta=meta))
    if skipped:
        log.warning("augment: %d view(s) equal an existing document and were skipped", skipped)
    return Corpus(documents=originals + views, source=corpus.source, n_empty=corpus.n_empty,
                  n_duplicates=corpus.n_duplicates)
