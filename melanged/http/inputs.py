"""A request's parameters, by the operation's declaration (melange.params).

Path segments and the query string are text; each value is converted to its
declared kind here (integers in decimal, booleans `true`/`false`, lists as
repeated keys), and a POST or PATCH body is a JSON object of the declared names
and JSON types. Everything is then checked against the declaration exactly as
the socket checks it; whatever does not fit is RequestInvalid (422, exit 2)
before anything touches the store.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

from starlette.requests import Request

from melange import paging
from melange import params as declared
from melange.errors import InvalidInput
from melange.operations import Operation
from melanged.http.problems import RequestInvalid, TooLarge, TooSlow

PAGE_NAMES = ("limit", "after")  # the query parameters of a paged list
_INTEGER = re.compile(r"[+-]?[0-9]{1,40}", re.ASCII)
_TRUTH = {"true": True, "false": False}


def _text_value(name: str, parameter: declared.Parameter, text: str) -> Any:
    """One path or query value as its declared kind (the check proper comes after)."""
    kind = parameter.kind
    if kind is int:
        if not _INTEGER.fullmatch(text):
            raise RequestInvalid(f"{name}: parameter {parameter.name} must be a whole number, "
                                 f"not {text[:40]!r}")  # fmt: skip
        return int(text)
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise RequestInvalid(f"{name}: parameter {parameter.name} must be a finite number, "
                                 f"not {text[:40]!r}")  # fmt: skip
        return number
    if kind is bool:
        if text not in _TRUTH:
            raise RequestInvalid(f"{name}: parameter {parameter.name} must be true or false, "
                                 f"not {text[:40]!r}")  # fmt: skip
        return _TRUTH[text]
    return text


def from_path(name: str, operation: Operation, values: dict[str, str]) -> dict[str, Any]:
    """The path's parameters (declared in the route, so always present)."""
    declared_params = operation.parameters()
    return {key: _text_value(name, declared_params[key], text) for key, text in values.items()}


def from_query(
    name: str, operation: Operation, items: list[tuple[str, str]], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The query string's parameters (lists as repeated keys, others once). Unknown names
    are kept, for the declaration check to name them."""
    declared_params = operation.parameters()
    found: dict[str, Any] = {}
    for key, text in items:
        if key in skip:
            continue
        parameter = declared_params.get(key)
        if parameter is None:
            found[key] = text
        elif parameter.kind is list:
            found.setdefault(key, []).append(text)
        elif key in found:
            raise RequestInvalid(f"{name}: parameter {key} is given more than once")
        else:
            found[key] = _text_value(name, parameter, text)
    return found


def from_body(name: str, body: bytes, path: dict[str, Any]) -> dict[str, Any]:
    """A JSON object body's parameters (an empty body: none), never one of the path's."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except RecursionError:
        raise RequestInvalid("the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestInvalid(f"the body is not JSON: {str(error)[:80]}") from None
    if not isinstance(value, dict):
        raise RequestInvalid("the body must be a JSON object")
    clash = sorted(key for key in value if key in path)
    if clash:
        raise RequestInvalid(f"{name}: {', '.join(clash)} is given in the path, not the body")
    return value


def checked(name: str, operation: Operation, params: dict[str, Any]) -> dict[str, Any]:
    """`params` checked against the declaration; anything wrong is RequestInvalid."""
    try:
        declared.check(name, operation.parameters(), params)
    except RequestInvalid:
        raise
    except InvalidInput as error:
        raise RequestInvalid(error.message) from None
    return params


def page_of(items: list[tuple[str, str]]) -> paging.Page:
    """The page a paged list's query asks for: `limit` (default 100) and `after`."""
    given = {key: text for key, text in items if key in PAGE_NAMES}
    if sum(1 for key, _ in items if key in PAGE_NAMES) > len(given):
        raise RequestInvalid("limit and after may each be given once")
    limit = paging.DEFAULT_LIMIT
    if "limit" in given:
        if not _INTEGER.fullmatch(given["limit"]):
            raise RequestInvalid(f"limit must be a whole number, not {given['limit'][:40]!r}")
        limit = int(given["limit"])
    try:
        paging.check_limit(limit)
        after = paging.decode(given["after"]) if "after" in given else None
    except InvalidInput as error:
        raise RequestInvalid(error.message) from None
    return paging.Page(limit, after)


async def body_of(request: Request, limit: int, timeout: float) -> bytes:
    """The request's body, at most `limit` bytes (TooLarge beyond), within `timeout`
    seconds (a client that trickles its body in loses the request: 408)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLarge(f"the body is larger than {limit} bytes")
    try:
        async with asyncio.timeout(timeout):  # no task of its own, unlike wait_for
            return await _read(request, limit)
    except TimeoutError:
        raise TooSlow(f"the body did not arrive within {timeout:g} seconds") from None


async def _read(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)

