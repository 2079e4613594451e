"""The Ray executor: many model replicas write shards, the driver commits them.

The job is the shard plan a local run computes (:func:`~layerlake.ingest.executors.core.plan_shards`),
so the shards and their values are identical to a local run's. A pool of Ray
actors (one model replica each, loaded once) takes planned shards; an actor
computes one with the shared batch step, writes its files straight to the lake
(a file system every worker shares, or an object store) and returns its
manifest (several when the ``shard_seconds`` time cut ends it early, as the
local executor would); the driver checks the files are visible and writes the
commit markers.
Commits happen in plan order, so the committed shards are always a prefix of the
plan: a crashed driver resumes exactly like a local run (the documents left are
a suffix of the plan and re-plan into the same batches). A shard lost with a dead
worker is computed again by a fresh actor under a new shard id (what the dead
worker half-wrote stays an uncommitted orphan: readers ignore it, ``verify``
reports it). An exception raised by the work itself (bad input, overflow to
inf, a failed write) stops the job and is raised on the driver as it was raised.

Options (``executor_options=`` / CLI flags): ``address`` (a Ray cluster; default:
the running one, else a new local one), ``num_workers`` (default: as many as the
cluster's free GPUs / CPUs hold), ``gpus_per_worker`` (default 1 when the driver
asked for CUDA or ``device="auto"`` finds GPUs in the cluster, else 0),
``cpus_per_worker`` (1), ``temp_dir`` (Ray's session folder when a local cluster
is started; keep it short: Ray's socket paths must fit in 107 bytes),
``max_unit_retries`` (3), ``max_worker_restarts`` and ``inflight_per_worker`` (2).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import socket
import tempfile
import time
from typing import Any

from ...errors import LayerlakeError, ModelLoadError, SpecError
from ...progress import track
from ...store import (
    abandon_shard, CaptureSpec, commit_shard, LakeFS, LakeStore, new_shard_id, write_shard_data,
)
from ..writer import build_shard
from .core import BatchStep, PlannedShard, compute_shard, default_batch_tokens, plan_shards, token_text_table

log = logging.getLogger(__name__)


# -- options -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class RayOptions:
    """Validated options of the Ray executor (see the module docstring)."""

    address: str | None = None
    num_workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    temp_dir: str | None = None
    max_unit_retries: int = 3
    max_worker_restarts: int | None = None
    inflight_per_worker: int = 2
    ready_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise SpecError(f"address={self.address!r} must be a Ray address like 'auto', 'ray://host:10001' or "
                            "'host:6379'")
        _check_number("num_workers", self.num_workers, integer=True, minimum=1, optional=True)
        _check_number("gpus_per_worker", self.gpus_per_worker, minimum=0, optional=True)
        _check_number("cpus_per_worker", self.cpus_per_worker, minimum=0)
        _check_number("max_unit_retries", self.max_unit_retries, integer=True, minimum=0)
        _check_number("max_worker_restarts", self.max_worker_restarts, integer=True, minimum=0, optional=True)
        _check_number("inflight_per_worker", self.inflight_per_worker, integer=True, minimum=1)
        _check_number("ready_timeout_s", self.ready_timeout_s, minimum=0)
        if self.gpus_per_worker is not None and self.gpus_per_worker > 64:
            raise SpecError(f"gpus_per_worker={self.gpus_per_worker} is absurd; one model replica uses 0..8 GPUs")
        if self.temp_dir is not None and len(os.fspath(self.temp_dir)) > 60:
            raise SpecError(f"temp_dir={self.temp_dir!r} is {len(os.fspath(self.temp_dir))} characters; Ray puts "
                            "Unix sockets under it, whose paths must stay under 107 bytes: use a short folder "
                            "such as /tmp/ray")

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> "RayOptions":
        options = dict(options or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise SpecError(f"unknown Ray executor option(s) {unknown}; valid: {', '.join(valid)}")
        return cls(**options)


def _check_number(name: str, value: Any, *, minimum: float, integer: bool = False, optional: bool = False) -> None:
    if value is None and optional:
        return
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or value != value or value < minimum or value == float("inf"):
        kind = "an integer" if integer else "a number"
        raise SpecError(f"{name}={value!r} must be {kind} >= {minimum}")


def check_ray_setup(store: LakeStore, options: dict[str, Any] | None) -> RayOptions:
    """Fail fast, before any corpus or model is read: options, the lake's reachability, Ray installed."""
    opts = RayOptions.from_dict(options)
    if store.fs.protocol == "memory":
        raise SpecError(f"lake {store.fs.url} lives in this process's memory; Ray workers cannot write to it. Use "
                        "a directory every worker can reach (a shared file system) or an object store URL")
    import_ray()
    return opts


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SpecError("executor='ray' needs Ray: pip install 'layerlake[ray]' (or pip install 'ray[default]')") from None
    return ray


