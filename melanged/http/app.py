"""The HTTP application, built in a loop from the declaration (melange.operations).

Starlette, not FastAPI on top of it: the routes, their validation and the OpenAPI
document all come from the declaration (melanged.http.openapi), so FastAPI's
type-hint machinery would be unused, and its layers cost 0.1-0.2 ms of server CPU
a request (docs/performance.md, "Where an HTTPS allocation's time goes").

Every remote operation gets one route, at its declared method and path, served
by the same generic endpoint: authenticate the bearer token, check the role,
gather the parameters (path, then query or JSON body) and check them against the
declaration, run the operation with `operations.run` on a pool thread (the
core is synchronous), and answer with the declared status and media type.
Failures become problem documents in one place (melanged.http.problems).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from melange import __version__, paging, streaming
from melange.errors import MelangeError, PermissionDenied, Unauthenticated
from melange.operations import OPERATIONS, Operation
from melange.store import Store
from melange.transfer_stream import ndjson_lines
from melanged.batching import GROUP, grouped
from melanged.http import auth, inputs, openapi, problems, ui, upload
from melanged.http.listen import Limits

log = logging.getLogger("melanged.http")
JSON = "application/json"
NDJSON = "application/x-ndjson"
TEXT = "text/plain; charset=utf-8"
STREAM_CHUNK = 64 << 10
POOL_THREADS = 40  # requests running at once (Starlette's pool had as many)
# Group-committed writes (allocations, releases) run on a pool of their own this size.
# They are the requests that come in floods, and each thread running one wakes many
# times for its database's answers, every time taking the interpreter's lock back: 16
# at once on a server's blocks of their own made 2.7-2.9 ms of CPU per allocation and
# 257-277 a second on 2 cores, 8 at once 2.2 ms and 368 (docs/performance.md).
# Requests beyond it wait their turn; the others' pool is not theirs to fill.
WRITE_THREADS = 8
R = TypeVar("R")
Endpoint = Callable[[Request], Awaitable[Response]]


class BlockRef(StringConvertor):
    """A `{block:path}` segment: an id or a name (no slash), or a CIDR (one slash and a
    prefix length). Narrower than any path, so that `/v1/blocks/x/routes` is never
    block `x/routes`: a method that path lacks is 405 there, not another operation."""

    regex = r"[^/]+(?:/[0-9][0-9.]*)?"


register_url_convertor("ref", BlockRef())


class Service:
    """What the routes serve: the store, re-pointed by SIGHUP (melanged.daemon) without
    restarting the server; a request uses the store it started with throughout.

    `pool`: the threads the (synchronous) core runs on, POOL_THREADS requests at once,
    the others waiting their turn; `writes`, the group-committed writes' own
    (WRITE_THREADS). asyncio's own executor hand-off, not Starlette's
    `run_in_threadpool`: anyio's capacity limiter and cancel scopes around it cost
    more than the hand-off itself."""

    def __init__(self, store: Store, limits: Limits) -> None:
        self.store = store
        self.limits = limits
        self.pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="melanged-http")
        self.writes = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="melanged-http-w")

    async def in_pool(self, fn: Callable[..., R], *args: Any, name: str = "") -> R:
        """`fn(*args)` on one of the pool's threads, awaited: for operation `name`, on the
        group-committed writes' own pool (WRITE_THREADS) if it is one of them."""
        pool = self.writes if grouped(name) else self.pool
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def close(self) -> None:
        """Let the pools' threads end once their requests are answered."""
        self.pool.shutdown(wait=False)
        self.writes.shutdown(wait=False)


