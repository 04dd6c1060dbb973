"""API tokens: the bearer credentials of melange's HTTP API.

A token is `mlg_<key_id>_<secret>`: `key_id` (12 hex characters) names the row
and is no secret (`token list` shows it, so a leaked string can be traced to its
token); `secret` is 256 random bits, shown once by `create` and kept nowhere.
The store keeps a random salt and SHA-256(salt + secret).

Why a fast hash and not a slow one (bcrypt, scrypt, argon2): a slow hash exists
to make guessing a *low-entropy* secret (a password) expensive once the hashes
leak. A 256-bit random secret cannot be guessed at any hashing speed, so the
slowness would buy nothing and would cost every HTTP request milliseconds of
CPU. The salt still makes each stored digest unique, so two rows can never be
compared with each other or against a precomputed table. Digests are compared
with `hmac.compare_digest`, whose time does not depend on where the first
differing byte is, so response times do not leak a digest byte by byte.

Every refusal of `authenticate` is `Unauthenticated` with one message, whether the
key is unknown, revoked, the secret wrong or the token expired: a caller learns
nothing about which tokens exist. Only a client outside a token's allowed
addresses is told so (it held a valid secret).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import netaddr
from sqlalchemy import Connection, bindparam, delete, insert, select, update

from melange.clock import utcnow
from melange.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from melange.models import api_tokens
from melange.prepared import Prepared
from melange.records import iso
from melange.validate import is_duration, parse_cidr, parse_duration, parse_ip

T = api_tokens.c
PREFIX = "mlg"
ROLES = ("reader", "writer", "admin")
MAX_ALLOWED_IPS = 64
# A name is a path segment of DELETE /v1/tokens/{name}: starting with a letter or
# digit keeps out `.` and `..`, which clients and proxies rewrite, and `-x`, which
# reads as an option on the command line.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_TOKEN = re.compile(r"mlg_([0-9a-f]{12})_([A-Za-z0-9_-]{1,128})", re.ASCII)
REFUSED = "invalid or expired token"
# last_used_at is written at most once a minute per token: exact enough to tell a
# token in use from a forgotten one, and no write on every request.
USE_GRANULARITY = timedelta(minutes=1)

# The lookup on every HTTP request: one row by its unique key_id, on the driver's cursor.
_LOOKUP = Prepared(
    select(T.name, T.role, T.salt, T.digest, T.allowed_ips, T.expires_at, T.last_used_at).where(
        T.key_id == bindparam("key_id")
    )
)
_MARK_USED = Prepared(
    update(api_tokens).where(T.key_id == bindparam("key_id")).values(last_used_at=bindparam("now"))
)


@dataclass(frozen=True)
class Identity:
    """Who a request acts as: the token's name (the audit trail's actor) and its role.

    `key_id` and `stale` (its last use was recorded over a minute ago, or never)
    are for `record_use`; they take no part in comparisons.
    """

    name: str
    role: str
    key_id: str = field(default="", compare=False)
    stale: bool = field(default=False, compare=False)


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode()).hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"{name!r:.70} is not a valid token name (1 to 64 letters, digits, '.', '-', '_', "
            "starting with a letter or digit)"
        )
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"{role!r:.40} is not a role (expected reader, writer or admin)")
    return role


def _networks(values: list[str] | tuple[str, ...]) -> list[str]:
    """The allowed CIDRs, canonical and each once; a bare address is its own /32 or /128."""
    if len(values) > MAX_ALLOWED_IPS:
        raise InvalidInput(f"at most {MAX_ALLOWED_IPS} allowed networks per token")
    found: list[str] = []
    for value in values:
        if isinstance(value, str) and "/" not in value:
            network = netaddr.IPNetwork(parse_ip(value, what="address or CIDR"))
        else:
            network = parse_cidr(value)
        if str(network) not in found:
            found.append(str(network))
    return found


def _expiry(expires: str | None) -> datetime | None:
    if expires is None:
        return None
    if not is_duration(expires):
        raise InvalidInput(f"{expires!r:.40} is not a duration (expected e.g. 30d, 12h, 90m)")
    seconds = parse_duration(expires)  # too long: its own message
    if seconds <= 0:
        raise InvalidInput("a token must expire after more than 0 seconds (e.g. 30d, 12h, 90m)")
    # Whole seconds, rounded up: the same moment on every backend (MariaDB keeps no
    # fraction) and never sooner than the operator asked for.
    end = utcnow() + timedelta(seconds=seconds)
    return end.replace(microsecond=0) + timedelta(seconds=1 if end.microsecond else 0)


def _record(row) -> dict:
    """A token as commands show it: never its salt, digest or secret."""
    return {
        "name": row.name,
        "key_id": row.key_id,
        "role": row.role,
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "expired": row.expires_at is not None and row.expires_at <= utcnow(),
        "allowed_ips": row.allowed_ips.split(",") if row.allowed_ips else [],
        "last_used_at": iso(row.last_used_at),
    }


def create(
    conn: Connection,
    name: str,
    *,
    role: str,
    expires: str | None = None,
    allowed_ips: list[str] | tuple[str, ...] = (),
) -> dict:
    """Create a token; its record with the secret under `token`, the one time it is seen.

    `expires` is a duration from now (30d, 12h, 90m); `allowed_ips` CIDRs (or
    addresses) the token may be used from, any address when empty.
    """
    _check_name(name)
    _check_role(role)
    networks = _networks(allowed_ips)
    expires_at = _expiry(expires)
    if conn.execute(select(T.id).where(T.name == name)).first() is not None:
        raise Conflict(f"a token named {name!r} already exists")
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    # A key_id that happens to be taken (1 in 2**48) fails the unique index; the
    # store runs the transaction again, which draws a new one.
    conn.execute(
        insert(api_tokens).values(
            name=name,
            key_id=key_id,
            role=role,
            salt=salt,
            digest=_digest(salt, secret),
            allowed_ips=",".join(networks) or None,
            created_at=utcnow(),
            expires_at=expires_at,
        )
    )
    record = _record(conn.execute(select(api_tokens).where(T.key_id == key_id)).one())
    return {**record, "token": f"{PREFIX}_{key_id}_{secret}"}


def list_tokens(conn: Connection) -> list[dict]:
    """Every token by name, without secrets (the store has none to show)."""
    return [_record(row) for row in conn.execute(select(api_tokens).order_by(T.name))]


def revoke(conn: Connection, name: str) -> dict:
    """Delete a token: from the next request on, it is refused as an unknown one."""
    row = conn.execute(select(api_tokens).where(T.name == name)).first()
    if row is None:
        raise NotFound(f"no token {name!r:.70}")
    conn.execute(delete(api_tokens).where(T.id == row.id))
    return _record(row)


@functools.lru_cache(maxsize=1024)
def _allowed(stored: str) -> tuple[netaddr.IPNetwork, ...]:
    """A row's allowed networks, parsed once per distinct value (every request reads them)."""
    return tuple(netaddr.IPNetwork(text) for text in stored.split(","))


