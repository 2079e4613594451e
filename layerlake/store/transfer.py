"""Copying files between lakes on any fsspec filesystems, hashing on the way."""

from __future__ import annotations

import hashlib

import crc32c

from ..errors import IntegrityError
from .fs import LakeFS

BLOCK = 8 << 20
SMALL = 32 << 20


def sha256_file(fs: LakeFS, rel: str) -> tuple[int, str]:
    """(size, hex sha256) of a file of the lake, streamed."""
    h = hashlib.sha256()
    size = 0
    with fs.open(rel) as fh:
        while True:
            block = fh.read(BLOCK)
            if not block:
                break
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def copy_file(src: LakeFS, rel: str, dst: LakeFS, dst_rel: str | None = None, *, size: int | None = None,
              sha256: str | None = None, crc: int | None = None) -> tuple[int, str]:
    """Copy ``rel`` of ``src`` to ``dst_rel`` (default the same path) of ``dst``; returns (size, sha256).

    With ``size``/``sha256``/``crc`` (crc32c) given, the bytes are checked while
    copying and a mismatch removes the partial copy and raises
    :class:`IntegrityError` naming the source file; so does a missing source
    (callers copy only files a manifest lists).
    """
    dst.check_writable()
    dst_rel = dst_rel or rel
    h = hashlib.sha256()
    c = 0
    n = 0
    try:
        if size is not None and size <= SMALL:
            data = src.read_bytes(rel)
            h.update(data)
            n = len(data)
            _check(src, rel, n, h.hexdigest(), size, sha256, crc32c.crc32c(data), crc)
            dst.write_bytes(data, dst_rel)
            return n, h.hexdigest()
        with src.open(rel) as fin, dst.open(dst_rel, mode="wb") as fout:
            while True:
                block = fin.read(BLOCK)
                if not block:
                    break
                h.update(block)
                c = crc32c.crc32c(block, c)
                n += len(block)
                fout.write(block)
        _check(src, rel, n, h.hexdigest(), size, sha256, c, crc)
    except FileNotFoundError:
        try:
            dst.rm(dst_rel)
        except OSError:
            pass
        raise IntegrityError(f"{src.url_of(rel)} is missing though a manifest lists it; run `layerlake verify`") from None
    except BaseException:
        try:
            dst.rm(dst_rel)
        except OSError:
            pass
        raise
    return n, h.hexdigest()


def _check(src: LakeFS, rel: str, n: int, digest: str, size: int | None, sha256: str | None,
           crc_found: int, crc: int | None) -> None:
    if crc is not None and crc_found != crc and (size is None or n == size):
        raise IntegrityError(f"{src.url_of(rel)}: crc32c differs from its commit marker; the file is damaged — run "
                             "`layerlake verify`")
    if size is not None and n != size:
        raise IntegrityError(f"{src.url_of(rel)}: size {n} bytes, the manifest says {size}; the file changed or is "
                             "damaged — export it again")
    if sha256 is not None and digest != sha256:
        raise IntegrityError(f"{src.url_of(rel)}: sha256 {digest[:16]}... does not match the manifest "
                             f"({sha256[:16]}...); the file is damaged — export it again")
