"""Cost of Jacobian sketches, side by side with the forward pass of the same batch.

One batch of ``--docs`` documents cut to ``--tokens`` tokens. Measured in one run:

- forward: the model's forward pass over the batch (inference mode, hidden states on);
- sketch:  the capture of ``k`` JVPs + ``l`` VJPs for ``--layers`` blocks at the last
  token of every document (one round: one target per sequence);
- exact:   the same with ``exact=True`` (d more VJPs per (layer, token)), on one block.

Prints seconds per (layer, token) and their ratio to the forward pass of the batch,
exact vs sketch, and stored (compressed) bytes per (layer, token) of a real ingest.

    python benchmarks/jacobian.py                      # SmolLM2-135M (GGUF), k = 21, l = 43
    python benchmarks/jacobian.py --model gpt2-random  # GPT-2-small shape, random weights
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import layerlake as ll  # noqa: E402
from layerlake.ingest.batching import Batch, Window  # noqa: E402
from layerlake.ingest.capture import forward_batch  # noqa: E402
from layerlake.ingest.jacobian import make_capture  # noqa: E402
from layerlake.ingest.models import load_model  # noqa: E402
from layerlake.cli.quickstart import quickstart_corpus  # noqa: E402


def load(name: str):
    if name == "smollm":
        from tests.models import SMOLLM_GGUF, smollm_dir
        return load_model(smollm_dir(), gguf_file=SMOLLM_GGUF, device="cpu")
    if name == "gpt2-random":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from ingest import gpt2_small_dir
        return load_model(str(gpt2_small_dir(Path(tempfile.mkdtemp()))), device="cpu")
    return load_model(name, device="cpu")


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm")
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=21)
    ap.add_argument("--layers", default="2,15,28")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load(args.model)
    layers = tuple(int(x) for x in args.layers.split(","))
    texts = [d["text"] for d in quickstart_corpus(50)]
    wins = []
    for t in texts:
        ids = lm.tokenizer(t)["input_ids"][: args.tokens]
        if len(ids) == args.tokens:
            wins.append(Window(len(wins), f"{len(wins):032x}", 0, 0, tuple(ids), False))
        if len(wins) == args.docs:
            break
    batch = Batch(0, tuple(wins))
    n_tok = len(wins)  # sketched tokens: the last of each document
    spec = ll.JacobianSketch(k=args.k, positions="last", layers=layers)
    cap = make_capture(spec)

    t_fwd = timed(lambda: forward_batch(lm, batch, [0], "float32", want_nll=False), args.repeat)

    def sketch(c=cap):
        with c.recording(lm):
            _, hs, ids, mask = forward_batch(lm, batch, [0], "float32", want_nll=False)
        c(lm, batch, hs, ids, mask)

    cap.prepare(lm)
    with cap.recording(lm):
        forward_batch(lm, batch, [0], "float32", want_nll=False)
    bargs, bkwargs, _ = cap._record.calls[layers[0] - 1]
    block = cap.blocks[layers[0] - 1]

    def block_forward():
        with torch.inference_mode():
            block(*bargs, **bkwargs)

    t_block = timed(block_forward, args.repeat)
    t_sk = timed(sketch, args.repeat) - t_fwd
    per_sk = t_sk / (len(layers) * n_tok)
    exact = make_capture(ll.JacobianSketch(k=args.k, positions="last", layers=layers[:1], exact=True))
    t_ex = timed(lambda: sketch(exact), 1) - t_fwd
    per_ex = t_ex / n_tok
    one = make_capture(ll.JacobianSketch(k=args.k, positions="last", layers=layers[:1]))
    t_one = timed(lambda: sketch(one), args.repeat) - t_fwd
    per_one = t_one / n_tok
    every = make_capture(ll.JacobianSketch(k=args.k, positions="all", layers=layers[:1]))
    t_all = timed(lambda: sketch(every), args.repeat) - t_fwd
    per_all = t_all / batch.n_tokens
    power = make_capture(ll.JacobianSketch(k=args.k, positions="last", layers=layers[:1], power_iterations=2))
    t_pow = timed(lambda: sketch(power), args.repeat) - t_fwd
    per_pow = t_pow / n_tok

    with tempfile.TemporaryDirectory() as tmp:
        lake = ll.Lake(Path(tmp) / "lake")
        lake.ingest(lm.model, texts[: args.docs], tokenizer=lm.tokenizer, model_name=args.model, dataset="b",
                    layers=[0], max_length=args.tokens, jacobian=spec, progress=False)
        eid = lake.extraction_id("b")
        man = lake.store.shard_manifests(eid)[0]
        jbytes = sum(f["size"] for name, f in man["files"].items() if name.startswith("jacobian.zarr/"))
        n_sk = len(lake.jacobians("b", layer=layers[0], K=1))
    d, l = lm.d_model, spec.l
    raw = (args.k + l) * d * 4 + 8
    print(f"model {args.model}: d={d}, {lm.n_layers} blocks, batch {len(wins)} docs x {args.tokens} tokens, "
          f"torch threads {torch.get_num_threads()}")
    print(f"forward pass of the batch            {t_fwd * 1e3:9.1f} ms")
    print(f"sketch k={args.k}, l={l}: per (layer, token)  {per_sk * 1e3:9.1f} ms  = {per_sk / t_fwd:6.2f} x forward "
          f"of the batch  ({len(layers)} blocks x {n_tok} tokens in {t_sk:.2f} s)")
    print(f"  one block only: per (layer, token) {per_one * 1e3:9.1f} ms  = {per_one / t_fwd:6.2f} x forward")
    print(f"one block's forward over the batch   {t_block * 1e3:9.1f} ms; one round (one token per document, "
          f"k+l={args.k + l} products) of one block = {t_one / t_block:5.1f} x that")
    print(f"  positions='all' (every token in the same pass): per (layer, token) {per_all * 1e3:9.1f} ms  = "
          f"{per_all / t_fwd:6.3f} x forward ({batch.n_tokens} tokens)")
    print(f"  power_iterations=2 ({6 * args.k} products): per (layer, token) {per_pow * 1e3:9.1f} ms  = "
          f"{per_pow / t_fwd:6.2f} x forward")
    print(f"exact J (k+l+d={args.k + l + d} products) per (layer, token) {per_ex * 1e3:9.1f} ms  = "
          f"{per_ex / t_fwd:6.2f} x forward; exact / sketch = {per_ex / per_one:5.1f}")
    print(f"storage per (layer, token): raw float32 {raw:,} B ((k+l) d 4 + 8); stored {jbytes / (n_sk * len(layers)):,.0f} B "
          f"compressed (Blosc-LZ4 + crc32c; {n_sk} tokens x {len(layers)} blocks); exact J would add {d * d * 4:,} B")


if __name__ == "__main__":
    main()
