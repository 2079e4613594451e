"""Ingest throughput with 1 vs 2 Ray workers, and the per-shard overhead of the Ray path vs the local path.

    python benchmarks/scale.py [--docs 160] [--d-model 256] [--layers 6] [--repeats 1]

A GPT-2 shaped model with random weights (built from a config, no download) ingests the
bundled corpus of Python documentation paragraphs into fresh lakes:

1. throughput: Ray with 1 worker vs 2 workers (1 CPU and 1 torch thread each) on a local
   cluster of 2 CPUs; tokens/s are counted from the first ready worker to the last commit
   (worker start-up, i.e. importing torch and loading the model, is reported apart);
2. per-shard overhead: a job for a small model (d=64, 2 blocks, 128-token batches) as one shard
   per batch or as a single shard, locally (1 torch thread) and on 1 Ray worker; overhead per
   shard = (t_many - t_one) / (n_many - 1).
   Each configuration runs ``--repeats`` times and the fastest run counts.

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
from layerlake.ingest.executors.ray import ensure_ray  # noqa: E402
from layerlake.cli.quickstart import quickstart_corpus  # noqa: E402
from tests.models import build_tiny  # noqa: E402


def ingest(root: Path, model: Path, texts: list[str], *, shard_bytes: int, executor: str = "local",
           workers: int = 1, batch: int = 512) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    kw = {"executor_options": {"num_workers": workers}} if executor == "ray" else {}
    t0 = time.perf_counter()
    res = ll.Lake(root).ingest(str(model), texts, dataset="d", shard_bytes=shard_bytes, batch_tokens=batch,
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
    ap.add_argument("--docs", type=int, default=120)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llbench-"))
    model = build_tiny("gpt2", work / "model", n_layers=args.layers, d=args.d_model)
    texts = [d["text"] for d in quickstart_corpus(args.docs)]
    bytes_per_token = args.d_model * 2 * (args.layers + 1)
    ray = ensure_ray(temp_dir=tempfile.mkdtemp(prefix="llb-", dir="/tmp"), num_cpus=2)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; model d={args.d_model} "
          f"L={args.layers}; {len(texts)} documents; torch {torch.__version__}, ray {ray.__version__}")

    batch = 512
    per_batch = batch * bytes_per_token  # hidden-state bytes of one full batch
    rep = args.repeats

    # 1. throughput, 1 vs 2 Ray workers; shards of ~4 batches so that both workers have work
    mid = 4 * per_batch
    r1 = best([ingest(work / "r1", model, texts, shard_bytes=mid, executor="ray", workers=1, batch=batch)
               for _ in range(rep)])
    r2 = best([ingest(work / "r2", model, texts, shard_bytes=mid, executor="ray", workers=2, batch=batch)
               for _ in range(rep)])
    for name, r in (("ray 1 worker ", r1), ("ray 2 workers", r2)):
        print(f"{name}: {r['tps']:8,.0f} tok/s  ({r['tokens']:,} tokens, {r['shards']} shards, {r['run']:.1f} s "
              f"computing, {r['startup']:.1f} s worker start-up)")
    print(f"throughput ratio 2 workers / 1 worker: {r2['tps'] / r1['tps']:.2f}x")

    # 2. per-shard overhead: one shard per batch vs a single shard, local (1 torch thread) and 1 Ray worker,
    # with a small model and small batches, so that the fixed cost of a shard is a large part of the time
    torch.set_num_threads(1)
    small = build_tiny("gpt2", work / "small", n_layers=2, d=64)
    huge, sb = 1 << 40, 128
    loc_many = best([ingest(work / "lm", small, texts, shard_bytes=1, batch=sb) for _ in range(rep)])
    loc_few = best([ingest(work / "lf", small, texts, shard_bytes=huge, batch=sb) for _ in range(rep)])
    ray_many = best([ingest(work / "rm", small, texts, shard_bytes=1, executor="ray", workers=1, batch=sb)
                     for _ in range(rep)])
    ray_few = best([ingest(work / "rf", small, texts, shard_bytes=huge, executor="ray", workers=1, batch=sb)
                    for _ in range(rep)])
    pers = {}
    for name, many, few in (("local", loc_many, loc_few), ("ray", ray_many, ray_few)):
        pers[name] = (many["run"] - few["run"]) / max(many["shards"] - few["shards"], 1)
        print(f"{name:5} per-shard overhead: {pers[name] * 1000:7.1f} ms  ({many['shards']} shards in "
              f"{many['run']:.2f} s vs {few['shards']} shard in {few['run']:.2f} s)")
    print(f"ray - local per-shard overhead: {(pers['ray'] - pers['local']) * 1000:.1f} ms; the small job at 1 thread "
          f"as one shard: local {loc_few['tps']:,.0f} tok/s, ray 1 worker {ray_few['tps']:,.0f} tok/s; "
          f"load average now {os.getloadavg()[0]:.1f}")
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
