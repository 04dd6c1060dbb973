"""`melange token …`: the HTTP API's bearer tokens (melange/tokens.py)."""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("token")
def group() -> None:
    """API tokens for the HTTP API: the store keeps only a salted hash of each."""


def _networks(values: tuple[str, ...]) -> list[str]:
    """--allowed-ips repeated, or comma-separated, or both. An empty one is refused: from
    `--allowed-ips "$NETS"` with NETS unset it would make a token usable from anywhere."""
    parts = [part.strip() for value in values for part in value.split(",")]
    if "" in parts:
        raise click.BadParameter("an empty network", param_hint="'--allowed-ips'")
    return parts


@group.command("create")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(("reader", "writer", "admin")),
    help="reader reads; writer also allocates, releases, updates; admin does everything.",
)
@click.option("--expires", metavar="DURATION", help="Expire after e.g. 30d, 12h, 90m.")
@click.option(
    "--allowed-ips",
    "allowed_ips",
    multiple=True,
    metavar="CIDR",
    help="Only from these networks (repeatable, or comma-separated).",
)
@output_option
@pass_app
def create(app: App, name, role, expires, allowed_ips):
    """Create a token and print its secret: the one time it is shown.

    Plain output is the token alone, for `t=$(melange token create ci --role writer)`.
    """
    result = app.call(
        "token.create", name=name, role=role, expires=expires, allowed_ips=_networks(allowed_ips)
    )
    fmt = app.output_format()
    if fmt == "plain":
        click.echo(result["token"])
        return
    output.emit(fmt, result, output.TOKEN)
    if fmt == "table":
        click.echo("Keep the token now: it is not shown again (the store has only its hash).")


@group.command("list")
@output_option
@pass_app
def list_(app: App):
    """List tokens (never their secrets)."""
    output.emit(app.output_format(), app.call("token.list"), output.TOKEN)


@group.command("revoke")
@click.argument("name")
@output_option
@pass_app
def revoke(app: App, name):
    """Revoke a token: it is refused from the next request on."""
    output.emit(app.output_format(), app.call("token.revoke", name=name), output.TOKEN)
