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

_QUERY_SECRET = re.compile(r"([?&][^=&]*(?:password|passwd|pwd)[^=&]*=)([^&]*)", re.IGNORECASE)


def _password(url: str) -> str | None:
    """The password part of a URL as typed: between the user name's first `:` and the
    LAST `@` (an unencoded `@`, `:` or `/` in a password belongs to it), parse or not."""
    _, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0:
        return None
    _, colon, password = rest[:at].partition(":")
    return password if colon and password else None


def _secrets(url: str) -> list[str]:
    """Every password the URL holds: query arguments named like one (libpq takes
    `?password=`), then the user's."""
    found = [match.group(2) for match in _QUERY_SECRET.finditer(url) if match.group(2)]
    password = _password(_QUERY_SECRET.sub(r"\1***", url))
    return found + ([password] if password and password != "***" else [])


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages and logs.

    Done on the text, not by SQLAlchemy's parser: a URL it cannot parse was
    printed whole, and one whose password holds an `@` was masked up to that
    `@` only, showing the rest. Everything from the user name's `:` to the
    last `@` is hidden, so a password is never cut short (at worst more is).
    """
    url = _QUERY_SECRET.sub(r"\1***", url)
    if _password(url) is not None:
        scheme, _, rest = url.partition("://")
        at = rest.rfind("@")
        user = rest[:at].partition(":")[0]
        url = f"{scheme}://{user}:***@{rest[at + 1 :]}"
    return url


def redact(text: str, url: str) -> str:
    """`text` (a driver's message, say) with the URL and its passwords hidden."""
    text = text.replace(url, safe_url(url))
    for secret in _secrets(url):
        for form in sorted({secret, unquote(secret), quote(secret, safe="")}, key=len)[::-1]:
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
    if parsed.get_backend_name() != "sqlite" and url.count("@") > 1:
        # The parser takes all but the last `@` for the user and password, so part
        # of a password (or of a query argument) became the host: the driver's
        # messages would show it, and the wrong server would be asked.
        raise StoreUnavailable(
            f"the store URL {safe_url(url)} has more than one `@`; percent-encode any "
            "in a password or argument (@ as %40, and / as %2F, ? as %3F, # as %23)"
        )
    return parsed


def first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    message = str(original).strip().splitlines()
    return message[0] if message else type(original).__name__
