"""``Annotated`` dependency aliases shared by the routers."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from math import ceil
from typing import Annotated

from fastapi import Depends, Request

from picgate.config import Settings
from picgate.errors import AuthenticationFailed, KeyGuessingThrottled
from picgate.services import Services
from picgate.throttle import AddressThrottle


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


# wrong or missing gateway keys one address may send per window before it is refused (429):
# a client with a stale key retries a few times; someone guessing tried ~1000 keys a second
KEY_FAILURES_ALLOWED = 30
KEY_FAILURE_WINDOW_SECONDS = 60.0


def key_throttle(request: Request) -> AddressThrottle:
    """The app's wrong-key counter (per process; made on first use)."""
    throttle: AddressThrottle | None = getattr(request.app.state, "key_throttle", None)
    if throttle is None:
        throttle = AddressThrottle(limit=KEY_FAILURES_ALLOWED, window=KEY_FAILURE_WINDOW_SECONDS)
        request.app.state.key_throttle = throttle
    return throttle


async def require_gateway_key(request: Request) -> Gateway:
    """The services and effective settings of an authorized ``/v1`` call (401 otherwise).

    One dependency that does it all: FastAPI solves every dependency of a chain on every request.
    """
    services = request.app.state.services
    throttle = key_throttle(request)
    address = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(address)
    if wait > 0:  # before the comparison: a right guess must not get through either
        raise KeyGuessingThrottled(
            f"Too many wrong gateway API keys from this address; try again in {ceil(wait)} s.",
            headers={"Retry-After": str(ceil(wait))},
        )
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
        throttle.failed(address)
        raise AuthenticationFailed(
            "Missing gateway API key (GATEWAY_API_KEY): send "
            "'Authorization: Bearer <gateway key>'. This is PicGate's own key, not the "
            "upstream's.",
            code="missing_api_key",
        )
    if not keys_match(token.strip(), expected):
        throttle.failed(address)
        raise AuthenticationFailed(
            "Incorrect gateway API key (GATEWAY_API_KEY) provided. PicGate refused the call "
            "before contacting the upstream; use the key shown in the PicGate admin console.",
            code="invalid_api_key",
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
