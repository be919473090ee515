"""The application factory. Importing this module builds nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from picgate import log_redaction
from picgate.config import Settings
from picgate.errors import PicGateError, error_body
from picgate.lazy_router import LazyRouter
from picgate.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from picgate.services import Services

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("picgate")


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build PicGate. ``transport`` replaces the outbound HTTP transport (tests)."""
    if services is None:
        services = Services(settings or Settings(), transport=transport)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with log_redaction.installed(lambda: services.events.redactor):
            await anyio.to_thread.run_sync(services.prepare)
            await services.start()
            try:
                yield
            finally:
                await services.stop()

    app = FastAPI(
        title="PicGate",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.openapi = public_openapi(app)  # type: ignore[method-assign]
    install_error_handlers(app, services)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=services.settings.max_request_body_mb * 2**20,
        timeout=services.settings.request_body_timeout_seconds,
    )
    app.add_middleware(SecurityHeadersMiddleware)
    if services.metrics is not None:
        from picgate.metrics import MetricsMiddleware

        app.add_middleware(MetricsMiddleware, metrics=services.metrics)

    from picgate.gateway.chat_routes import router as chat_router
    from picgate.gateway.routes import router as gateway_router
    from picgate.health import router as health_router
    from picgate.images.routes import router as images_router

    app.include_router(health_router)
    app.include_router(gateway_router)
    app.include_router(images_router)
    app.include_router(chat_router)
    if services.metrics is not None:  # without METRICS_TOKEN, /metrics is an unknown path
        from picgate.metrics import router as metrics_router

        app.include_router(metrics_router)
    if services.settings.serverless:  # a cold start seldom serves the console: see lazy_router
        app.router.routes.append(LazyRouter(app, ADMIN_PREFIX, admin_router))
    else:
        app.include_router(admin_router())
    # a person who opens the server's address in a browser wants the console
    app.add_api_route("/", root_redirect, methods=["GET", "HEAD"], include_in_schema=False)
    return app


def admin_router() -> APIRouter:
    from picgate.admin.routes import router

    return router


async def root_redirect() -> Response:
    return RedirectResponse("/admin", status_code=307)


def v1_hint(request: Request) -> str:
    """A hint when the request's method and path exist under ``/v1`` (a client whose base URL
    lacks ``/v1``); empty otherwise."""
    method, path = request.method, request.url.path
    if path.startswith("/v1/"):
        return ""
    wanted = "/v1" + path.rstrip("/")
    scope = {**request.scope, "path": wanted, "method": method}
    for route in request.app.router.routes:
        if route.matches(scope)[0] == Match.FULL:
            return (
                f" Did you mean {method} {wanted}? PicGate's OpenAI-compatible API is under "
                "/v1: the client's base URL must end in /v1 (for example http://host:5643/v1)."
            )
    return ""


ADMIN_PREFIX = "/admin"


def public_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``/openapi.json`` without the admin console: the public schema describes what clients
    call, not the console's API (an admin gets the full one at ``/admin/api/openapi.json``)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            full = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = without_paths(full, ADMIN_PREFIX)
        return app.openapi_schema

    return openapi


def without_paths(schema: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A copy of an OpenAPI ``schema`` without the paths under ``prefix`` and without the
    component schemas only they used."""
    paths = {p: v for p, v in schema.get("paths", {}).items() if not p.startswith(prefix)}
    components = schema.get("components", {}).get("schemas", {})
    ref = "#/components/schemas/"
    keep: set[str] = set()
    todo = [paths]
    while todo:  # walk $refs from the kept paths, through the schemas they reach
        text = json.dumps(todo.pop())
        for name in components:
            if name not in keep and f'"{ref}{name}"' in text:
                keep.add(name)
                todo.append(components[name])
    result = {**schema, "paths": paths}
    if components:
        kept = {k: v for k, v in components.items() if k in keep}
        result["components"] = {**schema["components"], "schemas": kept}
    return result


def _json_error(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, services: Services) -> None:
    @app.exception_handler(PicGateError)
    async def picgate_error(request: Request, exc: PicGateError) -> Response:
        events = services.events
        exc = events.redactor.error(exc)  # an upstream may echo a key back
        if exc.status_code >= 500:
            log.warning(
                "%s %s -> %d %s", request.method, request.url.path, exc.status_code, exc.message
            )
        if request.url.path.startswith("/v1/"):
            source = request.client.host if request.client else "unknown"
            events.api_error(exc, source)
        return _json_error(exc.status_code, exc.to_dict(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        message = f"Invalid request: {first.get('msg', 'invalid value')}"
        if loc:
            message += f" ({'.'.join(loc)})"
        body = error_body(message, error_type="invalid_request_error", code="invalid_value")
        body["error"]["param"] = ".".join(loc) or None
        return _json_error(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404:
            message = f"Unknown path: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        hint = v1_hint(request) if exc.status_code in (404, 405) else ""
        if hint:
            message += "." + hint
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _json_error(
            exc.status_code,
            error_body(message, error_type=error_type, code=code),
            getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        services.events.error(f"❌ 内部错误: {type(exc).__name__}")
        return _json_error(
            500,
            error_body("PicGate hit an internal error; see the server log.", code="internal_error"),
        )
