"""The R2 upload queue: due rows are claimed with a lease, uploaded from the local file, retried.

The queue lives in the ``images`` table (``r2_state``, ``r2_attempts``, ``r2_last_error``,
``r2_next_attempt_at``, ``r2_lease_owner``, ``r2_lease_until``), so it survives restarts and is
shared by every replica:

- a row is *due* when it is ``pending`` and its next attempt time has come, or ``failed`` and its
  slow retry time has come (an outage never strands an image), or ``failed`` at all when the
  caller asks for it (``picgate cleanup``, the admin's "retry failed");
- claiming is one ``UPDATE ... WHERE <due> AND <lease free>``: two workers (threads, replicas)
  never hold the same row, so an image is never uploaded twice;
- a failure schedules the next fast attempt with exponential backoff and jitter; after
  ``MAX_FAST_ATTEMPTS`` the row is ``failed`` (the last error kept) and retried at a slow pace.

``UploadQueue(db=, cache=, archive=, events=)`` claims, uploads and drains. In server mode
``picgate.jobs.upload_worker.UploadWorker`` runs it in the background; in serverless mode
``upload_now`` uploads one image before the response returns.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from picgate.db.engine import Database
from picgate.db.models import R2_FAILED, R2_NONE, R2_PENDING, R2_UPLOADED, Image
from picgate.eventlog import EventLog
from picgate.storage.archive import Archive
from picgate.storage.image_store import utcnow
from picgate.storage.local import LocalCache
from picgate.storage.object_store import DEFAULT_CACHE_CONTROL, ObjectStore, ObjectStoreError

MAX_FAST_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0
SLOW_RETRY_SECONDS = 1800.0
LEASE_SECONDS = 300.0
UPLOAD_THREADS = 4
INLINE_ATTEMPTS = 2
INLINE_PAUSE_SECONDS = 0.2
MISSING_LOCAL = "local copy missing, nothing to upload"
DRAIN_BATCH = 100

_RNG = random.Random()  # noqa: S311  (jitter, not a secret)

Outcome = Literal["uploaded", "retried", "failed"]


@dataclass(frozen=True)
class UploadTask:
    """A claimed row: what is needed to upload it and to record the result."""

    id: str
    ext: str
    mime: str
    state: str
    attempts: int


def new_owner() -> str:
    """A lease owner id, unique per claim: host, process, random."""
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{secrets.token_hex(6)}"


def backoff_delay(failures: int, *, rng: random.Random | None = None) -> float:
    """Seconds before the next fast attempt after ``failures`` failed ones (≥ 1).

    Exponential (2, 4, 8... s, capped) with "equal jitter": a random point in the upper half of
    the step, so replicas that failed together do not retry together.
    """
    step = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** max(0, failures - 1))
    return step / 2 + (rng or _RNG).random() * step / 2


def slow_retry_delay(*, rng: random.Random | None = None) -> float:
    return SLOW_RETRY_SECONDS * (0.75 + (rng or _RNG).random() * 0.5)


def _naive_utc(when: datetime | None) -> datetime:
    if when is None:
        return utcnow()
    if when.tzinfo is not None:
        return when.astimezone(UTC).replace(tzinfo=None)
    return when


def due_condition(now: datetime, *, include_failed: bool) -> ColumnElement[bool]:
    pending = and_(
        Image.r2_state == R2_PENDING,
        or_(Image.r2_next_attempt_at.is_(None), Image.r2_next_attempt_at <= now),
    )
    failed = Image.r2_state == R2_FAILED
    if not include_failed:
        failed = and_(
            failed, Image.r2_next_attempt_at.is_not(None), Image.r2_next_attempt_at <= now
        )
    return or_(pending, failed)


def lease_free(clock: datetime) -> ColumnElement[bool]:
    return or_(Image.r2_lease_until.is_(None), Image.r2_lease_until < clock)


class UploadQueue:
    """The queue in the ``images`` table, and the uploads it drives (see the module docstring).

    Synchronous: callers run it in a worker thread. Built once by ``Services``.
    """

    def __init__(
        self, *, db: Database, cache: LocalCache, archive: Archive, events: EventLog
    ) -> None:
        self.db = db
        self.cache = cache
        self.archive = archive
        self.events = events

    def claim(
        self,
        *,
        owner: str,
        now: datetime,
        include_failed: bool = False,
        limit: int = 100,
        image_id: str | None = None,
    ) -> tuple[list[UploadTask], int]:
        """Lease up to ``limit`` due rows to ``owner``; returns them and how many others hold.

        The candidates are read first (a read, so an idle queue costs no write), then leased with a
        single UPDATE that repeats every condition: of two claimers, only one matches a row.
        """
        clock = utcnow()
        due = due_condition(now, include_failed=include_failed)
        if image_id is not None:
            due = and_(Image.id == image_id, Image.r2_state.in_((R2_PENDING, R2_FAILED)))

        def candidates(session: Session) -> tuple[list[str], int]:
            ids = session.scalars(
                select(Image.id)
                .where(due, lease_free(clock))
                .order_by(Image.r2_next_attempt_at, Image.id)
                .limit(limit)
            ).all()
            held = session.scalar(
                select(func.count()).select_from(Image).where(due, ~lease_free(clock))
            )
            return list(ids), int(held or 0)

        ids, held = self.db.call(candidates)
        if not ids:
            return [], held
        until = clock + timedelta(seconds=LEASE_SECONDS)

        def lease(session: Session) -> list[UploadTask]:
            session.execute(
                update(Image)
                .where(Image.id.in_(ids), due, lease_free(clock))
                .values(r2_lease_owner=owner, r2_lease_until=until)
                .execution_options(synchronize_session=False)
            )
            rows = session.execute(
                select(Image.id, Image.ext, Image.mime, Image.r2_state, Image.r2_attempts).where(
                    Image.r2_lease_owner == owner
                )
            ).all()
            return [UploadTask(r.id, r.ext, r.mime, r.r2_state, r.r2_attempts or 0) for r in rows]

        tasks = self.db.call(lease)
        return tasks, held + len(ids) - len(tasks)

    def upload_task(
        self, store: ObjectStore, task: UploadTask, *, owner: str, now: datetime
    ) -> tuple[Outcome, str | None]:
        """Upload one claimed row from its local file and record the result; (outcome, error)."""
        try:
            data = self.cache.path(task.id, task.ext).read_bytes()
        except FileNotFoundError:
            return self.record_failure(task, owner=owner, now=now, error=MISSING_LOCAL), (
                MISSING_LOCAL
            )
        key = self.archive.key(task.id, task.ext)
        try:
            store.put(key, data, content_type=task.mime, cache_control=DEFAULT_CACHE_CONTROL)
        except ObjectStoreError as exc:
            return self.record_failure(task, owner=owner, now=now, error=str(exc)), str(exc)
        self.record_success(store, task, owner=owner, key=key)
        return "uploaded", None

    def record_success(self, store: ObjectStore, task: UploadTask, *, owner: str, key: str) -> None:
        def work(session: Session) -> int:
            result = session.execute(
                update(Image)
                .where(
                    Image.id == task.id,
                    Image.r2_lease_owner == owner,
                    Image.r2_state.in_((R2_PENDING, R2_FAILED)),
                )
                .values(
                    r2_state=R2_UPLOADED,
                    r2_last_error=None,
                    r2_next_attempt_at=None,
                    r2_lease_owner=None,
                    r2_lease_until=None,
                )
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

        if self.db.call(work):
            self.events.info(f"☁️ 已上传到 R2: {task.id[:8]}...")
            return
        # The row changed under us: deleted, or its R2 copy removed on purpose while we uploaded.
        # Then the object we just wrote must not outlive that decision. (A row leased to another
        # worker after our lease expired is left alone: that worker writes the same bytes.)
        state = self.db.call(lambda s: s.scalar(select(Image.r2_state).where(Image.id == task.id)))
        if state is None or state == R2_NONE:
            with contextlib.suppress(ObjectStoreError):
                store.delete(key)

    def record_failure(self, task: UploadTask, *, owner: str, now: datetime, error: str) -> Outcome:
        """Schedule the next attempt (backoff), or mark the row ``failed`` after the fast ones."""
        attempts = task.attempts + 1
        error = self.events.redactor.text(error)  # a store's message may quote a key
        outcome: Outcome
        if error == MISSING_LOCAL:
            # retrying cannot help until someone puts the file back; the admin can retry by hand
            outcome, state, next_at = "failed", R2_FAILED, None
        elif task.state == R2_FAILED or attempts >= MAX_FAST_ATTEMPTS:
            outcome, state = "failed", R2_FAILED
            next_at = now + timedelta(seconds=slow_retry_delay())
        else:
            outcome, state = "retried", R2_PENDING
            next_at = now + timedelta(seconds=backoff_delay(attempts))
        self.db.call(
            lambda s: s.execute(
                update(Image)
                .where(Image.id == task.id, Image.r2_lease_owner == owner)
                .values(
                    r2_state=state,
                    r2_attempts=attempts,
                    r2_last_error=error[:1000],
                    r2_next_attempt_at=next_at,
                    r2_lease_owner=None,
                    r2_lease_until=None,
                )
                .execution_options(synchronize_session=False)
            )
        )
        if outcome == "failed":
            self.events.error(f"❌ R2 上传失败: {task.id[:8]}... (第 {attempts} 次) {error}")
        return outcome

    def upload_due(
        self,
        *,
        now: datetime | None = None,
        include_failed: bool = False,
        limit: int = 100,
    ) -> dict[str, int]:
        """Claim and upload the due rows (synchronous; run it in a thread).

        Returns counts: ``uploaded``, ``failed`` (now in the failed state), ``retried`` (failed
        again, next fast attempt scheduled) and ``skipped`` (due, but leased by another worker).
        Does nothing when R2 is not configured.
        """
        counts = {"uploaded": 0, "failed": 0, "retried": 0, "skipped": 0}
        store = self.archive.upload_objects()
        if store is None:
            return counts
        now = _naive_utc(now)
        owner = new_owner()
        tasks, counts["skipped"] = self.claim(
            owner=owner, now=now, include_failed=include_failed, limit=limit
        )
        if not tasks:
            return counts
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=min(UPLOAD_THREADS, len(tasks))) as pool:
            results = pool.map(
                lambda task: self.upload_task(store, task, owner=owner, now=now), tasks
            )
            for outcome, error in results:
                counts[outcome] += 1
                if outcome == "retried" and error:
                    errors.append(error)
        if errors:
            # one line per batch: an outage would otherwise log every image every few seconds
            self.events.warning(f"⚠️ R2 上传失败，稍后重试: {len(errors)} 张 ({errors[-1]})")
        return counts

    def upload_now(self, image_id: str) -> bool:
        """Upload one image right away (serverless mode, before the response returns).

        A couple of quick attempts; after that the row keeps its place in the queue (backoff) for
        the scheduled job. Returns whether the object is in R2 (or being uploaded by someone else).
        """
        store = self.archive.upload_objects()
        if store is None:
            return False
        owner = new_owner()
        tasks, held = self.claim(owner=owner, now=utcnow(), image_id=image_id)
        if not tasks:
            return held > 0
        task = tasks[0]
        key = self.archive.key(task.id, task.ext)
        try:
            data = self.cache.path(task.id, task.ext).read_bytes()
        except FileNotFoundError:
            self.record_failure(task, owner=owner, now=utcnow(), error=MISSING_LOCAL)
            return False
        error = ""
        for attempt in range(INLINE_ATTEMPTS):
            if attempt:
                time.sleep(INLINE_PAUSE_SECONDS)
            try:
                store.put(key, data, content_type=task.mime, cache_control=DEFAULT_CACHE_CONTROL)
            except ObjectStoreError as exc:
                error = str(exc)
                continue
            self.record_success(store, task, owner=owner, key=key)
            return True
        outcome = self.record_failure(task, owner=owner, now=utcnow(), error=error)
        if outcome == "retried":
            self.events.error(f"❌ R2 上传失败: {task.id[:8]}... {error}（已排队稍后重试）")
        return False

    def drain(
        self,
        *,
        now: datetime | None = None,
        include_failed: bool = False,
        budget: float,
        batch: int = DRAIN_BATCH,
    ) -> dict[str, int]:
        """``upload_due`` batch after batch until a batch is not full or ``budget`` s are spent.

        A row that fails is rescheduled into the future, so each pass shrinks the due set.
        Counts are summed over the batches.
        """
        totals: dict[str, int] = {}
        deadline = time.monotonic() + budget
        while True:
            counts = self.upload_due(now=now, include_failed=include_failed, limit=batch)
            for name, value in counts.items():
                totals[name] = totals.get(name, 0) + value
            worked = counts["uploaded"] + counts["failed"] + counts["retried"]
            if worked < batch or time.monotonic() > deadline:
                return totals
            include_failed = False  # every failed row had its extra chance in the first pass
