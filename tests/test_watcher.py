"""melanged notices every change, also a block deleted and another created between polls."""

from __future__ import annotations

from melange import blocks
from melange.store import Store
from tests.support.melanged_harness import Melanged, cli, wait_until


def _opts(server) -> str:
    return server.optsfile.read_text() if server.optsfile.exists() else ""


def test_a_block_replaced_within_one_poll_is_rendered(store_url, dnsmasq_server, tmp_path):
    """Block x deleted and y created in one transaction: on SQLite y took x's id, the
    watcher's fingerprint did not change, and the opts file kept x's router."""
    cli(store_url, "block", "create", "10.77.0.0/24", "--name", "x", "--network", "net1",
        "--gateway", "10.77.0.1")  # fmt: skip
    with Melanged(store_url, dnsmasq_server, tmp_path, network="net1") as daemon:
        daemon.wait_log("rendered|watching")
        wait_until(lambda: "10.77.0.1" in _opts(dnsmasq_server), what="x's router")
        store = Store(store_url)

        def replace(conn) -> None:
            blocks.delete_block(conn, "x")
            blocks.create(conn, "10.88.0.0/24", name="y", network="net1", gateway="10.88.0.1")

        store.write(replace)
        store.close()
        wait_until(lambda: "10.88.0.1" in _opts(dnsmasq_server), what="y's router")
        assert "10.77.0.1" not in _opts(dnsmasq_server)
    assert dnsmasq_server.alive()
