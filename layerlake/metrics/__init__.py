"""Pure representation metrics: arrays in, numbers out, plus the registry.

Never imports ``layerlake.store``, ``layerlake.ingest`` or ``layerlake.queries``.
Importing this package registers every metric.
"""

from .registry import REGISTRY, MetricDef, get_metric, list_metrics, metric, register

from . import augmentation_invariance  # noqa: F401,E402  (paper 1: InfoNCE, LiDAR, DiME)
from . import curvature  # noqa: F401,E402  (paper 1)
from . import effective_rank  # noqa: F401,E402  (paper 1 / standard)
from . import entropy  # noqa: F401,E402  (paper 1: prompt and dataset entropy)
from . import intrinsic_dim  # noqa: F401,E402  (TwoNN, MLE, GRIDE)

__all__ = ["REGISTRY", "MetricDef", "get_metric", "list_metrics", "metric", "register"]
