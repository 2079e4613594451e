"""Synthetic lakes for store tests: real shards and manifests, deterministic fake activations, no torch.

Values depend only on (document hash, layer), so two synthetic lakes holding the
same document agree on it exactly, like two ingests of the same model would.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

import layerlake as ll
from layerlake.store import CaptureSpec, ShardData, doc_hash, extraction_id, write_shard
from layerlake.store.arrays import to_physical

FINGERPRINT = "f" * 32
CAPTURE = CaptureSpec(max_length=64).identity()
EID = extraction_id(FINGERPRINT, CAPTURE)
MODEL = "synthetic/model"


def texts(n: int, start: int = 0) -> list[str]:
    return [f"document number {i}: " + " ".join(f"w{(i * 7 + j) % 13}" for j in range(i % 5 + 2))
            for i in range(start, start + n)]


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def n_tokens(h: str) -> int:
    return 3 + _seed(h) % 7


def vectors(h: str, layer: int, d: int, salt: str = FINGERPRINT) -> np.ndarray:
    seed = _seed(h, layer) if salt == FINGERPRINT else _seed(h, layer, salt)
    return np.random.default_rng(seed).standard_normal((n_tokens(h), d)).astype(np.float32)


def make_extraction(lake: ll.Lake, *, d: int = 8, n_layers: int = 4, dtype: str = "float16",
                    fingerprint: str = FINGERPRINT, model: str = MODEL) -> str:
    eid = extraction_id(fingerprint, CAPTURE)
    lake.store.create_extraction(eid, {
        "model": {"fingerprint": fingerprint, "model": model, "model_class": "SyntheticForCausalLM",
                  "weights_hash": "a" * 32, "tokenizer_hash": "b" * 32, "config_hash": "c" * 32, "revision": None},
        "capture": CAPTURE, "d_model": d, "n_layers": n_layers, "is_causal": True, "dtype": dtype})
    lake.store.add_alias(eid, model)
    return eid


def shard_data(hashes: Sequence[str], layers: Iterable[int], *, d: int = 8, dtype: str = "float16",
               jacobian: bool = False, salt: str = FINGERPRINT) -> ShardData:
    layers = sorted(layers)
    docs: dict[str, list[Any]] = {k: [] for k in ("doc_hash", "window", "char_offset", "n_tokens", "row_start",
                                                   "truncated")}
    tok: dict[str, list[Any]] = {k: [] for k in ("row", "doc_hash", "window", "position", "token_id", "token", "nll")}
    row = 0
    for h in hashes:
        n = n_tokens(h)
        for k, v in (("doc_hash", h), ("window", 0), ("char_offset", 0), ("n_tokens", n), ("row_start", row),
                     ("truncated", False)):
            docs[k].append(v)
        for p in range(n):
            tid = _seed(h, "tok", p) % 500
            for k, v in (("row", row + p), ("doc_hash", h), ("window", 0), ("position", p), ("token_id", tid),
                         ("token", f"t{tid}"), ("nll", float(_seed(h, "nll", p) % 1000) / 100.0)):
                tok[k].append(v)
        row += n
    hidden = {l: to_physical(np.concatenate([vectors(h, l, d, salt) for h in hashes]), dtype) for l in layers}
    jac = {}
    if jacobian:
        last_rows = np.cumsum([n_tokens(h) for h in hashes]).astype(np.int64) - 1
        jac = {"sketch_k2": {"attrs": {"k": 2, "l": 5}, "layers": {
            l: {"Y": np.stack([np.random.default_rng(_seed(h, "Y", l)).standard_normal((d, 2)).astype(np.float32)
                               for h in hashes]),
                "rows": last_rows} for l in layers if l > 0}}}
    return ShardData(docs=pa.table(docs), tokens=pa.table(tok), hidden=hidden, dtype=dtype, jacobian=jac)


def synthetic_lake(where: Any, datasets: dict[str, list[str]], *, layers: Iterable[int] = (0, 1, 2),
                   d: int = 8, shard_docs: int = 3, dtype: str = "float16", jacobian: bool = False,
                   storage_options: dict[str, Any] | None = None, lake: ll.Lake | None = None,
                   fingerprint: str = FINGERPRINT, model: str = MODEL) -> ll.Lake:
    """A lake holding ``datasets`` (name -> texts) in one extraction, ``shard_docs`` documents per shard.

    Documents already stored (with those layers) are not written again.
    """
    lake = lake or ll.Lake(os.fspath(where) if isinstance(where, Path) else where, storage_options=storage_options)
    eid = make_extraction(lake, d=d, dtype=dtype, fingerprint=fingerprint, model=model)
    layers = sorted(layers)
    have = lake.store.covered_docs(eid, layers) if lake.store.commit_ids(eid) else set()
    todo: list[str] = []
    for name, docs in datasets.items():
        for t in docs:
            h = doc_hash(t)
            if h not in have and h not in todo:
                todo.append(h)
    for i in range(0, len(todo), shard_docs):
        write_shard(lake.store.fs, eid, shard_data(todo[i:i + shard_docs], layers, d=d, dtype=dtype,
                                                   jacobian=jacobian, salt=fingerprint))
    for name, docs in datasets.items():
        lake.store.write_dataset(name, pa.table({"doc_hash": [doc_hash(t) for t in docs], "text": docs,
                                                 "source": [f"src{i % 3}" for i in range(len(docs))]}))
        lake.store.link_dataset(name, eid, {"model": model, "layers": layers, "n_docs": len(docs)})
    return lake


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` -> its bytes (for 'unchanged' checks)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def dirs(root: Path) -> set[str]:
    return {str(Path(d).relative_to(root)) for d, _, _ in os.walk(root)}


def stored_pairs(lake: ll.Lake, eid: str = EID) -> dict[tuple[str, int], int]:
    """(document, layer) -> how many committed shards hold it (1 everywhere = nothing stored twice)."""
    idx = lake.store.doc_index(eid)
    out: dict[tuple[str, int], int] = {}
    seen = set()
    for h, sid, ls in zip(idx.column("doc_hash").to_pylist(), idx.column("shard").to_pylist(),
                          idx.column("layers").to_pylist()):
        if (h, sid) in seen:
            continue
        seen.add((h, sid))
        for l in ls:
            out[(h, l)] = out.get((h, l), 0) + 1
    return out
