"""Pure representation metrics: arrays in, numbers out, plus the registry.

Never imports ``layerlake.store``, ``layerlake.ingest`` or ``layerlake.queries``.
Importing this package registers every metric.
"""

from .registry import REGISTRY, MetricDef, get_metric, list_metrics, metric, register

from . import correlator  # noqa: F401  (paper 3, provisional)
from . import dispersion  # noqa: F401  (paper 2)
from . import everyday  # noqa: F401
from . import jacobian  # noqa: F401  (paper 5, Jacobian sketches)
from . import matrix_entropy  # noqa: F401  (paper 4)
from . import trajectory  # noqa: F401  (paper 5, trajectories)

__all__ = ["REGISTRY", "MetricDef", "get_metric", "list_metrics", "metric", "register"]

from . import hints as hints  # noqa: E402  (last: engine hints for metrics registered above)
