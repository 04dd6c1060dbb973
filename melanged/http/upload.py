"""A streamed import over HTTP: `POST /v1/import` whose body is the file itself.

The body (any media type but JSON: `text/plain`, `text/csv`, `application/x-ndjson`,
sent chunked or with a length) is handed to the import as it arrives, so neither the
server nor the client holds the file; `format` and `source` come in the query string.
The import reads the body on a pool thread, asking the event loop for each piece,
which must come within `body_timeout`. `max_import_body` bounds a JSON body, held
whole; a streamed one is held a piece at a time whatever its size (its addresses
are spooled to disk), so no limit applies to it. A JSON body is the import's
parameters, `text` the whole file, as before.
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
    loop = asyncio.get_running_loop()
    params["chunks"] = _pieces(request.stream(), loop, limits.body_timeout)
    return await run_in_threadpool(
        operations.run, store, NAME, params, actor=identity.name, via=auth.VIA
    )


def _pieces(body: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop,
            timeout: float) -> Iterator[str]:  # fmt: skip
    """The body's text, a piece as each arrives, for a pool thread: each read on the
    event loop, within `timeout` seconds."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while True:
            data = asyncio.run_coroutine_threadsafe(_next(body, timeout), loop).result()
            if data is None:
                break
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
