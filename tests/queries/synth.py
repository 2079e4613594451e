"""Small synthetic lakes for the metric engine tests (written through the store API, no model)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

import layerlake as ll
from layerlake.store import doc_hash
from layerlake.store.synthetic import write_synthetic_extraction


def hidden(model: str, layer: int, i: int, n: int, d: int) -> np.ndarray:
    """Deterministic test vectors; a shared per-document direction grows with depth."""
    seed = zlib.crc32(f"{model}/{i}".encode())
    base = np.random.default_rng(seed).normal(size=(1, d))
    noise = np.random.default_rng((seed + 7919 * (layer + 1)) % (2**32)).normal(size=(n, d))
    return (base * (1.0 + layer) + noise).astype(np.float32)


def stored(x: np.ndarray, dtype: str = "float16") -> np.ndarray:
    """What the lake gives back after storing ``x`` as ``dtype``."""
    return x.astype(np.float16).astype(np.float32) if dtype == "float16" else x.astype(np.float32)


def nll(i: int, n: int) -> np.ndarray:
    out = np.random.default_rng(1000 + i).random(n).astype(np.float32) * 4
    out[0] = np.nan  # the first token of a window has no loss
    return out


@dataclass
class Synth:
    lake: Any
    dataset: str
    texts: list[str]
    tokens: dict[str, list[int]]  # model -> tokens per document
    d: dict[str, int]
    layers: dict[str, list[int]]
    eids: dict[str, str]

    def doc(self, model: str, layer: int, i: int) -> np.ndarray:
        return stored(hidden(model, layer, i, self.tokens[model][i], self.d[model]))

    def docs(self, model: str, layer: int, idx: Any = None) -> list[np.ndarray]:
        idx = range(len(self.texts)) if idx is None else idx
        return [self.doc(model, layer, i) for i in idx]


def build(tmp_path: Any, *, n_docs: int = 12, models: dict[str, tuple[int, int]] | None = None,
          dataset: str = "ds", same_tokens: bool = False, views: int = 0, seed: int = 0,
          docs_per_shard: int = 5) -> Synth:
    """A lake with ``models`` = {name: (n_layers, d_model)} over the same ``n_docs`` documents.

    With ``views``, each original gets ``views`` view documents (``group``/``view`` columns)
    whose vectors are the original's plus small noise.
    """
    models = models or {"model-a": (3, 8)}
    lake = ll.Lake(tmp_path / "lake")
    rng = np.random.default_rng(seed)
    originals = [f"document number {i} " + "x" * (i % 5) for i in range(n_docs)]
    texts = list(originals)
    meta: dict[str, list[Any]] | None = None
    if views:
        meta = {"group": [doc_hash(t) for t in originals], "view": [0] * n_docs}
        for i, t in enumerate(originals):
            for v in range(1, views + 1):
                texts.append(f"{t} (view {v})")
                meta["group"].append(doc_hash(t))
                meta["view"].append(v)
    base_tokens = [int(x) for x in rng.integers(3, 11, size=len(texts))]
    tokens, d_of, layers_of, eids = {}, {}, {}, {}
    for k, (name, (n_layers, d)) in enumerate(models.items()):
        toks = list(base_tokens) if (same_tokens or k == 0) else [int(x) for x in rng.integers(3, 11, size=len(texts))]
        if views:  # a view document has as many tokens as its original (keeps test arithmetic simple)
            toks = toks[:n_docs] + [toks[i] for i in range(n_docs) for _ in range(views)]
        tokens[name], d_of[name], layers_of[name] = toks, d, list(range(n_layers + 1))

        def fn(layer: int, i: int, n: int, name: str = name, d: int = d) -> np.ndarray:
            src = i if i < n_docs or not views else (i - n_docs) // views
            x = hidden(name, layer, src, n, d)
            if i >= n_docs:
                x = x + 0.1 * np.random.default_rng(i).normal(size=x.shape).astype(np.float32)
            return x

        eids[name] = write_synthetic_extraction(
            lake.store, dataset, texts, fn, layers=layers_of[name], d_model=d, tokens_per_doc=toks, model=name,
            n_layers=n_layers, nll=nll, meta=meta, docs_per_shard=docs_per_shard)
    return Synth(lake, dataset, texts, tokens, d_of, layers_of, eids)
