"""What every command shares: the global options and the one way to run an operation.

Nothing here imports SQLAlchemy or rich at module level, so `--help` and
`--version` stay as cheap as starting Python and click.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from melange.clock import SYSTEM, Clock

FORMATS = ("table", "json", "plain")
# Direct commands tried first on the lean path (melange.lean): no SQLAlchemy import.
LEAN_OPERATIONS = frozenset({"block.allocate", "ip.show", "ip.release", "block.show",
                             "dhcp.hosts"})


@dataclass
class App:
    """The global options of one command, and the clock its store runs on.

    A caller that runs the CLI in-process (a test) may hand click an App as `obj`
    carrying a clock of its own; `cli` fills in the options and keeps that clock.
    """

    db: str | None = None
    config: str | None = None
    socket: str | None = None
    output: str | None = None
    debug: bool = False
    clock: Clock = SYSTEM
    url: str | None = None  # melanged's HTTP API (--url), with the two files below
    token_file: str | None = None
    ca_file: str | None = None
    _store: Any = field(default=None, repr=False)
    _settings: Any = field(default=None, repr=False)
    _remote: Any = field(default=None, repr=False)
    _parser: Any = field(default=None, repr=False)  # the config file, for --url's keys
    _lean: Any = field(default=None, repr=False)

    def output_format(self) -> str:
        if self.output:
            return self.output
        return "table" if sys.stdout.isatty() else "plain"

    def settings(self):
        if self._settings is None:
            from melange.config import load_settings

            self._settings = load_settings(self.db, self.config)
        return self._settings

    def store(self):
        if self._store is None:
            from melange.store import Store

            settings = self.settings()
            self._store = Store(
                settings.db_url,
                release_hold=settings.release_hold,
                named=settings.db_named,
                clock=self.clock,
            )
        return self._store

    def call(self, operation: str, **params: Any) -> Any:
        """Run one operation: in melanged through its socket or its HTTP API, or
        against the store."""
        if self.socket:
            return self._call_socket(self.socket, operation, params)
        remote = self.remote()
        if remote is not None:
            return self._call_http(remote, operation, params)
        from melange import operations

        if operation in LEAN_OPERATIONS and self._store is None:
            from melange.lean import NeedsFullPath

            lean = self.lean_store()
            if lean is not None:
                try:
                    return operations.run(lean, operation, params)
                except NeedsFullPath:
                    pass  # rolled back: the full store does it as it always did
        return operations.run(self.store(), operation, params)

    def lean_store(self):
        """The lean store of a plain SQLite file or server URL (melange.leanstore), else
        None."""
        if self._lean is None:
            from melange.leanstore import lean_store

            settings = self.settings()
            self._lean = lean_store(
                settings.db_url, release_hold=settings.release_hold, clock=self.clock
            )
        return self._lean

    def stream(self, operation: str, sink: Callable[[Any], object], **params: Any) -> None:
        """A streamed read (melange.streaming.STREAMED): each record, or export entity, to
        `sink` as it comes, through melanged's socket or HTTP API, or from the store."""
        if self.socket:
            from melange_cli import client

            return client.stream(self.socket, operation, params, sink)
        remote = self.remote()
        if remote is not None:
            return remote.stream(operation, params, sink)
        from melange import streaming

        return streaming.produce(self.store(), operation, params, sink)

    def remote(self):
        """The HTTP API client when the command goes to a URL: --url or MELANGE_URL, else
        the config file's `[melange] url` unless a store was named (--db, MELANGE_DB).
        The token and CA files come from the options, else from the same section."""
        if self._remote is None:
            url = self.url or None  # MELANGE_URL= (empty) is no URL, as MELANGE_SOCKET=
            token_file, ca_file = self.token_file, self.ca_file
            if url is None and self.db is None:
                url = self._configured("url")
            if url is None:
                return None
            token_file = token_file or self._configured("token_file")
            ca_file = ca_file or self._configured("ca_file")
            from melange_cli.httpclient import Remote

            self._remote = Remote(url, token_file=token_file, ca_file=ca_file)
        return self._remote

    def _configured(self, key: str) -> str | None:
        """`[melange] key` of the config file, read once (without the store settings)."""
        if self._parser is None:
            from melange.config import read_config

            self._parser = read_config(self.config)[0]
        return self._parser.get("melange", key, fallback=None) or None

    def close(self) -> None:
        """What the end of the process does: the store's and the API's connections close."""
        if self._store is not None:
            self._store.close()
        if self._lean is not None:
            self._lean.close()
        if self._remote is not None:
            self._remote.close()

    def _call_http(self, remote, operation: str, params: dict[str, Any]) -> Any:
        """Same operation, same result, over HTTP; local callbacks stay local."""
        params.pop("progress", None)
        sink = params.pop("sink", None)
        result = remote.call(operation, params)
        if sink is not None:
            sink(result)
            return None
        return result

    def _call_socket(self, socket: str, operation: str, params: dict[str, Any]) -> Any:
        """Same operation, same result; local callbacks stay local."""
        from melange_cli import client

        params.pop("progress", None)
        sink = params.pop("sink", None)
        result = client.call(socket, operation, params)
        if sink is not None:
            sink(result)
            return None
        return result


pass_app = click.make_pass_decorator(App)


def output_option(function):
    """-o on a subcommand too, so `melange ip list -o json` works as users expect."""

    def remember(ctx: click.Context, _param, value):
        if value:
            ctx.ensure_object(App).output = value
        return value

    return click.option(
        "-o",
        "--output",
        "sub_output",
        type=click.Choice(FORMATS),
        expose_value=False,
        callback=remember,
        help="Output format (overrides the global -o).",
    )(function)
