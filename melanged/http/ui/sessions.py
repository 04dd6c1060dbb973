"""The web view's sessions: a cookie naming a session kept in melanged's memory.

Signing in takes an API token (melange.tokens); the session keeps it, not a copy
of what it allowed, and every page checks it again (one indexed read): a token
revoked or expired closes its sessions at their next request. The cookie holds
only a random session id (256 bits), HttpOnly (no script reads it), Secure
over TLS, SameSite=Strict (no other site's page sends it) and expiring with the
session. Sessions end with melanged's process: signing in again is the cost of
a restart, and nothing about a session is ever written to disk.

CSRF: sign-in and sign-out are the only POSTs. Sign-out carries the session's
own CSRF value in a hidden field; sign-in, before there is a session, compares
its hidden field with a short-lived cookie set by the sign-in page (a double
submit), which another site can neither read nor set.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

SESSION_COOKIE = "melange_session"
LOGIN_COOKIE = "melange_login"
PATH = "/ui"
LIFETIME = 8 * 3600  # seconds: a working day, then sign in again
LOGIN_LIFETIME = 600  # seconds a sign-in form stays good
MAX_SESSIONS = 10_000  # the oldest go first beyond this: memory stays bounded


@dataclass
class Session:
    """One signed-in browser: the token it signed in with, and its CSRF value."""

    token: str
    csrf: str
    expires: float  # time.monotonic()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    """Equal secrets, compared in constant time; a missing one never matches."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


class Sessions:
    """The live sessions by id; safe from the event loop and the thread pool alike."""

    def __init__(self, lifetime: float = LIFETIME, limit: int = MAX_SESSIONS) -> None:
        self.lifetime = lifetime
        self.limit = limit
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, token: str) -> tuple[str, Session]:
        """A new session for `token`: its id (the cookie's value) and the session."""
        session_id = new_secret()
        session = Session(token, new_secret(), time.monotonic() + self.lifetime)
        with self._lock:
            self._by_id[session_id] = session
            while len(self._by_id) > self.limit:
                self._by_id.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session named by the cookie, or None (an expired one is dropped)."""
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is not None and session.expires <= time.monotonic():
                del self._by_id[session_id]
                session = None
        return session

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._by_id.pop(session_id or "", None)

    def __len__(self) -> int:
        return len(self._by_id)