def default_temp_dir() -> str:
    base = tempfile.gettempdir()
    if len(base) > 24:  # pytest's and some clusters' TMPDIRs are long; Ray's socket paths are not allowed to be
        base = "/tmp"
    return os.path.join(base, f"llray-{os.getuid() if hasattr(os, 'getuid') else 0}")


def ensure_ray(address: str | None = None, *, temp_dir: str | None = None, num_cpus: int | None = None,
               num_gpus: int | None = None) -> Any:
    """Ray, initialised: the running instance if there is one, else ``address``, else a new local cluster.

    A new local cluster gets a short temp dir and a ``PYTHONPATH`` that makes its
    workers import this very ``layerlake`` (a source checkout included).
    """
    ray = import_ray()
    if ray.is_initialized():
        if address:
            log.info("Ray is already initialised in this process; using it and ignoring address=%s", address)
        return ray
    kw: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True}
    if address:
        kw["address"] = address
    else:
        tmp = temp_dir or default_temp_dir()
        os.makedirs(tmp, exist_ok=True)
        kw.update(_temp_dir=tmp, runtime_env={"env_vars": {"PYTHONPATH": worker_pythonpath()}})
        if num_cpus is not None:
            kw["num_cpus"] = num_cpus
        if num_gpus is not None:
            kw["num_gpus"] = num_gpus
    log.info("starting Ray: %s", {k: v for k, v in kw.items() if k != "runtime_env"})
    ray.init(**kw)
    return ray


