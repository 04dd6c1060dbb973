"""Keyset pagination: a page of a list, and the opaque cursor to the next one.

A paged list is read `limit` rows at a time after the sort key of the last row
shown (never OFFSET), so a page costs the same at the millionth row as at the
first, and the server's memory per page never grows with the store. The core
list functions take a `Page` (a local parameter: an in-process caller gives
it, a client never does) and keep their own ORDER BY; the page adds the
"after this key" condition and the limit, and records the key of the next page.

The cursor is the sort key of the last row shown, as base64url JSON: opaque to
clients, checked on the way in (a tampered cursor is InvalidInput, never a
driver error). This module imports SQLAlchemy only inside the functions that
build queries, so a client may decode cursors without it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from melange.errors import InvalidInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR = 2048  # characters: a key of a few columns is far shorter
R = TypeVar("R")
Key = tuple[int | str, ...]


class BadCursor(InvalidInput):
    """A cursor `encode` did not make for this list (a client's typo, or tampering)."""

    def __init__(self) -> None:
        super().__init__("the cursor 'after' is not one this list gave")


@dataclass
class Page:
    """`limit` rows after the key `after` (None: from the start). After the read,
    `next` is the key to ask for the following page, None when this was the last."""

    limit: int = DEFAULT_LIMIT
    after: Key | None = None
    next: Key | None = field(default=None, init=False)

    def query(self, query: Any, columns: Sequence[Any], *, descending: bool = False) -> Any:
        """`query` (already ordered by `columns`, descending or not) limited to this page:
        the rows whose key comes after `after`, and one more than `limit` to learn whether
        another page follows."""
        if self.after is not None:
            query = query.where(_after(columns, _checked(self.after, columns), descending))
        return query.limit(self.limit + 1)

    def rows(self, rows: Sequence[R], key: Callable[[R], Key]) -> list[R]:
        """The page's rows out of `query`'s answer; sets `next` when there are more."""
        shown = list(rows[: self.limit])
        self.next = key(shown[-1]) if len(rows) > self.limit else None
        return shown


def _after(columns: Sequence[Any], key: Key, descending: bool) -> Any:
    """(c1, c2, ...) > (k1, k2, ...) spelt out, which every backend plans on its index:
    `c1 >= k1 AND (c1 > k1 OR (c2, ...) > (k2, ...))`, whose first term is a range an
    index on c1 can start from (the plain OR form made SQLite scan from the first row)."""
    from sqlalchemy import and_, or_

    first, value = columns[0], key[0]
    beyond = first < value if descending else first > value
    if len(columns) == 1:
        return beyond
    reached = first <= value if descending else first >= value
    return and_(reached, or_(beyond, _after(columns[1:], key[1:], descending)))


def _checked(key: Key, columns: Sequence[Any]) -> Key:
    """A cursor's key whose values fit its columns (a string for text, an integer within
    the column's range otherwise): what a driver would refuse is refused here first."""
    from sqlalchemy import BigInteger, SmallInteger, String

    from melange.models import Address

    if len(key) != len(columns):
        raise BadCursor()
    for value, column in zip(key, columns, strict=True):
        kind = column.type
        if isinstance(kind, String):
            ok = isinstance(value, str) and "\x00" not in value
        elif isinstance(kind, SmallInteger):
            ok = _integer(value, -(2**15), 2**15)
        elif isinstance(kind, BigInteger):
            ok = _integer(value, -(2**63), 2**63)
        elif isinstance(kind, Address):
            ok = _integer(value, 0, 2**128)
        else:
            ok = _integer(value, -(2**31), 2**31)
        if not ok:
            raise BadCursor()
    return key


def _integer(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def encode(key: Key) -> str:
    """The opaque cursor for a key."""
    text = json.dumps(list(key), separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str) -> Key:
    """The key a cursor holds; InvalidInput for anything `encode` did not make."""
    wrong = BadCursor()
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR:
        raise wrong
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise wrong from None
    if not isinstance(key, list) or not key or not all(
        isinstance(v, int | str) and not isinstance(v, bool) for v in key
    ):
        raise wrong
    return tuple(key)


def check_limit(limit: Any) -> int:
    """A page size a client asked for: a whole number from 1 to MAX_LIMIT."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return limit
