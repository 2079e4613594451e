"""Accuracy of one-pass Jacobian sketches vs exact Jacobians + full SVD (SmolLM2-135M).

Ingests a few short prompts with ``JacobianSketch(k=21, exact=True)`` at a handful of
blocks: the lake then holds, per (block, last token), the captured sketch AND the exact
d x d Jacobian (d = 576 VJPs); a second ingest adds ``k=21, power_iterations=2``
sketches. For other settings, sketches are formed from the stored exact ``Jres`` with
the same seeded test matrices (numerically what the capture computes, up to float32
rounding; tests/ingest checks the capture against jacrev). Methods: one-pass
(``Y = Jres Omega``, ``W = Psi^T Jres``, k + l products) and q power iterations
(``Q B``, (2q + 2) k products). For each:

- coupling: ``m_K`` matrices (K = 10, 'norm') between the sketched blocks, per token,
  from sketches (O(d k K)) vs from exact Jacobians + full SVD: max and mean |difference|;
- top-K singular values: max relative error; top-K singular vectors: largest principal
  angle between the sketched and exact ``U_K`` (and ``V_K``), degrees, averaged over
  Jacobians; relative Frobenius error of ``Q X`` vs ``Jres``.

Prints a markdown table (docs/jacobians.md quotes it).

    python benchmarks/jacobian_accuracy.py [--prompts 2] [--blocks 2,9,16,23,29]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.linalg import subspace_angles  # noqa: E402

import layerlake as ll  # noqa: E402
from layerlake.metrics.jacobian import JacobianFactors, coupling_matrix, coupling_matrix_exact  # noqa: E402
from layerlake.queries.jacobians import jacobian_factors  # noqa: E402
from layerlake.store.sketch import sketch_matrices  # noqa: E402

PROMPTS = ["What is the capital of France? The capital is",
           "The cat sat on the mat and looked out of the window at the",
           "In 1905 Albert Einstein published four papers that changed",
           "To install the package, run pip install and then import"]


def power_factors(jres: np.ndarray, omega: np.ndarray, q: int) -> JacobianFactors:
    """What the capture stores with ``power_iterations=q``: ``Q = orth((A A^T)^q A Omega)``, ``B = Q^T A``."""
    y = jres @ omega
    for _ in range(q):
        y = jres @ np.linalg.qr(jres.T @ np.linalg.qr(y)[0])[0]
    Q = np.linalg.qr(y)[0].astype(np.float32)
    return JacobianFactors(Q, (Q.T.astype(np.float64) @ jres).astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--blocks", default="2,9,16,23,29")
    ap.add_argument("--ks", default="11,21,41,81,161")
    ap.add_argument("--K", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lake", default=None, help="keep the lake here (default: a temporary directory)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tests.models import SMOLLM_GGUF, smollm_dir
    blocks = tuple(int(b) for b in args.blocks.split(","))
    K = args.K
    lake_dir = Path(args.lake) if args.lake else Path(tempfile.mkdtemp()) / "lake"
    lake = ll.Lake(lake_dir)
    spec = ll.JacobianSketch(k=21, positions="last", layers=blocks, exact=True)
    t0 = time.perf_counter()
    lake.ingest(smollm_dir(), PROMPTS[: args.prompts], gguf_file=SMOLLM_GGUF, dataset="acc", layers=[0],
                jacobian=spec, progress=False)
    t_ingest = time.perf_counter() - t0
    eid = lake.extraction_id("acc")
    power_spec = ll.JacobianSketch(k=21, positions="last", layers=blocks, power_iterations=2)
    lake.ingest(smollm_dir(), PROMPTS[: args.prompts], gguf_file=SMOLLM_GGUF, dataset="acc", layers=[0],
                jacobian=power_spec, progress=False)
    exact = jacobian_factors(lake.store, "acc", eid, blocks, sketch=spec, exact=True)
    captured = {"one-pass": jacobian_factors(lake.store, "acc", eid, blocks, sketch=spec),
                "power": jacobian_factors(lake.store, "acc", eid, blocks, sketch=power_spec)}
    jres = {tok: [f.dense() for f in facs] for tok, facs in exact.items()}
    d = next(iter(jres.values()))[0].shape[0]
    ref_c = {tok: coupling_matrix_exact(np.stack(js), K=K) for tok, js in jres.items()}
    svd = {tok: [np.linalg.svd(j) for j in js] for tok, js in jres.items()}

    print(f"SmolLM2-135M (d={d}), {len(jres)} tokens (last of each prompt) x blocks {list(blocks)}; K={K}; "
          f"ingest with exact Jacobians took {t_ingest:.0f} s")
    s_all = np.stack([s for v in svd.values() for (_, s, _) in v])
    print("spectrum of Jres (mean over Jacobians): s_1 = {:.3g}, s_K/s_1 = {:.3f}, s_2K/s_1 = {:.3f}, "
          "s_50/s_1 = {:.3f}, ||tail beyond K||_F / ||Jres||_F = {:.3f}".format(
              s_all[:, 0].mean(), (s_all[:, K - 1] / s_all[:, 0]).mean(), (s_all[:, 2 * K - 1] / s_all[:, 0]).mean(),
              (s_all[:, 49] / s_all[:, 0]).mean(),
              np.mean(np.sqrt((s_all[:, K:] ** 2).sum(1) / (s_all ** 2).sum(1)))))
    print()
    print("| method | k | products per (block, token) | max abs diff m_K | mean abs diff m_K | mean m_K (exact) | "
          "max rel err s_1..K | angle U_K (deg) | angle V_K (deg) | rel Frobenius err |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [(int(k), 0, None) for k in args.ks.split(",")] + [(21, 0, "captured")]
    rows += [(21, 1, None), (21, 2, None), (21, 2, "captured"), (21, 4, None), (11, 2, None), (41, 2, None)]
    for k, q, how in rows:
        if k < K:
            continue
        l = 2 * k + 1 if 2 * k + 1 <= d else d
        omega, psi = sketch_matrices(d, k, l, spec.seed)
        diffs, rel_s, ang_u, ang_v, frob, ref_vals = [], [], [], [], [], []
        for tok, js in jres.items():
            if how == "captured":
                facs = captured["power" if q else "one-pass"][tok]
            elif q:
                facs = [power_factors(j, omega, q) for j in js]
            else:
                facs = [JacobianFactors.from_sketch((j @ omega).astype(np.float32), (psi.T @ j).astype(np.float32),
                                                    psi) for j in js]
            c = coupling_matrix(facs, K=K)
            off = ~np.eye(len(js), dtype=bool)
            diffs.append(np.abs(c - ref_c[tok])[off])
            ref_vals.append(ref_c[tok][off])
            for f, j, (u, s, vt) in zip(facs, js, svd[tok]):
                uk, sk, vk = f.top(K)
                rel_s.append(np.max(np.abs(sk - s[:K]) / s[:K]))
                ang_u.append(np.degrees(subspace_angles(uk, u[:, :K]).max()))
                ang_v.append(np.degrees(subspace_angles(vk, vt[:K].T).max()))
                frob.append(np.linalg.norm(f.dense() - j) / np.linalg.norm(j))
        diffs = np.concatenate(diffs)
        method = (f"power q={q}" if q else f"one-pass l={l}") + (" (captured)" if how else "")
        products = (2 * q + 2) * k if q else k + l
        print(f"| {method} | {k} | {products} | {diffs.max():.3f} | {diffs.mean():.3f} | "
              f"{np.concatenate(ref_vals).mean():.3f} | {max(rel_s):.3f} | {np.mean(ang_u):.1f} | {np.mean(ang_v):.1f} | "
              f"{np.mean(frob):.3f} |")


if __name__ == "__main__":
    main()
