"""Streamed reads: `export`, `ip list` and `history` handed on a record at a time.

One code path for every channel: `produce` runs the operation through
melange.operations (a list a page at a time, each page its own short read; an
export in one read transaction, its entities handed to a sink as the rows come),
and the CLI (direct), melanged's socket and its HTTP API each pass their own
sink: stdout, socket lines, a response body. Nothing holds more than a page.

This module imports neither SQLAlchemy nor the store's code at import time, so a
client (socket or HTTP) walks its pages with the same `walk` and `newest`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from melange.store import Store

# The operations whose results stream (a list or an export that grows with the store).
STREAMED = frozenset({"export", "ip.list", "history"})
PAGE_SIZE = 1000
Sink = Callable[[Any], object]
# A list's page after `cursor` (None: the first): its items and the next page's cursor.
Fetch = Callable[[Any], tuple[list[Any], Any]]


def produce(store: Store, name: str, params: dict[str, Any], sink: Sink, *,
            actor: str | None = None, via: str = "cli") -> None:  # fmt: skip
    """Run the streamed read `name`, handing each record (or export entity) to `sink`
    in the order the whole result has; errors before the first one raise as usual."""
    from melange import operations
    from melange.paging import Page

    if name == "export":
        operations.run(store, name, {**params, "sink": sink}, actor=actor, via=via)
        return

    def fetch(after: Any) -> tuple[list[Any], Any]:
        page = Page(limit=PAGE_SIZE, after=after)
        items = operations.run(store, name, {**params, "page": page}, actor=actor, via=via)
        return items, page.next

    limit = params.get("limit")
    records = newest(fetch, limit or 1000) if name == "history" else walk(fetch)
    for record in records:
        sink(record)


def walk(fetch: Fetch) -> Iterator[Any]:
    """Every item of a paged list, in order, one page in memory at a time."""
    cursor = None
    while True:
        items, cursor = fetch(cursor)
        yield from items
        if cursor is None:
            return


def newest(fetch: Fetch, limit: int) -> Iterator[Any]:
    """The newest `limit` records of a list paged newest first (history), oldest first:
    the pages are counted going back, then read again from the oldest, each turned round.
    Records carry an increasing `id`; those newer than the first pass's newest are left
    out of the second, so changes made meanwhile do not shift what is shown."""
    cursors: list[Any] = []
    counts: list[int] = []
    cursor, top, total = None, None, 0
    while total < limit:
        items, following = fetch(cursor)
        if not items:
            break
        top = items[0]["id"] if top is None else top
        cursors.append(cursor)
        counts.append(min(len(items), limit - total))
        total += counts[-1]
        if following is None:
            break
        cursor = following
    for cursor, count in reversed(list(zip(cursors, counts, strict=True))):
        items, _ = fetch(cursor)
        yield from reversed([item for item in items if item["id"] <= top][:count])


class Stopped(Exception):
    """The reader of a `pulled` stream went away: the producer stops where it is."""


def pulled(run: Callable[[Sink], object], depth: int = 8, batch: int = PAGE_SIZE) -> Iterator[Any]:
    """What `run(sink)` hands to its sink, as an iterator: `run` goes on in a thread of
    its own (its transaction open there) and waits while `depth` batches are unread, so
    a slow reader (an HTTP client) holds the producer, never the memory. An error in
    `run` is raised to the reader where it happened; a reader that stops early (closes
    the iterator) stops the producer at its next record."""
    channel: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    gone = threading.Event()
    pending: list[Any] = []

    def put(kind: str, value: Any) -> None:
        while not gone.is_set():
            try:
                channel.put((kind, value), timeout=0.5)
                return
            except queue.Full:
                continue
        raise Stopped()

    def sink(item: Any) -> None:
        pending.append(item)
        if len(pending) >= batch:
            put("items", pending[:])
            pending.clear()

    def work() -> None:
        try:
            run(sink)
            put("items", pending[:])
            put("end", None)
        except Stopped:
            pass
        except BaseException as error:  # noqa: BLE001  (handed to the reader, raised there)
            try:
                put("error", error)
            except Stopped:
                pass

    threading.Thread(target=work, name="stream", daemon=True).start()
    try:
        while True:
            kind, value = channel.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield from value
    finally:
        gone.set()
