"""Lakes for the query tests, built once per module from tiny models (seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models import build_tiny


@pytest.fixture(scope="session")
def tiny_llama32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal Llama of width 32 (so a lake can mix widths)."""
    return build_tiny("llama", tmp_path_factory.mktemp("tiny-llama32") / "m", d=32, n_layers=2)


@pytest.fixture(scope="session")
def qdocs() -> list[dict]:
    from layerlake.cli.quickstart import quickstart_corpus
    return quickstart_corpus(24)


@pytest.fixture(scope="session")
def plake(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2: Path, tiny_llama32: Path, qdocs: list[dict]):
    """The parity lake.

    - dataset ``a`` = docs 0..15, ``b`` = docs 8..23 (8 shared documents);
    - tiny GPT-2 (d=64) stored as float32: layers 0,1 first, then the rest
      (a second shard holds only layers 2,3 for the same documents); ``b``
      reuses the shared documents and computes the others;
    - a tiny Llama (d=32) stored as float16 over ``a`` (so widths are mixed).
    """
    import layerlake as ll

    lake = ll.Lake(tmp_path_factory.mktemp("plake") / "lake")
    a, b = qdocs[:16], qdocs[8:24]
    kw = dict(max_length=24, progress=False)
    lake.ingest(str(tiny_gpt2), a, dataset="a", layers="0,1", dtype="float32", model_name="tiny-gpt2", **kw)
    lake.ingest(str(tiny_gpt2), a, dataset="a", layers="all", dtype="float32", model_name="tiny-gpt2", **kw)
    lake.ingest(str(tiny_gpt2), b, dataset="b", layers="all", dtype="float32", model_name="tiny-gpt2", **kw)
    lake.ingest(str(tiny_llama32), a, dataset="a", layers="all", dtype="float16", model_name="tiny-llama", **kw)
    return lake
