"""Numbers for the admin console's cache page and dashboard: one aggregate query each.

Counting 100k rows in one ``SELECT count(*), sum(CASE ...)`` is a single pass over the table
(milliseconds in SQLite); disk use is the local cache's running total, not a folder walk.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from picgate.db.models import R2_FAILED, R2_PENDING, R2_UPLOADED, DailyStat, Image, JobLease
from picgate.jobs.cleanup import naive_utc
from picgate.jobs.scheduler import LEASE_NAME

if TYPE_CHECKING:
    from picgate.config import Settings
    from picgate.db.engine import Database
    from picgate.eventlog import EventLog
    from picgate.storage.archive import Archive
    from picgate.storage.local import LocalCache


def _flag(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def cache_stats(
    *, db: Database, cache: LocalCache, archive: Archive, settings: Settings
) -> dict[str, Any]:
    """Keys: total, local, r2, pending, failed, expired (row counts), disk_bytes (local files),
    local_bytes (sum of sizes of rows with a local copy), cap_bytes (0: no cap), cap_ratio
    (disk_bytes / cap_bytes, 0 without a cap), r2_configured.
    """

    def work(session: Session) -> Any:
        return session.execute(
            select(
                func.count(),
                _flag(Image.local.is_(True)),
                _flag(Image.r2_state == R2_UPLOADED),
                _flag(Image.r2_state == R2_PENDING),
                _flag(Image.r2_state == R2_FAILED),
                _flag(Image.expired.is_(True)),
                func.coalesce(func.sum(case((Image.local.is_(True), Image.size), else_=0)), 0),
            ).select_from(Image)
        ).one()

    total, local, r2, pending, failed, expired, local_bytes = db.call(work)
    cap_bytes = settings.max_local_cache_mb * 2**20
    disk_bytes = cache.usage()
    return {
        "total": int(total),
        "local": int(local),
        "r2": int(r2),
        "pending": int(pending),
        "failed": int(failed),
        "expired": int(expired),
        "disk_bytes": disk_bytes,
        "local_bytes": int(local_bytes),
        "cap_bytes": cap_bytes,
        "cap_ratio": round(disk_bytes / cap_bytes, 4) if cap_bytes else 0.0,
        "r2_configured": archive.configured(),
    }


PER_USER_ROWS = 20


def _per_user(session: Session, day_start: datetime) -> list[dict[str, Any]]:
    """Images per user, today and in total, most first (one grouped pass over the rows)."""
    total = func.count()
    rows = session.execute(
        select(
            Image.user_id,
            func.max(Image.user_name),
            _flag(Image.created_at >= day_start),
            total,
        )
        .where(Image.user_id.is_not(None))
        .group_by(Image.user_id)
        .order_by(total.desc(), Image.user_id)
        .limit(PER_USER_ROWS)
    )
    return [
        {"user_id": row[0], "user_name": row[1], "today": int(row[2] or 0), "total": int(row[3])}
        for row in rows
    ]


def dashboard_stats(
    *,
    db: Database,
    cache: LocalCache,
    archive: Archive,
    events: EventLog,
    settings: Settings,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``cache_stats`` plus requests_today, errors_today (counters in daily_stats),
    images_today (image rows created today: ``created_at`` from 00:00 UTC, the same UTC day as
    the counters, whatever the server's time zone), per_user (the PER_USER_ROWS users with the
    most images: user_id, user_name, today, total) and last_cleanup: None, or {last_run_at
    (ISO), running, report (dict)}.
    """
    stats = cache_stats(db=db, cache=cache, archive=archive, settings=settings)
    now = naive_utc(now)
    day = now.strftime("%Y-%m-%d")
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    events.flush()  # today's counters are buffered with the log lines

    def work(
        session: Session,
    ) -> tuple[dict[str, int], int, JobLease | None, list[dict[str, Any]]]:
        counters = {
            row.name: int(row.value)
            for row in session.execute(
                select(DailyStat.name, DailyStat.value).where(DailyStat.day == day)
            )
        }
        images = session.scalar(
            select(func.count())
            .select_from(Image)
            .where(Image.created_at >= day_start, Image.created_at < day_start + timedelta(days=1))
        )
        return (
            counters,
            int(images or 0),
            session.get(JobLease, LEASE_NAME),
            _per_user(session, day_start),
        )

    counters, images_today, lease, per_user = db.call(work)
    stats["per_user"] = per_user
    stats["requests_today"] = counters.get("requests", 0)
    stats["errors_today"] = counters.get("errors", 0)
    stats["images_today"] = images_today
    stats["last_cleanup"] = None
    if lease is not None and lease.last_run_at is not None:
        report: dict[str, Any] | None = None
        if lease.last_report:
            try:
                report = json.loads(lease.last_report)
            except ValueError:
                report = None
        stats["last_cleanup"] = {
            "last_run_at": lease.last_run_at.isoformat(),
            "running": lease.lease_until is not None and lease.lease_until > now,
            "report": report,
        }
    return stats
