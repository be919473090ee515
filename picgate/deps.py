"""``Annotated`` dependency aliases: one per component a route uses.

Routes declare what they need (``library: LibraryDep``, ``events: EventsDep``...) and FastAPI
hands them that component of the app's container; no route sees the container itself. The
container is put on ``app.state.services`` by ``picgate.app.create_app``; it is read here
without importing it (only the edges import ``picgate.services``).

Every getter is ``async``: FastAPI runs a plain ``def`` dependency in the thread pool, a hop per
request.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from math import ceil
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request

from picgate.attribution import ENV_KEY_NAME, Attribution
from picgate.config import Settings
from picgate.db.engine import Database
from picgate.errors import AuthenticationFailed, KeyGuessingThrottled
from picgate.eventlog import EventLog
from picgate.gateway.daily_limit import check_daily_limit
from picgate.gateway.parts import GatewayParts
from picgate.gateway.upstream import Upstream
from picgate.keyring import KeyRing, KeyUsage
from picgate.library.library import ImageLibrary
from picgate.model_catalog import ModelCatalog
from picgate.routing.table import ModelRoute, ModelTable, legacy_route
from picgate.settings_store import ConfigService
from picgate.throttle import AddressThrottle


def _container(request: Request) -> Any:
    return request.app.state.services


async def get_library(request: Request) -> ImageLibrary:
    library: ImageLibrary = _container(request).library
    return library


async def get_events(request: Request) -> EventLog:
    events: EventLog = _container(request).events
    return events


async def get_config(request: Request) -> ConfigService:
    config: ConfigService = _container(request).config
    return config


async def get_database(request: Request) -> Database:
    db: Database = _container(request).db
    return db


async def get_upstream(request: Request) -> Upstream:
    upstream: Upstream = _container(request).upstream
    return upstream


async def get_keys(request: Request) -> KeyRing:
    keys: KeyRing = _container(request).keys
    return keys


async def get_models(request: Request) -> ModelTable | None:
    catalog: ModelCatalog = _container(request).catalog
    return await catalog.acurrent()


async def get_catalog(request: Request) -> ModelCatalog:
    catalog: ModelCatalog = _container(request).catalog
    return catalog


LibraryDep = Annotated[ImageLibrary, Depends(get_library)]
EventsDep = Annotated[EventLog, Depends(get_events)]
ConfigDep = Annotated[ConfigService, Depends(get_config)]
DatabaseDep = Annotated[Database, Depends(get_database)]
UpstreamDep = Annotated[Upstream, Depends(get_upstream)]
KeyRingDep = Annotated[KeyRing, Depends(get_keys)]
# the models of MODELS_FILE and the console; None when neither defines one
ModelsDep = Annotated[ModelTable | None, Depends(get_models)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]


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


@dataclass(frozen=True)
class Gateway:
    """What an authorized ``/v1`` call works with: the effective settings, the components the
    gateway's functions take, who is asking (from the headers and the key: ``who.key_name`` is
    the named key's name, ``"env"`` for GATEWAY_API_KEY; the route adds the body's
    ``model``/``user`` and passes it on, so every image it saves records it), and the models
    models of MODELS_FILE and the console (None when neither defines one)."""

    settings: Settings
    parts: GatewayParts
    who: Attribution
    models: ModelTable | None = None
    key: KeyUsage | None = None  # the named key's usage when it was admitted (None: env key)

    async def check_image_limits(self) -> None:
        """429 ``rate_limit_exceeded`` when this call may not make images today: the named
        key is at its daily image limit, or the user (or key) at ``USER_DAILY_IMAGE_LIMIT``.

        Called where an image call is decided (the Images API routes, a chat that can draw),
        never for a call that makes none (``/v1/models``, Open WebUI's task prompts answered
        locally or by ``TASK_MODEL``, a chat to an ``api: chat`` model of a models file).
        """
        if self.key is not None:
            KeyRing.check_daily_images(self.key)
        limit = self.settings.user_daily_image_limit
        if limit:
            rows, who = self.parts.library.rows, self.who
            await anyio.to_thread.run_sync(lambda: check_daily_limit(rows, limit=limit, who=who))

    def route(self, model: Any) -> ModelRoute:
        """Where a request naming ``model`` goes (404 ``model_not_found`` with a models file
        that does not list it; without one, the single upstream as always)."""
        if self.models is None:
            return legacy_route(self.settings, model)
        return self.models.route(self.settings, model)


async def require_gateway_key(request: Request) -> Gateway:
    """The components and effective settings of an authorized ``/v1`` call (401 otherwise).

    One dependency that does it all: FastAPI solves every dependency of a chain on every request.
    It also reads the request's attribution (who, which chat, which key). Daily image limits
    are not applied here but by ``Gateway.check_image_limits``, where an image call is decided.
    """
    throttle = key_throttle(request)
    address = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(address)
    if wait > 0:  # before the comparison: a right guess must not get through either
        raise KeyGuessingThrottled(
            f"Too many wrong gateway API keys from this address; try again in {ceil(wait)} s.",
            headers={"Retry-After": str(ceil(wait))},
        )
    container = _container(request)
    settings = await container.config.acurrent()
    expected = settings.gateway_api_key
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        throttle.failed(address)
        if not expected:
            raise _no_key_set()
        raise AuthenticationFailed(
            "Missing gateway API key (GATEWAY_API_KEY): send "
            "'Authorization: Bearer <gateway key>'. This is PicGate's own key, not the "
            "upstream's.",
            code="missing_api_key",
        )
    keys: KeyRing = container.keys
    key_id: str | None = None
    named: KeyUsage | None = None
    key_name = ENV_KEY_NAME  # what the one key of GATEWAY_API_KEY is recorded as
    if not (expected and keys_match(token, expected)):
        # a named key (picgate keys create): looked up by its hash and counted
        named = await keys.aadmit(token)
        if named is not None and named.revoked:
            raise AuthenticationFailed(
                f"The gateway key {named.name!r} ({named.prefix}...) was revoked; ask the "
                "PicGate admin for a new key.",
                code="revoked_api_key",
            )
        if named is None:
            throttle.failed(address)
            if not expected:
                raise _no_key_set()
            raise AuthenticationFailed(
                "Incorrect gateway API key (GATEWAY_API_KEY) provided. PicGate refused the call "
                "before contacting the upstream. Use PicGate's gateway key: it is printed once "
                "when PicGate generates it (the start banner) and shown once on the admin "
                "dashboard, then only masked; if it is lost, generate a new one in the admin "
                "console (/admin → settings) or set GATEWAY_API_KEY.",
                code="invalid_api_key",
            )
        key_id, key_name = named.id, named.name
    who = Attribution.from_headers(request.headers, key_name=key_name)
    library: ImageLibrary = container.library
    parts = GatewayParts(
        library=library,
        events=container.events,
        upstream=container.upstream,
        client=lambda: container.http,
        buffers=container.buffers,
        keys=keys,
        key_id=key_id,
    )
    catalog: ModelCatalog = container.catalog
    return Gateway(settings, parts, who, models=await catalog.acurrent(), key=named)


def _no_key_set() -> AuthenticationFailed:
    return AuthenticationFailed(
        "PicGate has no gateway API key, so every API call is refused. Set GATEWAY_API_KEY "
        "in the environment or generate a key in the admin console (/admin → settings).",
        code="gateway_key_not_set",
    )


GatewayAuth = Depends(require_gateway_key)
GatewayDep = Annotated[Gateway, GatewayAuth]


def public_base_url(request: Request, settings: Settings, events: EventLog) -> str:
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    events.warn_once(
        "⚠️ PUBLIC_BASE_URL 未设置，图片链接使用请求地址生成 (PUBLIC_BASE_URL is not set)"
    )
    return str(request.base_url).rstrip("/")
