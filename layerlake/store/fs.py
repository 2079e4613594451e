"""The filesystem contract of a lake (:class:`LakeFS`): fsspec for every URL, atomic writes.

A lake lives at a local path or any fsspec URL (``file://``, ``memory://``,
``s3://``). Small control files (manifests, markers) are written atomically:
locally through a temporary file, ``fsync`` and ``os.replace``; on object
stores a single ``put`` is already atomic. Every difference between backends
lives in this module, behind capability flags; no other module touches fsspec.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from typing import Any, Mapping

import crc32c
import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import IntegrityError, ReadOnlyError, SpecError
from .layout import TMP_PREFIX
from .safety import bounded_json_loads


@dataclasses.dataclass(frozen=True)
class FileStat:
    """Size, modification time (POSIX seconds, None if the store cannot tell) and a version token of a file.

    ``version`` changes when the file is replaced (the inode locally, the ETag on
    object stores), so ``(size, mtime, version)`` tells a rewritten file apart.
    """

    size: int
    mtime: float | None
    version: str | None


class LakeFS:
    """A lake root on an fsspec filesystem, with paths relative to the root (``*parts``, each may hold ``/``).

    Capabilities, as flags (the local/remote differences stay inside this class):

    - ``supports_rename``: a folder can be renamed atomically (local disk), so
      :meth:`create_dir` builds it under a ``.tmp-`` name first;
    - ``supports_fsync``: :meth:`write_bytes_atomic` fsyncs the file and its folder
      before and after ``os.replace``; on object stores a single put is atomic;
    - ``supports_symlinks``: the store can hold links and special files, which
      :meth:`special_entries` reports (object stores hold plain objects only).
    """

    def __init__(self, url: str | os.PathLike[str], *, read_only: bool = False,
                 storage_options: dict[str, Any] | None = None) -> None:
        url = os.fspath(url)
        if not url:
            raise SpecError("lake path is empty; give a directory or an fsspec URL such as s3://bucket/lake")
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self._fs = fs
        self._local = isinstance(fs, LocalFileSystem)
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.root = os.path.abspath(root) if self._local else root.rstrip("/")
        self._real_root = os.path.realpath(self.root) if self._local else self.root
        self.read_only = read_only
        self.supports_rename = self._local
        self.supports_fsync = self._local
        self.supports_symlinks = self._local
        proto = fs.protocol
        #: the filesystem's protocol name ("file" locally, "s3", "memory", ...)
        self.protocol = str(proto[0] if isinstance(proto, (tuple, list)) else proto)

    # -- addresses -----------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """The filesystem path of ``parts`` (an OS path locally, protocol stripped elsewhere).

        Locally, a path that resolves outside the lake root (through a symbolic
        link or ``..``) raises :class:`IntegrityError`: nothing is read or written there.
        """
        p = self._join(parts)
        if parts and self._local:
            real = os.path.realpath(p)
            if real != self._real_root and not real.startswith(self._real_root.rstrip(os.sep) + os.sep):
                raise IntegrityError(f"{p} resolves to {real}, outside the lake folder {self.root} (a symbolic link "
                                     "or '..'); refusing to read or write it")
        return p

    def _join(self, parts: tuple[str, ...]) -> str:
        """:meth:`path` without the check, for listing only (existence and names are not contents)."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def url_of(self, *parts: str) -> str:
        """A URL usable by other libraries and processes (pyarrow, duckdb, polars, Ray workers) for ``parts``.

        An absolute path locally; with no parts, the lake root.
        """
        p = self.path(*parts)
        if self._local:
            return p
        return self._fs.unstrip_protocol(p)

    @property
    def url_filesystem(self) -> Any:
        """The fsspec filesystem engines need to read :meth:`url_of` URLs; None where they are local paths."""
        return None if self._local else self._fs

    @property
    def arrow_filesystem(self) -> Any:
        """A ``pyarrow.fs`` filesystem reading :meth:`path` paths."""
        import pyarrow.fs as pafs
        if self._local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self._fs))

    def zarr_store(self, *parts: str, read_only: bool = False) -> Any:
        """A zarr v3 store for the folder ``parts`` (writes need a writable lake)."""
        import zarr
        if not read_only:
            self.check_writable()
        if self._local:
            return zarr.storage.LocalStore(self.path(*parts), read_only=read_only)
        return zarr.storage.FsspecStore.from_url(self.url_of(*parts), read_only=read_only,
                                                 storage_options=self.storage_options or None)

    def contains(self, target: str) -> bool:
        """Whether a path or URL (as a user wrote it) names the lake root or something inside it."""
        if self._local:
            if "://" in target and not target.startswith("file://"):
                return False
            path = os.path.abspath(target[len("file://"):] if target.startswith("file://") else target)
            root = self.root.rstrip(os.sep)
            return path == root or path.startswith(root + os.sep)
        proto, sep, _ = target.partition("://")
        protos = self._fs.protocol if isinstance(self._fs.protocol, (tuple, list)) else (self._fs.protocol,)
        if not sep or proto not in protos:  # a local path, or another filesystem
            return False
        path = str(self._fs._strip_protocol(target)).rstrip("/")
        root = self.root.rstrip("/")
        return path == root or path.startswith(root + "/")

    # -- reads ---------------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return bool(self._fs.exists(self._join(parts)))

    def isfile(self, *parts: str) -> bool:
        return bool(self._fs.isfile(self._join(parts)))

    def read_bytes(self, *parts: str) -> bytes:
        return self._fs.cat_file(self.path(*parts))

    def read_json(self, *parts: str, verify: bool = True) -> Any:
        """A JSON file's object; its ``crc32c`` self-checksum (see :func:`seal_json`) is checked and removed.

        With ``verify=False`` the object is returned as stored (checksum field
        included, not checked): for a caller that must look at a field first
        (lake.json's format version) and then calls :func:`unseal_json`.
        """
        raw = self.read_bytes(*parts)
        try:
            obj = bounded_json_loads(raw, self.url_of(*parts))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"{self.url_of(*parts)} is not valid JSON ({exc}); run `layerlake verify`") from None
        return unseal_json(obj, self.url_of(*parts)) if verify else obj

    def open(self, *parts: str, mode: str = "rb") -> Any:
        """A file object (binary); a write mode needs a writable lake and creates the parent folders."""
        if "r" not in mode:
            self._prepare_write(parts)
        return self._fs.open(self.path(*parts), mode)

    def listdir(self, *parts: str) -> list[str]:
        """Names (not paths) directly under ``parts``; empty if it does not exist."""
        p = self._join(parts)
        try:
            entries = self._fs.ls(p, detail=False)
        except FileNotFoundError:
            return []
        names = []
        for e in entries:
            name = posixpath.basename(str(e).rstrip("/"))
            if name and str(e).rstrip("/") != p.rstrip("/"):
                names.append(name)
        return sorted(set(names))

    def walk_stats(self, *parts: str) -> dict[str, FileStat]:
        """Every file under ``parts`` -> its :class:`FileStat`, keyed by ``/``-path relative to ``parts``."""
        base = self.path(*parts)
        try:
            found = self._fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for p, info in found.items():
            if self._local:
                rel = posixpath.relpath(str(p), base)
            else:  # fsspec may or may not strip a leading slash; compare both as absolute
                rel = posixpath.relpath("/" + str(p).split("://", 1)[-1].lstrip("/"), "/" + base.lstrip("/"))
            out[rel] = _stat(info)
        return out

    def walk_files(self, *parts: str) -> dict[str, int]:
        """Every file under ``parts`` -> size, keyed by ``/``-path relative to ``parts``."""
        return {rel: st.size for rel, st in self.walk_stats(*parts).items()}

    def size(self, *parts: str) -> int:
        return int(self._fs.size(self.path(*parts)))

    def stat(self, *parts: str) -> FileStat:
        """The :class:`FileStat` of one file; FileNotFoundError if there is none."""
        return _stat(self._fs.info(self.path(*parts)))

    def special_entries(self, *parts: str) -> list[tuple[str, str]]:
        """(path, what is wrong) for entries under ``parts`` that are not plain files inside the root.

        Symbolic links, devices and sockets, and anything resolving outside the
        root; always empty where ``supports_symlinks`` is false.
        """
        if not self.supports_symlinks:
            return []
        top = self.path(*parts)
        real_root = os.path.realpath(self.root)
        out = []
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    out.append((full, "is a symbolic link"))
                elif name in filenames and not os.path.isfile(full):
                    out.append((full, "is not a regular file"))
                elif os.path.commonpath([os.path.realpath(full), real_root]) != real_root:
                    out.append((full, "resolves outside the lake folder"))
        return out

    # -- writes --------------------------------------------------------------------------
    def check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError(f"lake {self.url} is open read-only (mode='r'); open it with mode='a' to write")

    def makedirs(self, *parts: str) -> None:
        self.check_writable()
        self._fs.makedirs(self.path(*parts), exist_ok=True)

    def _prepare_write(self, parts: tuple[str, ...]) -> str:
        self.check_writable()
        target = self.path(*parts)
        if self._local:  # object stores have no folders to create
            os.makedirs(os.path.dirname(target), exist_ok=True)
        return target

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a data file that becomes visible only through a later marker (no fsync, no rename)."""
        self._fs.pipe_file(self._prepare_write(parts), data)

    def write_bytes_atomic(self, data: bytes, *parts: str) -> None:
        """Write a whole file so that readers see either nothing or all of it."""
        target = self._prepare_write(parts)
        if not self.supports_fsync:
            self._fs.pipe_file(target, data)  # one put: the object appears whole or not at all
            return
        directory = os.path.dirname(target)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
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
        """Write a JSON object atomically, sealed with its ``crc32c`` self-checksum (:func:`seal_json`)."""
        self.write_bytes_atomic(canonical_json(seal_json(obj), indent=2).encode(), *parts)

    def create_dir(self, files: Mapping[str, bytes], *parts: str, stage_in: tuple[str, ...]) -> None:
        """Create folder ``parts`` holding ``files`` (name -> bytes), so it never exists without them.

        With ``supports_rename`` the folder is built as ``<stage_in>/.tmp-*`` and
        renamed into place (OSError if ``parts`` already holds files); on object
        stores a folder exists only through its files, which are put one by one
        (so one file makes the creation atomic).
        """
        self.check_writable()
        target = self.path(*parts)
        if not self.supports_rename:
            for name, data in files.items():
                self._fs.pipe_file(posixpath.join(target, name), data)
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.path(*stage_in))
        try:
            for name, data in files.items():
                with open(os.path.join(staging, name), "wb") as fh:
                    fh.write(data)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def rm(self, *parts: str, recursive: bool = True) -> None:
        """Remove a file or (recursively) a folder; nothing if it does not exist. No parts: the whole root."""
        self.check_writable()
        p = self.path(*parts)
        if self._fs.exists(p):
            self._fs.rm(p, recursive=recursive)

    def new_id(self) -> str:
        return uuid.uuid4().hex[:16]


def _stat(info: dict[str, Any]) -> FileStat:
    version = info.get("ino") or info.get("ETag") or info.get("etag") or info.get("generation")
    return FileStat(size=int(info.get("size") or 0), mtime=_mtime(info),
                    version=None if version is None else str(version))


def _mtime(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "created", "updated", "timeCreated"):
        v = info.get(key)
        if v is None:
            continue
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, _dt.datetime):
            return v.timestamp() if v.tzinfo else v.replace(tzinfo=_dt.timezone.utc).timestamp()
        if isinstance(v, str):
            try:
                return _dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


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


#: the self-checksum field of the lake's JSON files (lake.json, manifests, markers, aliases, links)
CHECKSUM_KEY = "crc32c"


def json_checksum(obj: Mapping[str, Any]) -> int:
    """crc32c of the compact canonical JSON of ``obj`` without its checksum field."""
    return crc32c.crc32c(canonical_json({k: v for k, v in obj.items() if k != CHECKSUM_KEY}).encode())


def seal_json(obj: Any) -> Any:
    """``obj`` with its :data:`CHECKSUM_KEY` field set (objects only; anything else is returned as is)."""
    if not isinstance(obj, Mapping):
        return obj
    return {**{k: v for k, v in obj.items() if k != CHECKSUM_KEY}, CHECKSUM_KEY: json_checksum(obj)}


def unseal_json(obj: Any, source: str, *, required: bool = False) -> Any:
    """``obj`` without its checksum field, after checking it; IntegrityError naming ``source`` if it differs.

    A JSON object without the field (written before checksums, or not by a
    lake) is returned unchecked unless ``required``.
    """
    if not isinstance(obj, dict):
        if required:
            raise IntegrityError(f"{source} must be a JSON object with a {CHECKSUM_KEY!r} checksum; "
                                 "run `layerlake verify`")
        return obj
    if CHECKSUM_KEY not in obj:
        if required:
            raise IntegrityError(f"{source} has no {CHECKSUM_KEY!r} checksum (the lake's format requires one); "
                                 "the file was damaged or replaced — run `layerlake verify`")
        return obj
    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    try:
        expected = json_checksum(body)
    except (TypeError, ValueError):  # NaN or an unserialisable value cannot have been sealed
        expected = None
    if obj[CHECKSUM_KEY] != expected:
        raise IntegrityError(f"{source} is damaged: its {CHECKSUM_KEY} checksum does not match its content; "
                             "run `layerlake verify`")
    return body


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
