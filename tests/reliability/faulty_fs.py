"""A fault-injecting fsspec filesystem: ``faulty:///abs/path`` is the local ``/abs/path``,
except that the N-th write operation raises OSError.

It is deliberately *not* a LocalFileSystem subclass, so layerlake treats it as a
remote store (single-put writes, zarr's FsspecStore, pyarrow over fsspec), the
path an object store takes. ``FaultPlan.fail_at = N`` arms it; ``mode`` says
whether the failing operation does nothing ("before": the request never
arrived) or completes before raising ("after": the reply was lost, e.g. a
timeout after the object landed).
"""

from __future__ import annotations

import errno
import io
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem


class FaultPlan:
    fail_at: int | None = None
    mode: str = "before"
    writes: int = 0
    fired: str | None = None

    @classmethod
    def arm(cls, fail_at: int | None, mode: str = "before") -> None:
        cls.fail_at, cls.mode, cls.writes, cls.fired = fail_at, mode, 0, None


class FaultyFileSystem(AbstractFileSystem):
    protocol = ("faulty",)
    root_marker = "/"
    cachable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("asynchronous", None)
        super().__init__(*args, **kwargs)
        self.local = LocalFileSystem()

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = str(path)
        if path.startswith("faulty://"):
            path = path[len("faulty://"):]
        return "/" + path.lstrip("/") if path else "/"

    def unstrip_protocol(self, name: str) -> str:
        return "faulty://" + self._strip_protocol(name)

    # -- fault injection ----------------------------------------------------------------------
    def _write(self, what: str, path: str, op: Any) -> Any:
        FaultPlan.writes += 1
        n = FaultPlan.writes
        if FaultPlan.fail_at is not None and n == FaultPlan.fail_at:
            FaultPlan.fired = f"{what} {path}"
            if FaultPlan.mode == "after":
                op()
            raise OSError(errno.EIO, f"injected write failure #{n} ({FaultPlan.mode} {what} {path})")
        return op()

    # -- writes -------------------------------------------------------------------------------
    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        path = self._strip_protocol(path)

        def op() -> None:
            self.local.makedirs(self.local._parent(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(value)
        self._write("put", path, op)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        if "r" in mode:
            return self.local._open(path, mode, **kwargs)
        return _BufferedUpload(self, path)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        self.local.makedirs(path, exist_ok=True)  # object stores have no folders: not a fault point

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.local.makedirs(self._strip_protocol(path), exist_ok=True)

    def rm_file(self, path: str) -> None:
        path = self._strip_protocol(path)
        self._write("delete", path, lambda: self.local.rm_file(path))

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        paths = path if isinstance(path, list) else [path]
        for p in paths:
            p = self._strip_protocol(p)
            self._write("delete", p, lambda p=p: self.local.rm(p, recursive=recursive))

    def rmdir(self, path: str) -> None:
        self.local.rmdir(self._strip_protocol(path))

    # -- reads --------------------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        out = self.local.ls(self._strip_protocol(path), detail=detail)
        return out

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.local.info(self._strip_protocol(path))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        return self.local.cat_file(self._strip_protocol(path), start=start, end=end)

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self.local.exists(self._strip_protocol(path))


class _BufferedUpload(io.BytesIO):
    """A streamed write that lands as one put on close (as an object store upload does)."""

    def __init__(self, fs: FaultyFileSystem, path: str) -> None:
        super().__init__()
        self.fs, self.path = fs, path

    def close(self) -> None:
        if not self.closed:
            data = self.getvalue()
            super().close()
            self.fs.pipe_file(self.path, data)


fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)
