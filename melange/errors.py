"""Exceptions that carry the contract's exit codes.

Every failure a user can cause is a `MelangeError` subclass; the CLI (and the
socket server) map them to an exit code and a one-line message in one place,
so core code never prints or exits.
"""

from __future__ import annotations


class MelangeError(Exception):
    """Base of every expected failure; `exit_code` and `code` follow the contract."""

    exit_code = 1
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(MelangeError):
    exit_code = 2
    code = "invalid_input"


class NotFound(MelangeError):
    exit_code = 3
    code = "not_found"


class Conflict(MelangeError):
    exit_code = 4
    code = "conflict"


class Exhausted(MelangeError):
    exit_code = 5
    code = "exhausted"


class StoreUnavailable(MelangeError):
    exit_code = 6
    code = "store_unavailable"


class SchemaOutdated(StoreUnavailable):
    code = "schema_outdated"


class PermissionDenied(MelangeError):
    exit_code = 7
    code = "permission_denied"


class Unauthenticated(MelangeError):
    """No valid credentials (an HTTP API token that is missing, bad, expired,
    revoked, or used from an address it does not allow); exit 7 like
    PermissionDenied, since a script handles both as "not let in"."""

    exit_code = 7
    code = "unauthenticated"


class DriftFound(MelangeError):
    exit_code = 8
    code = "drift"


class ThresholdExceeded(MelangeError):
    exit_code = 9
    code = "threshold"


BY_CODE: dict[str, type[MelangeError]] = {
    cls.code: cls
    for cls in (
        MelangeError,
        InvalidInput,
        NotFound,
        Conflict,
        Exhausted,
        StoreUnavailable,
        SchemaOutdated,
        PermissionDenied,
        Unauthenticated,
        DriftFound,
        ThresholdExceeded,
    )
}
