"""The console's JSON API for named gateway keys and the models of ``MODELS_FILE``.

Keys: list with usage, create (the key is in this one answer only), revoke. Models: the file's
upstreams (never their keys: only whether one is set) and models, read-only, and "Test
connection" per upstream (``GET {base_url}/models`` with that upstream's own key).
Every route needs a session; every state change the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from fastapi import APIRouter
from pydantic import BaseModel, Field

from picgate.admin.guard import AdminDep, CsrfAdminDep
from picgate.admin.rendering import AdminRoute
from picgate.deps import ConfigDep, EventsDep, KeyRingDep, ModelsDep, UpstreamDep
from picgate.errors import NotFound, UpstreamError

router = APIRouter(prefix="/admin/api", route_class=AdminRoute)


class KeyCreate(BaseModel):
    name: str = Field(max_length=64)
    daily_images: int | None = Field(None, ge=1, le=10**9)


@router.get("/keys")
async def list_keys(keys: KeyRingDep, _admin: AdminDep) -> dict[str, Any]:
    rows = await anyio.to_thread.run_sync(keys.listing)
    return {"keys": [row.as_json() for row in rows]}


@router.post("/keys")
async def create_key(
    body: KeyCreate, keys: KeyRingDep, events: EventsDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    usage, key = await anyio.to_thread.run_sync(
        lambda: keys.create(body.name, daily_images=body.daily_images)
    )
    events.info(f"🔑 已创建网关密钥: {usage.name}")
    return {"ok": True, "key": key, **usage.as_json()}


@router.post("/keys/{name}/revoke")
async def revoke_key(
    name: str, keys: KeyRingDep, events: EventsDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    if not await anyio.to_thread.run_sync(keys.revoke, name):
        raise NotFound(f"no live key named {name!r}", code="key_not_found")
    events.info(f"🔑 已吊销网关密钥: {name}")
    return {"ok": True}


@router.get("/models")
async def list_models(table: ModelsDep, config: ConfigDep, _admin: AdminDep) -> dict[str, Any]:
    if table is None:
        settings = await config.acurrent()
        return {
            "source": None,
            "gateway_model": settings.gateway_model_name,
            "upstreams": [],
            "models": [],
        }
    return {
        "source": str(table.source) if table.source else None,
        "upstreams": [
            {
                "name": u.name,
                "base_url": u.base_url,
                "has_key": bool(u.api_key),
                "timeout_seconds": u.timeout_seconds,
                "retries": u.retries,
            }
            for u in table.upstreams.values()
        ],
        "models": [
            {
                "name": m.name,
                "upstream": m.upstream,
                "upstream_model": m.target,
                "api": m.api,
                "params": m.params,
            }
            for m in table.models.values()
        ],
    }


@router.post("/upstreams/{name}/test")
async def test_upstream(
    name: str,
    table: ModelsDep,
    config: ConfigDep,
    upstream: UpstreamDep,
    events: EventsDep,
    _admin: CsrfAdminDep,
) -> dict[str, Any]:
    if table is None:
        raise NotFound("no MODELS_FILE is set", code="upstream_not_found")
    settings = table.upstream_settings(await config.acurrent(), name)
    started = time.perf_counter()
    try:
        data = await upstream.get_json(settings, "models", timeout=15.0)
    except UpstreamError as exc:
        return {
            "ok": False,
            "status": exc.status_code,
            "latency_ms": round((time.perf_counter() - started) * 1000),
            "detail": events.redactor.text(exc.message),
        }
    listed = data.get("data") if isinstance(data, dict) else None
    return {
        "ok": True,
        "status": 200,
        "latency_ms": round((time.perf_counter() - started) * 1000),
        "models": len(listed) if isinstance(listed, list) else 0,
        "detail": "",
    }
