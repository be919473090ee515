"""The console's doorway to the storage and lifecycle code, imported lazily.

Operations and statistics belong to ``picgate.storage.operations`` and ``picgate.jobs``; this
module calls them whether they are sync (run in a worker thread) or async, and turns what they
return into plain dicts for JSON. A build without one of them answers 503 for that action
instead of failing to start.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

from picgate.config import Settings
from picgate.errors import NotConfigured
from picgate.services import Services

OPERATIONS = "picgate.storage.operations"
CLEANUP = "picgate.jobs.cleanup"
STATS = "picgate.jobs.stats"
R2_CHECK_SECONDS = 60.0


def plain(value: Any) -> Any:
    """A JSON-friendly copy of dataclasses, pydantic models, datetimes, dicts and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if hasattr(value, "model_dump"):
        return plain(value.model_dump())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or UTC).isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _find(module: str, name: str) -> Callable[..., Any] | None:
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if callable(found) else None


async def call(module: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``module.name(*args, **kwargs)`` off the loop; NotConfigured when it is absent."""
    fn = _find(module, name)
    if fn is None:
        raise NotConfigured(
            f"this PicGate build has no {module}.{name}", code="operation_unavailable"
        )
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
    if inspect.isawaitable(result):
        result = await result
    return result


# -- statistics ------------------------------------------------------------------------------


async def cache_stats(services: Services) -> dict[str, Any]:
    """total, local, r2, pending, failed, expired, disk_bytes, cap_bytes, cap_ratio, ..."""
    stats: dict[str, Any] = plain(await call(STATS, "cache_stats", services))
    return stats


async def dashboard_stats(services: Services) -> dict[str, Any]:
    """``cache_stats`` plus requests_today, errors_today and ``last_cleanup_at`` (ISO, UTC)."""
    stats: dict[str, Any] = plain(await call(STATS, "dashboard_stats", services))
    last = stats.get("last_cleanup")
    when = last.get("last_run_at") if isinstance(last, dict) else last
    if isinstance(when, str) and when and not when.endswith(("Z", "+00:00")):
        when += "+00:00"  # stored naive UTC: say so, or browsers read it as local time
    stats["last_cleanup_at"] = when or None
    return stats


# -- R2 reachability (cached: the dashboard must not hit the bucket on every view) ------------

_r2_checked: dict[int, tuple[float, tuple[Any, ...], dict[str, Any]]] = {}


async def r2_health(services: Services, settings: Settings) -> dict[str, Any]:
    """``{"configured", "reachable", "detail"}``, re-checked at most every R2_CHECK_SECONDS."""
    if not settings.r2_configured:
        return {"configured": False, "reachable": None, "detail": ""}
    signature = (
        settings.r2_endpoint,
        settings.r2_bucket_name,
        settings.r2_access_key_id,
        settings.r2_secret_access_key,
    )
    cached = _r2_checked.get(id(services))
    if cached and cached[1] == signature and time.monotonic() - cached[0] < R2_CHECK_SECONDS:
        return cached[2]
    from picgate.storage.archive import build_object_store
    from picgate.storage.object_store import ObjectStoreError

    store = build_object_store(settings, max_attempts=1)
    result: dict[str, Any]
    if store is None:
        result = {"configured": False, "reachable": None, "detail": ""}
    else:
        try:
            detail = await anyio.to_thread.run_sync(store.check_bucket)
            result = {"configured": True, "reachable": True, "detail": detail}
        except ObjectStoreError as exc:
            result = {"configured": True, "reachable": False, "detail": str(exc)}
    _r2_checked[id(services)] = (time.monotonic(), signature, result)
    return result
