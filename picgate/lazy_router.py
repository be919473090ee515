"""A router that is imported and mounted on the first request under its prefix.

On Lambda a cold start serves whatever request woke the function, almost always the API
(``/v1/...``) or an image. The admin console is 28 routes over its own modules, Jinja2 and
argon2: importing it (55-59 ms on python3.13) and letting FastAPI set up its routes is work a
cold start that does not use it need not do. ``LazyRouter`` stands in its place in the route
list until a request under its prefix arrives; that request imports the router, swaps it in
where the stand-in was (the order an eager build gives), and is dispatched again through the
app's router, so it sees exactly what it would have seen. Later requests never meet it.

Contract: ``matches`` claims every path equal to ``prefix`` or below ``prefix + "/"``, for any
method; nothing else. The loader runs at most once per app.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send


class LazyRouter(BaseRoute):
    """Stands in for the router ``load()`` returns until a request under ``prefix`` needs it."""

    def __init__(self, app: FastAPI, prefix: str, load: Callable[[], APIRouter]) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.load = load
        self._lock = threading.Lock()

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] not in ("http", "websocket"):
            return Match.NONE, {}
        path = get_route_path(scope)
        if path == self.prefix or path.startswith(self.prefix + "/"):
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    def mount(self) -> None:
        """Import the router and put its routes where the stand-in was (idempotent)."""
        with self._lock:
            routes = self.app.router.routes
            if self not in routes:
                return
            router = self.load()
            # include_router appends: build the tail again so the order is the eager one
            position = routes.index(self)
            tail = routes[position + 1 :]
            del routes[position:]
            self.app.include_router(router)
            routes.extend(tail)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.mount()
        await self.app.router(scope, receive, send)
