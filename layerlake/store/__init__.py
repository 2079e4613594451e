"""The on-disk lake: layout, manifests, atomic commits, Zarr arrays, Parquet tables.

Knows nothing of models: never imports torch or transformers.
"""

from .catalog import FORMAT_VERSION, DocLocation, LakeStore, check_dataset_name
from .fs import LakeFS, canonical_json
from .hashing import doc_hash, extraction_id, json_hash
from .shards import DOCS_SCHEMA, TOKENS_SCHEMA, ShardData, read_parquet, write_shard
from .specs import CaptureSpec, JacobianSketch, parse_layers

__all__ = [
    "FORMAT_VERSION", "DocLocation", "LakeStore", "check_dataset_name", "LakeFS", "canonical_json",
    "doc_hash", "extraction_id", "json_hash", "DOCS_SCHEMA", "TOKENS_SCHEMA", "ShardData",
    "read_parquet", "write_shard", "CaptureSpec", "JacobianSketch", "parse_layers",
]
