"""Replacing a file that another program reads, so it never sees a partial one.

dnsmasq opens its files by path at every reload: a torn write was read as a
wrong address with nothing logged. So: stream into a dot-named temp file in
the same directory (dnsmasq ignores dot files in a hosts dir), fsync, mode
0644, rename over the target, fsync the directory. Nothing is written when
the bytes would be the same, so callers signal only on real change.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 16


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes, None when there is no file."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def write_if_changed(path: Path, chunks: Iterable[str], *, mode: int = 0o644) -> bool:
    """Atomically make `path` hold the concatenated `chunks`; False when it already did."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            buffered: list[bytes] = []
            size = 0
            for chunk in chunks:
                data = chunk.encode()
                digest.update(data)
                buffered.append(data)
                size += len(data)
                if size >= CHUNK:
                    handle.write(b"".join(buffered))
                    buffered, size = [], 0
            handle.write(b"".join(buffered))
            handle.flush()
            if digest.hexdigest() == file_digest(path):
                temp.unlink()
                return False
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
        _fsync_dir(path.parent)
        return True
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
