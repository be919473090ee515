"""The console's JSON API for models and upstreams: those of ``MODELS_FILE`` (read-only) and
those kept in the database (``ModelCatalog``), which the console adds, edits and deletes.

An upstream's key never goes back to the browser: the listing shows it masked, and an edit
without ``api_key`` keeps the stored one (see ``ModelCatalog.save_upstream``). A console entry
whose name the file also uses is listed as ``shadowed`` (the file's entry routes).
"Test connection" per upstream: ``GET {base_url}/models`` with that upstream's own key.
Every route needs a session; every state change the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Body

from picgate.admin.guard import AdminDep, CsrfAdminDep
from picgate.admin.rendering import AdminRoute
from picgate.deps import CatalogDep, ConfigDep, EventsDep, ModelsDep, UpstreamDep
from picgate.errors import NotFound, UpstreamError
from picgate.routing.models_file import ModelEntry, UpstreamEntry
from picgate.settings_store import mask

router = APIRouter(prefix="/admin/api", route_class=AdminRoute)

# the fields of an UpstreamEntry / ModelEntry but its name (the path's): validated by the entry
# itself in ModelCatalog, so a refused value is a 400 naming the field, as the file's are
EntryBody = Annotated[dict[str, Any], Body()]


def _upstream_json(u: UpstreamEntry, origin: str, shadowed: bool) -> dict[str, Any]:
    return {
        "name": u.name,
        "base_url": u.base_url,
        "has_key": bool(u.api_key),
        "key": mask(u.api_key),
        "timeout_seconds": u.timeout_seconds,
        "retries": u.retries,
        "origin": origin,
        "shadowed": shadowed,
    }


def _model_json(m: ModelEntry, origin: str, shadowed: bool) -> dict[str, Any]:
    return {
        "name": m.name,
        "upstream": m.upstream,
        "upstream_model": m.target,
        "api": m.api,
        "params": m.params,
        "response_format": m.response_format,
        "drop_tools": m.drop_tools,
        "origin": origin,
        "shadowed": shadowed,
    }


@router.get("/models")
async def list_models(catalog: CatalogDep, config: ConfigDep, _admin: AdminDep) -> dict[str, Any]:
    settings = await config.acurrent()
    await catalog.acurrent()
    console = catalog.console()
    file = catalog.file
    upstreams = [_upstream_json(u, "file", False) for u in (file.upstreams if file else [])]
    upstreams += [
        _upstream_json(u, "console", catalog.file_upstream(u.name)) for u in console.upstreams
    ]
    models = [_model_json(m, "file", False) for m in (file.models if file else [])]
    models += [_model_json(m, "console", catalog.file_model(m.name)) for m in console.models]
    return {
        "source": str(catalog.source) if catalog.source else None,
        "gateway_model": settings.gateway_model_name,
        "upstreams": upstreams,
        "models": models,
    }


@router.put("/upstreams/{name}")
async def save_upstream(
    name: str, body: EntryBody, catalog: CatalogDep, events: EventsDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    entry = await anyio.to_thread.run_sync(lambda: catalog.save_upstream(name, body))
    events.info(f"🔌 已保存上游: {entry.name}")
    return {"ok": True, "upstream": _upstream_json(entry, "console", False)}


@router.delete("/upstreams/{name}")
async def delete_upstream(
    name: str, catalog: CatalogDep, events: EventsDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    await anyio.to_thread.run_sync(catalog.delete_upstream, name)
    events.info(f"🔌 已删除上游: {name}")
    return {"ok": True}


@router.put("/models/{name}")
async def save_model(
    name: str, body: EntryBody, catalog: CatalogDep, events: EventsDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    entry = await anyio.to_thread.run_sync(lambda: catalog.save_model(name, body))
    events.info(f"🧩 已保存模型: {entry.name}")
    return {"ok": True, "model": _model_json(entry, "console", False)}


@router.delete("/models/{name}")
async def delete_model(
    name: str, catalog: CatalogDep, events: EventsDep, _admin: CsrfAdminDep
) -> dict[str, Any]:
    await anyio.to_thread.run_sync(catalog.delete_model, name)
    events.info(f"🧩 已删除模型: {name}")
    return {"ok": True}


@router.post("/upstreams/{name}/test")
async def test_upstream(
    name: str,
    table: ModelsDep,
    catalog: CatalogDep,
    config: ConfigDep,
    upstream: UpstreamDep,
    events: EventsDep,
    _admin: CsrfAdminDep,
) -> dict[str, Any]:
    if table is None or name not in table.upstreams:
        # an upstream no model uses yet is not in the routing table: test it all the same
        entry = next((u for u in catalog.console().upstreams if u.name == name), None)
        if entry is None:
            raise NotFound(f"no upstream named {name!r}", code="upstream_not_found")
        settings = (await config.acurrent()).model_copy(
            update={
                "upstream_api_base": entry.base_url,
                "upstream_api_key": entry.api_key,
                "upstream_model_name": None,
            }
        )
    else:
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
