"""The `melanged` command: options, logging, daemonizing; the loop is melanged.daemon."""

from __future__ import annotations

import logging
import sys

import click

from melange import __version__


def _configure_logging(log_file) -> logging.Handler:
    """Log to stderr or append to --log-file, which is opened like the pidfile: never
    through a link, only as a regular file, in a directory nobody else controls."""
    handler: logging.Handler
    if log_file:
        import os

        from melange.localfiles import open_regular, prepare_directory

        prepare_directory(log_file.parent)
        fd = open_regular(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1, encoding="utf-8"))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    return handler


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", envvar="MELANGE_CONFIG", metavar="FILE", help="INI file ([melanged]).")
@click.option("--db", envvar="MELANGE_DB", metavar="URL", help="The store.")
@click.option("--hostsfile", metavar="PATH", help="dnsmasq --dhcp-hostsfile to maintain.")
@click.option("--optsfile", metavar="PATH", help="dnsmasq --dhcp-optsfile to maintain.")
@click.option("--hostsdir", metavar="DIR", help="dnsmasq --dhcp-hostsdir for additions.")
@click.option("--dnsmasq-pidfile", metavar="PATH", help="The dnsmasq to SIGHUP.")
@click.option("--dns-hostsdir", metavar="DIR",
              help="dnsmasq --hostsdir: one small file a DNS name (no reload).")
@click.option("--addn-hosts", metavar="FILE",
              help="dnsmasq --addn-hosts: the DNS names, folded at a reload.")
@click.option("--network", metavar="NET", help="Only this network (one dnsmasq per network).")
@click.option("--release-interface", metavar="IFACE", help="dhcp_release stale leases here.")
@click.option("--socket", metavar="PATH", help="Serve melange commands on this Unix socket.")
@click.option("--http", metavar="HOST:PORT", help="Serve the HTTP API here.")
@click.option("--tls-cert", metavar="PATH", help="The HTTP API's TLS certificate (PEM).")
@click.option("--tls-key", metavar="PATH", help="The HTTP API's TLS private key (PEM).")
@click.option("--insecure-http", is_flag=True, default=None,
              help="Allow plain HTTP on an address that is not loopback.")
@click.option("--backend", metavar="NAME", help="The DHCP server's backend (dnsmasq, kea).")
@click.option("--kea-host-db", metavar="URL", help="Kea's host database (kea backend).")
@click.option("--kea-config", metavar="PATH", help="Kea Dhcp4 fragment file to maintain.")
@click.option("--kea-control-socket", metavar="PATH", help="kea-dhcp4's control socket.")
@click.option("--kea-release", is_flag=True, default=None,
              help="lease4-del the leases of removed reservations (kea).")
@click.option("--foreground", is_flag=True, help="Do not daemonize (systemd).")
@click.option("--pidfile", metavar="PATH", help="Locked pidfile.")
@click.option("--log-file", metavar="PATH", help="Log here instead of stderr.")
@click.version_option(__version__, prog_name="melanged")
def cli(config, foreground, **flags) -> None:
    """Keep dnsmasq's files in step with the melange store."""
    from melange.errors import MelangeError
    from melanged.daemon import Daemon, PidFile
    from melanged.settings import resolve

    try:
        settings = resolve(flags, config)
        handler = _configure_logging(settings.log_file)
        daemon = Daemon(settings, reload_settings=lambda: resolve(flags, config))
        if foreground:
            if settings.pidfile is None:
                sys.exit(daemon.run())
            with PidFile(settings.pidfile):
                sys.exit(daemon.run())
        if settings.pidfile is not None:
            PidFile(settings.pidfile).check()
        http = daemon.prepare_http()  # bound now: its failure is seen on the terminal
        _daemonize(settings, handler, [http.sock] if http is not None else [])
        sys.exit(daemon.run())
    except MelangeError as error:
        click.echo(f"Error: {error.message}", err=True)
        sys.exit(error.exit_code)


def _daemonize(settings, handler: logging.Handler, sockets: list) -> None:
    """Detach with python-daemon (keeping the log and the listening `sockets`); the
    pidfile lock is taken in the child."""
    import daemon

    from melanged.daemon import PidFile

    keep = [handler.stream] if hasattr(handler, "stream") else []
    keep += sockets
    context = daemon.DaemonContext(
        pidfile=PidFile(settings.pidfile) if settings.pidfile else None,
        files_preserve=keep,
        stderr=sys.stderr if settings.log_file is None else None,
        working_directory="/",
        umask=0o022,
        signal_map={},  # the loop installs its own recording handlers
    )
    context.open()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
