"""Paper 5 on SmolLM2-135M: trained weights vs the same architecture with random weights.

Both models ingest the same short prompts into one lake (hidden states of every layer
in float32, Jacobian sketches of the last token of each prompt at every block). Then,
from the lake alone:

- coupling m_K (K = 10, 'norm') between blocks 1..L-1, averaged over prompts (the last
  block also applies the final norm and is left out, METRICS.md 6.1), and the model score
  = mean off-diagonal entry (lower = more coupled);
- the top singular value of each block's residual Jacobian;
- line-shape score (LSS, METRICS.md 6.4) of the token trajectories over layers 1..L-1
  (all tokens), also of the prefix 1..l for every l; mean ||x^l|| per layer and the
  exponential growth rate (slope of log ||x^l||, layerlake.metrics.trajectory).

Writes docs/img/jacobian_*.png and prints the numbers (docs/reproductions_jacobian.md).

    python benchmarks/jacobian_reproduction.py [--prompts 16] [--k 21] [--power 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import layerlake as ll  # noqa: E402
from layerlake.metrics.trajectory import growth_rate_per_token, line_shape_score_per_token  # noqa: E402
from layerlake.queries.jacobians import compute_jacobian_metric  # noqa: E402

PROMPTS = [
    "What is the capital of France? The capital is",
    "The cat sat on the mat and looked out of the window at the",
    "In 1905 Albert Einstein published four papers that changed physics forever.",
    "To install the package, run pip install and then import it in Python.",
    "The mitochondria is the powerhouse of the cell, producing most of its energy.",
    "She opened the door slowly, unsure of what she would find inside the room.",
    "Water boils at one hundred degrees Celsius at sea level under normal pressure.",
    "The stock market fell sharply on Monday after the central bank raised rates.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Shakespeare wrote many plays, including Hamlet, Macbeth and King Lear.",
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "He ordered a coffee with milk and sat down to read the morning newspaper.",
    "The Pacific Ocean is the largest and deepest of the Earth's five oceans.",
    "Machine learning models learn patterns from data rather than explicit rules.",
    "After the long winter, the first flowers of spring appeared in the garden.",
]


def trajectories(lake: ll.Lake, model: str, L: int) -> list[np.ndarray]:
    """Per prompt: ``[layers 0..L, tokens, d]`` hidden states."""
    vec = lake.read_vectors("p", model=model, layers="all")  # [L+1, tokens, d]
    toks = lake.tokens("p", model=model).collect()
    out, start = [], 0
    for n in toks.group_by("ordinal", maintain_order=True).len()["len"].to_list():
        out.append(vec[:, start:start + n])
        start += n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=21)
    ap.add_argument("--power", type=int, default=2, help="power iterations of the sketch (0 = one-pass)")
    ap.add_argument("--K", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lake", default=None)
    ap.add_argument("--img", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import LlamaForCausalLM

    from layerlake.ingest.models import load_model
    from tests.models import SMOLLM_GGUF, smollm_dir

    lake = ll.Lake(Path(args.lake) if args.lake else Path(tempfile.mkdtemp()) / "lake")
    trained = load_model(smollm_dir(), gguf_file=SMOLLM_GGUF, device="cpu")
    L = trained.n_layers
    torch.manual_seed(0)
    random = LlamaForCausalLM(trained.model.config).eval()
    spec = ll.JacobianSketch(k=args.k, positions="last", power_iterations=args.power, layers=tuple(range(1, L)))
    texts = PROMPTS[: args.prompts]
    timing = {}
    for name, model in (("trained", trained.model), ("random", random)):
        t0 = time.perf_counter()
        lake.ingest(model, texts, tokenizer=trained.tokenizer, model_name=name, dataset="p", dtype="float32",
                    jacobian=spec, progress=False)
        timing[name] = time.perf_counter() - t0
    blocks = list(range(1, L))  # leave out block L (it includes the final norm)
    res: dict[str, dict] = {}
    for name in ("trained", "random"):
        c = compute_jacobian_metric(lake, "coupling", "p", model=name, layers=blocks, K=args.K)
        mat = c.sort(["layer", "layer2"])["value"].to_numpy().reshape(len(blocks), len(blocks))
        score = compute_jacobian_metric(lake, "jacobian_coupling_score", "p", model=name, layers=blocks, K=args.K)
        tsv = compute_jacobian_metric(lake, "top_singular_values", "p", model=name, layers=blocks, K=1)
        trajs = trajectories(lake, name, L)
        inner = [t[1:L] for t in trajs]  # layers 1..L-1: no embeddings, no final norm
        lss = np.concatenate([line_shape_score_per_token(t) for t in inner])
        lss_prefix = [float(np.mean(np.concatenate([line_shape_score_per_token(t[: l + 1]) for t in inner])))
                      for l in range(1, L - 1)]
        norms = np.stack([np.linalg.norm(t, axis=2).mean(axis=1) for t in trajs]).mean(axis=0)  # [L+1]
        growth = np.concatenate([growth_rate_per_token(t) for t in trajs])  # excludes layer 0 and L
        res[name] = {"coupling": mat, "score": float(score["value"][0]), "s1": tsv.sort("layer")["value"].to_numpy(),
                     "lss": float(np.mean(lss)), "lss_median": float(np.median(lss)), "lss_prefix": lss_prefix,
                     "norms": norms, "growth": float(np.mean(growth)), "n_tokens": int(len(lss)),
                     "n_jac": int(c["n"][0])}

    img = Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    vmax = max(float(np.nanmax(r["coupling"])) for r in res.values())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    for ax, name in zip(axes, ("trained", "random")):
        im = ax.imshow(res[name]["coupling"], vmin=0, vmax=vmax, cmap="viridis_r",
                       extent=(0.5, L - 0.5, L - 0.5, 0.5))
        ax.set_title(f"SmolLM2-135M {name}: m_K, K={args.K} (score {res[name]['score']:.3f})")
        ax.set_xlabel("block j (basis)")
        ax.set_ylabel("block i (diagonalised)")
    fig.colorbar(im, ax=axes, label="m_K (lower = more coupled)")
    fig.savefig(img / "jacobian_coupling_smollm2.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    for name, style in (("trained", "-o"), ("random", "-s")):
        r = res[name]
        axes[0].plot(range(2, L), r["lss_prefix"], style, ms=3, label=name)
        axes[1].semilogy(range(0, L + 1), r["norms"], style, ms=3, label=name)
        axes[2].plot(blocks, 1.0 / r["s1"], style, ms=3, label=name)
    axes[0].set(title="LSS of the trajectory over layers 1..l", xlabel="l", ylabel="LSS (1 = straight)")
    axes[1].set(title="mean ||x^l|| (log scale)", xlabel="layer l")
    axes[2].set(title="1 / top singular value of Jres^l", xlabel="block l")
    for ax in axes:
        ax.legend()
    fig.savefig(img / "jacobian_trajectories_smollm2.png", dpi=110)
    plt.close(fig)

    print(f"ingest time (s): {json.dumps({k: round(v) for k, v in timing.items()})}; sketch k={args.k}, "
          f"power iterations {args.power}, last token of {len(texts)} prompts; coupling over blocks 1..{L - 1}, "
          f"K={args.K}")
    print("| model | coupling score (mean off-diag m_K, lower = coupled) | LSS mean (median) | growth rate "
          "(slope of log norm per layer) | mean s_1 of Jres (blocks 1..L-1) |")
    print("|---|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['score']:.3f} | {r['lss']:.2f} ({r['lss_median']:.2f}) | {r['growth']:.3f} | "
              f"{np.mean(r['s1']):.3g} |")
    for name, r in res.items():
        m = r["coupling"]
        near = np.mean([m[i, i + 1] for i in range(len(m) - 1)] + [m[i + 1, i] for i in range(len(m) - 1)])
        print(f"{name}: adjacent-block m_K {near:.3f}; first/last row means {m[0][1:].mean():.3f} / "
              f"{m[-1][:-1].mean():.3f}; norms at layers 1, L/2, L-1: {r['norms'][1]:.3g}, "
              f"{r['norms'][L // 2]:.3g}, {r['norms'][L - 1]:.3g}; s1 by block: "
              + ", ".join(f"{x:.3g}" for x in r["s1"][[0, L // 4, L // 2, 3 * L // 4, L - 2]]))


if __name__ == "__main__":
    main()