def worker_pythonpath() -> str:
    """PYTHONPATH for workers of a local cluster: this layerlake's folder first, then the driver's path."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parts = [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    return os.pathsep.join(parts)


# -- the worker (one per Ray actor) ---------------------------------------------------------------
class IngestWorker:
    """Loads the model once, then turns planned shards into written (uncommitted) shards.

    Errors while starting are kept and raised by :meth:`ready` (as a task
    error: the driver stops) rather than killing the actor (which would read
    as a lost worker and be retried).
    """

    def __init__(self, lake_url: str, storage_options: dict[str, Any], eid: str, spec: CaptureSpec,
                 load_kwargs: dict[str, Any], model_obj: Any, device: str, threads: int,
                 fingerprint: dict[str, Any], shard_seconds: float | None) -> None:
        self.error: BaseException | None = None
        self.eid = eid
        self.spec = spec
        self.shard_seconds = shard_seconds
        self.pid = os.getpid()
        self.host = socket.gethostname()
        try:
            self._start(lake_url, storage_options, load_kwargs, model_obj, device, threads, fingerprint)
        except Exception as exc:  # handed to the driver by ready()
            self.error = exc

    def _start(self, lake_url: str, storage_options: dict[str, Any], load_kwargs: dict[str, Any], model_obj: Any,
               device: str, threads: int, fingerprint: dict[str, Any]) -> None:
        import torch

        from ...progress import set_progress
        from ..models import load_model

        set_progress(False)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers is a dependency
            pass
        if threads > 0:
            torch.set_num_threads(threads)
        kw = dict(load_kwargs)
        model = rebuild_model(model_obj) if model_obj is not None else kw.pop("model")
        kw.pop("model", None)
        self.lm = load_model(model, tokenizer=kw.get("tokenizer"), gguf_file=kw.get("gguf_file"),
                             revision=kw.get("revision"), device=device, torch_dtype=kw.get("model_dtype"),
                             attn_implementation=kw.get("attn_implementation"), model_name=kw.get("model_name"))
        if self.lm.fingerprint != fingerprint["fingerprint"]:
            differ = sorted(k for k in ("model_class", "config_hash", "weights_hash", "tokenizer_hash", "model_dtype",
                                        "attn_implementation", "padding_side")
                            if self.lm.info.get(k) != fingerprint.get(k))
            raise ModelLoadError(
                f"the Ray worker on {self.host} loaded model {self.lm.ref} with fingerprint {self.lm.fingerprint}, "
                f"but the driver's is {fingerprint['fingerprint']} (differing: {', '.join(differ) or '?'}): the "
                "workers see other weights or another tokenizer; give every machine the same model files (or a "
                "Hub id with a pinned revision)"
            )
        self.fs = LakeFS(lake_url, storage_options=storage_options)
        self.token_text = token_text_table(self.lm.tokenizer)
        self.step = BatchStep(self.lm, self.spec)

    def ready(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"pid": self.pid, "host": self.host, "device": str(self.lm.device)}

    def run_shard(self, shard: PlannedShard, shard_id: str, attempt: int) -> dict[str, Any]:
        """Compute a planned shard and write its files; returns the manifests (the driver commits them).

        The first shard written gets ``shard_id``; parts after a time cut get new ids.
        """
        if self.error is not None:
            raise self.error
        t0 = time.monotonic()
        compute_s = 0.0
        manifests: list[dict[str, Any]] = []
        outputs = []
        info = {"device": str(self.lm.device), "executor": "ray", "unit": shard.index, "attempt": attempt}
        t_batch = time.monotonic()
        try:
            for out, end in compute_shard(shard, self.step, self.shard_seconds):
                out.wait()
                outputs.append(out)
                compute_s += time.monotonic() - t_batch
                if end:
                    part = build_shard(outputs, list(shard.layers), self.spec.dtype, self.token_text, info)
                    sid = shard_id if not manifests else new_shard_id(self.fs)
                    manifests.append(write_shard_data(self.fs, self.eid, part, shard_id=sid))
                    outputs = []
                t_batch = time.monotonic()
        except BaseException:
            for man in manifests:  # written, never to be committed
                abandon_shard(self.fs, self.eid, man.shard)
            raise
        return {"manifests": manifests, "pid": self.pid, "compute_s": compute_s,
                "write_s": time.monotonic() - t0 - compute_s}


# -- the driver ----------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class _Slot:
    """One actor of the pool, as the driver tracks it."""

    number: int
    handle: Any
    ready_ref: Any
    ready: bool = False
    dead: bool = False
    pid: int | None = None
    inflight: int = 0


def run_ray(store: LakeStore, eid: str, lm: Any, corpus: Any, groups: dict[tuple[int, ...], list[str]],
            spec: CaptureSpec, *, batch_tokens: int | None, shard_bytes: int, options: dict[str, Any],
            load_kwargs: dict[str, Any], shard_seconds: float | None) -> dict[str, Any]:
    """Compute every planned shard on a pool of Ray actors; commit them in plan order.

    ``lm`` (the driver's copy) plans and tokenizes only; each actor loads its own
    replica from ``load_kwargs`` (a ``PreTrainedModel`` object goes through the
    object store). Returns ``tokens``, ``shards``, ``bytes``, ``truncated`` plus
    ``workers``, ``retries``, ``worker_restarts``, ``startup_s`` and ``run_s``.
    """
    opts = check_ray_setup(store, options)
    stats: dict[str, Any] = {"tokens": 0, "shards": 0, "bytes": 0, "truncated": 0, "workers": 0, "retries": 0,
                             "worker_restarts": 0, "startup_s": 0.0, "run_s": 0.0}
    if not groups:
        return stats
    t_start = time.monotonic()
    ray = ensure_ray(opts.address, temp_dir=opts.temp_dir)
    resources = ray.available_resources()
    device = str(load_kwargs.get("device") or "auto")
    gpus = opts.gpus_per_worker
    if gpus is None:
        wants_cuda = device.startswith("cuda") or (device == "auto" and resources.get("GPU", 0) >= 1)
        gpus = 1.0 if wants_cuda else 0.0
    if device.startswith("cuda") and gpus == 0:
        raise SpecError(f"device={device!r} with gpus_per_worker=0: Ray workers without GPUs cannot use CUDA; "
                        "set --gpus-per-worker or use --device cpu")
    total = ray.cluster_resources()
    if gpus > 0 and total.get("GPU", 0) < gpus:
        raise SpecError(f"gpus_per_worker={gpus:g} but the Ray cluster has {total.get('GPU', 0):g} GPU(s); "
                        "use --gpus-per-worker 0 for CPU workers or connect to a cluster with GPUs (--address)")
    if total.get("CPU", 0) < opts.cpus_per_worker:
        raise SpecError(f"cpus_per_worker={opts.cpus_per_worker:g} but the Ray cluster has "
                        f"{total.get('CPU', 0):g} CPU(s)")
    worker_device = "cuda" if gpus > 0 else "cpu"
    plan = plan_shards(lm, corpus, groups, spec, batch_tokens=batch_tokens or default_batch_tokens(gpus > 0),
                       shard_bytes=shard_bytes)
    stats["truncated"] = plan.truncated
    units = plan.shards
    if opts.num_workers is not None:
        n_workers = opts.num_workers
    elif gpus > 0:
        n_workers = int(resources.get("GPU", 0) // gpus)
    else:
        n_workers = int(resources.get("CPU", 0) // max(opts.cpus_per_worker, 1e-9))
    n_workers = max(1, min(n_workers, len(units)))
    max_restarts = opts.max_worker_restarts if opts.max_worker_restarts is not None else 2 * n_workers + 2
    stats["workers"] = n_workers

    kw = dict(load_kwargs)
    model_obj = None
    model = kw.get("model")
    if isinstance(model, (str, os.PathLike)):
        if os.path.exists(os.path.expanduser(os.fspath(model))):
            kw["model"] = os.path.abspath(os.path.expanduser(os.fspath(model)))  # workers' cwd may differ
    elif model is not None:
        model_obj = ray.put(model_payload(model))  # a PreTrainedModel: every actor gets it from the object store
        kw["model"] = None
    kw.pop("device", None)
    lake_url = store.fs.url_of()
    threads = max(1, int(opts.cpus_per_worker)) if gpus == 0 else 0
    actor_cls = ray.remote(IngestWorker).options(num_cpus=opts.cpus_per_worker, num_gpus=gpus, max_restarts=0,
                                                 max_task_retries=0)
    slots: list[_Slot] = []

    def start_actor() -> _Slot:
        handle = actor_cls.remote(lake_url, store.fs.storage_options, eid, spec, kw, model_obj, worker_device,
                                  threads, dict(lm.info), shard_seconds)
        slot = _Slot(len(slots), handle, handle.ready.remote())
        slots.append(slot)
        return slot

    for _ in range(n_workers):
        start_actor()
    log.info("Ray ingest of %d shard(s) on %d worker(s) (%s CPU, %s GPU each)", len(units), n_workers,
             opts.cpus_per_worker, gpus)

    todo = collections.deque(range(len(units)))
    attempts: collections.Counter[int] = collections.Counter()
    tasks: dict[Any, tuple[_Slot, int, str]] = {}
    done: dict[int, list[dict[str, Any]]] = {}
    next_commit = 0
    t_ready: float | None = None
    death = _death_errors(ray)
    try:
        with track(f"ingest {lm.ref} (ray, {n_workers} workers)", total=plan.n_docs, unit="docs") as tr:
            while next_commit < len(units):
                for slot in slots:
                    while slot.ready and not slot.dead and slot.inflight < opts.inflight_per_worker and todo:
                        i = todo.popleft()
                        sid = new_shard_id(store.fs)
                        ref = slot.handle.run_shard.remote(units[i], sid, attempts[i])
                        tasks[ref] = (slot, i, sid)
                        slot.inflight += 1
                waiting = {s.ready_ref: s for s in slots if not s.ready and not s.dead}
                refs = list(tasks) + list(waiting)
                if not refs:
                    raise LayerlakeError("Ray ingest has work left but no live worker; re-run to resume")
                timeout = None if any(s.ready and not s.dead for s in slots) else opts.ready_timeout_s
                ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
                if not ready:
                    raise LayerlakeError(
                        f"no Ray worker became ready within {opts.ready_timeout_s:.0f} s: the cluster cannot place "
                        f"a worker with {opts.cpus_per_worker:g} CPU and {gpus:g} GPU, or loading the model hangs; "
                        "check `ray status`, --gpus-per-worker and --num-workers")
                ref = ready[0]
                if ref in waiting:
                    slot = waiting[ref]
                    try:
                        info = ray.get(ref)
                    except death as exc:
                        _replace(slot, exc, stats, max_restarts, start_actor, ray)
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        raise _cause(exc) from None
                    slot.ready, slot.pid = True, info["pid"]
                    if t_ready is None:
                        t_ready = time.monotonic()
                        stats["startup_s"] = t_ready - t_start
                    log.info("Ray worker %d ready: pid %s on %s (%s)", slot.number, info["pid"], info["host"],
                             info["device"])
                    continue
                slot, i, sid = tasks.pop(ref)
                slot.inflight -= 1
                try:
                    result = ray.get(ref)
                except death as exc:
                    attempts[i] += 1
                    stats["retries"] += 1
                    if attempts[i] > opts.max_unit_retries:
                        raise LayerlakeError(
                            f"shard {i} of the plan ({units[i].n_docs} documents) was lost with its worker {attempts[i]} times "
                            f"(last: {type(exc).__name__}); committed shards are kept: re-run to resume, with a "
                            "smaller --batch-tokens or more memory per worker") from None
                    log.warning("planned shard %d lost with Ray worker %d (pid %s: %s); computing it again", i, slot.number,
                                slot.pid, type(exc).__name__)
                    todo.appendleft(i)
                    if not slot.dead:
                        _replace(slot, exc, stats, max_restarts, start_actor, ray)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    raise _cause(exc) from None
                done[i] = result["manifests"]
                while next_commit in done:
                    mans = done[next_commit]
                    while mans:
                        commit_shard(store.fs, eid, mans[0], check_files=True)
                        man = mans.pop(0)
                        stats["shards"] += 1
                        stats["bytes"] += man.bytes
                        tr.add_bytes(man.bytes)
                    del done[next_commit]
                    unit = units[next_commit]
                    stats["tokens"] += unit.n_tokens
                    tr.advance(unit.n_docs, tokens=unit.n_tokens)
                    next_commit += 1
    finally:
        for slot in slots:
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception as exc:  # already dead
                log.debug("ray.kill of worker %d: %s", slot.number, exc)
        for mans in done.values():  # written but not committed (the job failed): not visible anyway, tidy up
            for man in mans:
                abandon_shard(store.fs, eid, man.shard)
    stats["run_s"] = time.monotonic() - (t_ready or t_start)
    return stats


def _death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray errors that mean the worker (not the work) failed: its planned shard is computed again."""
    e = ray.exceptions
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OutOfMemoryError",
             "LocalRayletDiedError")
    return tuple(getattr(e, n) for n in names if hasattr(e, n))


