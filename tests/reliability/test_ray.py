"""The Ray executor on a local 2-CPU cluster: the same lake as a local run, also after a worker dies.

Starting the cluster takes 10-20 s and each worker imports torch and loads the
model (seconds): these tests share one session-scoped cluster.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import layerlake as ll
from layerlake.cli import main
from tests.reliability.conftest import REPO, is_orphan, lake_differences

OPTS = {"shard_bytes": 15_000, "batch_tokens": 300}


class PidLog(logging.Handler):
    """Collects the pids of Ray workers from the executor's "worker ready" log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.pids: list[int] = []
        self.retries: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Ray worker") and "ready" in record.getMessage():
            self.pids.append(int(record.args[1]))
        if "computing it again" in record.getMessage():
            self.retries.append(record.getMessage())


@pytest.fixture
def pid_log():
    logger = logging.getLogger("layerlake.ingest.executors")
    handler, old = PidLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def writer_pids(lake: ll.Lake) -> set[int]:
    eid = lake.store.extraction_ids()[0]
    return {m.writer["pid"] for m in lake.store.shard_manifests(eid) if m.writer.get("executor") == "ray"}


def test_cli_ray_ingest_equals_local(tmp_path, ray_cluster, tiny_gpt2, small_corpus_file, capsys, fault_tally):
    ref = ll.Lake(tmp_path / "local")
    ref.ingest(str(tiny_gpt2), small_corpus_file, dataset="d", **OPTS)
    code = main(["--no-progress", "ingest", str(tiny_gpt2), str(small_corpus_file), "--lake", str(tmp_path / "ray"),
                 "--dataset", "d", "--executor", "ray", "--num-workers", "2", "--shard-mb", "0.015",
                 "--batch-tokens", "300"])
    out = capsys.readouterr()
    assert code == 0, out.err
    lake = ll.Lake(tmp_path / "ray", mode="r")
    assert lake_differences(lake, ref) == []
    assert lake.verify() == []
    assert len(writer_pids(lake)) == 2  # both workers wrote shards
    assert len(lake.store.commit_ids(lake.extraction_id("d"))) == len(ref.store.commit_ids(ref.extraction_id("d")))
    # an identical request computes nothing (and starts no worker)
    res = ll.Lake(tmp_path / "ray").ingest(str(tiny_gpt2), small_corpus_file, dataset="d", executor="ray", **OPTS)
    assert res.nothing_computed


def test_killed_worker_unit_is_computed_again(tmp_path, ray_cluster, tiny_gpt2, corpus, pid_log, fault_tally):
    """SIGKILL one worker after the first commit: its units are computed again by a fresh worker.

    The model is passed as a PreTrainedModel object (it reaches the workers, the replacement
    included, through Ray's object store).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    texts = [f"{i}: {t}" for i in range(3) for t in corpus]  # 120 documents, ~45 shards
    ref = ll.Lake(tmp_path / "local")
    ref.ingest(str(tiny_gpt2), texts, dataset="d", **OPTS)
    root = tmp_path / "ray"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 600
        commits = root / "extractions"
        while time.monotonic() < deadline and not killed:
            n = sum(1 for _ in commits.glob("*/commits/*.json")) if commits.exists() else 0
            if n >= 1 and len(pid_log.pids) >= 2:
                os.kill(pid_log.pids[0], signal.SIGKILL)
                killed.append(pid_log.pids[0])
                return
            time.sleep(0.01)

    t = threading.Thread(target=killer)
    t.start()
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    model(input_ids=torch.tensor([[5, 6, 7]]), output_hidden_states=True)  # tried first: transformers hooks it
    res = ll.Lake(root).ingest(model, texts, tokenizer=AutoTokenizer.from_pretrained(tiny_gpt2), dataset="d",
                               model_name=str(tiny_gpt2), executor="ray", executor_options={"num_workers": 2},
                               **OPTS)
    t.join()
    lake = ll.Lake(root, mode="r")
    diffs = lake_differences(lake, ref)
    fault_tally.record("crash: Ray worker SIGKILL", detected=int(res.executor_stats["retries"] >= 1),
                       lost=int(bool(diffs)))
    assert killed, "the job ended before a worker could be killed"
    assert res.executor_stats["retries"] >= 1 and pid_log.retries
    assert res.executor_stats["worker_restarts"] >= 1
    assert diffs == []
    assert all(is_orphan(p) for p in lake.verify())


RAY_DRIVER = """
import sys
import ray
import layerlake as ll
texts = [l for l in open(sys.argv[3]).read().splitlines() if l]
ray.init(num_cpus=2, include_dashboard=False, _temp_dir=sys.argv[4], log_to_driver=False,
         runtime_env={"env_vars": {"PYTHONPATH": sys.argv[5]}})
ll.Lake(sys.argv[1]).ingest(sys.argv[2], texts, dataset="d", executor="ray", shard_bytes=15_000,
                            batch_tokens=300, progress=False)
"""


@pytest.mark.slow
def test_sigkilled_ray_driver_resumes_locally(tmp_path, tiny_gpt2, corpus, fault_tally):
    """Commits are in plan order, so a Ray job killed anywhere resumes like a local one (here: locally)."""
    import tempfile
    texts = [f"{i}: {t}" for i in range(2) for t in corpus]
    corpus_file = tmp_path / "texts.txt"
    corpus_file.write_text("\n".join(t.replace("\n", " ") for t in texts))
    texts = [t.replace("\n", " ") for t in texts]
    ref = ll.Lake(tmp_path / "local")
    ref.ingest(str(tiny_gpt2), texts, dataset="d", **OPTS)
    root = tmp_path / "ray"
    temp_dir = tempfile.mkdtemp(prefix="llk-", dir="/tmp")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", RAY_DRIVER, str(root), str(tiny_gpt2), str(corpus_file),
                             temp_dir, str(REPO)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(root.glob("extractions/*/commits/*.json"))) >= 3:
                break
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    finally:
        proc.wait()
    committed = len(list(root.glob("extractions/*/commits/*.json")))
    ll.Lake(root).ingest(str(tiny_gpt2), texts, dataset="d", **OPTS)
    diffs = lake_differences(ll.Lake(root, mode="r"), ref)
    fault_tally.record("crash: SIGKILL Ray driver", detected=1, lost=int(bool(diffs)),
                       note=f"killed after {committed} commits")
    assert 3 <= committed
    assert diffs == []
