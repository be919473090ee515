"""The console's doorway to the storage and lifecycle code.

Operations and statistics belong to ``picgate.storage.operations`` and ``picgate.jobs``; this
module hands them the components they take, runs them in a worker thread (they are
synchronous), and turns what they return into plain dicts for JSON.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

from picgate.config import Settings
from picgate.jobs import stats
from picgate.services import Services
from picgate.storage import operations
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


def _upload_pending(services: Services) -> dict[str, int]:
    return operations.upload_pending(
        db=services.db, archive=services.archive, uploads=services.uploads
    )


def _retry_failed(services: Services) -> dict[str, int]:
    return operations.retry_failed(
        db=services.db, archive=services.archive, events=services.events, uploads=services.uploads
    )


def _archive_local(services: Services) -> dict[str, int]:
    return operations.archive_local(
        db=services.db, archive=services.archive, events=services.events, uploads=services.uploads
    )


# the console's cache buttons: each a synchronous call, run in a worker thread
CACHE_ACTIONS: dict[str, Callable[[Services], Any]] = {
    "clean-expired": lambda services: services.cleanup.clean_expired(),
    "clear-local": lambda services: services.cleanup.clear_local(),
    "upload-pending": _upload_pending,
    "retry-failed": _retry_failed,
    "archive-local": _archive_local,
}


async def cache_action(services: Services, action: Callable[[Services], Any]) -> Any:
    """Run one of CACHE_ACTIONS off the event loop."""
    return await anyio.to_thread.run_sync(action, services)


async def delete_images(
    services: Services, ids: list[str], *, local: bool, remote: bool, forget: bool
) -> dict[str, int]:
    """``picgate.storage.operations.delete_images`` with this process's components."""

    def work() -> dict[str, int]:
        return operations.delete_images(
            ids,
            db=services.db,
            cache=services.cache,
            images=services.images,
            archive=services.archive,
            events=services.events,
            local=local,
            remote=remote,
            forget=forget,
        )

    return await anyio.to_thread.run_sync(work)


async def test_r2(settings: Settings) -> list[ConnectionCheck]:
    """The step-by-step R2 connection test of the settings page."""
    return await anyio.to_thread.run_sync(operations.test_r2, settings)


test_r2.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite its name


# -- statistics ------------------------------------------------------------------------------


def _cache_stats(services: Services) -> dict[str, Any]:
    return stats.cache_stats(
        db=services.db,
        cache=services.cache,
        archive=services.archive,
        settings=services.config.current(),
    )


def _dashboard_stats(services: Services) -> dict[str, Any]:
    return stats.dashboard_stats(
        db=services.db,
        cache=services.cache,
        archive=services.archive,
        events=services.events,
        settings=services.config.current(),
    )


async def cache_stats(services: Services) -> dict[str, Any]:
    """total, local, r2, pending, failed, expired, disk_bytes, cap_bytes, cap_ratio, ..."""
    result: dict[str, Any] = plain(await anyio.to_thread.run_sync(_cache_stats, services))
    return result


async def dashboard_stats(services: Services) -> dict[str, Any]:
    """``cache_stats`` plus requests_today, errors_today, images_today (UTC day) and
    ``last_cleanup_at`` (ISO, UTC)."""
    result: dict[str, Any] = plain(await anyio.to_thread.run_sync(_dashboard_stats, services))
    last = result.get("last_cleanup")
    when = last.get("last_run_at") if isinstance(last, dict) else last
    if isinstance(when, str) and when and not when.endswith(("Z", "+00:00")):
        when += "+00:00"  # stored naive UTC: say so, or browsers read it as local time
    result["last_cleanup_at"] = when or None
    return result


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
