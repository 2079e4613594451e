"""Export / import / gc throughput and remote read selectivity, measured side by side.

Run: python benchmarks/sharing.py [--docs 2000] [--d 256]
Builds a synthetic lake (no model) in a temporary folder, then prints MB/s of
export (whole-shard copies vs rewritten subsets), import (verify + copy), a
re-import (everything skipped), and, on a local S3 server (moto), how many
chunk requests a one-document read makes compared to a full read.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import layerlake as ll  # noqa: E402
from layerlake.store import doc_hash  # noqa: E402
from tests.store.lakes import EID, synthetic_lake, texts  # noqa: E402


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--d", type=int, default=256)
    args = ap.parse_args()
    ll.set_progress(False)
    tmp = Path(tempfile.mkdtemp(prefix="ll-bench-"))
    try:
        docs = texts(args.docs)
        src, t = timed(lambda: synthetic_lake(tmp / "src", {"all": docs, "half": docs[: args.docs // 2 + 7]},
                                              layers=(0, 1, 2, 3), d=args.d, shard_docs=200))
        size = du(tmp / "src")
        print(f"source lake: {args.docs} docs, d={args.d}, 4 layers, {size / 1e6:.1f} MB (built in {t:.1f} s)")
        _, t_whole = timed(lambda: src.export("all", tmp / "exp-all"))
        print(f"export, whole shards copied : {du(tmp / 'exp-all') / 1e6 / t_whole:8.1f} MB/s ({t_whole:.2f} s)")
        _, t_sub = timed(lambda: src.export("all", tmp / "exp-sub", layers=[1, 3]))
        print(f"export, subsets rewritten   : {du(tmp / 'exp-sub') / 1e6 / t_sub:8.1f} MB/s ({t_sub:.2f} s)")
        _, t_imp = timed(lambda: ll.import_lake(tmp / "exp-all", tmp / "dst"))
        print(f"import (verify + copy)      : {du(tmp / 'exp-all') / 1e6 / t_imp:8.1f} MB/s ({t_imp:.2f} s)")
        dst = ll.Lake(tmp / "dst")
        rep, t_again = timed(lambda: dst.import_(tmp / "exp-all"))
        print(f"re-import (verify, skip all): {du(tmp / 'exp-all') / 1e6 / t_again:8.1f} MB/s ({t_again:.2f} s), "
              f"{rep.bytes_written} bytes written; ratio to first import {t_again / t_imp:.2f}")
        dst.rm_dataset("all")
        rep, t_gc = timed(lambda: dst.gc(grace_seconds=0))
        print(f"gc after rm                 : {rep.bytes_freed / 1e6:.1f} MB freed in {t_gc:.2f} s")
        try:
            from tests.store.s3server import CountingS3
        except ImportError:
            return
        server = CountingS3()
        server.make_bucket("bench")
        import layerlake.store.shards as shards
        from layerlake.store.arrays import write_array
        shards.write_array = functools.partial(write_array, chunk_bytes=64 << 10)
        small = docs[:400]
        remote = synthetic_lake("s3://bench/lake", {"s": small}, layers=(0,), d=args.d, shard_docs=400,
                                storage_options=server.options)
        remote.store.doc_index(EID)
        server.reset()
        _, t_one = timed(lambda: remote.read_vectors("s", layers=0, docs=[doc_hash(small[200])]))
        one = len(server.gets("/layer_0/c/"))
        server.reset()
        _, t_all = timed(lambda: remote.read_vectors("s", layers=0))
        full = len(server.gets("/layer_0/c/"))
        print(f"S3 read, one document       : {one} chunk GET(s) in {t_one:.2f} s; all 400 documents: {full} chunk "
              f"GETs in {t_all:.2f} s (ratio {one / full:.3f})")
        server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
