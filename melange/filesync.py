"""Replacing a file that another program reads, so it never sees a partial one.

dnsmasq opens its files by path at every reload: a torn write was read as a
wrong address with nothing logged. So: stream into a dot-named temp file in
the same directory (dnsmasq ignores dot files in a hosts dir), fsync, mode
0644, rename over the target, fsync the directory. Nothing is written when
the bytes would be the same, so callers signal only on real change.

The directory must be one only root or melange's user can change
(melange.localfiles), and the target a regular file or nothing: a FIFO or a
device there is refused, a symbolic link is replaced, never followed. A temp
file left by a render that was killed is removed by `remove_leftovers`, which
melanged runs at start.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from melange.errors import Conflict
from melange.localfiles import check_directory, prepare_directory

CHUNK = 1 << 16
TEMP_SUFFIX = re.compile(r"\.[a-z0-9_]{8}")  # what tempfile.mkstemp adds


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes, None when there is no file."""
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            return None  # a link: replaced by the file, so never "the same"
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def write_if_changed(path: Path, chunks: Iterable[str], *, mode: int = 0o644) -> bool:
    """Atomically make `path` hold the concatenated `chunks`; False when it already did."""
    path = Path(path)
    prepare_directory(path.parent)
    refuse_special(path)
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
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, path)
        _fsync_dir(path.parent)
        return True
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def refuse_special(path: Path) -> None:
    """A directory, FIFO, socket or device where a file should be is a mistake or a
    trap: never replaced, never read."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise Conflict(f"{path} is a directory, not a file")
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise Conflict(f"{path} is not a regular file; refusing to replace it")


def remove_leftovers(path: Path) -> list[Path]:
    """Temp files of `path` that a killed writer left (`.NAME.XXXXXXXX`), removed;
    for a hosts dir, those of its `melange-` files. Only regular files of this user."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        directory, prefix = path, ".melange-"
    else:
        directory, prefix = path.parent, f".{path.name}."
    try:
        check_directory(directory)
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError, Conflict):
        return []
    removed = []
    for entry in entries:
        if not entry.name.startswith(prefix) or not TEMP_SUFFIX.fullmatch(entry.name[-9:]):
            continue
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
