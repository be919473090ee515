"""The console's JSON API for named gateway keys (the models are in ``models_api``).

Keys: list with usage, create (the key is in this one answer only), revoke.
Every route needs a session; every state change the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter
from pydantic import BaseModel, Field

from picgate.admin.guard import AdminDep, CsrfAdminDep
from picgate.admin.rendering import AdminRoute
from picgate.deps import EventsDep, KeyRingDep
from picgate.errors import NotFound

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
