"""The console's doorway to the image library: runs its synchronous work in a worker thread
and turns what it returns into plain dicts for JSON.

The actions and statistics themselves live in ``picgate.library.actions`` and
``picgate.library.stats``; this module takes the components it uses as arguments.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

from picgate.config import Settings
from picgate.library import actions
from picgate.library.actions import ConsoleActions
from picgate.library.library import ImageLibrary
from picgate.settings_store import ConfigService
from picgate.storage.archive import build_object_store
from picgate.storage.object_store import ConnectionCheck, ObjectStoreError

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


# the console's cache buttons: each a synchronous call, run in a worker thread
CACHE_ACTIONS: dict[str, Callable[[ConsoleActions], Any]] = {
    "clean-expired": lambda console: console.clean_expired(),
    "clear-local": lambda console: console.clear_local(),
    "upload-pending": lambda console: console.upload_pending(),
    "retry-failed": lambda console: console.retry_failed(),
    "archive-local": lambda console: console.archive_local(),
}


async def cache_action(library: ImageLibrary, action: Callable[[ConsoleActions], Any]) -> Any:
    """Run one of CACHE_ACTIONS off the event loop."""
    return await anyio.to_thread.run_sync(action, library.actions)


async def test_r2(settings: Settings) -> list[ConnectionCheck]:
    """The step-by-step R2 connection test of the settings page."""
    return await anyio.to_thread.run_sync(actions.test_r2, settings)


test_r2.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite its name


# -- statistics ------------------------------------------------------------------------------


async def cache_stats(library: ImageLibrary, config: ConfigService) -> dict[str, Any]:
    """total, local, r2, pending, failed, expired, disk_bytes, cap_bytes, cap_ratio, ..."""
    settings = await config.acurrent()
    found = await anyio.to_thread.run_sync(library.stats.cache_stats, settings)
    result: dict[str, Any] = plain(found)
    return result


async def dashboard_stats(library: ImageLibrary, config: ConfigService) -> dict[str, Any]:
    """``cache_stats`` plus requests_today, errors_today, images_today (UTC day) and
    ``last_cleanup_at`` (ISO, UTC)."""
    settings = await config.acurrent()
    found = await anyio.to_thread.run_sync(library.stats.dashboard_stats, settings)
    result: dict[str, Any] = plain(found)
    last = result.get("last_cleanup")
    when = last.get("last_run_at") if isinstance(last, dict) else last
    if isinstance(when, str) and when and not when.endswith(("Z", "+00:00")):
        when += "+00:00"  # stored naive UTC: say so, or browsers read it as local time
    result["last_cleanup_at"] = when or None
    return result


# -- R2 reachability (cached: the dashboard must not hit the bucket on every view) ------------

_r2_checked: dict[int, tuple[float, tuple[Any, ...], dict[str, Any]]] = {}


async def r2_health(library: ImageLibrary, settings: Settings) -> dict[str, Any]:
    """``{"configured", "reachable", "detail"}``, re-checked at most every R2_CHECK_SECONDS."""
    if not settings.r2_configured:
        return {"configured": False, "reachable": None, "detail": ""}
    signature = (
        settings.r2_endpoint,
        settings.r2_bucket_name,
        settings.r2_access_key_id,
        settings.r2_secret_access_key,
    )
    cached = _r2_checked.get(id(library))
    if cached and cached[1] == signature and time.monotonic() - cached[0] < R2_CHECK_SECONDS:
        return cached[2]
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
    _r2_checked[id(library)] = (time.monotonic(), signature, result)
    return result
