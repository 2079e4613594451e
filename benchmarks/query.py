"""Query-engine throughput, measured side by side in one run.

Prints, for one full layer:
  * read throughput of ``lake.read_vectors`` and of ``lake.vectors(...).collect()`` as ratios to a raw
    read of the same chunks with zarr into a float32 numpy array (decompressed in memory, no lake
    logic), and to a decode-only read (stored dtype, no float32 conversion);
  * the time of a selective query (one document, one layer) vs a full scan of the layer, through
    Polars and SQL, with the bytes each read.

The lake is synthetic (random activations) but written with the store's own ``write_shard``, so its
layout, codecs and chunking are exactly what ingest writes. Timings are the best of ``--repeat``
interleaved runs (the machine may be shared).

    python benchmarks/query.py [--docs 1500] [--tokens 64] [--d 512] [--layers 4] [--shards 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import layerlake as ll  # noqa: E402
from layerlake.store import ShardData, doc_hash, write_shard  # noqa: E402
from layerlake.store.arrays import to_float32  # noqa: E402


def build_lake(root: Path, *, n_docs: int, tokens: int, d: int, n_layers: int, n_shards: int, dtype: str) -> ll.Lake:
    lake = ll.Lake(root)
    store = lake.store
    eid = "bench0000000000a"
    store.create_extraction(eid, {"model": {"model": "synthetic", "revision": None}, "capture": {"dtype": dtype},
                                  "d_model": d, "n_layers": n_layers - 1, "is_causal": True, "dtype": dtype})
    store.add_alias(eid, "synthetic")
    rng = np.random.default_rng(0)
    texts = [f"synthetic document {i}" for i in range(n_docs)]
    hashes = [doc_hash(t) for t in texts]
    per_shard = -(-n_docs // n_shards)
    for s in range(n_shards):
        docs = hashes[s * per_shard:(s + 1) * per_shard]
        n = len(docs) * tokens
        dt = {"doc_hash": docs, "window": [0] * len(docs), "char_offset": [0] * len(docs),
              "n_tokens": [tokens] * len(docs), "row_start": [i * tokens for i in range(len(docs))],
              "truncated": [False] * len(docs)}
        tk = {"row": np.arange(n), "doc_hash": np.repeat(docs, tokens).tolist(),
              "window": np.zeros(n, np.int32), "position": np.tile(np.arange(tokens, dtype=np.int32), len(docs)),
              "token_id": rng.integers(0, 50000, n).astype(np.int32), "token": ["tok"] * n,
              "nll": rng.random(n).astype(np.float32)}
        hidden = {l: (rng.standard_normal((n, d), dtype=np.float32) * (1 + l)).astype(dtype) for l in range(n_layers)}
        write_shard(store.fs, eid, ShardData(docs=pa.table(dt), tokens=pa.table(tk), hidden=hidden, dtype=dtype),
                    shard_id=f"s{s:04d}")
    store.write_dataset("bench", pa.table({"doc_hash": hashes, "text": texts}))
    store.link_dataset("bench", eid, {"model": "synthetic", "layers": list(range(n_layers))})
    return lake


def raw_read(lake: ll.Lake, layer: int, convert: bool) -> np.ndarray:
    """Every chunk of the layer, straight from zarr, into one array (no index, no ordering)."""
    eid = lake.extraction_id("bench")
    root = Path(lake.store.fs.root) / "extractions" / eid / "shards"
    arrays = [zarr.open_array(str(root / sid / "hidden.zarr" / f"layer_{layer}"), mode="r")
              for sid in sorted(os.listdir(root))]
    n = sum(a.shape[0] for a in arrays)
    out = np.empty((n, arrays[0].shape[1]), np.float32 if convert else arrays[0].dtype)
    pos = 0
    for a in arrays:
        block = a[:]
        if convert and a.attrs["dtype"] == "bfloat16":
            out[pos:pos + len(block)] = to_float32(block, "bfloat16")
        else:  # numpy converts float16 -> float32 while copying (one pass)
            out[pos:pos + len(block)] = block
        pos += len(block)
    return out


def best(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1500)
    ap.add_argument("--tokens", type=int, default=64, help="tokens per document")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lake", help="keep the lake here (default: a temporary directory)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.lake) if args.lake else Path(tmp) / "lake"
        t0 = time.perf_counter()
        lake = build_lake(root, n_docs=args.docs, tokens=args.tokens, d=args.d, n_layers=args.layers,
                          n_shards=args.shards, dtype=args.dtype)
        layer = args.layers - 1
        n_rows = args.docs * args.tokens
        eid = lake.extraction_id("bench")
        stored = lake.engine.snapshot().layer_stored_bytes(eid, layer)
        mb32 = n_rows * args.d * 4 / 1e6
        print(f"lake: {args.docs:,} docs x {args.tokens} tokens = {n_rows:,} rows, d={args.d}, {args.dtype}, "
              f"{args.shards} shards; layer {layer}: {stored / 1e6:,.1f} MB stored, {mb32:,.1f} MB as float32 "
              f"(built in {time.perf_counter() - t0:.1f} s)")

        # warm up imports and caches
        lake.read_vectors("bench", layers=layer)
        lake.vectors("bench", layers=[layer]).select("vec").collect()

        funcs = {
            "raw zarr -> float32": lambda: raw_read(lake, layer, True),
            "raw zarr, stored dtype (decode only)": lambda: raw_read(lake, layer, False),
            "lake.read_vectors": lambda: lake.read_vectors("bench", layers=layer),
            "lake.vectors(...).collect()": lambda: lake.vectors("bench", layers=[layer]).collect(),
            "lake.vectors(...).select('vec').collect()":
                lambda: lake.vectors("bench", layers=[layer]).select("vec").collect(),
        }
        times = {k: [] for k in funcs}
        results = {}
        for _ in range(args.repeat):  # interleaved, so load on a shared machine hits every method alike
            for k, fn in funcs.items():
                t, results[k] = best(fn, 1)
                times[k].append(t)
        t = {k: min(v) for k, v in times.items()}
        want = results["raw zarr -> float32"]
        assert np.array_equal(results["lake.read_vectors"], want)
        assert np.array_equal(results["lake.vectors(...).select('vec').collect()"]["vec"].to_numpy(), want)

        print("\nfull-layer read (best of %d)                   seconds      MB/s   ratio to raw->f32  ratio to decode-only"
              % args.repeat)
        for k in funcs:
            print(f"  {k:44s} {t[k]:8.3f} {mb32 / t[k]:9.0f} {t['raw zarr -> float32'] / t[k]:12.2f}"
                  f" {t['raw zarr, stored dtype (decode only)'] / t[k]:18.2f}")
        print(f"  targets: read_vectors >= 0.5, vectors().collect() >= 0.3 (ratio to raw->f32)")

        hashes = lake.docs("bench").select("doc_hash").collect()["doc_hash"].to_list()
        h = hashes[len(hashes) // 2]

        def sel_polars():
            return lake.vectors("bench", layers="all").filter(
                (pl.col("doc_hash") == h) & (pl.col("layer") == layer)).select("position", "vec").collect()

        def full_polars():
            return lake.vectors("bench", layers="all").filter(pl.col("layer") == layer).select(
                "position", "vec").collect()

        def sel_sql():
            return lake.sql("SELECT position, vec FROM vectors WHERE layer = $l AND doc_hash = $h",
                            {"l": layer, "h": h}).pl()

        def full_sql():
            return lake.sql("SELECT position, vec FROM vectors WHERE layer = $l", {"l": layer}).pl()

        def sel_agg_sql():
            return lake.sql("SELECT avg(norm) FROM vectors WHERE layer = $l AND doc_hash = $h",
                            {"l": layer, "h": h}).fetchall()

        def full_agg_sql():
            return lake.sql("SELECT avg(norm) FROM vectors WHERE layer = $l", {"l": layer}).fetchall()

        print("\nselective query (1 document of %d, 1 layer of %d) vs full scan of the layer" % (args.docs, args.layers))
        print("  %-44s %10s %10s %8s %14s %14s" % ("query", "selective", "full", "speedup", "bytes (sel)",
                                                 "bytes (full)"))
        for name, sel, full in (("polars: position, vec", sel_polars, full_polars),
                                ("sql: position, vec", sel_sql, full_sql),
                                ("sql: avg(norm)", sel_agg_sql, full_agg_sql)):
            ts, _ = best(sel, args.repeat)
            with lake.track_reads() as s_sel:
                sel()
            tf, _ = best(full, args.repeat)
            with lake.track_reads() as s_full:
                full()
            print(f"  {name:44s} {ts:9.4f}s {tf:9.3f}s {tf / ts:7.0f}x {s_sel.bytes_read:14,} {s_full.bytes_read:14,}")
        print(f"  selective bytes / layer stored bytes: {s_sel.bytes_read / stored:.2%}")


if __name__ == "__main__":
    main()
