"""melanged's settings: flags first, then the config file's [melanged] section."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from melange.config import db_url_from, load_settings
from melange.errors import InvalidInput
from melanged.http.listen import Limits, Listen

DEFAULT_HOSTSFILE = "/var/lib/melange/dnsmasq.hosts"


@dataclass
class DaemonSettings:
    db_url: str
    release_hold: int
    hostsfile: Path | None  # None: no DHCP work (melanged serving the HTTP API alone)
    optsfile: Path | None = None
    hostsdir: Path | None = None
    dnsmasq_pidfile: Path | None = None
    network: str | None = None
    socket: Path | None = None
    pidfile: Path | None = None
    log_file: Path | None = None
    release_interface: str | None = None
    backend: str = "dnsmasq"
    admin_users: str = ""
    admin_groups: str = ""
    reader_groups: str = ""
    writer_users: str = ""
    writer_groups: str = ""
    socket_group: str | None = None
    poll_interval: float = 0.02
    wait_min: float = 0.2
    wait_max: float = 2.0
    http: str | None = None  # HOST:PORT of the HTTP API (melanged.http)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False  # plain HTTP beyond loopback, said explicitly
    # What one client may take of the HTTP server: keys http_<field of Limits>.
    http_limits: Limits = field(default_factory=Limits)
    # The kea backend's (melange.kea): passed to it as target options, prefix dropped.
    kea_host_db: str | None = None  # URL of Kea's host database
    kea_config: Path | None = None  # the Dhcp4 fragment file melanged keeps
    kea_control_socket: Path | None = None  # kea-dhcp4's control socket
    kea_release: bool = False  # lease4-del the leases of removed reservations
    dns_hostsdir: Path | None = None  # dnsmasq --hostsdir: one small file a DNS name
    addn_hosts: Path | None = None  # dnsmasq --addn-hosts: the DNS names, folded



PATHS = {"hostsfile", "optsfile", "hostsdir", "dnsmasq_pidfile", "socket", "pidfile", "log_file",
         "kea_config", "dns_hostsdir", "addn_hosts"}  # fmt: skip
FLOATS = {"poll_interval", "wait_min", "wait_max"}
# Files that are read, never written: no check of who controls their directory.
READ_PATHS = {"tls_cert", "tls_key", "kea_control_socket"}
BOOLEANS = {"insecure_http", "kea_release"}
_TRUTH = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def resolve(flags: dict, config: str | None) -> DaemonSettings:
    """Merge the flags (None when not given) over [melanged] over the defaults."""
    base = load_settings(flags.get("db"), config)
    section = base.section("melanged")
    known = {f.name for f in fields(DaemonSettings)} - {"http_limits"}
    unknown = set(section) - known - {"db"} - set(LIMIT_KEYS)
    if unknown:
        raise InvalidInput(f"unknown key(s) in [melanged]: {', '.join(sorted(unknown))}")
    values: dict = {}
    for name in known - {"db_url", "release_hold"}:
        raw = flags.get(name)
        if raw is None or (name in BOOLEANS and raw is False):
            raw = section.get(name)
        if raw is None or raw == "":
            continue
        if name in BOOLEANS:
            values[name] = _boolean(name, raw)
        elif name in PATHS or name in READ_PATHS:  # absolute: a daemon works in /
            values[name] = Path(os.path.abspath(raw))
        elif name in FLOATS:
            try:
                values[name] = float(raw)
            except ValueError:
                raise InvalidInput(f"{name} must be a number of seconds, not {raw!r}") from None
        else:
            values[name] = raw
    db_url = base.db_url
    if not flags.get("db") and section.get("db"):
        db_url = db_url_from(section["db"])
    # The HTTP API alone does no DHCP work unless told to: a hostsfile, or a backend
    # other than dnsmasq named (Kea's reads no hostsfile; the path is then unused).
    if values.get("http") is None or values.get("backend", "dnsmasq") != "dnsmasq":
        values.setdefault("hostsfile", Path(DEFAULT_HOSTSFILE))
    if values.get("network") is not None:
        from melange.validate import validate_network

        validate_network(values["network"])
    from melange.urls import parse_store_url

    parse_store_url(db_url)  # a malformed URL stops melanged at start, in one line
    values.setdefault("hostsfile", None)
    values["http_limits"] = http_limits(section)
    settings = DaemonSettings(db_url=db_url, release_hold=base.release_hold, **values)
    check_places(settings)
    if settings.http is not None:
        listen(settings)  # a bad address, or plain HTTP beyond loopback: refused at start
    return settings


LIMIT_KEYS = {f"http_{f.name}": f for f in fields(Limits)}


def http_limits(section) -> Limits:
    """The HTTP server's limits: each `http_<limit>` key of [melanged] over its default
    (melanged.http.listen.Limits); a limit is a positive number (whole for counts,
    sizes and the keep-alive timeout, which uvicorn takes in whole seconds)."""
    given: dict[str, Any] = {}
    for key, limit in LIMIT_KEYS.items():
        raw = section.get(key)
        if raw is None or raw == "":
            continue
        whole = limit.type == "int"
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            value = 0
        if not (value > 0 and (whole or math.isfinite(value))):
            kind = "a whole number" if whole else "a number of seconds"
            raise InvalidInput(f"{key} must be {kind} above 0, not {raw!r:.40}")
        given[limit.name] = value
    return Limits(**given)


def backend_options(settings: DaemonSettings) -> dict:
    """The settings named for the chosen backend (`kea_host_db` → `host_db`), those set."""
    prefix = f"{settings.backend}_"
    return {f.name[len(prefix):]: getattr(settings, f.name) for f in fields(settings)
            if f.name.startswith(prefix) and getattr(settings, f.name) not in (None, False)}


def listen(settings: DaemonSettings) -> Listen:
    """Where the HTTP API is to be served, checked (melanged.http.listen)."""
    assert settings.http is not None
    return Listen.parse(settings.http, settings.tls_cert, settings.tls_key,
                        insecure=settings.insecure_http)  # fmt: skip


def _boolean(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    value = _TRUTH.get(str(raw).strip().lower())
    if value is None:
        raise InvalidInput(f"{name} must be true or false, not {raw!r:.40}")
    return value


def check_places(settings: DaemonSettings) -> None:
    """Refuse at start (and at SIGHUP) the paths whose directories someone else could
    redirect: a link planted in /tmp, a directory open to all (melange.localfiles)."""
    from melange.filesync import refuse_special
    from melange.localfiles import check_directory

    for name in sorted(PATHS):
        path = getattr(settings, name)
        if path is not None:
            check_directory(path if name in ("hostsdir", "dns_hostsdir") else path.parent)
    for path in (settings.hostsfile, settings.optsfile, settings.addn_hosts):
        if path is not None:
            refuse_special(path)
