"""Fixtures for store tests: a 6-block tiny GPT-2, a local S3 server."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.models import build_tiny

_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def gpt2_6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 with 6 blocks (hidden-state layers 0..6)."""
    return build_tiny("gpt2", tmp_path_factory.mktemp("gpt2-6") / "gpt2-6", n_layers=6)


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from .s3server import CountingS3
    server = CountingS3()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server):
    """(bucket URL prefix, storage_options) of a fresh bucket on the local S3 server."""
    import fsspec
    name = f"lake-test-{next(_bucket_ids)}"
    s3_server.make_bucket(name)
    fsspec.filesystem("s3", **s3_server.options).invalidate_cache()
    return f"s3://{name}", dict(s3_server.options)
