"""``Annotated`` dependency aliases shared by the routers."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request

from picgate.config import Settings
from picgate.errors import AuthenticationFailed
from picgate.keyring import current_key
from picgate.routing.table import ModelRoute, legacy_route
from picgate.services import Services


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in the thread pool, a hop per request
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

DEFAULT_KEY_NAME = "default"  # the name GATEWAY_API_KEY goes by in usage and image rows


def keys_match(given: str, expected: str) -> bool:
    """Constant-time comparison that does not leak the expected key's length."""
    a = hashlib.sha256(given.encode()).digest()
    b = hashlib.sha256(expected.encode()).digest()
    return hmac.compare_digest(a, b)


async def require_gateway_key(request: Request) -> Gateway:
    """The services and effective settings of an authorized ``/v1`` call (401 otherwise).

    One dependency that does it all: FastAPI solves every dependency of a chain on every request.
    """
    services: Services = request.app.state.services
    settings = await services.config.acurrent()
    expected = settings.gateway_api_key
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        if not expected:
            raise _no_key_set()
        raise AuthenticationFailed(
            "Missing gateway API key (GATEWAY_API_KEY): send "
            "'Authorization: Bearer <gateway key>'. This is PicGate's own key, not the "
            "upstream's.",
            code="missing_api_key",
        )
    if expected and keys_match(token, expected):
        current_key.set(None)
        return Gateway(services, settings)
    # a named key (picgate keys create): looked up by its hash, counted, limited
    named = await anyio.to_thread.run_sync(services.keys.admit, token)
    if named is not None and named.revoked:
        raise AuthenticationFailed(
            f"The gateway key {named.name!r} ({named.prefix}...) was revoked; ask the PicGate "
            "admin for a new key.",
            code="revoked_api_key",
        )
    if named is None:
        if not expected:
            raise _no_key_set()
        raise AuthenticationFailed(
            "Incorrect gateway API key (GATEWAY_API_KEY) provided. PicGate refused the call "
            "before contacting the upstream; use the key shown in the PicGate admin console.",
            code="invalid_api_key",
        )
    current_key.set(named.id)
    return Gateway(services, settings, key_name=named.name)


def _no_key_set() -> AuthenticationFailed:
    return AuthenticationFailed(
        "PicGate has no gateway API key, so every API call is refused. Set GATEWAY_API_KEY "
        "in the environment or generate a key in the admin console (/admin → settings).",
        code="gateway_key_not_set",
    )


@dataclass(frozen=True)
class Gateway:
    """An authorized ``/v1`` call: the services, the effective settings, and the name of the
    gateway key it was made with (``key_name``; ``"default"`` for GATEWAY_API_KEY)."""

    services: Services
    settings: Settings
    key_name: str = DEFAULT_KEY_NAME

    def route(self, model: Any) -> ModelRoute:
        """Where a request naming ``model`` goes (404 ``model_not_found`` with a models file
        that does not list it; without one, the single upstream as always)."""
        table = self.services.models
        if table is None:
            return legacy_route(self.settings, model)
        return table.route(self.settings, model)


GatewayAuth = Depends(require_gateway_key)
GatewayDep = Annotated[Gateway, GatewayAuth]


def public_base_url(request: Request, settings: Settings) -> str:
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    services: Services = request.app.state.services
    if not services.base_url_warned:
        services.events.warning(
            "⚠️ PUBLIC_BASE_URL 未设置，图片链接使用请求地址生成 (PUBLIC_BASE_URL is not set)"
        )
        services.base_url_warned = True
    return str(request.base_url).rstrip("/")