def _replace(slot: _Slot, exc: BaseException, stats: dict[str, Any], max_restarts: int, start_actor: Any,
             ray: Any) -> None:
    slot.dead = True
    try:
        ray.kill(slot.handle, no_restart=True)
    except Exception:  # already gone
        pass
    if stats["worker_restarts"] >= max_restarts:
        raise LayerlakeError(f"Ray workers died {stats['worker_restarts'] + 1} times (last: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); committed shards are kept: fix the "
                             "cluster and re-run to resume") from None
    stats["worker_restarts"] += 1
    new = start_actor()
    log.warning("Ray worker %d (pid %s) died (%s); started worker %d in its place", slot.number, slot.pid,
                type(exc).__name__, new.number)


def _cause(exc: Any) -> BaseException:
    """The exception a worker raised, as it was raised (LayerlakeError, OSError, ...)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, (LayerlakeError, OSError)):
        return cause
    if cause is not None:
        return LayerlakeError(f"a Ray worker failed: {type(cause).__name__}: {cause}")
    return LayerlakeError(f"a Ray worker failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def model_payload(model: Any) -> dict[str, Any]:
    """What the object store holds for a model object: its class, config and weights (on the CPU).

    Not the module itself: transformers installs output-capturing forward hooks
    on a model's first forward pass, closures over a process-local context
    variable, and a pickled hooked model returns no hidden states.
    """
    return {"cls": type(model), "config": model.config,
            "state": {k: v.detach().to("cpu") for k, v in model.state_dict().items()}}


def rebuild_model(payload: dict[str, Any]) -> Any:
    """The model of :func:`model_payload`, built without random initialisation (the worker then
    checks its fingerprint against the driver's)."""
    import contextlib
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            no_init_weights = contextlib.nullcontext
    with no_init_weights():
        model = payload["cls"](payload["config"])
    model.load_state_dict(payload["state"], assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()
