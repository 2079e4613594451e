"""Content-derived identities: documents, specs, extractions.

Identities come from content only (text, canonical JSON of specs, weight and
tokenizer hashes), never from paths, times or object ids.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .fs import canonical_json

DOC_HASH_LEN = 32


def doc_hash(text: str) -> str:
    """Hash of a document's exact text (UTF-8)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=DOC_HASH_LEN // 2).hexdigest()


def json_hash(obj: Any, length: int = 16) -> str:
    """Hash of the canonical JSON form of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def extraction_id(model_fingerprint: str, capture_identity: dict[str, Any]) -> str:
    """Identity of an extraction: model fingerprint x capture settings."""
    return json_hash({"model": model_fingerprint, "capture": capture_identity}, 16)
