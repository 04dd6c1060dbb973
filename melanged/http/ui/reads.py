"""What each page shows, read on a pool thread: the core's operations, nothing else.

Every read goes through `operations.run` (the same declared operations the API
serves, role-checked and run as the signed-in token) or, for the two reads no
operation offers (a block's map, the search box), through a core function in
a read-only transaction. No address logic lives here: the pages group, sort
and cut what the core answers, and say it in HTML.
"""

from __future__ import annotations

from typing import Any

from melange import blockmap, operations, paging, search
from melange.clock import using
from melange.store import Store
from melange.tokens import Identity
from melanged.http import auth

HISTORY_PAGE = 50
ADDRESS_PAGE = 100
NETWORK_PREVIEW = 8  # blocks shown per network on the first page (the worst ones)


class Reader:
    """One request's reads, as the token signed in (its name recorded as the actor)."""

    def __init__(self, store: Store, identity: Identity) -> None:
        self.store = store
        self.identity = identity

    def run(self, name: str, **params: Any) -> Any:
        auth.authorize(self.identity, name)
        params = {key: value for key, value in params.items() if value is not None}
        return operations.run(self.store, name, params, actor=self.identity.name, via=auth.VIA)

    def read(self, function: Any, *args: Any) -> Any:
        """A core read function of a connection (a block's map, a search) on its own."""
        auth.authorize(self.identity, "block.show")  # what any reader may see
        self.store.require_existing()
        with self.store.faults(), using(self.store.clock):  # the store's clock, as `run`'s
            return self.store.run(lambda conn: function(conn, *args), write=False)

    def paged(self, name: str, after: str | None, limit: int, **params: Any) -> tuple[Any, str]:
        """One page of a paged list, and the cursor of the next ('' on the last)."""
        page = paging.Page(limit, paging.decode(after) if after else None)
        rows = self.run(name, page=page, **params)
        return rows, paging.encode(page.next) if page.next is not None else ""

    def networks(self) -> list[dict]:
        """Every network with its blocks, worst first; a network's worst block first."""
        return grouped(self.run("report.utilization"))

    def network(self, name: str | None) -> dict:
        rows = (
            self.run("report.utilization", network=name)
            if name
            else [row for row in self.run("report.utilization") if row["network"] is None]
        )
        found = grouped(rows)
        return found[0] if found else {"name": name, "blocks": [], "worst": 0.0}

    def block(self, ref: str, cell: str | None) -> dict:
        """A block's details, its map (of one cell of it, given `cell`) and the DHCP
        options dnsmasq gets for it."""
        shown = self.run("block.show", block=ref)
        shown["map"] = self.read(blockmap.block_map, str(shown["id"]), cell)
        shown["dhcp_options"] = []
        if shown["network"] and shown["utilization"]["kind"] == "leaf":
            tag = f"tag:{shown['network']}/{shown['cidr']},"
            text = self.run("dhcp.opts", network=shown["network"])
            shown["dhcp_options"] = [line[len(tag):] for line in text.splitlines()
                                     if line.startswith(tag)]  # fmt: skip
        return shown

    def address(self, address: str, block: str | None) -> dict:
        shown = self.run("ip.show", address=address, block=block)
        shown["history"] = self.run("history", address=address, limit=20)[::-1]
        return shown

    def search(self, q: str) -> dict:
        return self.read(search.search, q)


def grouped(rows: list[dict]) -> list[dict]:
    """Utilisation rows by network: each network's blocks worst first, the networks by
    their worst block (ties by name); blocks without a network under None, last."""
    networks: dict[str | None, list[dict]] = {}
    for row in rows:
        networks.setdefault(row["network"], []).append(row)
    found = []
    for name, blocks in networks.items():
        blocks.sort(key=lambda row: (-row["percent_used"], row["cidr"]))
        found.append({"name": name, "blocks": blocks, "worst": blocks[0]["percent_used"],
                      "size": sum(b["size"] for b in blocks if b["kind"] == "leaf")})  # fmt: skip
    found.sort(key=lambda net: (net["name"] is None, -net["worst"], net["name"] or ""))
    return found
