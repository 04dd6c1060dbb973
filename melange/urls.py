"""Store URLs: parsed strictly, and shown with every password hidden.

A store URL carries the password of a database account. It reaches error
lines, melanged's log and (through a message) anything that records one, so
nothing prints a URL or a driver's message about one without passing here.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from sqlalchemy import exc
from sqlalchemy.engine import URL, make_url

from melange.errors import StoreUnavailable


def _password(url: str) -> str | None:
    """The password part of a URL as typed: between the user name's first `:` and the
    LAST `@` (an unencoded `@`, `:` or `/` in a password belongs to it), parse or not."""
    _, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0:
        return None
    _, colon, password = rest[:at].partition(":")
    return password if colon and password else None


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages and logs.

    Done on the text, not by SQLAlchemy's parser: a URL it cannot parse was
    printed whole, and one whose password holds an `@` was masked up to that
    `@` only, showing the rest. Query arguments named like a password
    (libpq takes `?password=`) are hidden too.
    """
    password = _password(url)
    if password is not None:
        scheme, _, rest = url.partition("://")
        at = rest.rfind("@")
        user = rest[:at].partition(":")[0]
        url = f"{scheme}://{user}:***@{rest[at + 1 :]}"
    return _QUERY_SECRET.sub(r"\1***", url)


_QUERY_SECRET = re.compile(r"([?&][^=&]*(?:password|passwd|pwd)[^=&]*=)[^&]*", re.IGNORECASE)


def redact(text: str, url: str) -> str:
    """`text` (a driver's message, say) with the URL and its password hidden."""
    password = _password(url)
    text = text.replace(url, safe_url(url))
    if password:
        for form in {password, unquote(password), quote(password, safe="")}:
            text = text.replace(form, "***")
    return text


def parse_store_url(url: str) -> URL:
    """The URL parsed, with its dialect found; a malformed one is exit 6 in one line.

    A bad port, a broken `[::1` or an unknown scheme raised ValueError and the
    like from deep in SQLAlchemy (exit 1, a traceback in melanged); the text of
    those errors may hold the URL, so only what is wrong is said, never the URL
    as typed.
    """
    try:
        parsed = make_url(url)
        parsed.get_dialect()
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise ValueError(f"port {parsed.port} is out of range")
    except exc.ArgumentError:
        raise StoreUnavailable(
            f"{safe_url(url)} is not a store URL (expected e.g. sqlite:///path, "
            "mysql+pymysql://user:pw@host/db, postgresql+psycopg://user@host/db)"
        ) from None
    except exc.NoSuchModuleError:
        scheme = url.partition("://")[0]
        raise StoreUnavailable(
            f"the store URL {safe_url(url)} names an unknown database kind {scheme!r}"
        ) from None
    except (ValueError, TypeError) as error:
        # With a password typed unencoded, the parser's "port" may be a piece of it.
        detail = "bad host or port" if _password(url) else redact(first_line(error), url)
        raise StoreUnavailable(f"the store URL {safe_url(url)} is malformed: {detail}") from None
    typed = _password(url)
    if typed is not None and parsed.password != unquote(typed):
        # The parser took part of the password for the host: the driver's messages
        # would show that part, and the server would be asked for the wrong host.
        raise StoreUnavailable(
            f"the password in the store URL {safe_url(url)} holds a character that must "
            "be percent-encoded (@ as %40, / as %2F, ? as %3F, # as %23)"
        )
    return parsed


def first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    message = str(original).strip().splitlines()
    return message[0] if message else type(original).__name__
