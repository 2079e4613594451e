"""Executors of an ingest plan: ``local`` (this process) and ``ray`` (a pool of model replicas).

Both cut the plan into the same shards (:func:`plan_shards`) and compute each
batch with the same step (:class:`BatchStep`); they differ only in where the
compute runs and who commits. Ray itself is imported only when a Ray ingest
starts: it is optional.
"""

from .core import ITEMSIZE, BatchStep, PlannedShard, ShardPlan, compute_shard, cut_shards, make_batches, plan_shards
from .local import run_local
from .ray import RayOptions, check_ray_setup, default_temp_dir, run_ray

__all__ = ["ITEMSIZE", "BatchStep", "PlannedShard", "ShardPlan", "compute_shard", "cut_shards", "make_batches",
           "plan_shards", "run_local", "run_ray", "check_ray_setup", "RayOptions", "default_temp_dir"]
