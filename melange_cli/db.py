"""`melange db …`"""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("db")
def group() -> None:
    """The store's schema."""


@group.command("upgrade")
@output_option
@pass_app
def upgrade(app: App):
    """Apply migrations up to this melange's schema."""
    output.emit(app.output_format(), app.call("db.upgrade"), output.REVISION)


@group.command("check")
@output_option
@pass_app
def check(app: App):
    """Verify every page of the store (SQLite: PRAGMA integrity_check); exit 6 if damaged."""
    output.emit(app.output_format(), app.call("db.check"), output.CHECK)


@group.command("current")
@output_option
@pass_app
def current(app: App):
    """Print the store's schema revision (an empty store is initialised first)."""
    output.emit(app.output_format(), app.call("db.current"), output.REVISION)
