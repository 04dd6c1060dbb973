"""A MariaDB server of the test's own (own datadir, port and socket), to stop and start at will."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.realparts import missing_capability


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateMariaDB:
    def __init__(self, workdir: Path) -> None:
        self.datadir = workdir / "mariadb-data"
        self.tmpdir = workdir  # not /tmp: see galera.py, temporary tables are named by pid
        self.socket = workdir / "mariadb.sock"
        self.port = _free_port()
        self.log = workdir / "mariadb.err"
        self.proc: subprocess.Popen | None = None
        self.url = f"mysql+pymysql://root@127.0.0.1:{self.port}/melange"

    def install(self) -> None:
        binary = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if binary is None or not Path("/usr/sbin/mariadbd").exists():
            missing_capability("mariadb-server is not installed")
        subprocess.run(
            [binary, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             f"--tmpdir={self.tmpdir}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.datadir}",
             f"--tmpdir={self.tmpdir}",
             f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
             "--user=root", f"--log-error={self.log}", "--skip-log-bin",
             "--innodb-buffer-pool-size=32M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"private mariadbd did not start: {self.log.read_text()[-2000:]}"
                )
            time.sleep(0.1)

    def answers(self) -> bool:
        import pymysql

        try:
            pymysql.connect(
                host="127.0.0.1", port=self.port, user="root", connect_timeout=1
            ).close()
            return True
        except pymysql.Error:
            return False

    def create_database(self) -> None:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
        conn.cursor().execute("CREATE DATABASE IF NOT EXISTS melange")
        conn.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.proc = None
