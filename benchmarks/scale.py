"""Ingest throughput with 1 vs 2 Ray workers, and the per-shard overhead of the Ray path vs the local path.

    python benchmarks/scale.py [--docs 160] [--d-model 256] [--layers 6] [--repeats 1]

A GPT-2 shaped model with random weights (built from a config, no download) ingests the
bundled corpus of Python documentation paragraphs into fresh lakes:

1. throughput: Ray with 1 worker vs 2 workers (1 CPU and 1 torch thread each) on a local
   cluster of 2 CPUs; tokens/s are counted from the first ready worker to the last commit
   (worker start-up, i.e. importing torch and loading the model, is reported apart);
2. per-shard overhead: the same job cut into many small or few large shards, locally (1 torch
   thread) and on 1 Ray worker; overhead per shard = (t_many - t_few) / (n_many - n_few).

Numbers depend on the machine and its load (printed); the ratios are measured side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LAYERLAKE_PROGRESS", "0")

import torch  # noqa: E402

import layerlake as ll  # noqa: E402
from layerlake.ingest.executors import ensure_ray  # noqa: E402
from layerlake.quickstart import quickstart_corpus  # noqa: E402
from tests.models import build_tiny  # noqa: E402


def ingest(root: Path, model: Path, texts: list[str], *, shard_bytes: int, executor: str = "local",
           workers: int = 1) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    kw = {"executor_options": {"num_workers": workers}} if executor == "ray" else {}
    t0 = time.perf_counter()
    res = ll.Lake(root).ingest(str(model), texts, dataset="d", shard_bytes=shard_bytes, batch_tokens=2048,
                               executor=executor, **kw)
    wall = time.perf_counter() - t0
    st = res.executor_stats
    run_s = st.get("run_s", wall)
    return {"wall": wall, "run": run_s, "startup": st.get("startup_s", 0.0), "tokens": res.computed_tokens,
            "shards": res.shards_written, "tps": res.computed_tokens / run_s}


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["run"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=160)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llbench-"))
    model = build_tiny("gpt2", work / "model", n_layers=args.layers, d=args.d_model)
    texts = [d["text"] for d in quickstart_corpus(args.docs)]
    bytes_per_token = args.d_model * 2 * (args.layers + 1)
    ray = ensure_ray(temp_dir=tempfile.mkdtemp(prefix="llb-", dir="/tmp"), num_cpus=2)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; model d={args.d_model} "
          f"L={args.layers}; {len(texts)} documents; torch {torch.__version__}, ray {ray.__version__}")

    # 1. throughput, 1 vs 2 Ray workers, one large shard per worker's share of the job
    big = 4 * 1024 * 1024
    one = [ingest(work / "r1", model, texts, shard_bytes=big, executor="ray", workers=1) for _ in range(args.repeats)]
    two = [ingest(work / "r2", model, texts, shard_bytes=big, executor="ray", workers=2) for _ in range(args.repeats)]
    r1, r2 = best(one), best(two)
    print(f"ray 1 worker : {r1['tps']:8,.0f} tok/s  ({r1['tokens']:,} tokens, {r1['shards']} shards, "
          f"{r1['run']:.1f} s computing, {r1['startup']:.1f} s worker start-up)")
    print(f"ray 2 workers: {r2['tps']:8,.0f} tok/s  ({r2['tokens']:,} tokens, {r2['shards']} shards, "
          f"{r2['run']:.1f} s computing, {r2['startup']:.1f} s worker start-up)")
    print(f"throughput ratio 2 workers / 1 worker: {r2['tps'] / r1['tps']:.2f}x")

    # 2. per-shard overhead: many small vs few large shards, local (1 thread) and 1 Ray worker
    small = max(bytes_per_token * 64, 16_384)
    torch.set_num_threads(1)
    loc_many = best([ingest(work / "lm", model, texts, shard_bytes=small) for _ in range(args.repeats)])
    loc_few = best([ingest(work / "lf", model, texts, shard_bytes=big) for _ in range(args.repeats)])
    ray_many = best([ingest(work / "rm", model, texts, shard_bytes=small, executor="ray", workers=1)
                     for _ in range(args.repeats)])
    ray_few = r1
    for name, many, few in (("local", loc_many, loc_few), ("ray  ", ray_many, ray_few)):
        per = (many["run"] - few["run"]) / max(many["shards"] - few["shards"], 1)
        print(f"{name} per-shard overhead: {per * 1000:7.1f} ms  ({many['shards']} shards {many['run']:.2f} s vs "
              f"{few['shards']} shards {few['run']:.2f} s)")
    local_per = (loc_many["run"] - loc_few["run"]) / max(loc_many["shards"] - loc_few["shards"], 1)
    ray_per = (ray_many["run"] - ray_few["run"]) / max(ray_many["shards"] - ray_few["shards"], 1)
    print(f"ray vs local, extra per-shard cost: {(ray_per - local_per) * 1000:.1f} ms; same job at 1 thread: "
          f"local {loc_few['tps']:,.0f} tok/s vs ray 1 worker {r1['tps']:,.0f} tok/s "
          f"({r1['tps'] / loc_few['tps']:.2f}x)")
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
