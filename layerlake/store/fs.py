"""Filesystem access for a lake: fsspec for every URL, atomic small-file writes.

A lake lives at a local path or any fsspec URL (``file://``, ``memory://``,
``s3://``). Small control files (manifests, markers) are written atomically:
locally through a temporary file, ``fsync`` and ``os.replace``; on object
stores a single ``put`` is already atomic.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import IntegrityError, ReadOnlyError, SpecError


class LakeFS:
    """A lake root on an fsspec filesystem, with paths relative to the root."""

    def __init__(self, url: str | os.PathLike[str], *, read_only: bool = False,
                 storage_options: dict[str, Any] | None = None) -> None:
        url = os.fspath(url)
        if not url:
            raise SpecError("lake path is empty; give a directory or an fsspec URL such as s3://bucket/lake")
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.fs = fs
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.is_local = isinstance(fs, LocalFileSystem)
        self.root = os.path.abspath(root) if self.is_local else root.rstrip("/")
        self.read_only = read_only

    # -- paths ---------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def url_of(self, *parts: str) -> str:
        """A URL usable by other libraries (pyarrow, duckdb, polars) for ``parts``."""
        p = self.path(*parts)
        if self.is_local:
            return p
        return self.fs.unstrip_protocol(p)

    # -- reads ---------------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.path(*parts)))

    def isfile(self, *parts: str) -> bool:
        return bool(self.fs.isfile(self.path(*parts)))

    def read_bytes(self, *parts: str) -> bytes:
        return self.fs.cat_file(self.path(*parts))

    def read_json(self, *parts: str) -> Any:
        raw = self.read_bytes(*parts)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise IntegrityError(f"{self.url_of(*parts)} is not valid JSON ({exc}); run `layerlake verify`") from exc

    def listdir(self, *parts: str) -> list[str]:
        """Names (not paths) directly under ``parts``; empty if it does not exist."""
        p = self.path(*parts)
        try:
            entries = self.fs.ls(p, detail=False)
        except FileNotFoundError:
            return []
        names = []
        for e in entries:
            name = posixpath.basename(str(e).rstrip("/"))
            if name and str(e).rstrip("/") != p.rstrip("/"):
                names.append(name)
        return sorted(set(names))

    def walk_files(self, *parts: str) -> dict[str, int]:
        """Every file under ``parts`` -> size, keyed by path relative to ``parts``."""
        base = self.path(*parts)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for p, info in found.items():
            rel = posixpath.relpath(str(p) if self.is_local else "/" + str(p).lstrip("/"),
                                    base if self.is_local else "/" + base.lstrip("/"))
            out[rel] = int(info.get("size") or 0)
        return out

    def size(self, *parts: str) -> int:
        return int(self.fs.size(self.path(*parts)))

    # -- writes --------------------------------------------------------------------------
    def check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError(f"lake {self.url} is open read-only (mode='r'); open it with mode='a' to write")

    def makedirs(self, *parts: str) -> None:
        self.check_writable()
        self.fs.makedirs(self.path(*parts), exist_ok=True)

    def write_bytes_atomic(self, data: bytes, *parts: str) -> None:
        """Write a whole file so that readers see either nothing or all of it."""
        self.check_writable()
        target = self.path(*parts)
        if not self.is_local:
            self.fs.pipe_file(target, data)
            return
        directory = os.path.dirname(target)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(directory)

    def write_json_atomic(self, obj: Any, *parts: str) -> None:
        self.write_bytes_atomic(canonical_json(obj, indent=2).encode(), *parts)

    def rm(self, *parts: str, recursive: bool = True) -> None:
        self.check_writable()
        p = self.path(*parts)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=recursive)

    def new_id(self) -> str:
        return uuid.uuid4().hex[:16]


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def canonical_json(obj: Any, *, indent: int | None = None) -> str:
    """JSON with sorted keys and no NaN: the form hashed for identities."""
    return json.dumps(obj, sort_keys=True, indent=indent, separators=None if indent else (",", ":"),
                      allow_nan=False, default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
