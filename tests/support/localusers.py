"""Real unprivileged users and groups for security tests, and running things as them.

Users are created with useradd (no home, no login shell) under names unique to
the test run and deleted afterwards; processes switch with setpriv, the way an
operator's shell would be another user's.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.realparts import require_root


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


class Users:
    """Creates users and groups on demand; `cleanup` removes every one of them."""

    def __init__(self) -> None:
        require_root()
        self.tag = secrets.token_hex(3)
        self.users: list[str] = []
        self.groups: list[str] = []

    def group(self, base: str) -> str:
        name = f"mlg{base}{self.tag}"[:32]
        subprocess.run(["groupadd", name], check=True, capture_output=True)
        self.groups.append(name)
        return name

    def user(self, base: str, groups: Sequence[str] = ()) -> User:
        name = f"mlg{base}{self.tag}"[:32]
        argv = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-U", name]
        if groups:
            argv += ["-G", ",".join(groups)]
        subprocess.run(argv, check=True, capture_output=True)
        self.users.append(name)
        entry = pwd.getpwnam(name)
        return User(name, entry.pw_uid, entry.pw_gid)

    def cleanup(self) -> None:
        for name in self.users:
            subprocess.run(["userdel", name], check=False, capture_output=True)
        for name in self.groups:
            subprocess.run(["groupdel", name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def users():
    """Users and groups made for one test module, removed after it."""
    made = Users()
    yield made
    made.cleanup()


@pytest.fixture
def root_sleep():
    """A real root process, the would-be target of a misdirected signal."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def as_user(user: User | None, argv: Sequence[str], *, clear_groups: bool = False) -> list[str]:
    """`argv` under setpriv as `user` (its groups from /etc/group, or none at all)."""
    if user is None:
        return list(argv)
    groups = "--clear-groups" if clear_groups else "--init-groups"
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", groups, *argv]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    return {**clean, "PYTHONPATH": str(ROOT)}


def melange(
    user: User | None, *args: str, clear_groups: bool = False, cwd: str = "/",
    extra_env: dict | None = None, timeout: float = 60,
) -> subprocess.CompletedProcess:  # fmt: skip
    """The melange CLI as `user` (None: as root)."""
    argv = as_user(user, [sys.executable, "-m", "melange_cli.main", "-o", "plain", *args],
                   clear_groups=clear_groups)  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**env(), **(extra_env or {})}, cwd=cwd)  # fmt: skip


def shared_dir(prefix: str, mode: int = 0o755) -> Path:
    """A root-owned directory others can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(mode)
    return path
