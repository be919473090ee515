"""The cleanup job and the admin's manual cache operations: plain synchronous functions.

``Cleanup.run`` is the one job that every caller runs — ``picgate cleanup``, the in-process
scheduler of server mode and ``handler.cleanup`` on Lambda (the last two through
``picgate.jobs.scheduler.run_scheduled``, which adds the lease). In order:

1. retry due R2 uploads (``picgate.storage.upload_queue.upload_due``);
2. local TTL (``LOCAL_CACHE_TTL_HOURS``, by last access) and 3. the size cap
   (``MAX_LOCAL_CACHE_MB``, least recently accessed first), both under the safety rule of
   ``picgate.jobs.eviction``;
4. metadata retention (``METADATA_RETENTION_DAYS``; R2 objects too with
   ``DELETE_R2_ON_METADATA_EXPIRE``); 5. log retention; 6. expired admin sessions and stale
   login attempts; 7. consistency repair (``picgate.jobs.repair``).

A step that fails is recorded in the report and the next step still runs. Every function takes
the clock as ``now`` (naive UTC; an aware datetime is converted) so tests can move time.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from picgate.db.models import R2_UPLOADED, AdminSession, Image, LoginAttempt
from picgate.eventlog import trim_logs
from picgate.jobs.eviction import (
    Eviction,
    evict_all_remote,
    evict_expired,
    evict_to_cap,
    execute,
    fetch_rows,
    log_cap,
)
from picgate.jobs.repair import repair
from picgate.storage.object_store import ObjectStoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from picgate.config import Settings
    from picgate.db.engine import Database
    from picgate.eventlog import EventLog
    from picgate.storage.archive import Archive
    from picgate.storage.image_store import ImageStore
    from picgate.storage.local import LocalCache
    from picgate.storage.upload_queue import UploadQueue

BATCH = 500
UPLOAD_BATCH = 100
UPLOAD_BUDGET_SECONDS = 120.0
# a login-attempt window nobody is locked out by any more, kept this long for the rate limiter
LOGIN_ATTEMPT_STALE = timedelta(days=1)


def naive_utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if now.tzinfo is not None:
        return now.astimezone(UTC).replace(tzinfo=None)
    return now


def format_bytes(size: int) -> str:
    if size < 2**20:
        return f"{size / 1024:.1f} KB"
    if size < 2**30:
        return f"{size / 2**20:.1f} MB"
    return f"{size / 2**30:.2f} GB"


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
    """The cleanup job and the console's manual cache operations, over the parts they touch.

    Built once by ``Services``; ``settings`` gives the effective settings at call time (the
    admin console can change them while PicGate runs). Synchronous: run it in a worker thread.
    """

    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        cache: LocalCache,
        images: ImageStore,
        archive: Archive,
        uploads: UploadQueue,
        settings: Callable[[], Settings],
    ) -> None:
        self.db = db
        self.events = events
        self.cache = cache
        self.images = images
        self.archive = archive
        self.uploads = uploads
        self.settings = settings

    def _local_copies(self) -> dict[str, Any]:
        """The keyword arguments of the ``picgate.jobs.eviction`` functions."""
        return {
            "db": self.db,
            "cache": self.cache,
            "images": self.images,
            "archive": self.archive,
        }

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

        def uploads() -> None:
            counts = self.uploads.drain(
                now=now, include_failed=include_failed, budget=upload_budget, batch=UPLOAD_BATCH
            )
            report.uploaded += counts.get("uploaded", 0)
            report.upload_retried += counts.get("retried", 0)
            report.upload_failed += counts.get("failed", 0)

        def ttl() -> None:
            result = evict_expired(
                **self._local_copies(), now=now, ttl_hours=settings.local_cache_ttl_hours
            )
            report.add_eviction(result, ttl=True)
            log_ttl(events, result, settings.local_cache_ttl_hours)

        def cap() -> None:
            result = evict_to_cap(**self._local_copies(), cap_bytes=cap_bytes)
            report.add_eviction(result, ttl=False)
            log_cap(events, result, cap_bytes)

        def retention() -> None:
            self.expire_metadata(
                now=now,
                days=settings.metadata_retention_days,
                delete_remote=settings.delete_r2_on_metadata_expire,
                report=report,
            )

        def logs() -> None:
            report.logs_trimmed = self.db.call(lambda s: trim_logs(s, events.max_entries))

        def sessions() -> None:
            report.sessions_deleted, report.login_attempts_deleted = self.db.call(
                lambda s: expire_sessions(s, now=now)
            )

        def consistency() -> None:
            result = repair(db=self.db, cache=self.cache, images=self.images, now=now)
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

    def expire_metadata(
        self, *, now: datetime, days: int, delete_remote: bool, report: JobReport
    ) -> None:
        """Delete rows created more than ``days`` ago (0: keep forever), with their local files.

        With ``delete_remote`` their R2 objects go too; a row whose object could not be deleted (R2
        unreachable) is kept for the next run, and after the first such failure no more deletions
        are tried in this run. With R2 not configured there is no bucket to clean: rows just go.
        """
        if days <= 0:
            return
        cutoff = now - timedelta(days=days)
        archive = self.archive
        store = archive.objects() if delete_remote else None
        kept: list[str] = []
        remote_down = False
        deleted_before = report.rows_deleted
        while True:
            query = (
                select(Image.id, Image.ext, Image.r2_state)
                .where(Image.created_at < cutoff)
                .order_by(Image.created_at, Image.id)
                .limit(BATCH)
            )
            if kept:
                query = query.where(Image.id.not_in(kept))
            rows = fetch_rows(self.db, query)
            if not rows:
                break
            doomed: list[str] = []
            for row in rows:
                if store is not None and row.r2_state == R2_UPLOADED:
                    if remote_down:
                        kept.append(row.id)
                        continue
                    try:
                        store.delete(archive.key(row.id, row.ext))
                    except ObjectStoreError as exc:  # keep the row; the next run tries again
                        remote_down = True
                        kept.append(row.id)
                        report.errors.append(f"retention: R2 delete failed: {exc}")
                        continue
                    report.r2_objects_deleted += 1
                try:
                    report.bytes_freed += self.cache.delete(row.id, row.ext)
                except OSError as exc:  # the file becomes an orphan; repair removes it later
                    report.errors.append(f"retention: cannot remove {row.id[:8]}...: {exc}")
                self.images.forget(row.id)
                doomed.append(row.id)
            if doomed:
                execute(
                    self.db,
                    delete(Image)
                    .where(Image.id.in_(doomed))
                    .execution_options(synchronize_session=False),
                )
                report.rows_deleted += len(doomed)
        removed = report.rows_deleted - deleted_before
        if removed:
            line = f"🗂️ 元数据清理: 删除 {removed} 条超过 {days} 天的记录"
            if report.r2_objects_deleted:
                line += f"，同时删除 {report.r2_objects_deleted} 个 R2 对象"
            self.events.info(line)

    # -- manual operations (admin console) -----------------------------------------------------

    def clean_expired(self, *, now: datetime | None = None) -> dict[str, Any]:
        """Remove the local copies past the TTL now (the console's "clean expired").

        Keys: removed, expired (of those, gone for good), bytes_freed, kept (past the TTL but
        the only copy of an image not yet in R2), errors.
        """
        ttl_hours = self.settings().local_cache_ttl_hours
        result = evict_expired(**self._local_copies(), now=naive_utc(now), ttl_hours=ttl_hours)
        log_ttl(self.events, result, ttl_hours)
        return {
            "removed": result.removed,
            "expired": result.expired,
            "bytes_freed": result.bytes_freed,
            "kept": result.kept,
            "errors": result.errors,
        }

    def clear_local(self) -> dict[str, Any]:
        """Remove every local copy that has an R2 copy (rows and R2 objects stay).

        Without R2 nothing is removed: the local copy is the only one. Keys: removed,
        bytes_freed, kept (local copies left because they are the only copy), r2_configured,
        errors.
        """
        result = evict_all_remote(**self._local_copies())
        configured = self.archive.configured()
        if result.removed or result.kept:
            self.events.info(
                f"🗑️ 清除本地缓存: 删除 {result.removed} 张已在 R2 的图片，"
                f"释放 {format_bytes(result.bytes_freed)}，保留 {result.kept} 张仅存本地的图片"
            )
        return {
            "removed": result.removed,
            "bytes_freed": result.bytes_freed,
            "kept": result.kept,
            "r2_configured": configured,
            "errors": result.errors,
        }


def log_ttl(events: EventLog, result: Eviction, ttl_hours: float) -> None:
    if result.removed:
        line = (
            f"🧹 过期清理: 删除 {result.removed} 张超过 {ttl_hours:g} 小时未访问的本地图片，"
            f"释放 {format_bytes(result.bytes_freed)}"
        )
        if result.expired:
            line += f"（其中 {result.expired} 张没有 R2 副本，已永久过期）"
        events.info(line)
    if result.kept:
        events.warning(f"⚠️ {result.kept} 张过期图片尚未上传到 R2，暂不删除本地文件")


def expire_sessions(session: Session, *, now: datetime) -> tuple[int, int]:
    """Delete expired admin sessions and stale login-attempt rows; (sessions, attempts)."""
    sessions = session.execute(
        delete(AdminSession)
        .where(AdminSession.expires_at < now)
        .execution_options(synchronize_session=False)
    )
    attempts = session.execute(
        delete(LoginAttempt)
        .where(
            and_(
                LoginAttempt.window_start < now - LOGIN_ATTEMPT_STALE,
                or_(LoginAttempt.locked_until.is_(None), LoginAttempt.locked_until < now),
            )
        )
        .execution_options(synchronize_session=False)
    )
    return (
        int(getattr(sessions, "rowcount", 0) or 0),
        int(getattr(attempts, "rowcount", 0) or 0),
    )
