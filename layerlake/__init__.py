"""layerlake: an offline activation data lake for transformer models.

Ingest once (hidden states, per-token losses, Jacobian sketches into Zarr +
Parquet), then query with DuckDB SQL, Polars and representation metrics with no
model loaded.
"""

from .errors import (FormatVersionError, IntegrityError, LakeIOError, LayerlakeError, ModelLoadError, NotFoundError,
                     OverflowToInfError, ReadOnlyError, SpecError)
from .lake import Lake, import_lake
from .progress import set_progress
from .store import CaptureSpec, JacobianSketch

__version__ = "0.1.0"

__all__ = ["Lake", "import_lake", "CaptureSpec", "JacobianSketch", "set_progress", "LayerlakeError", "SpecError", "NotFoundError",
           "FormatVersionError", "IntegrityError", "LakeIOError", "OverflowToInfError", "ReadOnlyError",
           "ModelLoadError",
           "__version__"]
