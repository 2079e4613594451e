"""The on-disk lake: layout, manifests, atomic commits, Zarr arrays, Parquet tables.

Knows nothing of models: never imports torch or transformers.
"""

from . import layout
from .catalog import FORMAT_VERSION, LakeStore
from .export import ExportReport, export_dataset
from .fs import FileStat, LakeFS, canonical_json, seal_json, unseal_json
from .gc import GCReport, collect_garbage, hold_lease, release_lease, remove_dataset
from .hashing import doc_hash, extraction_id, json_hash
from .importer import ImportReport, import_lake, verify_export
from .layout import check_dataset_name
from .manifests import ExtractionManifest, ShardFile, ShardManifest, SketchEntry
from .placement import Placement, serving_rows, serving_shard
from .reader import ArrayRef, ChunkReader, ReadStats
from .sealed import content_crc32c, read_sealed, sealed_parquet
from .remote import polars_reads_natively, polars_storage_options
from .shards import (
    DOCS_SCHEMA, TOKENS_SCHEMA, ShardBuilder, ShardData, abandon_shard, commit_shard, new_shard_id, read_parquet,
    remove_dead_writers_shards, write_shard, write_shard_data,
)
from .sketch import check_test_matrix, sketch_attrs, sketch_key, sketch_matrices
from .specs import CaptureSpec, JacobianSketch, LayerSelection, parse_layers
from .verify import verify_lake

__all__ = [
    "FORMAT_VERSION", "LakeStore", "check_dataset_name", "layout", "FileStat", "LakeFS",
    "canonical_json", "seal_json", "unseal_json",
    "doc_hash", "extraction_id", "json_hash", "DOCS_SCHEMA", "TOKENS_SCHEMA", "ShardData",
    "read_parquet", "write_shard", "CaptureSpec", "JacobianSketch", "LayerSelection", "parse_layers",
    "ExportReport", "export_dataset", "GCReport", "collect_garbage", "remove_dataset", "hold_lease", "release_lease",
    "ImportReport", "import_lake",
    "verify_export", "verify_lake", "ShardBuilder", "abandon_shard", "commit_shard", "new_shard_id",
    "remove_dead_writers_shards", "write_shard_data", "polars_reads_natively", "polars_storage_options",
    "check_test_matrix", "sketch_attrs", "sketch_key", "sketch_matrices", "ArrayRef", "ChunkReader", "ReadStats",
    "content_crc32c", "read_sealed", "sealed_parquet",
    "ExtractionManifest", "ShardFile", "ShardManifest", "SketchEntry", "Placement", "serving_rows", "serving_shard",
]
