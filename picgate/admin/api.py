"""The console's JSON API under ``/admin/api``. Every route needs a session; every state change
also needs the ``X-CSRF-Token`` header. Errors leave in OpenAI's shape like the rest of PicGate.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from sqlalchemy import Connection, delete, select

from picgate.admin import backend, i18n, settings_form
from picgate.admin.guard import AdminDep, CsrfAdminDep
from picgate.admin.log_lines import in_language
from picgate.admin.rendering import AdminRoute
from picgate.db.engine import Database
from picgate.db.models import LOG_ENTRIES
from picgate.deps import ConfigDep, DatabaseDep, EventsDep, LibraryDep, UpstreamDep
from picgate.errors import NotConfigured, NotFound, Unprocessable, UpstreamError
from picgate.eventlog import EventLog
from picgate.library import gallery
from picgate.library.records import ImageFilter
from picgate.settings_store import generate_api_key, mask

router = APIRouter(prefix="/admin/api", route_class=AdminRoute)

DELETE_MODES: dict[str, dict[str, bool]] = {
    "local": {"local": True, "remote": False, "forget": False},
    "r2": {"local": False, "remote": True, "forget": False},
    "all": {"local": True, "remote": True, "forget": True},
}
LOG_LEVELS = ("INFO", "WARNING", "ERROR")


class SettingsUpdate(BaseModel):
    values: dict[str, Any]


class DeleteRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=500)
    mode: Literal["local", "r2", "all"]
    # "local" refuses (409 only_local_copy) for images not yet in R2 unless this is true
    force: bool = False


@router.get("/openapi.json", include_in_schema=False)
async def full_openapi(request: Request, _admin: AdminDep) -> dict[str, Any]:
    """The whole schema, admin routes included (the public ``/openapi.json`` leaves them out)."""
    schema: dict[str, Any] | None = getattr(request.app.state, "full_openapi", None)
    if schema is None:
        app = request.app
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        app.state.full_openapi = schema
    return schema


# -- dashboard -------------------------------------------------------------------------------


@router.get("/stats")
async def stats(library: LibraryDep, config: ConfigDep, _admin: AdminDep) -> dict[str, Any]:
    return await backend.dashboard_stats(library, config)


@router.get("/health")
async def health(library: LibraryDep, config: ConfigDep, _admin: AdminDep) -> dict[str, Any]:
    settings = await config.acurrent()
    return {
        "upstream": {
            "configured": settings.upstream_configured,
            "model_set": bool(settings.upstream_model_name),
        },
        "r2": await backend.r2_health(library, settings),
    }


# -- settings --------------------------------------------------------------------------------


@router.get("/settings")
async def read_settings(config: ConfigDep, _admin: AdminDep) -> dict[str, Any]:
    settings = await config.acurrent()
    return {"groups": settings_form.settings_view(settings)}


@router.put("/settings")
async def write_settings(
    body: SettingsUpdate, config: ConfigDep, events: EventsDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    settings = await anyio.to_thread.run_sync(settings_form.save, config, body.values)
    names = ", ".join(sorted(body.values))
    events.info(f"⚙️ 设置已保存: {names}")
    return {"ok": True, "groups": settings_form.settings_view(settings)}


@router.post("/settings/test-upstream")
async def test_upstream(
    config: ConfigDep, upstream: UpstreamDep, events: EventsDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    settings = await config.acurrent()
    if not settings.upstream_configured:
        return {"ok": False, "status": None, "latency_ms": None, "detail": "not_configured"}
    started = time.perf_counter()
    try:
        data = await upstream.get_json(settings, "models", timeout=15.0)
    except (UpstreamError, NotConfigured) as exc:
        return {
            "ok": False,
            "status": exc.status_code,
            "latency_ms": round((time.perf_counter() - started) * 1000),
            # the upstream may echo the key it was sent; the admin sees it masked only
            "detail": events.redactor.remembering(settings).text(exc.message),
        }
    latency = round((time.perf_counter() - started) * 1000)
    listed = data.get("data") if isinstance(data, dict) else None
    ids = [m.get("id") for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
    return {
        "ok": True,
        "status": 200,
        "latency_ms": latency,
        "models": len(ids),
        "model_found": bool(settings.upstream_model_name) and settings.upstream_model_name in ids,
        "detail": "",
    }


@router.post("/settings/test-r2")
async def test_r2(config: ConfigDep, _admin: CsrfAdminDep) -> dict[str, Any]:
    settings = await config.acurrent()
    if not settings.r2_configured:
        return {"ok": False, "steps": [], "detail": "not_configured"}
    steps = backend.plain(await backend.test_r2(settings))
    ok = bool(steps) and all(step.get("ok") for step in steps)
    return {"ok": ok, "steps": steps, "detail": ""}


@router.post("/settings/generate-key")
async def generate_key(
    config: ConfigDep, events: EventsDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    key = generate_api_key()
    await anyio.to_thread.run_sync(settings_form.save, config, {"gateway_api_key": key})
    events.info("🔑 已生成新的网关 API 密钥")
    # the one time the full key leaves the server: the admin copies it now or generates anew
    return {"ok": True, "key": key, "masked": mask(key)}


# -- cache -----------------------------------------------------------------------------------


@router.get("/cache")
async def cache(library: LibraryDep, config: ConfigDep, _admin: AdminDep) -> dict[str, Any]:
    return await backend.cache_stats(library, config)


@router.post("/cache/{action}")
async def cache_action(
    action: str, library: LibraryDep, config: ConfigDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    target = backend.CACHE_ACTIONS.get(action)
    if target is None:
        raise NotFound(f"Unknown cache action {action!r}.")
    result = await backend.cache_action(library, target)
    await anyio.to_thread.run_sync(library.events.flush)
    return {
        "ok": True,
        "action": action,
        "result": backend.plain(result),
        "stats": await backend.cache_stats(library, config),
    }


# -- images ----------------------------------------------------------------------------------


@router.get("/images")
async def images(
    library: LibraryDep,
    _admin: AdminDep,
    sort: str = "created",
    cursor: str | None = None,
    limit: int = Query(48, ge=1, le=gallery.MAX_LIMIT),
    user: str | None = Query(None, max_length=128),
    chat: str | None = Query(None, max_length=128),
    model: str | None = Query(None, max_length=128),
    q: str | None = Query(None, max_length=200),
) -> dict[str, Any]:
    narrow = ImageFilter(user_id=user, chat_id=chat, model=model, text=q)
    page = await library.list(sort=sort, cursor=cursor, limit=limit, narrow=narrow)
    return {"items": page.items, "next_cursor": page.next_cursor, "total": page.total}


@router.post("/images/delete")
async def delete_images(
    body: DeleteRequest, library: LibraryDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    flags = DELETE_MODES[body.mode]
    ids = list(dict.fromkeys(body.ids))
    result = await library.delete(ids, **flags, force=body.force)
    await anyio.to_thread.run_sync(library.events.flush)
    return {"ok": True, "mode": body.mode, "result": backend.plain(result)}


# -- logs ------------------------------------------------------------------------------------


def _read_logs(
    events: EventLog, db: Database, level: str | None, limit: int
) -> list[dict[str, Any]]:
    events.flush()

    def work(conn: Connection) -> list[dict[str, Any]]:
        query = select(LOG_ENTRIES).order_by(LOG_ENTRIES.c.id.desc()).limit(limit)
        if level:
            query = query.where(LOG_ENTRIES.c.level == level)
        return [
            {
                "id": e.id,
                "time": backend.plain(e.created_at),
                "level": e.level,
                "message": e.message,
            }
            for e in conn.execute(query)
        ]

    return db.read(work)


@router.get("/logs")
async def logs(
    request: Request,
    events: EventsDep,
    db: DatabaseDep,
    _admin: AdminDep,
    level: str = "",
    limit: int = Query(200, ge=1, le=1000),
) -> dict[str, Any]:
    """The newest log lines, in the console's language (stored in Chinese: ``log_lines``)."""
    level = level.upper()
    if level and level not in LOG_LEVELS:
        raise Unprocessable("level must be INFO, WARNING or ERROR", param="level")
    entries = await anyio.to_thread.run_sync(_read_logs, events, db, level or None, limit)
    lang = i18n.pick_language(request.cookies.get(i18n.COOKIE))
    for entry in entries:
        entry["message"] = in_language(entry["message"], lang)
    return {"entries": entries}


@router.post("/logs/clear")
async def clear_logs(events: EventsDep, db: DatabaseDep, _admin: CsrfAdminDep) -> dict[str, Any]:
    await anyio.to_thread.run_sync(events.flush)
    removed = await db.awrite(lambda c: c.execute(delete(LOG_ENTRIES)).rowcount)
    return {"ok": True, "removed": int(removed or 0)}
