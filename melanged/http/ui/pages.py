"""The web view's routes under /ui: sign-in and sign-out, and the read-only pages.

Each page is one endpoint: it finds the session (none: a redirect to the
sign-in page, with nothing of the store in it), reads what it shows on a pool
thread (melanged.http.ui.reads), and renders one template. A refusal of the
core (no such block, a bad filter) is the same page layout with its message
and the status the API would give.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from melange.errors import InvalidInput, MelangeError, NotFound, Unauthenticated
from melange.tokens import Identity
from melanged.http import auth
from melanged.http.problems import status_of
from melanged.http.ui import render
from melanged.http.ui.reads import ADDRESS_PAGE, HISTORY_PAGE, Reader
from melanged.http.ui.sessions import (
    LOGIN_COOKIE,
    LOGIN_LIFETIME,
    PATH,
    SESSION_COOKIE,
    Session,
    Sessions,
    new_secret,
    same,
)

MAX_FORM = 4096  # bytes of a sign-in or sign-out form
Page = Callable[[Request, Reader, Session], Awaitable[Response]]


class Pages:
    """The routes of the web view over a service's store (re-pointed by SIGHUP)."""

    def __init__(self, service: Any, sessions: Sessions | None = None) -> None:
        self.service = service
        self.sessions = sessions or Sessions()

    def routes(self) -> list[BaseRoute]:
        pages: dict[str, Page] = {
            "/": networks, "/network": network, "/blocks/{block_id:int}": block, "/block": block,
            "/addresses": addresses, "/addresses/{address}": address,
            "/interfaces/{vif}": interface, "/search": search, "/history": history,
            "/report": report,
        }  # fmt: skip
        routes: list[BaseRoute] = [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/static/ui.css", stylesheet, methods=["GET"]),
        ]
        routes += [Route(path, self.guarded(page), methods=["GET"]) for path, page in pages.items()]
        routes.append(Route("/{rest:path}", self.guarded(missing), methods=["GET", "POST"]))
        return routes

    # Sessions

    async def identity(self, request: Request) -> tuple[Session, Identity] | None:
        """The request's session and who it acts as; None without a live one (a token
        revoked or expired since sign-in closes the session here)."""
        session_id = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(session_id)
        if session is None:
            return None
        try:
            identity = await run_in_threadpool(
                auth.identify, self.service.store, f"Bearer {session.token}", _client(request)
            )
        except Unauthenticated:
            self.sessions.close(session_id)
            return None
        return session, identity

    def guarded(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        """`page` behind the session check: without a session, only a redirect."""

        async def serve(request: Request) -> Response:
            session = None
            try:
                found = await self.identity(request)
                if found is None:
                    response = render.redirect(f"{PATH}/login")
                    render.clear_cookie(request, response, SESSION_COOKIE)
                    return response
                session, identity = found
                return await page(request, Reader(self.service.store, identity), session)
            except MelangeError as error:  # the store unavailable, a block not found, ...
                return render.page(request, "error.html", {"error": error},
                                   session=session, status=status_of(error))  # fmt: skip

        return serve

    async def login_form(self, request: Request) -> Response:
        if await self.identity(request) is not None:
            return render.redirect(f"{PATH}/")
        return self._login_page(request, None, 200)

    def _login_page(self, request: Request, error: str | None, status: int) -> Response:
        csrf = new_secret()
        response = render.page(request, "login.html", {"csrf": csrf, "error": error},
                               session=None, status=status)  # fmt: skip
        render.set_cookie(request, response, LOGIN_COOKIE, csrf, LOGIN_LIFETIME)
        return response

    async def login(self, request: Request) -> Response:
        """Sign in: the form's CSRF value must match its cookie, and the token be good."""
        form = await _form(request)
        if form is None or not same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
            return self._login_page(request, "The sign-in form expired; try again.", 403)
        token = form.get("token", "").strip()
        client = _client(request)
        try:
            await run_in_threadpool(auth.identify, self.service.store, f"Bearer {token}", client)
        except Unauthenticated as error:
            await run_in_threadpool(auth.audit_refusal, self.service.store, auth.ANONYMOUS,
                                    "ui.login", client, error)  # fmt: skip
            return self._login_page(request, error.message, 401)
        except MelangeError as error:  # the store unavailable: said on the form
            return self._login_page(request, error.message, status_of(error))
        session_id, _ = self.sessions.open(token)
        response = render.redirect(f"{PATH}/")
        render.set_cookie(request, response, SESSION_COOKIE, session_id, self.sessions.lifetime)
        render.clear_cookie(request, response, LOGIN_COOKIE)
        return response

    async def logout(self, request: Request) -> Response:
        """Sign out: the session's own CSRF value must come with the form."""
        session_id = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(session_id)
        form = await _form(request)
        if session is not None and (form is None or not same(form.get("csrf"), session.csrf)):
            return render.page(request, "error.html",
                               {"error": InvalidInput("the sign-out form is not this session's")},
                               session=session, status=403)  # fmt: skip
        self.sessions.close(session_id)
        response = render.redirect(f"{PATH}/login")
        render.clear_cookie(request, response, SESSION_COOKIE)
        return response


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


async def _form(request: Request) -> dict[str, str] | None:
    """A small urlencoded form (None when too big or not a form)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    try:
        fields = parse_qs(body.decode(), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return {key: values[0] for key, values in fields.items()}


def _query(request: Request, name: str) -> str | None:
    """A query parameter, None when absent or blank (an empty filter box)."""
    value = request.query_params.get(name, "").strip()
    return value or None


async def stylesheet(_request: Request) -> Response:
    return render.stylesheet()


async def missing(request: Request, _reader: Reader, session: Session) -> Response:
    error = NotFound("no such page")
    return render.page(request, "error.html", {"error": error}, session=session, status=404)


async def networks(request: Request, reader: Reader, session: Session) -> Response:
    found = await run_in_threadpool(reader.networks)
    return render.page(request, "networks.html", {"networks": found}, session=session)


async def network(request: Request, reader: Reader, session: Session) -> Response:
    found = await run_in_threadpool(reader.network, _query(request, "name"))
    return render.page(request, "network.html", {"network": found}, session=session)


async def block(request: Request, reader: Reader, session: Session) -> Response:
    """A block by id (/blocks/ID), or by name or CIDR (/block?ref=...)."""
    ref = str(request.path_params.get("block_id", _query(request, "ref") or ""))
    shown = await run_in_threadpool(reader.block, ref, _query(request, "cell"))
    return render.page(request, "block.html", {"block": shown}, session=session)


async def addresses(request: Request, reader: Reader, session: Session) -> Response:
    filters = {name: _query(request, name) for name in ("block", "network", "mac", "interface")}
    released = request.query_params.get("released") == "true"
    rows, after = await run_in_threadpool(reader.paged, "ip.list", _query(request, "after"),
                                          ADDRESS_PAGE, released=released, **filters)  # fmt: skip
    context = {"rows": rows, "filters": filters, "released": released, "after": after}
    return render.page(request, "addresses.html", context, session=session)


async def address(request: Request, reader: Reader, session: Session) -> Response:
    shown = await run_in_threadpool(reader.address, request.path_params["address"],
                                    _query(request, "block"))  # fmt: skip
    return render.page(request, "address.html", {"address": shown}, session=session)


async def interface(request: Request, reader: Reader, session: Session) -> Response:
    shown = await run_in_threadpool(reader.run, "interface.show", vif=request.path_params["vif"])
    return render.page(request, "interface.html", {"interface": shown}, session=session)


async def search(request: Request, reader: Reader, session: Session) -> Response:
    """The hits of the search box; one address found by its IP or MAC, or a single hit
    of any kind, is opened at once."""
    q = request.query_params.get("q", "")
    found = await run_in_threadpool(reader.search, q)
    hits = found["hits"]
    addresses = [hit for hit in hits if hit["kind"] == "address"]
    if len(hits) == 1 or (found["as"] != "text" and len(addresses) == 1):
        return render.redirect(render.link_of(addresses[0] if addresses else hits[0]))
    return render.page(request, "search.html", {"q": q, "hits": hits}, session=session)


async def history(request: Request, reader: Reader, session: Session) -> Response:
    filters = {name: _query(request, name) for name in ("block", "address", "since")}
    rows, after = await run_in_threadpool(reader.paged, "history", _query(request, "after"),
                                          HISTORY_PAGE, **filters)  # fmt: skip
    context = {"rows": rows, "filters": filters, "after": after}
    return render.page(request, "history.html", context, session=session)


async def report(request: Request, reader: Reader, session: Session) -> Response:
    above_text = _query(request, "above")
    above = None
    if above_text is not None:
        try:
            above = float(above_text)
        except ValueError:
            raise InvalidInput(f"{above_text[:40]!r} is not a percentage") from None
    rows = await run_in_threadpool(reader.run, "report.utilization", above=above)
    rows.sort(key=lambda row: (-row["percent_used"], row["network"] or "", row["cidr"]))
    context = {"rows": rows, "above": above_text or ""}
    return render.page(request, "report.html", context, session=session)
