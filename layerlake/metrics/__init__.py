"""Pure representation metrics: arrays in, numbers out, plus the registry.

Never imports ``layerlake.store``, ``layerlake.ingest`` or ``layerlake.queries``.
Importing this package registers every metric.
"""

from . import augmentation_invariance as augmentation_invariance  # paper 1: InfoNCE, LiDAR, DiME
from . import curvature as curvature  # paper 1
from . import effective_rank as effective_rank  # paper 1 / RankMe / participation ratio
from . import entropy as entropy  # paper 1: prompt and dataset entropy
from . import intrinsic_dim as intrinsic_dim  # TwoNN, MLE, GRIDE
from .registry import REGISTRY, MetricDef, get_metric, list_metrics, metric, register

from . import correlator  # noqa: F401  (paper 3, provisional)
from . import dispersion  # noqa: F401  (paper 2)
from . import everyday  # noqa: F401
from . import jacobian  # noqa: F401  (paper 5, Jacobian sketches)
from . import matrix_entropy  # noqa: F401  (paper 4)
from . import trajectory  # noqa: F401  (paper 5, trajectories)

__all__ = ["REGISTRY", "MetricDef", "get_metric", "list_metrics", "metric", "register"]
