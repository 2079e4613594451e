"""Pure representation metrics: arrays in, numbers out, plus the registry.

Never imports ``layerlake.store``, ``layerlake.ingest`` or ``layerlake.queries``.
Importing this package registers every metric.
"""

from .registry import REGISTRY, MetricDef, get_metric, list_metrics, metric, register

__all__ = ["REGISTRY", "MetricDef", "get_metric", "list_metrics", "metric", "register"]
