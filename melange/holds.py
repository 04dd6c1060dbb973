"""The one home of the release hold: when it ends, and which addresses it keeps live.

A hold's end is fixed when the address is released, from the releasing
client's `release_hold`, and stored in `ip_addresses.held_until`. Every
reader (another client with another config, melanged, `reconcile`) compares
that stored time with the clock, so they all agree on what is still held.
Nothing else in melange computes a hold cutoff.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from melange.clock import utcnow

if TYPE_CHECKING:  # the conditions are built on first use: melange.lean imports no SQLAlchemy
    from sqlalchemy.sql import ColumnElement

# What a store without a setting holds for, and what schema 0007 gave the holds
# it found (their release time plus this).
DEFAULT_HOLD_SECONDS = 48 * 3600


def ends(released_at: datetime, hold_seconds: int) -> datetime:
    """When a hold made at `released_at` by a client holding for `hold_seconds` ends."""
    return released_at + timedelta(seconds=hold_seconds)


def allocated(c) -> ColumnElement[bool]:
    """Rows of `c` allocated now (not released): what hosts files and `ip list` show."""
    return c.state == "allocated"


def live(c, now=None) -> ColumnElement[bool]:
    """Rows of `c` (ip_addresses' columns) still in use: allocated, or held until after now."""
    from sqlalchemy import or_

    return or_(allocated(c), c.held_until > (utcnow() if now is None else now))


def held(c, now=None) -> ColumnElement[bool]:
    """Rows whose hold has not ended yet (shown by `ip list --released`, counted as held)."""
    from sqlalchemy import and_

    return and_(c.state == "held", c.held_until > (utcnow() if now is None else now))


def expired(c, now=None) -> ColumnElement[bool]:
    """Rows whose hold has ended: free space, whether or not a cleanup has run yet."""
    from sqlalchemy import and_

    return and_(c.state == "held", c.held_until <= (utcnow() if now is None else now))
