"""The melange CLI run in-process on one store, as the contract tests drive it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from melange.clock import SYSTEM, Clock
from melange_cli.context import App
from melange_cli.main import cli


@dataclass
class Melange:
    """Runs `melange --db <store> ARGS…` in-process, as a script would."""

    db: Path | str
    env: dict
    socket: str | None = None  # through melanged's socket instead of opening the store
    clock: Clock = SYSTEM  # what the store reads the time from (tests/support/clock.py)
    url: str | None = None  # through melanged's HTTP API (with the token and CA files)
    token_file: str | None = None
    ca_file: str | None = None

    def __call__(self, *args: str, output: str = "plain", input: str | None = None) -> Result:
        runner = CliRunner()
        where = ["--socket", self.socket] if self.socket else ["--db", str(self.db)]
        if self.url:
            where = ["--url", self.url, "--token-file", str(self.token_file),
                     "--ca-file", str(self.ca_file)]  # fmt: skip
        argv = [*where, "-o", output, *args]
        app = App(clock=self.clock)
        try:
            return runner.invoke(cli, argv, env=self.env, input=input, catch_exceptions=False,
                                 obj=app)  # fmt: skip
        finally:
            # What the end of a `melange` process does: its server connections close now,
            # not whenever the garbage collector gets to them (the servers' connection
            # limits are shared by every test running at once).
            app.close()
            if self.url:
                from melanged.http.auth import USES

                # The server writes a token's use after answering (melanged.http.auth):
                # written before the test looks at the store, as it is by then in life.
                USES.flush()

    def ok(self, *args: str, output: str = "plain") -> str:
        """Run and insist on success; the stdout."""
        result = self(*args, output=output)
        assert result.exit_code == 0, (args, result.exit_code, result.stderr)
        return result.stdout

    def json(self, *args: str):
        return json.loads(self.ok(*args, output="json"))


def assert_error(result, code: int, *, as_json: bool = False) -> str:
    """The contract's error shape: exit code, one `Error:` line (+ JSON), no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert result.stderr.endswith("\n")
    assert len(lines) == (2 if as_json else 1), lines
    assert lines[0].startswith("Error: ") and len(lines[0]) > len("Error: "), lines
    if as_json:
        document = json.loads(lines[1])
        assert set(document) == {"error"}
        assert set(document["error"]) == {"code", "message"}
        assert isinstance(document["error"]["code"], str) and document["error"]["code"]
        assert isinstance(document["error"]["message"], str) and document["error"]["message"]
    return lines[0]
