"""``Annotated`` dependency aliases shared by the routers."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request

from picgate import attribution
from picgate.attribution import ENV_KEY_NAME, Attribution
from picgate.config import Settings
from picgate.errors import AuthenticationFailed
from picgate.gateway.daily_limit import check_daily_limit
from picgate.services import Services


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in the thread pool, a hop per request
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def keys_match(given: str, expected: str) -> bool:
    """Constant-time comparison that does not leak the expected key's length."""
    a = hashlib.sha256(given.encode()).digest()
    b = hashlib.sha256(expected.encode()).digest()
    return hmac.compare_digest(a, b)


async def require_gateway_key(request: Request) -> Gateway:
    """The services and effective settings of an authorized ``/v1`` call (401 otherwise).

    One dependency that does it all: FastAPI solves every dependency of a chain on every request.
    It also starts the request's attribution (who, which chat, which key: recorded on every
    image the request stores) and, on POST, applies ``USER_DAILY_IMAGE_LIMIT`` (429).
    """
    services = request.app.state.services
    settings = await services.config.acurrent()
    expected = settings.gateway_api_key
    if not expected:
        raise AuthenticationFailed(
            "PicGate has no gateway API key, so every API call is refused. Set GATEWAY_API_KEY "
            "in the environment or generate a key in the admin console (/admin → settings).",
            code="gateway_key_not_set",
        )
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(
            "Missing gateway API key (GATEWAY_API_KEY): send "
            "'Authorization: Bearer <gateway key>'. This is PicGate's own key, not the "
            "upstream's.",
            code="missing_api_key",
        )
    if not keys_match(token.strip(), expected):
        raise AuthenticationFailed(
            "Incorrect gateway API key (GATEWAY_API_KEY) provided. PicGate refused the call "
            "before contacting the upstream; use the key shown in the PicGate admin console.",
            code="invalid_api_key",
        )
    who = Attribution.from_headers(request.headers, key_name=ENV_KEY_NAME)
    attribution.begin(who)
    if request.method == "POST" and settings.user_daily_image_limit:
        limit = settings.user_daily_image_limit
        await anyio.to_thread.run_sync(
            lambda: check_daily_limit(services.images, limit=limit, who=who)
        )
    return Gateway(services, settings)


@dataclass(frozen=True)
class Gateway:
    services: Services
    settings: Settings


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
