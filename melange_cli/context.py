"""What every command shares: the global options and the one way to run an operation.

Nothing here imports SQLAlchemy or rich at module level, so `--help` and
`--version` stay as cheap as starting Python and click.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import click

from melange.clock import SYSTEM, Clock

FORMATS = ("table", "json", "plain")


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
    _store: Any = field(default=None, repr=False)
    _settings: Any = field(default=None, repr=False)

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
        """Run one operation: in melanged through its socket, or against the store."""
        if self.socket:
            return self._call_socket(self.socket, operation, params)
        from melange import operations

        return operations.run(self.store(), operation, params)

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
