#!/usr/bin/env python
"""Metric engine vs straightforward reference implementations, measured side by side.

    python benchmarks/metrics.py                 # 1,000 docs x 128 tokens x 7 layers x d=384
    python benchmarks/metrics.py --quick         # 200 docs x 64 tokens x 4 layers x d=128
    python benchmarks/metrics.py --metrics prompt_entropy,curvature

A lake of random float16 arrays (low-rank structure + noise, written straight through
the store API: no model run) holds a dataset ``bench`` (fixed-length documents, as
in a chunked corpus) and a dataset ``views`` (originals + augmented views) for the
augmentation metrics. For every heavy metric that is registered, one fresh process
each runs:

- engine: ``lake.metric(name, dataset)`` with the cache refreshed (reads each layer
  in 32 MiB blocks of documents, batched twins where the registry has them), then
  the same call again (served from the cache);
- reference: read each full layer with ``lake.read_vectors`` and compute with plain
  numpy, one document at a time (the straightforward way).

Per-document work runs with one BLAS thread in both (the engine's policy; with the
default threads a loaded machine makes each small decomposition up to 10x slower,
which would flatter the engine). Printed: CPU seconds (user + system, all threads; steadier than wall time on a
shared machine) and wall seconds, the CPU ratio reference / engine, the cached call, peak resident memory of the
process above its size before the call (sampled from /proc every 5 ms), and the
largest difference between the engine's and the reference's per-layer values.
Timings depend on the machine and its load; compare the columns of one run.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LAYERLAKE_PROGRESS", "0")

CLOUD_TOKENS = 4000  # token_cloud / layer-pair subsample (full distance matrices in the references)


# -- the lake ---------------------------------------------------------------------------------
def build_lake(path: Path, *, docs: int, tokens: int, layers: int, d: int, view_docs: int, n_views: int,
               view_tokens: int, seed: int = 0) -> None:
    import layerlake as ll
    from layerlake.store import doc_hash
    from layerlake.store.synthetic import write_synthetic_extraction

    rank = max(4, d // 12)
    basis = [np.linalg.qr(np.random.default_rng(seed + l).normal(size=(d, rank)))[0].T for l in range(layers)]

    def hidden(layer: int, i: int, n: int, doc_seed: int) -> np.ndarray:
        rng = np.random.default_rng((doc_seed, layer))
        mean = np.random.default_rng(doc_seed).normal(size=(1, d)) * (0.5 + layer / layers)
        low = rng.normal(size=(n, rank)) @ basis[layer] * 3.0
        return (mean + low + rng.normal(size=(n, d)) * (1.0 - 0.6 * layer / layers)).astype(np.float32)

    lake = ll.Lake(path)
    texts = [f"bench document {i}" for i in range(docs)]
    write_synthetic_extraction(lake.store, "bench", texts, lambda l, i, n: hidden(l, i, n, i),
                               layers=range(layers), d_model=d, tokens_per_doc=[tokens] * docs,
                               model="bench-model", n_layers=layers - 1,
                               nll=lambda i, n: np.random.default_rng(i).random(n).astype(np.float32) * 5)
    originals = [f"view source {i}" for i in range(view_docs)]
    vtexts, group, view = list(originals), [doc_hash(t) for t in originals], [0] * view_docs
    for i, t in enumerate(originals):
        for v in range(1, n_views + 1):
            vtexts.append(f"{t} / view {v}")
            group.append(doc_hash(t))
            view.append(v)

    def view_hidden(l: int, i: int, n: int) -> np.ndarray:
        src = i if i < view_docs else (i - view_docs) // n_views
        x = hidden(l, src, n, 10**6 + src)
        return x if i < view_docs else x + np.random.default_rng((i, l)).normal(size=x.shape).astype(np.float32)

    write_synthetic_extraction(lake.store, "views", vtexts, view_hidden, layers=range(layers), d_model=d,
                               tokens_per_doc=[view_tokens] * len(vtexts), model="bench-model",
                               n_layers=layers - 1, meta={"group": group, "view": view})


# -- reference implementations (float64, plain numpy, one document at a time) -----------------
def _centre_unit(x: np.ndarray) -> np.ndarray:
    z = x - x.mean(axis=0)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _entropy(lam: np.ndarray) -> float:
    lam = lam[lam > 1e-12 * lam.max()]
    p = lam / lam.sum()
    return float(-(p * np.log(p)).sum())


def ref_prompt_entropy(h: np.ndarray) -> float:
    n, d = h.shape
    z = _centre_unit(h)
    g = z @ z.T if n <= d else z.T @ z
    g = np.maximum(g, 0.0)
    return _entropy(np.linalg.eigvalsh(g / np.trace(g))) / min(math.log(n), math.log(d))


def ref_curvature(h: np.ndarray) -> float:
    v = np.diff(_centre_unit(h), axis=0)
    angles = []
    for k in range(1, len(v)):
        c = v[k] @ v[k - 1] / (np.linalg.norm(v[k]) * np.linalg.norm(v[k - 1]))
        angles.append(math.acos(min(1.0, abs(c))))
    return float(np.mean(angles))


def _twonn(x: np.ndarray, fraction: float = 0.9) -> float:
    from scipy.spatial.distance import cdist
    dist = cdist(x, x)
    np.fill_diagonal(dist, np.inf)
    r = np.sort(dist, axis=1)[:, :2]
    log_mu = np.sort(np.log(r[:, 1] / r[:, 0]))
    n = len(log_mu)
    k = int(n * fraction)
    xs, ys = log_mu[:k], -np.log(1 - np.arange(1, k + 1) / n)
    return float(xs @ ys / (xs @ xs))


def ref_twonn_id(h: np.ndarray) -> float:
    return _twonn(_centre_unit(h))


def ref_dispersion(h: np.ndarray) -> float:
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    c = u @ u.T
    return 1.0 - float(c[np.triu_indices(len(c), 1)].mean())


def ref_matrix_entropy(h: np.ndarray) -> float:
    z = _centre_unit(h)
    return _entropy(np.linalg.eigvalsh(z @ z.T / len(z))) / math.log(h.shape[1])


def ref_effective_rank(h: np.ndarray) -> float:
    s = np.linalg.svd(_centre_unit(h), compute_uv=False)
    return math.exp(_entropy(s))


def ref_dataset_entropy(x: np.ndarray) -> float:
    n, d = x.shape
    z = _centre_unit(x)
    g = z @ z.T if n <= d else z.T @ z
    return _entropy(np.linalg.eigvalsh(g)) / min(math.log(n), math.log(d))


def ref_dataset_twonn(x: np.ndarray) -> float:
    return _twonn(x)


def ref_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return float(np.sum((y.T @ x) ** 2) / np.sqrt(np.sum((x.T @ x) ** 2) * np.sum((y.T @ y) ** 2)))


def _norm_views(v: np.ndarray) -> np.ndarray:
    return np.stack([_centre_unit(v[:, k]) for k in range(v.shape[1])], axis=1)


def ref_infonce(v: np.ndarray, tau: float = 0.1) -> float:
    v = _norm_views(v[:, :2])
    n = len(v)
    z = np.concatenate([v[:, 0], v[:, 1]])
    s = z @ z.T / tau
    losses = []
    for i in range(2 * n):
        others = np.delete(s[i], i)
        m = others.max()
        losses.append(-(s[i, (i + n) % (2 * n)] - m) + math.log(np.exp(others - m).sum()))
    return float(np.mean(losses))


def ref_lidar(v: np.ndarray, delta: float = 1e-4) -> float:
    v = _norm_views(v)
    n, a, d = v.shape
    mu_i = v.mean(axis=1)
    mu = mu_i.mean(axis=0)
    sb = np.zeros((d, d))
    sw = np.zeros((d, d))
    for i in range(n):
        dm = (mu_i[i] - mu)[:, None]
        sb += dm @ dm.T / n
        for k in range(a):
            de = (v[i, k] - mu_i[i])[:, None]
            sw += de @ de.T / (n * a)
    w, u = np.linalg.eigh(sw + delta * np.eye(d))
    inv = u @ np.diag(w ** -0.5) @ u.T
    return _entropy(np.linalg.eigvalsh(inv @ sb @ inv)) / min(math.log(n), math.log(d))


def ref_dime(v: np.ndarray, n_perm: int = 10, seed: int = 0) -> float:
    v = _norm_views(v[:, :2])
    n, _, d = v.shape
    ka, kb = v[:, 0] @ v[:, 0].T, v[:, 1] @ v[:, 1].T
    joint = _entropy(np.linalg.eigvalsh(ka * kb))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_perm):
        p = rng.permutation(n)
        vals.append(_entropy(np.linalg.eigvalsh(ka * kb[np.ix_(p, p)])))
    return (float(np.mean(vals)) - joint) / min(math.log(n), math.log(d))


def ref_line_shape(traj: np.ndarray) -> float:
    out = []
    for t in range(traj.shape[1]):
        steps = np.diff(traj[:, t], axis=0)
        unit = steps / np.linalg.norm(steps, axis=1, keepdims=True)
        out.append(len(steps) / np.linalg.norm(unit.sum(axis=0)))
    return float(np.mean(out))


# name: (reference driver kind, reference function, dataset, engine options)
HEAVY: dict[str, tuple[str, Callable[..., float], str, dict[str, Any]]] = {
    "prompt_entropy": ("doc", ref_prompt_entropy, "bench", {}),
    "curvature": ("doc", ref_curvature, "bench", {}),
    "twonn_id": ("doc", ref_twonn_id, "bench", {}),
    "representation_dispersion": ("doc", ref_dispersion, "bench", {}),
    "matrix_entropy": ("doc", ref_matrix_entropy, "bench", {}),
    "effective_rank": ("doc", ref_effective_rank, "bench", {}),
    "dataset_entropy": ("pooled", ref_dataset_entropy, "bench", {}),
    "dataset_twonn_id": ("cloud", ref_dataset_twonn, "bench", {"max_tokens": CLOUD_TOKENS}),
    "linear_cka": ("pair", ref_linear_cka, "bench", {"max_tokens": CLOUD_TOKENS}),
    "line_shape_score": ("traj", ref_line_shape, "bench", {}),
    "infonce": ("views", ref_infonce, "views", {}),
    "lidar": ("views", ref_lidar, "views", {}),
    "dime": ("views", ref_dime, "views", {}),
}


def run_reference(lake: Any, name: str) -> list[float]:
    from layerlake.queries.metric_inputs import token_sample
    kind, fn, dataset, opts = HEAVY[name]
    docs = lake.docs(dataset).collect()
    layers = sorted(lake.store.shard_manifests(lake.extraction_id(dataset))[0]["layers"])
    if kind == "views":
        originals = docs.filter(docs["view"] == 0)["doc_hash"].to_list()
        n_views = max(docs["view"].to_list())
        pos = {h: i for i, h in enumerate(docs["doc_hash"].to_list())}
        out = []
        for l in layers:
            x = lake.read_vectors(dataset, layers=l)
            counts = docs["n_tokens"].to_numpy()
            starts = np.concatenate([[0], np.cumsum(counts)])
            pooled = np.stack([x[starts[i]:starts[i + 1]].astype(np.float64).mean(axis=0) for i in range(len(counts))])
            want = 2 if name in ("infonce", "dime") else n_views
            by_group = {}
            for h, g, v in docs.select("doc_hash", "group", "view").iter_rows():
                if 1 <= v <= want:
                    by_group.setdefault(g, {})[v] = pooled[pos[h]]
            out.append(fn(np.stack([[by_group[o][v] for v in range(1, want + 1)] for o in originals])))
        return out
    counts = docs["n_tokens"].to_numpy()
    starts = np.concatenate([[0], np.cumsum(counts)])
    if kind == "traj":
        full = np.stack([lake.read_vectors(dataset, layers=l) for l in layers])
        return [float(np.mean([fn(full[:, starts[i]:starts[i + 1]].astype(np.float64)) for i in range(len(counts))]))]
    out = []
    prev = None
    sample = token_sample(int(starts[-1]), CLOUD_TOKENS, 0)
    for l in layers:
        x = lake.read_vectors(dataset, layers=l)
        if kind == "doc":
            vals = np.array([fn(x[starts[i]:starts[i + 1]].astype(np.float64)) for i in range(len(counts))])
            out.append(float(vals[np.isfinite(vals)].mean()))
        elif kind == "pooled":
            out.append(fn(np.stack([x[starts[i]:starts[i + 1]].astype(np.float64).mean(axis=0)
                                    for i in range(len(counts))])))
        elif kind == "cloud":
            out.append(fn(x[sample].astype(np.float64)))
        elif kind == "pair":
            cur = x[sample].astype(np.float64)
            if prev is not None:
                out.append(fn(prev, cur))
            prev = cur
        del x
    return out


# -- measurement in a fresh process -----------------------------------------------------------
def _cpu() -> float:
    """CPU seconds of this process (all threads): steadier than wall time on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class PeakRSS:
    """Peak resident memory above the level at start, sampled every few ms (Linux /proc)."""

    def __init__(self, every: float = 0.005) -> None:
        import threading
        self.every = every
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self.page
        except OSError:  # not Linux: the high-water mark since the process started
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.every)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _worker(lake_path: str, name: str, which: str, queue: Any) -> None:
    try:
        import layerlake as ll
        lake = ll.Lake(lake_path)
        import layerlake.queries.metric_engine
        import layerlake.queries.metric_compute  # noqa: F401
        _, _, dataset, opts = HEAVY[name]
        lake.docs(dataset).collect()
        with PeakRSS() as mem:
            c0 = _cpu()
            t0 = time.perf_counter()
            if which == "engine":
                df = lake.metric(name, dataset=dataset, cache="refresh", **opts)
                values = df["value"].to_list()
            elif HEAVY[name][0] in ("doc", "traj"):
                from threadpoolctl import threadpool_limits
                with threadpool_limits(limits=1, user_api="blas"):  # the engine's policy for per-document work
                    values = run_reference(lake, name)
            else:
                values = run_reference(lake, name)
            seconds = time.perf_counter() - t0
            cpu = _cpu() - c0
        peak = mem.mb
        cached = None
        if which == "engine":
            t1 = time.perf_counter()
            lake.metric(name, dataset=dataset, **opts)
            cached = time.perf_counter() - t1
        queue.put({"seconds": seconds, "cpu": cpu, "peak_mb": peak, "values": values, "cached": cached})
    except Exception as exc:  # reported in the table
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def measure(lake_path: str, name: str, which: str, timeout: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(lake_path, name, which, q))
    p.start()
    try:
        res = q.get(timeout=timeout)
    except Exception:
        p.kill()
        return {"error": f"timed out after {timeout:.0f}s"}
    p.join()
    return res


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    return min(ok, key=lambda r: r["cpu"]) if ok else runs[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--view-docs", type=int, default=250, help="originals in the views dataset")
    ap.add_argument("--views", type=int, default=4, help="augmented views per original")
    ap.add_argument("--view-tokens", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="200 docs x 64 tokens x 4 layers x d=128")
    ap.add_argument("--metrics", help="comma-separated subset")
    ap.add_argument("--lake", help="reuse/keep the lake here (default: a temporary folder)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is shown")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.tokens, args.layers, args.d, args.view_docs = 200, 64, 4, 128, 100
    from layerlake.metrics import REGISTRY
    names = [n for n in (args.metrics.split(",") if args.metrics else HEAVY) if n in HEAVY]
    missing = [n for n in names if n not in REGISTRY]
    names = [n for n in names if n in REGISTRY]
    tmp = None
    lake_path = args.lake
    if lake_path is None:
        tmp = tempfile.mkdtemp(prefix="layerlake-bench-")
        lake_path = os.path.join(tmp, "lake")
    if not os.path.exists(os.path.join(lake_path, "lake.json")):
        t0 = time.perf_counter()
        build_lake(Path(lake_path), docs=args.docs, tokens=args.tokens, layers=args.layers, d=args.d,
                   view_docs=args.view_docs, n_views=args.views, view_tokens=args.view_tokens)
        print(f"built lake {lake_path} in {time.perf_counter() - t0:.1f}s")
    print(f"bench: {args.docs} docs x {args.tokens} tokens x {args.layers} layers x d={args.d} (float16); views: "
          f"{args.view_docs} originals x {args.views} views x {args.view_tokens} tokens; token clouds and layer "
          f"pairs subsampled to {CLOUD_TOKENS} tokens; {os.cpu_count()} CPU(s)")
    if missing:
        print(f"not registered here (skipped): {', '.join(missing)}")
    head = (f"{'metric':26s} {'input':14s} {'eng cpu':>8s} {'ref cpu':>8s} {'ref/eng':>8s} {'eng wall':>9s} "
            f"{'ref wall':>9s} {'cached':>7s} {'eng MB':>7s} {'ref MB':>7s} {'max |diff|':>10s}")
    print(head)
    print("-" * len(head))
    for name in names:
        eng = _best([measure(lake_path, name, "engine", args.timeout) for _ in range(args.repeat)])
        ref = _best([measure(lake_path, name, "reference", args.timeout) for _ in range(args.repeat)])
        kind = REGISTRY[name].input
        if "error" in eng or "error" in ref:
            print(f"{name:26s} {kind:14s} error: {eng.get('error') or ref.get('error')}")
            continue
        a, b = np.asarray(eng["values"], float), np.asarray(ref["values"], float)
        diff = float(np.nanmax(np.abs(a - b))) if a.shape == b.shape else float("nan")
        print(f"{name:26s} {kind:14s} {eng['cpu']:8.2f} {ref['cpu']:8.2f} {ref['cpu'] / eng['cpu']:8.2f} "
              f"{eng['seconds']:9.2f} {ref['seconds']:9.2f} {eng['cached']:7.3f} {eng['peak_mb']:7.0f} "
              f"{ref['peak_mb']:7.0f} {diff:10.2e}", flush=True)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
