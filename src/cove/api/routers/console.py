"""The web console (``/console``): a page and its two files, served as they are in
``cove/console`` (no build step). They need no token: the page signs in through the identity
service and then speaks the Trove API like any other client, with the same checks.

Each answer forbids everything the page does not need (its Content-Security-Policy allows
scripts, styles and requests of this origin only and no framing), is never cached past a
restart of the API (``no-cache``: the files change with Cove), and is never taken for another
type (``nosniff``).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse

from cove.common.errors import NotFound

router = APIRouter(include_in_schema=False)

#: The console's files and their types: nothing else under /console is served.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Response:
    kind = FILES.get(name)
    if kind is None:
        raise NotFound(f"The console has no file {name[:64]}.")
    data = resources.files("cove.console").joinpath(name).read_bytes()
    return Response(data, media_type=kind, headers=HEADERS)


@router.api_route("/console", methods=["GET", "HEAD"])
def console_page() -> Response:
    return _file("index.html")


@router.get("/console/")
def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", status_code=308)


@router.api_route("/console/{name}", methods=["GET", "HEAD"])
def console_file(name: str) -> Response:
    return _file(name)
