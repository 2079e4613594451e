"""The ingest job: corpus -> model -> shards, with reuse and resume.

1. read the corpus (fails fast on bad input, before any model is loaded);
2. load and fingerprint the model; the extraction id is a hash of the
   fingerprint and the capture identity;
3. find what committed shards already hold (per document and layer) and plan
   only the rest (an identical request computes nothing);
4. cut the plan into shards and compute them in plan order with an executor
   (:mod:`layerlake.ingest.executors`: here, a writer thread committing
   meanwhile; or on a pool of Ray workers);
5. when everything is committed, record the dataset's documents and link it to
   the extraction (the last step: a failed ingest leaves datasets unchanged).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import progress as progress_bars
from ..errors import SpecError
from ..store import (
    CaptureSpec, check_dataset_name, extraction_id, hold_lease, JacobianSketch, LakeStore, release_lease,
    remove_dead_writers_shards,
)
from .batching import model_max_length
from .executors import check_ray_setup, run_local, run_ray
from .executors.core import SHARD_SECONDS, sketch_capture
from .models import load_model
from .sources import Corpus, load_corpus
from .views import add_augmented_views

log = logging.getLogger(__name__)


@dataclasses.dataclass
class IngestResult:
    """What an ingest did; ``computed_docs == 0`` means everything was reused."""

    extraction_id: str
    dataset: str
    model: str
    n_docs: int
    computed_docs: int
    reused_docs: int
    skipped_empty: int
    duplicates: int
    truncated_docs: int
    computed_tokens: int
    layers: list[int]
    shards_written: int
    bytes_written: int
    seconds: float
    compute_seconds: float = 0.0
    executor_stats: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def nothing_computed(self) -> bool:
        return self.computed_docs == 0

    def summary(self) -> str:
        if self.nothing_computed:
            return (f"nothing to compute: all {self.n_docs} documents of dataset {self.dataset!r} are already in "
                    f"extraction {self.extraction_id} ({self.model})")
        rate = self.computed_tokens / max(self.seconds, 1e-9)
        return (f"ingested {self.computed_docs} documents ({self.computed_tokens:,} tokens, {rate:,.0f} tok/s) "
                f"into extraction {self.extraction_id} ({self.model}); reused {self.reused_docs}; "
                f"{self.shards_written} shard(s), {self.bytes_written / 1e6:,.1f} MB; dataset {self.dataset!r} "
                f"has {self.n_docs} documents"
                + (f"; skipped {self.skipped_empty} empty" if self.skipped_empty else "")
                + (f"; {self.duplicates} duplicate text(s) kept once" if self.duplicates else "")
                + (f"; {self.truncated_docs} truncated to max_length" if self.truncated_docs else ""))


def default_dataset_name(data: Any) -> str:
    if isinstance(data, (str, os.PathLike)):
        stem = Path(data).stem if Path(data).suffix else Path(data).name
        cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem).strip("._-")
        return cleaned or "default"
    return "default"


def ingest(store: LakeStore, model: Any, data: Any, *, dataset: str | None = None, text_column: str = "text",
           layers: Any = "all", max_length: int | None = None, overflow: str = "truncate", stride: int = 0,
           dtype: str = "float16", device: str = "auto", jacobian: JacobianSketch | None = None,
           executor: str = "local", batch_tokens: int | None = None, shard_bytes: int = 256 << 20,
           tokenizer: Any = None, gguf_file: str | None = None, revision: str | None = None,
           model_dtype: str | None = None, attn_implementation: str | None = None,
           model_name: str | None = None, progress: bool | None = None,
           executor_options: dict[str, Any] | None = None, augment: int = 0,
           augment_seed: int = 0, shard_seconds: float | None = SHARD_SECONDS) -> IngestResult:
    """Ingest ``data`` with ``model`` into the lake; see :meth:`layerlake.Lake.ingest`.

    ``augment=N`` also stores N seeded augmented views of every document (see
    :mod:`layerlake.ingest.views`). Shards are cut as
    :mod:`layerlake.ingest.executors.core` says (``shard_bytes``, and
    ``shard_seconds``; ``None`` turns the time cut off).
    """
    t0 = time.monotonic()
    store.fs.check_writable()
    dataset = dataset or default_dataset_name(data)
    check_dataset_name(dataset)
    spec0 = CaptureSpec(layers=layers, max_length=max_length, overflow=overflow, stride=stride, dtype=dtype,
                        jacobian=jacobian)
    if executor not in ("local", "ray"):
        raise SpecError(f"executor={executor!r} must be 'local' or 'ray'")
    if shard_seconds is not None and (isinstance(shard_seconds, bool) or not isinstance(shard_seconds, (int, float))
                                      or not shard_seconds > 0):
        raise SpecError(f"shard_seconds={shard_seconds!r} must be a positive number of seconds or None (no time cut)")
    if executor == "ray":
        check_ray_setup(store, executor_options)
    elif executor_options:
        raise SpecError(f"executor_options {sorted(executor_options)} are for executor='ray', not 'local'")
    corpus = load_corpus(data, text_column=text_column)
    if augment:
        corpus = add_augmented_views(corpus, augment, augment_seed)
    # with Ray the driver's copy only plans and tokenizes: keep it off the GPUs the workers need
    lm = load_model(model, tokenizer=tokenizer, gguf_file=gguf_file, revision=revision,
                    device="cpu" if executor == "ray" else device,
                    torch_dtype=model_dtype, attn_implementation=attn_implementation, model_name=model_name)
    layer_list = spec0.layers.within(lm.n_layers, f"model {lm.ref} ({lm.n_layers} blocks)")
    lm.check_layer_sizes(layer_list)
    resolved_max = spec0.max_length or model_max_length(lm.model, lm.tokenizer)
    spec = spec0.replace(max_length=resolved_max)
    eid = extraction_id(lm.fingerprint, spec.identity())
    lease = hold_lease(store.fs, eid)  # gc keeps what this ingest writes while it runs
    try:
        store.create_extraction(eid, {
            "model": lm.info, "capture": spec.identity(), "d_model": lm.d_model, "n_layers": lm.n_layers,
            "is_causal": lm.is_causal, "dtype": spec.dtype, "tokenizer_class": type(lm.tokenizer).__name__,
        })
        store.add_alias(eid, lm.ref)
        if not store.fs.read_only:
            remove_dead_writers_shards(store.fs, eid)  # what a killed earlier run of this job left half-written

        jac_want = None
        if spec.jacobian is not None:
            jac = sketch_capture(spec)
            jac.prepare(lm)  # k, l <= d, block layers, capturable blocks: checked before any compute
            jac_want = (jac.key, jac.layers)
        plan = plan_work(store, eid, corpus, layer_list, jacobian=jac_want)
        computed = {h for g in plan.values() for h in g}
        reused = len(corpus.documents) - len(computed)
        with progress_bars.override(progress):
            if executor == "ray" and computed:
                stats = run_ray(store, eid, lm, corpus, plan, spec, batch_tokens=batch_tokens, shard_bytes=shard_bytes,
                                shard_seconds=shard_seconds, options=executor_options or {},
                                load_kwargs=dict(model=model, tokenizer=tokenizer, gguf_file=gguf_file,
                                                 revision=revision, model_dtype=model_dtype,
                                                 attn_implementation=attn_implementation, model_name=model_name,
                                                 device=device))
            else:
                stats = run_local(store, eid, lm, corpus, plan, spec, batch_tokens=batch_tokens,
                                  shard_bytes=shard_bytes, shard_seconds=shard_seconds)
        table = dataset_table(corpus)
        store.write_dataset(dataset, table)
        store.link_dataset(dataset, eid, {"model": lm.ref, "layers": sorted(set(layer_list)),
                                          "capture": spec.to_dict(), "n_docs": len(corpus.documents)})
    finally:
        release_lease(store.fs, lease)
    result = IngestResult(
        extraction_id=eid, dataset=dataset, model=lm.ref, n_docs=len(corpus.documents),
        computed_docs=len(computed), reused_docs=reused,
        skipped_empty=corpus.n_empty, duplicates=corpus.n_duplicates, truncated_docs=stats["truncated"],
        computed_tokens=stats["tokens"], layers=layer_list, shards_written=stats["shards"],
        bytes_written=stats["bytes"], seconds=time.monotonic() - t0,
        compute_seconds=float(stats.get("compute_seconds", 0.0)),
        executor_stats={k: v for k, v in stats.items()
                        if k not in ("tokens", "shards", "bytes", "truncated", "compute_seconds")})
    log.info(result.summary())
    return result


def plan_work(store: LakeStore, eid: str, corpus: Corpus, layers: list[int],
              jacobian: tuple[str, list[int]] | None = None) -> dict[tuple[int, ...], list[str]]:
    """Missing (document, layer) pairs grouped by the exact set of missing layers.

    With ``jacobian=(sketch key, blocks)``, a document whose committed shards lack
    sketches of that key for some of those blocks is planned too (in the group of
    its missing hidden layers, possibly ``()``). Every planned document gets all
    the requested sketches, so a shard's manifest lists exactly what each of its
    documents holds (a document recomputed for missing hidden layers gets its
    sketches again; readers use the smallest-id shard, see ``store.placement``).
    """
    placement = store.placement(eid)
    have = placement.layers_held
    jac_have = placement.blocks_held(jacobian[0]) if jacobian is not None else {}
    want = set(layers)
    jac_want = set(jacobian[1]) if jacobian is not None else set()
    groups: dict[tuple[int, ...], list[str]] = {}
    for d in corpus.documents:
        missing = want - have.get(d.doc_hash, set())
        if missing or jac_want - jac_have.get(d.doc_hash, set()):
            groups.setdefault(tuple(sorted(missing)), []).append(d.doc_hash)
    return groups


RESERVED_COLUMNS = ("doc_hash", "text", "ordinal")


def dataset_table(corpus: Corpus) -> pa.Table:
    cols: dict[str, list[Any]] = {"doc_hash": [d.doc_hash for d in corpus.documents],
                                  "text": [d.text for d in corpus.documents]}
    for c in corpus.meta_columns:
        # a metadata column named like one layerlake keeps (doc_hash, text, ordinal) is stored as meta_<name>
        name = f"meta_{c}" if c in RESERVED_COLUMNS else c
        if name in cols:
            raise SpecError(f"metadata columns {c!r} and {name!r} would both be stored as {name!r}; rename one")
        cols[name] = [d.meta.get(c) for d in corpus.documents]
    try:
        return pa.table(cols)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # mixed types in a metadata column: keep them as strings
        fixed = {k: (v if k in ("doc_hash", "text") else [None if x is None else str(x) for x in v])
                 for k, v in cols.items()}
        return pa.table(fixed)
