"""Copying files between lakes on any fsspec filesystems, hashing on the way."""

from __future__ import annotations

import hashlib
import posixpath

from ..errors import IntegrityError
from .fs import LakeFS

BLOCK = 8 << 20
SMALL = 32 << 20


def sha256_file(fs: LakeFS, rel: str) -> tuple[int, str]:
    """(size, hex sha256) of a file of the lake, streamed."""
    h = hashlib.sha256()
    size = 0
    with fs.fs.open(fs.path(rel), "rb") as fh:
        while True:
            block = fh.read(BLOCK)
            if not block:
                break
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def write_file(dst: LakeFS, rel: str, data: bytes) -> None:
    """Write a data file that becomes visible only through a later marker (no fsync, no rename)."""
    dst.check_writable()
    path = dst.path(rel)
    if dst.is_local:
        dst.fs.makedirs(posixpath.dirname(path), exist_ok=True)
    dst.fs.pipe_file(path, data)


def copy_file(src: LakeFS, rel: str, dst: LakeFS, dst_rel: str | None = None, *, size: int | None = None,
              sha256: str | None = None) -> tuple[int, str]:
    """Copy ``rel`` of ``src`` to ``dst_rel`` (default the same path) of ``dst``; returns (size, sha256).

    With ``size``/``sha256`` given, the bytes are checked while copying and a
    mismatch removes the partial copy and raises :class:`IntegrityError` naming
    the source file.
    """
    dst.check_writable()
    dst_rel = dst_rel or rel
    target = dst.path(dst_rel)
    h = hashlib.sha256()
    n = 0
    try:
        if size is not None and size <= SMALL:
            data = src.fs.cat_file(src.path(rel))
            h.update(data)
            n = len(data)
            _check(src, rel, n, h.hexdigest(), size, sha256)
            write_file(dst, dst_rel, data)
            return n, h.hexdigest()
        if dst.is_local:
            dst.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        with src.fs.open(src.path(rel), "rb") as fin, dst.fs.open(target, "wb") as fout:
            while True:
                block = fin.read(BLOCK)
                if not block:
                    break
                h.update(block)
                n += len(block)
                fout.write(block)
        _check(src, rel, n, h.hexdigest(), size, sha256)
    except BaseException:
        try:
            if dst.fs.exists(target):
                dst.fs.rm(target)
        except OSError:
            pass
        raise
    return n, h.hexdigest()


def _check(src: LakeFS, rel: str, n: int, digest: str, size: int | None, sha256: str | None) -> None:
    if size is not None and n != size:
        raise IntegrityError(f"{src.url_of(rel)}: size {n} bytes, the manifest says {size}; the file changed or is "
                             "damaged — export it again")
    if sha256 is not None and digest != sha256:
        raise IntegrityError(f"{src.url_of(rel)}: sha256 {digest[:16]}... does not match the manifest "
                             f"({sha256[:16]}...); the file is damaged — export it again")
