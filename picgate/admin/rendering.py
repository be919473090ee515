"""Templates, static files and the response headers of every admin route.

Templates live in the top-level ``admin_templates/`` folder (static files in its ``static/``); a
checkout (and the Lambda package) reads them there, an installed wheel from the package
``picgate.admin_templates`` it ships them as. Pages carry
a strict CSP (no inline script or style), so the JS reads its data from JSON blocks and the
stylesheet is a file.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Coroutine
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.routing import APIRoute

from picgate.errors import NotFound

if TYPE_CHECKING:
    from jinja2 import Environment

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
ADMIN_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}\.(css|js|svg|png|ico)$")


@functools.cache
def templates_root() -> Path:
    """The folder holding the templates: ``admin_templates/`` beside the ``picgate`` package
    in a checkout, else the installed package ``picgate.admin_templates``."""
    checkout = Path(__file__).resolve().parents[2] / "admin_templates"
    if (checkout / "base.html").is_file():
        return checkout
    try:
        root = Path(str(resources.files("picgate.admin_templates")))
    except ModuleNotFoundError:
        root = checkout
    if not (root / "base.html").is_file():
        raise RuntimeError(f"admin templates not found (expected {root}/base.html)")
    return root


@functools.cache
def environment() -> Environment:
    # imported on first render: API calls and Lambda cold starts never pay for Jinja
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(templates_root())),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static"] = static_url
    env.filters["filesize"] = filesize
    return env


def filesize(value: Any) -> str:
    """Bytes as people read them (1 decimal, binary units)."""
    size = float(value or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


@functools.cache
def static_url(name: str) -> str:
    """``/admin/static/{name}?v={content hash}``: a new file is a new URL."""
    data = (templates_root() / "static" / name).read_bytes()
    return f"/admin/static/{name}?v={hashlib.sha256(data).hexdigest()[:10]}"


def render(template: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code)


def static_file(name: str) -> FileResponse:
    if not _STATIC_NAME.match(name):
        raise NotFound("No such file.")
    path = templates_root() / "static" / name
    if not path.is_file():
        raise NotFound("No such file.")
    # the URL changes with the content (see static_url), so the browser may keep it
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


class AdminRoute(APIRoute):
    """A route whose responses carry the admin security headers (CSP, no caching, no framing)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            response = await handler(request)
            for name, value in ADMIN_HEADERS.items():
                if name not in response.headers:
                    response.headers[name] = value
            return response

        return with_headers
