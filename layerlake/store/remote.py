"""Options for reading a remote lake with engines that do not speak fsspec.

The lake itself goes through fsspec (Zarr via ``FsspecStore``, Parquet via
pyarrow with the fsspec filesystem). Polars reads cloud URLs with its own
object-store client, whose option names differ from s3fs's; this module maps
them. It imports no query engine.
"""

from __future__ import annotations

import logging

from .fs import LakeFS

log = logging.getLogger(__name__)

#: protocols Polars reads natively (with :func:`polars_storage_options` for credentials)
POLARS_NATIVE = frozenset({"file", "local", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "http", "https"})


def polars_reads_natively(lake: LakeFS) -> bool:
    return lake.protocol in POLARS_NATIVE


def polars_storage_options(lake: LakeFS) -> dict[str, str] | None:
    """s3fs-style ``storage_options`` -> Polars/object_store ones (``None`` = defaults from the environment)."""
    if lake.url_filesystem is None:  # local paths
        return None
    opts = dict(lake.storage_options)
    if not opts:
        return None
    if lake.protocol not in ("s3", "s3a"):
        return {k: str(v) for k, v in opts.items() if isinstance(v, (str, int, float, bool))} or None
    client = dict(opts.pop("client_kwargs", None) or {})
    out: dict[str, str] = {}
    for src, dst in (("key", "aws_access_key_id"), ("aws_access_key_id", "aws_access_key_id"),
                     ("secret", "aws_secret_access_key"), ("aws_secret_access_key", "aws_secret_access_key"),
                     ("token", "aws_session_token"), ("aws_session_token", "aws_session_token")):
        if opts.get(src):
            out[dst] = str(opts[src])
    endpoint = opts.get("endpoint_url") or client.get("endpoint_url")
    if endpoint:
        out["aws_endpoint_url"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            out["aws_allow_http"] = "true"
    region = opts.get("region_name") or client.get("region_name")
    out["aws_region"] = str(region or "us-east-1")
    if opts.get("anon"):
        out["aws_skip_signature"] = "true"
    ignored = set(opts) - {"key", "secret", "token", "aws_access_key_id", "aws_secret_access_key",
                           "aws_session_token", "endpoint_url", "region_name", "anon"}
    if ignored:
        log.debug("storage options not passed to polars: %s", sorted(ignored))
    return out
