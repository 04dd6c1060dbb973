"""A real melanged serving its socket, for tests that run commands through it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT
from tests.support.melanged_harness import terminate


class SocketDaemon:
    def __init__(self, db: str | None, workdir: Path, config: Path | None = None,
                 extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "run" / "melange.sock"
        self.log = workdir / "melanged.log"
        where = ["--db", db] if db is not None else []  # None: the config file's store
        self.argv = [sys.executable, "-m", "melanged.main", "--foreground", *where,
                     "--hostsfile", str(workdir / "hosts"), "--socket", str(self.socket),
                     "--log-file", str(self.log), *extra]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
        if config is not None:
            env["MELANGE_CONFIG"] = str(config)
        self.env = {**env, "PYTHONPATH": str(ROOT)}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15) -> SocketDaemon:
        self.stderr = open(self.log.with_suffix(".stderr"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, text=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text() if self.log.exists() else ""
                err = self.log.with_suffix(".stderr").read_text()
                raise RuntimeError(f"melanged did not serve {self.socket}: {err}{log}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        code = terminate(self.proc)
        if getattr(self, "stderr", None) is not None:
            self.stderr.close()
        return code

    def __enter__(self) -> SocketDaemon:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