def build(service: Service) -> Starlette:
    """The application: /v1/health, /openapi.json, and one route per remote operation."""
    app = Starlette()
    spec_body = json.dumps(openapi.document()).encode()

    async def health(_request: Request) -> Response:
        return _json({"status": "ok", "version": __version__}, 200)

    async def openapi_json(_request: Request) -> Response:
        return Response(spec_body, media_type=JSON)

    app.router.add_route("/v1/health", health, methods=["GET"])
    app.router.add_route("/openapi.json", openapi_json, methods=["GET"])
    for path, names in routed().items():
        route = Route(path.replace(":path}", ":ref}"), dispatch(service, names),
                      methods=sorted(names))  # fmt: skip
        route.path = path  # matched by BlockRef, shown as declared
        app.router.routes.append(route)
    ui.mount(app, service)  # the web view at /ui/ (melanged.http.ui)
    app.add_exception_handler(MelangeError, _melange_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    return app


def routed() -> dict[str, dict[str, str]]:
    """Path -> method -> remote operation; the longest paths first, since
    `/v1/blocks/{block:path}` would otherwise swallow `/v1/blocks/{block:path}/routes`
    (a CIDR holds a slash). One route per path, so a 405 lists every method it has."""
    paths: dict[str, dict[str, str]] = {}
    for name, operation in OPERATIONS.items():
        if operation.http is not None:
            paths.setdefault(operation.http.path, {})[operation.http.method] = name
    return dict(sorted(paths.items(), key=lambda item: -len(item[0])))


def dispatch(service: Service, names: dict[str, str]) -> Endpoint:
    """The endpoint of a path: each method's operation (HEAD answered as GET)."""
    endpoints = {method: endpoint(service, name) for method, name in names.items()}
    if "GET" in endpoints:
        endpoints["HEAD"] = endpoints["GET"]

    async def serve(request: Request) -> Response:
        return await endpoints[request.method](request)

    return serve


def endpoint(service: Service, name: str) -> Endpoint:
    """The endpoint of operation `name`: the body read here (bounded in size and time),
    the rest in one call on the thread pool. An import's body may be large, so its
    token is checked before a byte of it is read."""
    operation = OPERATIONS[name]
    http = operation.http
    assert http is not None
    large = name == "import"

    async def serve(request: Request) -> Response:
        store, limits = service.store, service.limits  # as SIGHUP last set them
        body_limit = limits.max_import_body if large else limits.max_body
        client = request.client.host if request.client else ""
        header = request.headers.get("authorization")
        identity = await service.in_pool(admit, store, name, header, client) if large else None
        if large and upload.streamed(request):  # the body is the file, read as it comes
            return answer(operation, request, await upload.run(request, store, identity,
                                                                limits), None)  # fmt: skip
        body = b""
        if http.method in openapi.BODY_METHODS:
            body = await inputs.body_of(request, body_limit, limits.body_timeout)
        call = Call(name, operation, client, header, dict(request.path_params),
                    request.query_params.multi_items(), body)  # fmt: skip
        result, page = await service.in_pool(call.run, store, identity, name=name)
        return answer(operation, request, result, page)

    return serve


@dataclass(frozen=True)
class Call:
    """One request to an operation, as received; `run` does the work on a pool thread."""

    name: str
    operation: Operation
    client: str
    header: str | None
    path: dict[str, str]
    query: list[tuple[str, str]]
    body: bytes

    def run(self, store: Store, identity: Any) -> tuple[Any, paging.Page | None]:
        """Admit (unless already), gather and check the parameters, run the operation."""
        if identity is None:
            identity = admit(store, self.name, self.header, self.client)
        params, page = self.parameters()
        if page is not None:
            params["page"] = page
        if self.operation.http.media == NDJSON:  # type: ignore[union-attr]
            return exported(store, params, identity.name), None
        result = GROUP.run(store, self.name, params, actor=identity.name, via=auth.VIA)
        return result, page

    def parameters(self) -> tuple[dict[str, Any], paging.Page | None]:
        """The operation's parameters from the path, the query or the body, checked."""
        name, operation, items = self.name, self.operation, self.query
        http = operation.http
        assert http is not None
        params = inputs.from_path(name, operation, self.path)
        page = inputs.page_of(items) if http.paged else None
        if http.method in openapi.BODY_METHODS:
            if items:
                raise problems.RequestInvalid(f"{name} takes its parameters in a JSON body")
            params.update(inputs.from_body(name, self.body, params))
        else:
            skip = inputs.PAGE_NAMES if http.paged else ()
            params.update(inputs.from_query(name, operation, items, skip))
        return inputs.checked(name, operation, params), page


def exported(store: Store, params: dict[str, Any], actor: str) -> Iterator[dict]:
    """An export's entities as they are read (melange.streaming), on a thread of their own
    while the response is written; the first is waited for here, so a failure before
    it (no such network) is still a problem document, not a cut stream."""
    entities = streaming.pulled(
        lambda sink: streaming.produce(store, "export", params, sink, actor=actor, via=auth.VIA)
    )
    first = next(entities, None)
    return entities if first is None else chain([first], entities)


def admit(store: Store, name: str, header: str | None, client: str) -> Any:
    """The request's identity, if its token is good and its role enough; each refusal
    audited (actor: the token's name, or anonymous without a good token)."""
    try:
        identity = auth.identify(store, header, client)
    except Unauthenticated as error:
        auth.audit_refusal(store, auth.ANONYMOUS, name, client, error)
        raise
    try:
        auth.authorize(identity, name)
    except PermissionDenied as error:
        auth.audit_refusal(store, identity.name, name, client, error)
        raise
    return identity


def answer(
    operation: Operation, request: Request, result: Any, page: paging.Page | None
) -> Response:
    """The success response: the declared status, and the result as the declared media."""
    http = operation.http
    assert http is not None
    if http.media.startswith("text/plain"):
        return Response(result or "", status_code=http.status, media_type=TEXT)
    if http.media == NDJSON:
        return StreamingResponse(_encoded(ndjson_lines(result)), status_code=http.status,
                                 media_type=NDJSON)  # fmt: skip
    if page is not None:
        result = {"items": result, "next": next_link(request, page)}
    return _json(result, http.status)


async def _encoded(lines: Iterator[str]) -> AsyncIterator[bytes]:
    """The lines in chunks of about STREAM_CHUNK bytes, made on the event loop: a thread
    hop per line made a large export crawl; each chunk's send lets others run between."""
    buffer: list[str] = []
    size = 0
    for line in lines:
        buffer.append(line)
        size += len(line)
        if size >= STREAM_CHUNK:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


def next_link(request: Request, page: paging.Page) -> str | None:
    """The path and query of the page after `page` (its filters and limit kept)."""
    if page.next is None:
        return None
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
    items.append(("after", paging.encode(page.next)))
    return f"{request.url.path}?{urlencode(items)}"


def _json(value: Any, status: int) -> Response:
    return Response(json.dumps(value, default=str), status_code=status, media_type=JSON)


async def _melange_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, MelangeError)
    if problems.status_of(error) >= 500:
        log.error("%s: %s", error.code, error.message)
    return problems.problem(error)


async def _http_error(_request: Request, error: Exception) -> Response:
    """Starlette's own refusals (no such route, a method the route lacks)."""
    assert isinstance(error, HTTPException)
    code = "not_found" if error.status_code == 404 else "invalid_input"
    exit_code = 3 if error.status_code == 404 else 2
    detail = "no such resource" if error.status_code == 404 else str(error.detail)
    response = problems.respond(error.status_code, code, exit_code, detail)
    for key, value in (error.headers or {}).items():
        response.headers[key] = value
    return response


async def _internal_error(_request: Request, error: Exception) -> Response:
    """A bug: logged with its traceback, answered as a problem (exit 1), never a page."""
    log.error("internal error", exc_info=error)
    return problems.respond(500, "internal", 1, "internal error (see melanged's log)")
