"""Typed manifests: ``extraction.json``, shard commit markers (``commits/<sid>.json``) and their entries.

Each type is a frozen, keyword-only dataclass. ``from_json(obj, source=...)``
validates what was read (required keys, types, non-negative counts, names) and
raises :class:`IntegrityError` naming the file and the problem in one line;
``to_json()`` gives back exactly the JSON that is on disk, so the format does
not change and every existing lake still opens.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

from ..errors import IntegrityError
from .fs import CHECKSUM_KEY
from .layout import SHARD_ID_RE

#: extraction ids, Jacobian sketch keys: a letter, digit or underscore, then letters, digits, '.', '_', '-'
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class _Reader:
    """Typed access to one JSON object, each problem raised as one line naming the file."""

    def __init__(self, obj: Any, source: str, what: str) -> None:
        if not isinstance(obj, dict):
            raise IntegrityError(f"{source}: {what} must be a JSON object, got {type(obj).__name__}; "
                                 "run `layerlake verify`")
        self.obj, self.source, self.what = obj, source, what

    def fail(self, problem: str) -> IntegrityError:
        return IntegrityError(f"{self.source}: {self.what}: {problem}; run `layerlake verify`")

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.obj:
            if required:
                raise self.fail(f"missing key {key!r}")
            return None
        return self.obj[key]

    def integer(self, key: str, *, required: bool = True, nullable: bool = False) -> int | None:
        v = self._get(key, required)
        if v is None and (nullable or key not in self.obj):
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.fail(f"{key!r} must be a non-negative integer, got {v!r}")
        return v

    def string(self, key: str, *, required: bool = True, pattern: re.Pattern[str] | None = None) -> str | None:
        v = self._get(key, required)
        if v is None and key not in self.obj:
            return None
        if not isinstance(v, str) or (pattern is not None and not pattern.match(v)):
            raise self.fail(f"{key!r} must be a string{' matching ' + pattern.pattern if pattern else ''}, got {v!r}")
        return v

    def boolean(self, key: str) -> bool | None:
        return self._typed(key, False, bool, "true or false", repr)

    def mapping(self, key: str, *, required: bool = True) -> dict[str, Any] | None:
        return self._typed(key, required, dict, "a JSON object", lambda v: type(v).__name__)

    def _typed(self, key: str, required: bool, kind: type, expected: str, shown: Callable[[Any], str]) -> Any:
        v = self._get(key, required)
        if v is None and key not in self.obj:
            return None
        if not isinstance(v, kind):
            raise self.fail(f"{key!r} must be {expected}, got {shown(v)}")
        return v

    def ints(self, key: str) -> tuple[int, ...]:
        v = self._get(key, True)
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
            raise self.fail(f"{key!r} must be a list of non-negative integers, got {v!r}")
        return tuple(v)


def _present(pairs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pairs.items() if v is not None}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardFile:
    """One file a commit marker lists: its size and (Parquet files, Zarr metadata) its crc32c."""

    size: int
    crc32c: int | None = None

    @classmethod
    def from_json(cls, obj: Any, *, source: str, name: str) -> ShardFile:
        r = _Reader(obj, source, f"file entry {name!r}")
        return cls(size=r.integer("size"), crc32c=r.integer("crc32c", required=False))

    def to_json(self) -> dict[str, Any]:
        return _present({"size": self.size, "crc32c": self.crc32c})


@dataclasses.dataclass(frozen=True, kw_only=True)
class SketchEntry:
    """The Jacobian sketches of one key in one shard: the blocks sketched and the sketch attributes."""

    key: str
    layers: tuple[int, ...]
    attrs: Mapping[str, Any]

    @classmethod
    def from_json(cls, obj: Any, *, source: str, key: str) -> SketchEntry:
        if not isinstance(key, str) or not NAME_RE.match(key):
            raise IntegrityError(f"{source}: Jacobian sketch key {key!r} does not match {NAME_RE.pattern}; "
                                 "run `layerlake verify`")
        r = _Reader(obj, source, f"Jacobian sketch {key}")
        return cls(key=key, layers=r.ints("layers"), attrs=r.mapping("attrs"))

    def to_json(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "attrs": dict(self.attrs)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardManifest:
    """A shard's commit marker: what the shard holds (layers, rows, sketches) and its files' sizes and crc32c.

    ``d_model`` is None for a shard without hidden layers (tokens and losses only).
    """

    format: int
    shard: str
    extraction: str
    n_docs: int
    n_doc_hashes: int
    n_rows: int
    layers: tuple[int, ...]
    d_model: int | None
    dtype: str
    jacobian: Mapping[str, SketchEntry]
    files: Mapping[str, ShardFile]
    bytes: int
    created: str
    writer: Mapping[str, Any]

    @classmethod
    def from_json(cls, obj: Any, *, source: str) -> ShardManifest:
        r = _Reader(obj, source, "commit marker")
        files = r.mapping("files")
        for rel in files:
            if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in rel.split("/")):
                raise r.fail(f"file path {rel!r} is not a relative path inside the shard")
        jacobian = r.mapping("jacobian")
        return cls(
            format=r.integer("format"), shard=r.string("shard", pattern=SHARD_ID_RE),
            extraction=r.string("extraction", pattern=NAME_RE), n_docs=r.integer("n_docs"),
            n_doc_hashes=r.integer("n_doc_hashes"), n_rows=r.integer("n_rows"), layers=r.ints("layers"),
            d_model=r.integer("d_model", nullable=True), dtype=r.string("dtype"),
            jacobian={k: SketchEntry.from_json(v, source=source, key=k) for k, v in jacobian.items()},
            files={k: ShardFile.from_json(v, source=source, name=k) for k, v in files.items()},
            bytes=r.integer("bytes"), created=r.string("created"), writer=r.mapping("writer"))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format, "shard": self.shard, "extraction": self.extraction, "n_docs": self.n_docs,
            "n_doc_hashes": self.n_doc_hashes, "n_rows": self.n_rows, "layers": list(self.layers),
            "d_model": self.d_model, "dtype": self.dtype,
            "jacobian": {k: e.to_json() for k, e in self.jacobian.items()},
            "files": {k: f.to_json() for k, f in self.files.items()},
            "bytes": self.bytes, "created": self.created, "writer": dict(self.writer),
        }

    def sketch_blocks(self, key: str) -> tuple[int, ...]:
        """Blocks this shard holds sketches of ``key`` for (empty when it holds none)."""
        entry = self.jacobian.get(key)
        return entry.layers if entry else ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractionManifest:
    """``extraction.json``: the model fingerprint, the capture identity and the model's shape (immutable).

    ``model`` is the model's fingerprint record (``fingerprint``, ``model`` as
    given at ingest, hashes, revision, ...); keys absent on disk stay absent
    (None here), so :meth:`to_json` writes back exactly what was read.
    """

    extraction_id: str
    model: Mapping[str, Any]
    d_model: int
    created: str
    capture: Mapping[str, Any] | None = None
    n_layers: int | None = None
    is_causal: bool | None = None
    dtype: str | None = None
    tokenizer_class: str | None = None

    @classmethod
    def from_json(cls, obj: Any, *, source: str) -> ExtractionManifest:
        r = _Reader(obj, source, "extraction manifest")
        # the crc32c self-checksum is checked by LakeFS.read_json; a reader of raw bytes (import) may still hold it
        unknown = sorted(set(r.obj) - {f.name for f in dataclasses.fields(cls)} - {CHECKSUM_KEY})
        if unknown:
            raise r.fail(f"unknown key(s) {unknown}")
        model = r.mapping("model")
        if not isinstance(model.get("model", ""), str):
            raise r.fail(f"'model.model' must be a string, got {model['model']!r}")
        return cls(extraction_id=r.string("extraction_id", pattern=NAME_RE), model=model, d_model=r.integer("d_model"),
                   created=r.string("created"), capture=r.mapping("capture", required=False),
                   n_layers=r.integer("n_layers", required=False), is_causal=r.boolean("is_causal"),
                   dtype=r.string("dtype", required=False), tokenizer_class=r.string("tokenizer_class", required=False))

    def to_json(self) -> dict[str, Any]:
        return _present({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @property
    def model_name(self) -> str:
        """The model as given at the first ingest (id or path), '' when not recorded."""
        return str(self.model.get("model") or "")

    @property
    def fingerprint(self) -> str | None:
        return self.model.get("fingerprint")

    @property
    def tokenizer_hash(self) -> str | None:
        return self.model.get("tokenizer_hash")

    @property
    def storage_dtype(self) -> str:
        """The dtype hidden states are stored in (float16 when not recorded)."""
        return self.dtype or "float16"
