"""The on-disk lake: layout, manifests, atomic commits, Zarr arrays, Parquet tables.

Knows nothing of models: never imports torch or transformers.
"""

from . import layout
from .catalog import FORMAT_VERSION, DocLocation, LakeStore
from .export import ExportReport, export_dataset
from .fs import FileStat, LakeFS, canonical_json
from .gc import GCReport, collect_garbage, remove_dataset
from .hashing import doc_hash, extraction_id, json_hash
from .importer import ImportReport, import_lake, verify_export
from .layout import check_dataset_name
from .reader import ArrayRef, ChunkReader, ReadStats
from .shards import DOCS_SCHEMA, TOKENS_SCHEMA, ShardData, read_parquet, write_shard
from .specs import CaptureSpec, JacobianSketch, LayerSelection, parse_layers
from .verify import verify_lake

__all__ = [
    "FORMAT_VERSION", "DocLocation", "LakeStore", "check_dataset_name", "layout", "FileStat", "LakeFS",
    "canonical_json",
    "doc_hash", "extraction_id", "json_hash", "DOCS_SCHEMA", "TOKENS_SCHEMA", "ShardData",
    "read_parquet", "write_shard", "CaptureSpec", "JacobianSketch", "LayerSelection", "parse_layers",
    "ExportReport", "export_dataset", "GCReport", "collect_garbage", "remove_dataset", "ImportReport", "import_lake",
    "verify_export", "verify_lake", "ArrayRef", "ChunkReader", "ReadStats",
]
