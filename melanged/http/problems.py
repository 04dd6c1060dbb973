"""Errors as RFC 9457 problem documents: the one place a failure becomes an HTTP status.

As the CLI maps each MelangeError to its exit code in one place, the API maps it
here to a status; the body carries the contract's code string and exit code, so
a client raises the same error (errors.BY_CODE) and exits as direct mode would.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from melange.errors import InvalidInput, MelangeError
from melange.paging import BadCursor

PROBLEM = "application/problem+json"
# Contract code -> HTTP status. A request that cannot be validated is 422 (RequestInvalid
# below); an invalid value the core refuses (a CIDR that is not one) is 400.
STATUS = {
    "invalid_input": 400,
    "not_found": 404,
    "conflict": 409,
    "exhausted": 409,
    "store_unavailable": 503,
    "schema_outdated": 503,
    "permission_denied": 403,
    "unauthenticated": 401,
    "drift": 409,
    "threshold": 409,
    "internal": 500,
}
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# The statuses every served operation may answer with a problem (its OpenAPI responses).
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 503)


class RequestInvalid(InvalidInput):
    """The request itself does not fit the operation (unknown or missing parameters,
    wrong types, a body that is not JSON): 422, still code invalid_input and exit 2."""

    status = 422


class TooLarge(InvalidInput):
    """A body beyond the route's limit: 413, code invalid_input, exit 2."""

    status = 413


class TooSlow(InvalidInput):
    """A body that did not arrive in time: 408, code invalid_input, exit 2."""

    status = 408


def status_of(error: MelangeError) -> int:
    """The HTTP status of a core error: by its class, else by its code. A cursor the
    list did not give is found only when the list is read, but is the request's fault."""
    if isinstance(error, BadCursor):
        return 422
    return getattr(error, "status", None) or STATUS.get(error.code, 500)


def document(status: int, code: str, exit_code: int, detail: str) -> dict[str, Any]:
    """The problem document (RFC 9457 members, and the contract's code and exit code)."""
    return {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "exit_code": exit_code,
    }


def problem(error: MelangeError) -> Response:
    """The response for a MelangeError: its status, its one-line message as the detail."""
    status = status_of(error)
    detail = error.message.splitlines()[0] if error.message else error.code
    return respond(status, error.code, error.exit_code, detail)


def respond(status: int, code: str, exit_code: int, detail: str) -> Response:
    """A problem response. After a body refused as too large or too slow the connection
    is closed, so its unread rest is never drained (a client could send gigabytes)."""
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="melange"'
    if status in (408, 413):
        headers["Connection"] = "close"
    body = json.dumps(document(status, code, exit_code, detail))
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def schema() -> dict[str, Any]:
    """The OpenAPI schema of a problem document."""
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code", "exit_code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "exit_code": {"type": "integer"},
        },
    }
