"""Shared fixtures: tiny models (saved once per session), real model paths, lakes in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LAYERLAKE_PROGRESS", "0")

from tests.models import build_tiny, minilm_dir, smollm_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny-models")
    return {k: build_tiny(k, base / k) for k in ("gpt2", "llama", "bert", "neox")}


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["gpt2"]


@pytest.fixture(scope="session")
def tiny_llama(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["llama"]


@pytest.fixture(scope="session")
def tiny_bert(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["bert"]


@pytest.fixture(scope="session")
def minilm() -> str:
    return minilm_dir()


@pytest.fixture(scope="session")
def smollm() -> str:
    return smollm_dir()


@pytest.fixture
def lake(tmp_path: Path):
    import layerlake as ll
    return ll.Lake(tmp_path / "lake")


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    from layerlake.cli.quickstart import quickstart_corpus
    return [d["text"] for d in quickstart_corpus(40)]
