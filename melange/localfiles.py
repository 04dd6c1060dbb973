"""Files and processes on this host: opened, created and signalled without being tricked.

melange runs as root beside dnsmasq (melanged usually does), in directories
where others may plant things. Every path it opens for dnsmasq goes through
here, so one set of rules holds everywhere (docs/operations.md, "Files"):

- a file read is a regular file of bounded size (a FIFO would hang a thread,
  /dev/zero would fill memory); a pidfile, a log file or a lock file is never
  a symbolic link (O_NOFOLLOW): a link planted there would aim root's write,
  or its signal, at any file or process;
- a directory melange writes in, and each directory on the way to it, is
  owned by root or by melange's own user and is not writable by others unless
  sticky; a symbolic link on the way is followed only when one of those users
  owns it (what fs.protected_symlinks does, whatever the sysctl says);
- a signal goes only to a process that is the program named (its
  /proc/PID/exe, or its comm when exe is not readable), never to whatever pid
  a file holds.

The parameters that name such paths (and the interface dhcp_release acts on)
make an operation host-local: melanged runs those only for root or its own
user (docs/protocol.md).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from melange.errors import Conflict, PermissionDenied

PATH_PARAMS = frozenset({"hostsfile", "leasefile", "optsfile", "hostsdir", "dnsmasq_pidfile",
                         "dns_hostsdir", "addn_hosts"})  # fmt: skip
HOST_LOCAL_PARAMS = PATH_PARAMS | {"release_interface"}
HOST_LOCAL_OPERATIONS = frozenset({"dhcp.sync"})  # writes files and signals dnsmasq
PID_LIMIT = 64
TEXT_LIMIT = 1 << 30  # a hosts or lease file for millions of hosts still fits


def host_local(operation: str, params: dict) -> bool:
    """Whether running `operation` touches this host's files, processes or interfaces."""
    if operation in HOST_LOCAL_OPERATIONS:
        return True
    return any(params.get(name) not in (None, "") for name in HOST_LOCAL_PARAMS)


def absolute_paths(params: dict) -> dict:
    """Path parameters as the caller's shell meant them (melanged's cwd is not theirs)."""
    return {
        key: os.path.abspath(value) if key in PATH_PARAMS and isinstance(value, str) and value
        else value
        for key, value in params.items()
    }  # fmt: skip


# -- reading


def read_text(path: Path, limit: int = TEXT_LIMIT, *, follow: bool = True) -> str:
    """A regular file's text (refusing FIFOs, devices, directories and oversize files);
    with follow=False, a symbolic link is refused too."""
    fd = _open(path, os.O_RDONLY | os.O_NONBLOCK, follow=follow)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise Conflict(f"{path} is larger than {limit} bytes; refusing to read it")
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:  # grew while read (/proc files report size 0)
                raise Conflict(f"{path} is larger than {limit} bytes; refusing to read it")
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def open_regular(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open without following a final symbolic link, for a regular file only."""
    return _open(path, flags, mode, follow=False)


def _open(path: Path, flags: int, mode: int = 0o644, *, follow: bool) -> int:
    flags |= os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, mode)
    except OSError as error:
        if error.errno == errno.ELOOP or (not follow and os.path.islink(path)):
            raise Conflict(f"{path} is a symbolic link; refusing to follow it") from None
        if error.errno == errno.EISDIR:
            raise Conflict(f"{path} is a directory, not a file") from None
        if error.errno in (errno.EACCES, errno.EPERM):
            raise PermissionDenied(f"no permission to open {path}") from None
        if error.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing
            raise Conflict(f"{path} is not a regular file; refusing it") from None
        raise
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        if stat.S_ISDIR(kind):
            raise Conflict(f"{path} is a directory, not a file")
        raise Conflict(f"{path} is not a regular file; refusing it")
    if not flags & os.O_NONBLOCK:
        os.set_blocking(fd, True)
    return fd


# -- the process behind a pidfile


def program_pid(pidfile: Path, program: str = "dnsmasq") -> int | None:
    """The pid in `pidfile` when that process is running `program`; else None.

    The pidfile is a small regular file, not a link; the process must be the
    program itself (a stale pidfile, or one naming another process, is
    treated as no server: nothing is signalled)."""
    try:
        text = read_text(pidfile, PID_LIMIT, follow=False)
    except FileNotFoundError:
        return None
    fields = text.split()
    if not fields or not fields[0].isdecimal() or int(fields[0]) <= 1:
        return None
    pid = int(fields[0])
    return pid if runs(pid, program) else None


def runs(pid: int, program: str) -> bool:
    """Whether process `pid` is `program`: by its executable when that is readable
    (our own processes), else by its comm (the kernel's name of it)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        return os.path.basename(exe.removesuffix(" (deleted)")) == program
    except FileNotFoundError:
        return False
    except OSError:
        pass  # another user's process: exe is not ours to read
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm == program[:15]


# -- directories melange writes in


def trusted_uids() -> set[int]:
    return {0, os.geteuid()}


def prepare_directory(directory: Path, mode: int = 0o755) -> None:
    """Create `directory` (and missing parents, with `mode`) after checking that nobody
    but root or this user could swap anything on the way to it; then check it."""
    missing = check_directory(directory)
    for path in missing:
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
        check_directory(path)


def check_directory(directory: Path) -> list[Path]:
    """Refuse (Conflict) a directory others could tamper with; the missing tail of
    the path, outermost first (for prepare_directory to create)."""
    path = Path(os.path.abspath(directory))
    here = Path("/")
    for index, part in enumerate(path.parts[1:], start=1):
        _check_holder(here, directory)
        step = here / part
        try:
            info = os.lstat(step)
        except FileNotFoundError:
            return [Path(*path.parts[: i + 1]) for i in range(index, len(path.parts))]
        except PermissionError:
            raise PermissionDenied(f"no permission to look into {here} (for {directory})") from None
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid not in trusted_uids():
                raise Conflict(
                    f"refusing {directory}: {step} is a symbolic link owned by "
                    f"{_owner(info.st_uid)}, not by root or melange's user"
                )
            step = Path(os.path.realpath(step))
            check_directory(step)
        here = step
    _check_holder(here, directory)
    return []


def _check_holder(directory: Path, asked: Path) -> None:
    """A directory whose entries nobody else can replace."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise Conflict(f"refusing {asked}: {directory} is not a directory")
    if info.st_uid not in trusted_uids():
        raise Conflict(
            f"refusing {asked}: {directory} is owned by {_owner(info.st_uid)}, "
            "not by root or melange's user"
        )
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise Conflict(f"refusing {asked}: {directory} is writable by others (and not sticky)")


def _owner(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
