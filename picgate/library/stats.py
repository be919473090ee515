"""Numbers for the admin console's cache page and dashboard: one aggregate query each.

Counting 100k rows in one ``SELECT count(*), sum(CASE ...)`` is a single pass over the table
(milliseconds in SQLite); disk use is the local cache's running total, not a folder walk.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from picgate.config import Settings
from picgate.db.models import CLEANUP_LEASE, DAILY_STATS, JOB_LEASES, JobLeaseRow
from picgate.eventlog import EventLog
from picgate.library.records import naive_utc
from picgate.library.rows import ImageRows
from picgate.storage.archive import Archive
from picgate.storage.local import LocalCache

PER_USER_ROWS = 20  # the dashboard's images-per-user table: the users with the most images


class LibraryStats:
    def __init__(
        self, *, rows: ImageRows, cache: LocalCache, archive: Archive, events: EventLog
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.archive = archive
        self.events = events

    def cache_stats(self, settings: Settings) -> dict[str, Any]:
        """Keys: total, local, r2, pending, failed, expired (row counts), disk_bytes (local
        files), local_bytes (sum of sizes of rows with a local copy), cap_bytes (0: no cap),
        cap_ratio (disk_bytes / cap_bytes, 0 without a cap), r2_configured.
        """
        total, local, r2, pending, failed, expired, local_bytes = self.rows.counts()
        cap_bytes = settings.max_local_cache_mb * 2**20
        disk_bytes = self.cache.usage()
        return {
            "total": total,
            "local": local,
            "r2": r2,
            "pending": pending,
            "failed": failed,
            "expired": expired,
            "disk_bytes": disk_bytes,
            "local_bytes": local_bytes,
            "cap_bytes": cap_bytes,
            "cap_ratio": round(disk_bytes / cap_bytes, 4) if cap_bytes else 0.0,
            "r2_configured": self.archive.configured(),
        }

    def dashboard_stats(self, settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
        """``cache_stats`` plus requests_today, errors_today (counters in daily_stats),
        images_today (image rows created today: ``created_at`` from 00:00 UTC, the same UTC day
        as the counters, whatever the server's time zone), per_user (the PER_USER_ROWS users
        with the most images: user_id, user_name, today, total) and last_cleanup: None, or
        {last_run_at (ISO), running, report (dict)}.
        """
        stats = self.cache_stats(settings)
        now = naive_utc(now)
        day = now.strftime("%Y-%m-%d")
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        self.events.flush()  # today's counters are buffered with the log lines

        def work(conn: Connection) -> tuple[dict[str, int], JobLeaseRow | None]:
            stat = DAILY_STATS.c
            counters = {
                row.name: int(row.value)
                for row in conn.execute(select(stat.name, stat.value).where(stat.day == day))
            }
            found = conn.execute(
                select(JOB_LEASES).where(JOB_LEASES.c.name == CLEANUP_LEASE)
            ).first()
            return counters, None if found is None else JobLeaseRow._make(found)

        counters, lease = self.rows.db.read(work)
        stats["requests_today"] = counters.get("requests", 0)
        stats["errors_today"] = counters.get("errors", 0)
        stats["images_today"] = self.rows.created_between(day_start, day_start + timedelta(days=1))
        stats["per_user"] = self.rows.per_user(day_start, limit=PER_USER_ROWS)
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
