"""The `melange` entry point: global options, and the one place errors become exit codes."""

from __future__ import annotations

import json
import os
import sys

import click

from melange import __version__
from melange_cli.context import FORMATS, App

USAGE_EXIT = 2


# Each top-level command's home: imported when the command is asked for (or help lists
# it), so a direct `block allocate` does not import the other thirteen modules
# (click's lazily loaded subcommands).
COMMANDS = {
    "block": ("melange_cli.blocks", "group"),
    "db": ("melange_cli.db", "group"),
    "dhcp": ("melange_cli.dhcp", "group"),
    "dns": ("melange_cli.dns", "group"),
    "export": ("melange_cli.transfer", "export"),
    "history": ("melange_cli.reports", "history"),
    "import": ("melange_cli.transfer", "import_"),
    "interface": ("melange_cli.interfaces", "group"),
    "ip": ("melange_cli.ips", "group"),
    "mac-range": ("melange_cli.macranges", "group"),
    "nat": ("melange_cli.nat", "group"),
    "policy": ("melange_cli.policies", "group"),
    "reconcile": ("melange_cli.reconcile", "reconcile"),
    "report": ("melange_cli.reports", "group"),
    "route": ("melange_cli.routes", "group"),
    "token": ("melange_cli.tokens", "group"),
}


class MelangeGroup(click.Group):
    """A group whose `main` maps every failure to the contract (also under CliRunner),
    and whose commands are loaded when asked for (`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            from importlib import import_module

            module, attribute = COMMANDS[cmd_name]
            self.add_command(getattr(import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        code = run(self, argv, prog_name or "melange", **extra)
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(cls=MelangeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db", envvar="MELANGE_DB", metavar="URL", help="SQLAlchemy URL or SQLite file path."
)
@click.option(
    "--config",
    envvar="MELANGE_CONFIG",
    metavar="FILE",
    help="INI file (default /etc/melange/melange.conf when it exists).",
)
@click.option(
    "--socket",
    envvar="MELANGE_SOCKET",
    metavar="PATH",
    help="Send the command through melanged's socket.",
)
@click.option(
    "--url",
    envvar="MELANGE_URL",
    metavar="URL",
    help="Send the command to melanged's HTTP API (https://HOST:PORT).",
)
@click.option(
    "--token-file",
    envvar="MELANGE_TOKEN_FILE",
    metavar="FILE",
    help="The file holding the HTTP API token (with --url).",
)
@click.option(
    "--ca-file",
    envvar="MELANGE_CA_FILE",
    metavar="FILE",
    help="CA certificates (PEM) to trust for --url instead of the system's.",
)
@click.option(
    "-o",
    "--output",
    envvar="MELANGE_OUTPUT",
    type=click.Choice(FORMATS),
    help="table on a terminal, plain otherwise.",
)
@click.option("--debug", is_flag=True, envvar="MELANGE_DEBUG", help="Show tracebacks.")
@click.version_option(__version__, prog_name="melange")
@click.pass_context
def cli(ctx: click.Context, db, config, socket, url, token_file, ca_file, output, debug) -> None:
    """IP address management and DHCP address discovery."""
    db, socket, url = _one_store(ctx, db, socket, url)
    app = ctx.ensure_object(App)  # one handed in (melange.clock: a test's clock) is kept
    app.db, app.config, app.socket, app.output, app.debug = db, config, socket, output, debug
    app.url, app.token_file, app.ca_file = url, token_file, ca_file
    # What the end of a process does, also when the CLI runs in-process (a test, a
    # script's CliRunner): the store's files and server connections close with the
    # command, not whenever the garbage collector gets to them.
    ctx.call_on_close(app.close)


def _one_store(ctx: click.Context, db, socket, url=None) -> tuple:
    """--db, --socket or --url: two of them on the command line is a usage error (one
    would be silently ignored). Otherwise the command line beats the environment, and
    from the environment MELANGE_URL wins over MELANGE_SOCKET, which wins over
    MELANGE_DB (docs/guide.md). Returns (db, socket, url), at most one of them set."""
    given = {"db": db, "socket": socket, "url": url}
    if sum(value is not None for value in given.values()) < 2:
        return db, socket, url
    from click.core import ParameterSource

    typed = [
        name for name in given if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    ]
    if len(typed) > 1:
        first, second = (f"--{name}" for name in typed[-2:])
        raise click.UsageError(f"{first} and {second} name two stores; give one of them")
    chosen = typed[0] if typed else next((n for n in ("url", "socket") if given[n]), "db")
    return tuple(value if name == chosen else None for name, value in given.items())


def _json_errors(argv: list[str]) -> bool:
    """Whether the user asked for JSON, even if parsing failed before -o was read."""
    for i, arg in enumerate(argv):
        if arg in ("-o", "--output") and i + 1 < len(argv) and argv[i + 1] == "json":
            return True
        if arg in ("-ojson", "--output=json"):
            return True
    return os.environ.get("MELANGE_OUTPUT") == "json"


def _debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("MELANGE_DEBUG", "") not in ("", "0")


def report(message: str, code: str, exit_code: int, as_json: bool) -> int:
    """One `Error:` line (and a JSON object with -o json) on stderr."""
    message = " ".join(message.split())
    click.echo(f"Error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "message": message}}), err=True)
    return exit_code


def run(group: click.Group, argv: list[str], prog_name: str, **extra) -> int:
    """Run the CLI; map every failure to the contract's exit code."""
    from melange.errors import MelangeError

    as_json = _json_errors(argv)
    try:
        result = click.Group.main(
            group, args=argv, prog_name=prog_name, standalone_mode=False, **extra
        )
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.Abort:
        return report("interrupted", "interrupted", 130, as_json)
    except click.exceptions.NoArgsIsHelpError as error:
        # `melange` or `melange block` alone: the help as --help prints it (stdout),
        # not squeezed into one Error line; exit 2, as click does, since no command ran.
        click.echo(error.ctx.get_help())
        return USAGE_EXIT
    except click.UsageError as error:
        return report(error.format_message(), "usage", USAGE_EXIT, as_json)
    except click.ClickException as error:
        return report(error.format_message(), "usage", USAGE_EXIT, as_json)
    except MelangeError as error:
        if _debug(argv):
            import traceback

            traceback.print_exc()
        return report(error.message, error.code, error.exit_code, as_json)
    except BrokenPipeError:
        return 0
    except Exception as error:  # noqa: BLE001  (the last resort: a bug)
        if _debug(argv):
            import traceback

            traceback.print_exc()
        return report(
            f"internal error: {type(error).__name__}: {error} (run with --debug for a traceback)",
            "internal",
            1,
            as_json,
        )


def main() -> None:
    cli.main()


if __name__ == "__main__":
    main()
