"""A streamed import over HTTP: `POST /v1/import` whose body is the file itself.

The body (any media type but JSON: `text/plain`, `text/csv`, `application/x-ndjson`,
sent chunked or with a length) is handed to the import as it arrives, so neither the
server nor the client holds the file; `format` and `source` come in the query string.
The import reads the body on a pool thread, asking the event loop for each piece (a
piece must come within `body_timeout`, the whole body stay within `max_import_body`).
A JSON body is the import's parameters, `text` the whole file, as before.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from melange import operations
from melange.errors import InvalidInput
from melanged.http import auth, inputs, problems
from melanged.http.listen import Limits

NAME = "import"


def streamed(request: Request) -> bool:
    """Whether an import's body is the file itself (anything but a JSON body)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media not in ("application/json", "")


async def run(request: Request, store: Any, identity: Any, limits: Limits) -> Any:
    """The import of the body as it arrives; its result (or what it raised)."""
    operation = operations.OPERATIONS[NAME]
    items = request.query_params.multi_items()
    params = inputs.from_query(NAME, operation, items)
    if "text" in params:
        raise problems.RequestInvalid("import takes its file in the body or in `text`, not both")
    params = inputs.checked(NAME, operation, params)
    params["chunks"] = _pieces(request.stream(), asyncio.get_running_loop(), limits)
    return await run_in_threadpool(
        operations.run, store, NAME, params, actor=identity.name, via=auth.VIA
    )


def _pieces(body: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop,
            limits: Limits) -> Iterator[str]:  # fmt: skip
    """The body's text, a piece as each arrives, for a pool thread: each read on the
    event loop, within `body_timeout`; past `max_import_body` bytes, TooLarge."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    try:
        while True:
            data = asyncio.run_coroutine_threadsafe(
                _next(body, limits.body_timeout), loop
            ).result()
            if data is None:
                break
            size += len(data)
            if size > limits.max_import_body:
                raise problems.TooLarge(f"the body is larger than {limits.max_import_body} bytes")
            yield decoder.decode(data)
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InvalidInput("the file is not UTF-8 text") from None


async def _next(body: AsyncIterator[bytes], timeout: float) -> bytes | None:
    """The body's next piece (None at its end), within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            return await anext(body)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise problems.TooSlow(f"the body stopped for {timeout:g} seconds") from None
