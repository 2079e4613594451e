"""Reproductions of papers 1 and 2 on real weights (issue 4), small sizes, CPU-friendly.

1. all-MiniLM-L6-v2 (encoder) on quickstart paragraphs: prompt entropy stays high across
   depth while dataset entropy rises (paper 1, BERT).
2. SmolLM2-135M (Q4_1 GGUF, dequantised): prompt entropy across its 31 hidden states has a
   mid-depth valley; the same architecture with random weights (seed 0) does not.
3. Representation dispersion (last layer) vs chunk perplexity across prose, Python source
   and word-shuffled prose chunks (paper 2: negative correlation).

    python benchmarks/reproductions.py [--lake PATH] [--img docs/img] [--minilm-docs 150]
        [--chunks 40] [--tokens 64]

Builds its lakes in a temporary directory unless --lake is given (then re-runs reuse the
stored activations and the metric cache), writes PNGs to --img and prints every number
docs/reproductions.md reports.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerlake import Lake
from layerlake.metrics.dispersion import correlation_summary
from layerlake.cli.quickstart import minilm_path, quickstart_corpus

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def curve(lake: Lake, name: str, dataset: str, model: str, **params) -> list[float]:
    df = lake.metric(name, dataset=dataset, model=model, **params).sort("layer")
    return df["value"].to_list()


def fmt(vals: list[float]) -> str:
    return " ".join(f"{v:.3f}" for v in vals)


def valley(vals: list[float]) -> dict[str, float]:
    """first / min@layer / last and depth of the valley below the mean of the two ends."""
    v = np.asarray(vals)
    i = int(np.nanargmin(v))
    return {"first": v[0], "min": v[i], "argmin": i, "last": v[-1],
            "depth": float((v[0] + v[-1]) / 2 - v[i]), "range": float(np.nanmax(v) - np.nanmin(v))}


# -- part 1 --------------------------------------------------------------------------------------
def part_minilm(lake: Lake, img: Path, n_docs: int) -> None:
    print(f"\n== 1. all-MiniLM-L6-v2, {n_docs} pydoc paragraphs, max_length 128")
    t = time.time()
    lake.ingest(minilm_path(), quickstart_corpus(n_docs), dataset="pydoc", model_name="all-MiniLM-L6-v2",
                max_length=128)
    print(f"ingest {time.time() - t:.1f}s")
    for variant in ("faithful", "clean"):
        pe = curve(lake, "prompt_entropy", "pydoc", "all-MiniLM-L6-v2", variant=variant)
        print(f"prompt_entropy ({variant}, maxEntropy) by layer 0..6: {fmt(pe)}")
    de = curve(lake, "dataset_entropy", "pydoc", "all-MiniLM-L6-v2")
    print(f"dataset_entropy (clean, maxEntropy) by layer 0..6: {fmt(de)}")
    out = lake.plot_metric(["prompt_entropy", "dataset_entropy"], "pydoc", img / "repro_minilm_entropy.png",
                           model="all-MiniLM-L6-v2")
    print(f"plot -> {out}")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5.6, 3.8), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(range(len(pe)), pe, "o-", label="prompt entropy (clean)")
    ax.plot(range(len(de)), de, "s-", label="dataset entropy (clean)")
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("entropy / max entropy")
    ax.set_title("all-MiniLM-L6-v2, pydoc paragraphs (common 0-1 scale)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(img / "repro_minilm_entropy_01.png")
    print(f"plot -> {img / 'repro_minilm_entropy_01.png'}")


# -- parts 2 and 3: corpora -----------------------------------------------------------------------
def prose_chunks(n: int, min_chars: int = 600) -> list[str]:
    """Consecutive pydoc paragraphs joined until >= min_chars (so each has >= ~64 tokens)."""
    out, cur = [], ""
    for d in quickstart_corpus(2000):
        cur = (cur + " " + d["text"]).strip()
        if len(cur) >= min_chars:
            out.append(cur)
            cur = ""
            if len(out) >= n:
                break
    return out


def code_chunks(n: int, min_chars: int = 500) -> list[str]:
    """Chunks of 30 lines from stdlib modules (sorted file list, fixed order)."""
    root = Path(os.path.dirname(os.__file__))
    out = []
    for f in sorted(root.glob("*.py")):
        lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
        for s in range(40, len(lines) - 30, 400):  # skip headers/licences; spaced chunks
            text = "\n".join(lines[s:s + 30])
            if len(text) >= min_chars:
                out.append(text)
                break
        if len(out) >= n:
            break
    return out


def shuffled(texts: list[str], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for t in texts:
        words = t.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def load_smollm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.models import smollm_dir
    d = smollm_dir()
    t = time.time()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF).eval()
    print(f"loaded SmolLM2-135M ({GGUF}, dequantised) in {time.time() - t:.1f}s")
    return model, tok


def random_smollm(config):
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def part_smollm(lake: Lake, img: Path, n_chunks: int, n_tokens: int) -> None:
    prose = prose_chunks(2 * n_chunks)
    prose_a, prose_b = prose[:n_chunks], prose[n_chunks:]
    code = code_chunks(n_chunks)
    shuf = shuffled(prose_b)
    print(f"\ncorpora: prose {len(prose_a)} + {len(prose_b)}, code {len(code)}, shuffled prose {len(shuf)}; "
          f"max_length {n_tokens}")
    model, tok0 = load_smollm()
    # Work-around (engine bug, see docs/reproductions.md): tokenizer_hash() hashes the backend's
    # transient padding/truncation state, which the first ingest sets, so re-using one tokenizer
    # object makes the second ingest a new extraction. A pristine copy per call keeps one.
    tok = lambda: copy.deepcopy(tok0)
    t = time.time()
    lake.ingest(model, prose_a, tokenizer=tok(), model_name="smollm2-135m", dataset="prose", max_length=n_tokens)
    docs = ([{"text": x, "kind": "prose"} for x in prose_a + prose_b] + [{"text": x, "kind": "code"} for x in code]
            + [{"text": x, "kind": "shuffled"} for x in shuf])
    lake.ingest(model, docs, tokenizer=tok(), model_name="smollm2-135m", dataset="difficulty", max_length=n_tokens)
    print(f"smollm2-135m ingest (both datasets) {time.time() - t:.1f}s")
    rnd = random_smollm(model.config)
    del model
    t = time.time()
    lake.ingest(rnd, prose_a, tokenizer=tok(), model_name="smollm2-random", dataset="prose", max_length=n_tokens)
    print(f"smollm2-random ingest {time.time() - t:.1f}s")

    print(f"\n== 2. SmolLM2-135M prompt entropy, {len(prose_a)} prose chunks x <= {n_tokens} tokens, 31 hidden states")
    for m in ("smollm2-135m", "smollm2-random"):
        for variant in ("faithful", "clean"):
            pe = curve(lake, "prompt_entropy", "prose", m, variant=variant)
            v = valley(pe)
            print(f"{m} prompt_entropy ({variant}): first {v['first']:.3f} min {v['min']:.3f}@{v['argmin']} "
                  f"last {v['last']:.3f} valley depth {v['depth']:.3f} range {v['range']:.3f}")
            print(f"  by layer: {fmt(pe)}")
    de = {m: curve(lake, "dataset_entropy", "prose", m) for m in ("smollm2-135m", "smollm2-random")}
    for m, vals in de.items():
        print(f"{m} dataset_entropy (clean): {fmt(vals)}")
    print(f"plot -> {lake.plot_metric('prompt_entropy', 'prose', img / 'repro_smollm_prompt_entropy.png')}")

    print(f"\n== 3. dispersion (last layer) vs perplexity, SmolLM2-135M, {len(docs)} chunks")
    last = 30
    disp = lake.metric("representation_dispersion", dataset="difficulty", model="smollm2-135m", layers=[last],
                       per="doc")
    ppl = lake.metric("perplexity", dataset="difficulty", model="smollm2-135m", per="doc")
    kinds = lake.docs("difficulty")
    kinds = kinds.collect() if hasattr(kinds, "collect") else kinds
    print(f"columns: dispersion {disp.columns}; perplexity {ppl.columns}; docs {kinds.columns}")
    scatter(disp, ppl, kinds, img / "repro_dispersion_vs_ppl.png")


def sink_check(lake: Lake, img: Path) -> None:
    """Prompt entropy with and without each chunk's first token (SmolLM2's attention-sink token)."""
    import polars as pl

    from layerlake.metrics.entropy import prompt_entropy
    print("\n== 2b. prompt entropy with / without the first token (clean variant, numpy on read_vectors)")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.8), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for m, c in (("smollm2-135m", "tab:blue"), ("smollm2-random", "tab:orange")):
        toks = lake.tokens("prose", m).collect()
        sizes = toks.group_by("ordinal", maintain_order=True).agg(pl.len())["len"].to_list()
        vecs = lake.read_vectors("prose", m, layers="all")  # [layers, tokens, d]
        bounds = np.cumsum([0, *sizes])
        full, nob, ratio = [], [], []
        for layer in range(vecs.shape[0]):
            docs = [vecs[layer, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            full.append(np.mean([prompt_entropy(d, variant="clean") for d in docs]))
            nob.append(np.mean([prompt_entropy(d[1:], variant="clean") for d in docs]))
            ratio.append(np.mean([np.linalg.norm(d[0]) / np.median(np.linalg.norm(d[1:], axis=1)) for d in docs]))
        print(f"{m} with first token:    {fmt(full)}")
        print(f"{m} without first token: {fmt(nob)}")
        print(f"{m} |h_0| / median |h_t|: " + " ".join(f"{r:.0f}" for r in ratio))
        ax.plot(full, "o-", color=c, ms=3, label=f"{m}, all tokens")
        ax.plot(nob, "s--", color=c, ms=3, label=f"{m}, first token dropped")
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("prompt entropy (clean, maxEntropy)")
    ax.set_title("SmolLM2-135M: the valley is the first (sink) token", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    fig.savefig(img / "repro_smollm_sink.png")
    print(f"plot -> {img / 'repro_smollm_sink.png'}")


def scatter(disp, ppl, docs, out: Path) -> None:
    import polars as pl
    key = "doc_hash" if "doc_hash" in disp.columns and "doc_hash" in ppl.columns else "document"
    j = (disp.select(key, pl.col("value").alias("dispersion"))
         .join(ppl.select(key, pl.col("value").alias("ppl")), on=key)
         .join(docs.select(pl.col("doc_hash").alias(key) if key != "doc_hash" else "doc_hash", "kind"), on=key))
    x, y = j["ppl"].to_numpy(), j["dispersion"].to_numpy()
    s = correlation_summary(np.log(x), y)
    s2 = correlation_summary(x, y)
    print(f"all {s['n']} chunks: Pearson r(log ppl, disp) = {s['pearson_r']:.3f} (p={s['pearson_p']:.2g}); "
          f"Pearson r(ppl, disp) = {s2['pearson_r']:.3f}; Spearman rho = {s['spearman_rho']:.3f} "
          f"(p={s['spearman_p']:.2g})")
    for k in ("prose", "code", "shuffled"):
        sub = j.filter(pl.col("kind") == k)
        c = correlation_summary(np.log(sub["ppl"].to_numpy()), sub["dispersion"].to_numpy())
        print(f"  {k:9s} n={sub.height:3d} median ppl {sub['ppl'].median():8.2f} mean dispersion "
              f"{sub['dispersion'].mean():.3f}  within-kind Spearman {c['spearman_rho']:+.3f} (p={c['spearman_p']:.2g})")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for k, c in (("prose", "tab:blue"), ("code", "tab:green"), ("shuffled", "tab:red")):
        sub = j.filter(pl.col("kind") == k)
        ax.scatter(sub["ppl"].to_numpy(), sub["dispersion"].to_numpy(), s=16, alpha=0.75, color=c, label=k)
    ax.set_xscale("log")
    ax.set_xlabel("chunk perplexity (log scale)")
    ax.set_ylabel("representation dispersion, last layer")
    ax.set_title(f"SmolLM2-135M: Spearman rho = {s['spearman_rho']:.2f} (n={s['n']})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    print(f"plot -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", help="lake path (default: a temporary directory)")
    ap.add_argument("--img", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"))
    ap.add_argument("--minilm-docs", type=int, default=150)
    ap.add_argument("--chunks", type=int, default=40, help="chunks per kind (prose, code, shuffled)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: minilm,smollm,sink")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    img = Path(a.img)
    img.mkdir(parents=True, exist_ok=True)
    tmp = None if a.lake else tempfile.TemporaryDirectory(prefix="repro-lake-")
    lake = Lake(a.lake or tmp.name)
    t0 = time.time()
    if "minilm" not in a.skip:
        part_minilm(lake, img, a.minilm_docs)
    if "smollm" not in a.skip:
        part_smollm(lake, img, a.chunks, a.tokens)
    if "sink" not in a.skip:
        sink_check(lake, img)
    print(f"\ntotal {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
