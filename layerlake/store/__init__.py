"""The on-disk lake: layout, manifests, atomic commits, Zarr arrays, Parquet tables.

Knows nothing of models: never imports torch or transformers.
"""

from .catalog import FORMAT_VERSION, LakeStore, check_dataset_name
from .export import ExportReport, export_dataset
from .fs import LakeFS, canonical_json
from .gc import GCReport, collect_garbage, remove_dataset
from .hashing import doc_hash, extraction_id, json_hash
from .importer import ImportReport, import_lake, verify_export
from .manifests import ExtractionManifest, ShardFile, ShardManifest, SketchEntry
from .placement import Placement, serving_rows, serving_shard
from .shards import DOCS_SCHEMA, TOKENS_SCHEMA, ShardData, read_parquet, write_shard
from .specs import CaptureSpec, JacobianSketch, parse_layers

__all__ = [
    "FORMAT_VERSION", "LakeStore", "check_dataset_name", "LakeFS", "canonical_json",
    "doc_hash", "extraction_id", "json_hash", "DOCS_SCHEMA", "TOKENS_SCHEMA", "ShardData",
    "read_parquet", "write_shard", "CaptureSpec", "JacobianSketch", "parse_layers",
    "ExportReport", "export_dataset", "GCReport", "collect_garbage", "remove_dataset", "ImportReport", "import_lake",
    "verify_export", "ExtractionManifest", "ShardFile", "ShardManifest", "SketchEntry", "Placement", "serving_rows",
    "serving_shard",
]
