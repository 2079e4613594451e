"""Crash trials for tests/reliability/test_crash.py, run as ``python crash_driver.py CONFIG_JSON``.

This process imports torch, transformers and layerlake once (seconds), then for
each trial forks a child that runs a whole ``Lake.ingest`` (model load
included) and SIGKILLs it after a random delay; another forked child resumes
the ingest (sometimes killed too, then resumed again). The parent never runs a
torch op, so forking it is safe. One JSON line per trial on stdout; the test
compares each trial's lake with an uninterrupted reference run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import traceback


def main() -> None:
    cfg = json.loads(sys.argv[1])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["LAYERLAKE_PROGRESS"] = "0"
    import torch  # noqa: F401  (imported once here, before the forks)
    import transformers
    # transformers imports its modeling code lazily, on first use: do that here, once, not in every child
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel  # noqa: F401
    from transformers import modeling_utils  # noqa: F401

    import layerlake as ll
    import layerlake.ingest.capture  # noqa: F401
    import layerlake.ingest.pipeline  # noqa: F401
    import layerlake.queries.frames  # noqa: F401

    config = AutoConfig.from_pretrained(cfg["model"])
    for arch in config.architectures or []:
        getattr(transformers, arch)  # the model's modeling module

    def child(lake_dir: str) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 0
        try:
            import torch as t
            t.set_num_threads(1)
            ll.Lake(lake_dir).ingest(cfg["model"], cfg["corpus"], dataset="d", shard_bytes=cfg["shard_bytes"],
                                     batch_tokens=cfg["batch_tokens"], progress=False)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)

    def run_for(lake_dir: str, kill: tuple[int, float] | None,
                timeline: list[float] | None = None) -> tuple[str, float]:
        """Run an ingest child; with ``kill=(k, extra)``, SIGKILL it ``extra`` s after the k-th commit
        marker appears (k = 0: after the start) unless it ends first. Returns (outcome, seconds).

        Kill points are set by commits, not wall time, so they stay spread over the job on a loaded
        machine. ``timeline`` collects the times at which commit markers appeared.
        """
        t0 = time.monotonic()
        pid = child(lake_dir)
        n = 0
        armed_at = t0 if kill is not None and kill[0] == 0 else None
        while True:
            c = commits(lake_dir)
            if c > n:
                n = c
                if timeline is not None:
                    timeline.append(time.monotonic() - t0)
                if kill is not None and armed_at is None and n >= kill[0]:
                    armed_at = time.monotonic()
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                return ("finished" if code == 0 else f"failed({code})"), time.monotonic() - t0
            if armed_at is not None and time.monotonic() - armed_at >= kill[1]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "killed", time.monotonic() - t0
            time.sleep(0.002)

    def commits(lake_dir: str) -> int:
        base = os.path.join(lake_dir, "extractions")
        if not os.path.isdir(base):
            return 0
        return sum(len([n for n in os.listdir(os.path.join(base, e, "commits")) if n.endswith(".json")])
                   for e in os.listdir(base) if os.path.isdir(os.path.join(base, e, "commits")))

    timeline: list[float] = []
    outcome, t_ref = run_for(cfg["reference"], None, timeline)
    print(json.dumps({"reference": cfg["reference"], "outcome": outcome, "seconds": t_ref,
                      "commit_times": [round(x, 3) for x in timeline]}), flush=True)
    if outcome != "finished":
        sys.exit(1)
    # the k-th commit (k uniform over 0..all), then a random part of a typical gap between commits: kills
    # land in model loading and planning (k = 0), inside shard writes, between a shard's data and its
    # marker, and after the last shard, while the dataset is recorded
    t_first = timeline[0] if timeline else t_ref
    gap = (timeline[-1] - timeline[0]) / max(len(timeline) - 1, 1) if len(timeline) > 1 else 0.1
    rng = random.Random(cfg["seed"])

    def kill_point(done: int) -> tuple[int, float]:
        """Kill after commit k (k from ``done``, the commits already there, to all of them)."""
        k = rng.randint(done, len(timeline))
        if k == done:  # before this run's first commit: in its start-up (model loading, planning)
            return k, rng.uniform(0.0, t_first + (gap if done else 0.0))
        return k, rng.uniform(0.0, 1.2 * gap)

    for k in range(cfg["trials"]):
        lake_dir = os.path.join(cfg["workdir"], f"trial-{k:03d}")
        point = kill_point(0)
        first, _ = run_for(lake_dir, point)
        kills = [commits(lake_dir)] if first == "killed" else []
        if first == "killed" and rng.random() < 0.3:  # a second crash, during the resume
            second, _ = run_for(lake_dir, kill_point(commits(lake_dir)))
            if second == "killed":
                kills.append(commits(lake_dir))
        final, _ = run_for(lake_dir, None)
        print(json.dumps({"lake": lake_dir, "kill_point": point, "first": first, "kills": len(kills),
                          "commits_at_kill": kills, "resume": final, "commits": commits(lake_dir)}), flush=True)


if __name__ == "__main__":
    main()
