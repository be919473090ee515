"""The R2 upload queue: due rows are claimed with a lease, uploaded from the local file, retried.

The queue lives in the ``images`` table (its statements in ``picgate.library.rows``), so it
survives restarts and is shared by every replica:

- a row is *due* when it is ``pending`` and its next attempt time has come, or ``failed`` and its
  slow retry time has come (an outage never strands an image), or ``failed`` at all when the
  caller asks for it (``picgate cleanup``, the admin's "retry failed");
- claiming reads the candidates, then leases them with one UPDATE that repeats every condition:
  two workers (threads, replicas) never hold the same row, so an image is never uploaded twice;
- a failure schedules the next fast attempt with exponential backoff and jitter; after
  ``MAX_FAST_ATTEMPTS`` the row is ``failed`` (the last error kept) and retried at a slow pace.

In server mode the upload worker (``picgate.jobs.upload_worker``) waits on the queue's
``doorbell``, which ``ImageLibrary.save`` rings for each queued image; in serverless mode
``upload_now`` uploads one image before the response returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import and_

from picgate.db.models import IMAGES, R2_FAILED, R2_NONE, R2_PENDING
from picgate.eventlog import EventLog
from picgate.library.records import naive_utc, utcnow
from picgate.library.rows import ImageRows, UploadTask, due_condition
from picgate.storage.archive import Archive
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


class Doorbell:
    """Wakes the upload worker: ``ring()`` from any thread, ``wait()`` on the worker's loop.

    Ringing before anyone waits (or with no worker at all: serverless, the CLI) does nothing.
    """

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def ring(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    def listen(self) -> None:
        """Bind to the running loop; rung once, so the first ``wait`` returns at once."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Until rung or ``timeout`` seconds pass; then unrung."""
        assert self._event is not None, "listen() first"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


class UploadQueue:
    """The queue in the ``images`` table and the uploads it drives (see the module docstring).

    Synchronous: callers run it in a worker thread.
    """

    def __init__(
        self, *, rows: ImageRows, cache: LocalCache, archive: Archive, events: EventLog
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.archive = archive
        self.events = events
        self.doorbell = Doorbell()

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

        The candidates are read first (a read, so an idle queue costs no write), then leased.
        """
        clock = utcnow()
        due = due_condition(now, include_failed=include_failed)
        if image_id is not None:
            due = and_(IMAGES.c.id == image_id, IMAGES.c.r2_state.in_((R2_PENDING, R2_FAILED)))
        ids, held = self.rows.upload_candidates(due, clock=clock, limit=limit)
        if not ids:
            return [], held
        until = clock + timedelta(seconds=LEASE_SECONDS)
        tasks = self.rows.lease(ids, due, clock=clock, owner=owner, until=until)
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
        if self.rows.upload_succeeded(task.id, owner=owner):
            self.events.info(f"☁️ 已上传到 R2: {task.id[:8]}...")
            return
        # The row changed under us: deleted, or its R2 copy removed on purpose while we uploaded.
        # Then the object we just wrote must not outlive that decision. (A row leased to another
        # worker after our lease expired is left alone: that worker writes the same bytes.)
        state = self.rows.r2_state(task.id)
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
        self.rows.upload_failed(
            task.id, owner=owner, state=state, attempts=attempts, error=error, next_at=next_at
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
        now = naive_utc(now)
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
        Counts are summed over the batches, except ``skipped`` (the last batch's).
        """
        totals = {"uploaded": 0, "failed": 0, "retried": 0, "skipped": 0}
        deadline = time.monotonic() + budget
        while True:
            counts = self.upload_due(now=now, include_failed=include_failed, limit=batch)
            for name in ("uploaded", "failed", "retried"):
                totals[name] += counts[name]
            totals["skipped"] = counts["skipped"]
            worked = counts["uploaded"] + counts["failed"] + counts["retried"]
            if worked < batch or time.monotonic() > deadline:
                return totals
            include_failed = False  # every failed row had its extra chance in the first pass
