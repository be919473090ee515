"""The cleanup job: every scheduled step, in order, over the image library.

``Cleanup.run`` is the one job that every caller runs — ``picgate cleanup``, the in-process
scheduler of server mode and ``handler.cleanup`` on Lambda (the last two through
``picgate.jobs.scheduler.run_scheduled``, which adds the lease). In order:

1. retry due R2 uploads (``picgate.library.uploads``);
2. local TTL (``LOCAL_CACHE_TTL_HOURS``, by last access) and 3. the size cap
   (``MAX_LOCAL_CACHE_MB``, least recently accessed first), both under the safety rule of
   ``picgate.library.eviction``;
4. metadata retention (``picgate.library.retention``); 5. log retention; 6. expired admin
   sessions and stale login attempts; 7. consistency repair (``picgate.library.repair``).

A step that fails is recorded in the report and the next step still runs. Every function takes
the clock as ``now`` (naive UTC; an aware datetime is converted) so tests can move time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, or_

from picgate.config import Settings
from picgate.db.engine import Database
from picgate.db.models import ADMIN_SESSIONS, LOGIN_ATTEMPTS
from picgate.eventlog import EventLog, trim_logs
from picgate.library.eviction import Eviction, format_bytes
from picgate.library.library import ImageLibrary
from picgate.library.records import naive_utc
from picgate.library.repair import repair

UPLOAD_BATCH = 100
UPLOAD_BUDGET_SECONDS = 120.0
# a login-attempt window nobody is locked out by any more, kept this long for the rate limiter
LOGIN_ATTEMPT_STALE = timedelta(days=1)


@dataclass
class JobReport:
    """What one run of the job did. ``errors`` holds one line per failed step or file."""

    started_at: datetime
    finished_at: datetime | None = None
    uploaded: int = 0
    upload_retried: int = 0
    upload_failed: int = 0
    ttl_removed: int = 0
    cap_removed: int = 0
    expired_for_good: int = 0  # of the removed local copies: those with no R2 copy
    kept_unsafe: int = 0  # old enough to go, kept because they are the only copy
    bytes_freed: int = 0
    rows_deleted: int = 0
    r2_objects_deleted: int = 0
    logs_trimmed: int = 0
    sessions_deleted: int = 0
    login_attempts_deleted: int = 0
    orphans_removed: int = 0
    missing_marked: int = 0
    relinked: int = 0
    tmp_removed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per step

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: datetimes as ISO strings."""
        data = asdict(self)
        for key in ("started_at", "finished_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        data["ok"] = self.ok
        return data

    def summary(self) -> str:
        parts = [
            f"上传 {self.uploaded} 张"
            + (f"（失败 {self.upload_failed}）" if self.upload_failed else ""),
            f"过期删除 {self.ttl_removed} 张",
            f"超限删除 {self.cap_removed} 张",
            f"释放 {format_bytes(self.bytes_freed)}",
            f"删除记录 {self.rows_deleted} 条",
        ]
        if self.r2_objects_deleted:
            parts.append(f"R2 对象 {self.r2_objects_deleted} 个")
        if self.kept_unsafe:
            parts.append(f"{self.kept_unsafe} 张待上传暂不删除")
        repaired = self.orphans_removed + self.missing_marked + self.relinked + self.tmp_removed
        if repaired:
            parts.append(f"修复 {repaired} 处")
        if self.errors:
            parts.append(f"错误 {len(self.errors)} 个")
        return "，".join(parts)

    def add_eviction(self, result: Eviction, *, ttl: bool) -> None:
        if ttl:
            self.ttl_removed += result.removed
            self.kept_unsafe += result.kept
        else:
            self.cap_removed += result.removed
        self.expired_for_good += result.expired
        self.bytes_freed += result.bytes_freed
        self.errors.extend(result.errors)


def _step(report: JobReport, name: str, action: Callable[[], None]) -> None:
    started = time.perf_counter()
    try:
        action()
    except Exception as exc:  # one broken step must not stop the others; it is reported
        report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
    report.seconds[name] = round(time.perf_counter() - started, 3)


class Cleanup:
    """The cleanup job over the library; ``settings`` gives the effective settings at call time
    (the admin console can change them while PicGate runs). Synchronous: run it in a worker
    thread."""

    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        library: ImageLibrary,
        settings: Callable[[], Settings],
    ) -> None:
        self.db = db
        self.events = events
        self.library = library
        self.settings = settings

    def run(
        self,
        *,
        now: datetime | None = None,
        include_failed: bool = False,
        upload_budget: float = UPLOAD_BUDGET_SECONDS,
    ) -> JobReport:
        """Run every cleanup step once, in order; never raises for a failing step (see errors).

        ``include_failed`` retries every failed upload now (``picgate cleanup``); otherwise
        failed uploads are retried at their slow pace.
        """
        now = naive_utc(now)
        settings = self.settings()
        report = JobReport(started_at=now)
        cap_bytes = settings.max_local_cache_mb * 2**20
        events = self.events
        library = self.library
        copies = library.copies

        def uploads() -> None:
            counts = library.uploads.drain(
                now=now, include_failed=include_failed, budget=upload_budget, batch=UPLOAD_BATCH
            )
            report.uploaded += counts.get("uploaded", 0)
            report.upload_retried += counts.get("retried", 0)
            report.upload_failed += counts.get("failed", 0)

        def ttl() -> None:
            result = copies.evict_expired(now=now, ttl_hours=settings.local_cache_ttl_hours)
            report.add_eviction(result, ttl=True)
            copies.log_ttl(result, settings.local_cache_ttl_hours)

        def cap() -> None:
            result = copies.evict_to_cap(cap_bytes=cap_bytes)
            report.add_eviction(result, ttl=False)
            copies.log_cap(result, cap_bytes)

        def retention() -> None:
            result = library.retention.expire(
                now=now,
                days=settings.metadata_retention_days,
                delete_remote=settings.delete_r2_on_metadata_expire,
            )
            report.rows_deleted += result.rows_deleted
            report.r2_objects_deleted += result.r2_objects_deleted
            report.bytes_freed += result.bytes_freed
            report.errors.extend(result.errors)

        def logs() -> None:
            report.logs_trimmed = self.db.write(lambda s: trim_logs(s, events.max_entries))

        def sessions() -> None:
            report.sessions_deleted, report.login_attempts_deleted = self.db.write(
                lambda s: expire_sessions(s, now=now)
            )

        def consistency() -> None:
            result = repair(rows=library.rows, cache=library.cache, now=now)
            report.orphans_removed = result.orphans_removed
            report.missing_marked = result.missing_marked
            report.relinked = result.relinked
            report.tmp_removed = result.tmp_removed
            report.bytes_freed += result.bytes_freed
            report.errors.extend(result.errors)
            if (
                result.orphans_removed
                or result.missing_marked
                or result.relinked
                or result.tmp_removed
            ):
                events.info(
                    f"🔧 一致性修复: 删除 {result.orphans_removed} 个孤立文件，"
                    f"{result.missing_marked} 条记录的本地文件已丢失，"
                    f"恢复 {result.relinked} 条本地标记，删除 {result.tmp_removed} 个临时文件"
                )

        for name, action in (
            ("uploads", uploads),
            ("ttl", ttl),
            ("cap", cap),
            ("retention", retention),
            ("logs", logs),
            ("sessions", sessions),
            ("repair", consistency),
        ):
            _step(report, name, action)
        report.finished_at = naive_utc(None)
        line = f"🧹 定时清理完成: {report.summary()}"
        events.add("WARNING" if report.errors else "INFO", line)
        events.flush()
        return report


def expire_sessions(conn: Connection, *, now: datetime) -> tuple[int, int]:
    """Delete expired admin sessions and stale login-attempt rows; (sessions, attempts)."""
    sessions = conn.execute(delete(ADMIN_SESSIONS).where(ADMIN_SESSIONS.c.expires_at < now))
    attempts = conn.execute(
        delete(LOGIN_ATTEMPTS).where(
            and_(
                LOGIN_ATTEMPTS.c.window_start < now - LOGIN_ATTEMPT_STALE,
                or_(LOGIN_ATTEMPTS.c.locked_until.is_(None), LOGIN_ATTEMPTS.c.locked_until < now),
            )
        )
    )
    return (
        int(getattr(sessions, "rowcount", 0) or 0),
        int(getattr(attempts, "rowcount", 0) or 0),
    )