def _client_allowed(stored: str | None, client: str) -> bool:
    if not stored:
        return True
    try:
        address = netaddr.IPAddress(client)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return False  # no address to check (a test client, a Unix socket)
    if address.version == 6 and address.is_ipv4_mapped():
        address = address.ipv4()  # a dual-stack listener's view of an IPv4 client
    return any(address in network for network in _allowed(stored))


def authenticate(conn: Connection, token: str, client: str) -> Identity:
    """Who `token` is, used from the address `client`; Unauthenticated when refused.

    One indexed lookup by key_id, a constant-time comparison, no write (see
    `record_use` for last_used_at). Unknown keys still cost a digest, so timing
    does not tell them from known ones.
    """
    match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise Unauthenticated(REFUSED)
    key_id, secret = match.groups()
    row = _LOOKUP.first(conn, key_id=key_id)
    salt, digest = (row.salt, row.digest) if row is not None else ("", "0" * 64)
    if not hmac.compare_digest(_digest(salt, secret), digest) or row is None:
        raise Unauthenticated(REFUSED)
    now = utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthenticated(REFUSED)
    if not _client_allowed(row.allowed_ips, client):
        raise Unauthenticated(f"token {row.name!r} may not be used from {client!r:.60}")
    stale = row.last_used_at is None or now - row.last_used_at >= USE_GRANULARITY
    return Identity(row.name, row.role, key_id=key_id, stale=stale)


def record_use(conn: Connection, identity: Identity) -> None:
    """Set the token's last_used_at to now (in a write transaction; when `identity.stale`,
    so a busy token costs one write a minute, not one per request)."""
    _MARK_USED.run(conn, key_id=identity.key_id, now=utcnow())
