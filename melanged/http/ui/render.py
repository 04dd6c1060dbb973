"""HTML out: the templates (Jinja2, every value escaped), the headers each answer
carries, the session cookie's attributes, and the links between pages.

Escaping is Jinja2's autoescape, on for every template: a block name, a hostname
or a history's parameters are text wherever they land, attribute values
included. The Content-Security-Policy then forbids what an escaping slip could
still do: no script at all (the pages have none), styles only from this server's
stylesheet (no inline `style`), forms posting only here, no framing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from melanged.http.ui.sessions import PATH, Session

HERE = Path(__file__).resolve().parent
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STYLESHEET = (HERE / "static" / "ui.css").read_bytes()


def segment(value: Any) -> str:
    """A value as one path segment of a link (a slash in it escaped too)."""
    return quote(str(value), safe="")


def link_of(hit: dict) -> str:
    """The page of a search hit (an address, an interface, a block or a network)."""
    kind = hit["kind"]
    if kind == "address":
        return f"{PATH}/addresses/{segment(hit['address'])}?block={hit['block_id']}"
    if kind == "interface":
        return f"{PATH}/interfaces/{segment(hit['interface'])}"
    if kind == "block":
        return f"{PATH}/blocks/{hit['block_id']}"
    return f"{PATH}/network?{urlencode({'name': hit['network'] or ''})}"


def query(values: dict[str, Any], **more: Any) -> str:
    """A query string of the non-empty values (a page's filters, and its cursor)."""
    items = {**values, **more}
    return urlencode({key: value for key, value in items.items() if value not in (None, "")})


def level(percent: float) -> str:
    """A utilisation's class: how full, for the bar's and the map cell's colour."""
    if percent >= 90:
        return "crit"
    if percent >= 75:
        return "warn"
    if percent > 0:
        return "some"
    return "none"


def cell_label(start: str, prefix: int) -> str:
    """What an IPv4 map cell says: the octet that tells it from its neighbours (the
    last of an address, the third of a /24, the second of a /16)."""
    return start.split("/")[0].split(".")[max(0, prefix // 8 - 1)]


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True, auto_reload=False)  # fmt: skip
    env.filters.update(segment=segment, level=level, cell_label=cell_label)
    env.globals.update(link_of=link_of, query=query, ui=PATH)
    return env


ENV = _environment()


def page(request: Request, template: str, context: dict[str, Any], *,
         session: Session | None, status: int = 200) -> Response:  # fmt: skip
    """A page in the layout: the signed-in parts (navigation, search, sign-out with
    its CSRF value) only with a session."""
    values = {"q": "", **context, "session": session, "path": request.url.path}
    html = ENV.get_template(template).render(values)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def redirect(location: str) -> Response:
    """303 See Other: after a POST, or to the sign-in page; the body is empty."""
    return RedirectResponse(location, status_code=303, headers=HEADERS)


def set_cookie(request: Request, response: Response, name: str, value: str,
               lifetime: float) -> None:  # fmt: skip
    """A cookie of the view: HttpOnly, SameSite=Strict, Secure over TLS, for /ui only,
    expiring after `lifetime` seconds."""
    response.set_cookie(name, value, max_age=int(lifetime), expires=int(lifetime), path=PATH,
                        secure=request.url.scheme == "https", httponly=True,
                        samesite="strict")  # fmt: skip


def clear_cookie(request: Request, response: Response, name: str) -> None:
    """The cookie `name` expired now, with the same attributes it was set with."""
    set_cookie(request, response, name, "", 0)


def stylesheet() -> Response:
    headers = {**HEADERS, "Cache-Control": "max-age=3600"}
    return Response(STYLESHEET, media_type="text/css", headers=headers)
