"""melanged's web view: read-only pages at /ui/ for people, beside the API for programs.

Served by the same server, TLS and tokens as the API (melanged.http): a person
signs in with an API token (a reader's is enough) and browses networks, blocks
and their maps, addresses, the search box, history and the utilisation report.
Server-rendered HTML with one small stylesheet and no script: it works in any
browser, offline, and with JavaScript turned off (docs/guide.md, "Web view").
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from melanged.http.ui.pages import Pages
from melanged.http.ui.sessions import PATH


def mount(app: Starlette, service: Any) -> Pages:
    """Serve the web view at /ui/ in `app`, reading `service.store` (as the API does)."""
    pages = Pages(service)
    app.router.routes.append(Mount(PATH, routes=pages.routes()))
    return pages
