"""`melange dhcp hosts/opts/config`: what the default DHCP backend renders from the store.

The renders themselves (formats, tags, order, limits) are the backend's, found
through the `melange.dhcp_backends` registry (melange.dhcp_backend); these are
the operations the CLI and the socket protocol call, whose signatures the
protocol is derived from (melange.params), so they stay as they are whichever
backend renders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from melange import dhcp_backend
from melange.prepared import is_lean

if TYPE_CHECKING:
    from sqlalchemy import Connection


def hosts_text(
    conn: Connection, network: str | None = None, sink: Callable[[bytes], object] | None = None
) -> str | None:
    """The hosts file as text; or, given `sink`, handed to it in UTF-8 chunks as they
    are rendered, so a million lines go to stdout at flat memory. On a lean connection
    (melange.lean) the default backend's lines come from melange.hostlines, their one
    home, without loading the backend (which imports the store)."""
    if is_lean(conn) and dhcp_backend.DEFAULT == "dnsmasq":
        from melange import hostlines

        batches = hostlines.lean_batches(conn, network)
        if sink is None:
            return "".join("".join(lines) for lines in batches)
        for lines in batches:
            sink("".join(lines).encode())
        return None
    return dhcp_backend.renderer().hosts_text(conn, network, sink)


def opts_text(conn: Connection, network: str | None = None) -> str:
    return dhcp_backend.renderer().opts_text(conn, network)


def config_text(
    conn: Connection, network: str | None = None, backend: str = dhcp_backend.DEFAULT
) -> str:
    """The configuration `backend`'s server needs (dnsmasq's options, Kea's fragment)."""
    return dhcp_backend.renderer(backend).config_text(conn, network)
