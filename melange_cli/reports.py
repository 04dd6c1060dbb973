"""`melange report …` and `melange history`."""

from __future__ import annotations

import click

from melange_cli import output
from melange_cli.context import App, output_option, pass_app


@click.group("report")
def group() -> None:
    """Reports for people and for cron."""


@group.command("utilization")
@click.option("--network", metavar="NET")
@click.option("--above", type=float, metavar="PCT", help="Only blocks over PCT; exit 9 if any.")
@output_option
@pass_app
def utilization(app: App, network, above):
    """Used, held, free and unusable addresses per block."""
    from melange.errors import ThresholdExceeded

    result = app.call("report.utilization", network=network, above=above)
    output.emit(app.output_format(), result, output.UTILIZATION)
    if above is not None and result:
        raise ThresholdExceeded(f"{len(result)} block(s) are more than {above:g}% used")


@click.command("history")
@click.option("--block", metavar="B")
@click.option("--address", metavar="IP")
@click.option("--since", metavar="TIME", help="ISO 8601 time, or a duration back such as 24h.")
@click.option(
    "--limit", type=int, default=1000, show_default=True, metavar="N",
    help="Show the newest N changes (at most 100000).",
)  # fmt: skip
@output_option
@pass_app
def history(app: App, block, address, since, limit):
    """Changes made to the store: when, who, through what, which command."""
    writer = output.ListWriter(app.output_format(), output.HISTORY)
    app.stream("history", writer, block=block, address=address, since=since, limit=limit)
    writer.finish()
