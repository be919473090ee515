"""Running the cleanup job on a schedule, one runner at a time across replicas and Lambdas.

The lease is the ``job_leases`` row named ``cleanup``. Taking it is one conditional UPDATE (free,
or expired, and — for the in-process scheduler — due) or, when the row does not exist yet, one
INSERT that only one concurrent caller can win (primary key). A runner that crashes keeps the
lease until ``lease_until``; then the next runner takes over. Releasing records ``last_run_at``
and the JSON report, which the dashboard shows.

- server mode: ``Services`` runs ``CleanupScheduler.run`` as a background task; it polls and
  runs when ``cleanup_interval_minutes`` have passed since the last run by *any* replica;
- Lambda: ``handler.cleanup`` calls ``run_scheduled(services.cleanup)`` (EventBridge sets the
  pace);
- ``picgate cleanup`` calls ``run_scheduled(..., include_failed=True)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from sqlalchemy import Connection, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from picgate.db.models import CLEANUP_LEASE, JOB_LEASES
from picgate.jobs.cleanup import Cleanup, JobReport
from picgate.library.records import naive_utc

if TYPE_CHECKING:
    from picgate.db.engine import Database

log = logging.getLogger("picgate")

LEASE_NAME = CLEANUP_LEASE
# longer than any run (Lambda stops at 15 min); a crashed runner blocks the job this long
LEASE_TTL = timedelta(minutes=30)
FIRST_RUN_DELAY_SECONDS = 60.0
POLL_SECONDS = 60.0


def new_owner() -> str:
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(6)}"


def acquire_lease(
    db: Database,
    *,
    owner: str,
    now: datetime,
    name: str = LEASE_NAME,
    ttl: timedelta = LEASE_TTL,
    due_after: timedelta | None = None,
) -> bool:
    """Take the lease ``name`` for ``owner`` until ``now + ttl``; False when someone holds it.

    With ``due_after``, also False when the last run started less than that long ago.
    """
    free = or_(JOB_LEASES.c.lease_until.is_(None), JOB_LEASES.c.lease_until < now)
    condition = and_(JOB_LEASES.c.name == name, free)
    if due_after is not None:
        due = or_(JOB_LEASES.c.last_run_at.is_(None), JOB_LEASES.c.last_run_at <= now - due_after)
        condition = and_(condition, due)

    def work(conn: Connection) -> bool:
        result = conn.execute(
            update(JOB_LEASES).where(condition).values(owner=owner, lease_until=now + ttl)
        )
        if int(getattr(result, "rowcount", 0) or 0) == 1:
            return True
        if conn.scalar(select(JOB_LEASES.c.name).where(JOB_LEASES.c.name == name)) is not None:
            return False
        # a concurrent INSERT of the same name fails here (primary key)
        conn.execute(insert(JOB_LEASES).values(name=name, owner=owner, lease_until=now + ttl))
        return True

    try:
        return db.write(work)
    except IntegrityError:
        return False


def release_lease(
    db: Database,
    *,
    owner: str,
    ran_at: datetime,
    report: dict[str, Any] | None,
    name: str = LEASE_NAME,
) -> None:
    """Give the lease back and record the run (only if ``owner`` still holds it)."""
    values: dict[str, Any] = {"owner": None, "lease_until": None, "last_run_at": ran_at}
    if report is not None:
        values["last_report"] = json.dumps(report, ensure_ascii=False)
    db.write(
        lambda s: s.execute(
            update(JOB_LEASES)
            .where(JOB_LEASES.c.name == name, JOB_LEASES.c.owner == owner)
            .values(**values)
        )
    )


def run_scheduled(
    cleanup: Cleanup,
    *,
    now: datetime | None = None,
    min_interval: timedelta | None = None,
    include_failed: bool = False,
) -> dict[str, Any]:
    """Take the lease, run the job, record the report; a JSON-able dict for Lambda and the CLI.

    ``{"ran": False, "reason": ...}`` when another runner holds the lease (or, with
    ``min_interval``, the last run is too recent); else ``{"ran": True, **report}``. The
    database must be migrated (the container's ``prepare``).
    """
    now = naive_utc(now)
    owner = new_owner()
    if not acquire_lease(cleanup.db, owner=owner, now=now, due_after=min_interval):
        return {"ran": False, "reason": "another runner holds the cleanup lease, or not due yet"}
    report: JobReport | None = None
    try:
        report = cleanup.run(now=now, include_failed=include_failed)
    finally:
        release_lease(
            cleanup.db,
            owner=owner,
            ran_at=now,
            report=report.to_dict() if report is not None else {"ok": False, "aborted": True},
        )
    return {"ran": True, **report.to_dict()}


class CleanupScheduler:
    """Server mode: every ``poll`` seconds, run the job if it is due (lease-guarded)."""

    def __init__(
        self,
        cleanup: Cleanup,
        *,
        interval_minutes: float,
        first_delay: float = FIRST_RUN_DELAY_SECONDS,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.cleanup = cleanup
        self.interval = timedelta(minutes=interval_minutes)
        # a run is never more than one poll late, and an interval shorter than a poll holds
        self.poll = min(poll, self.interval.total_seconds())
        self.first_delay = first_delay
        self.runs = 0
        self.last_result: dict[str, Any] | None = None

    def tick(self) -> dict[str, Any]:
        return run_scheduled(self.cleanup, min_interval=self.interval)

    async def run(self) -> None:
        # let start-up (and short-lived test servers) finish before the first pass
        await asyncio.sleep(self.first_delay)
        while True:
            try:
                result = await anyio.to_thread.run_sync(self.tick, abandon_on_cancel=True)
            except Exception as exc:  # keep the scheduler alive; the next poll retries
                log.warning("scheduled cleanup failed: %s", exc)
            else:
                self.last_result = result
                if result.get("ran"):
                    self.runs += 1
            await asyncio.sleep(self.poll)
