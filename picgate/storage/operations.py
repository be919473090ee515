"""Storage operations the admin console (and the CLI) run by hand: plain synchronous functions.

Each returns a small dict of counts that the console shows as it is. Call them from a worker
thread: they talk to the database and to R2.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session

from picgate.config import Settings
from picgate.db.engine import Database
from picgate.db.models import R2_FAILED, R2_NONE, R2_PENDING, R2_UPLOADED, Image
from picgate.eventlog import EventLog
from picgate.storage.archive import Archive, build_object_store, missing_r2_settings
from picgate.storage.image_store import ImageStore, utcnow
from picgate.storage.local import LocalCache
from picgate.storage.object_store import ConnectionCheck, ObjectStore, ObjectStoreError
from picgate.storage.upload_queue import UploadQueue

BATCH = 100
DEFAULT_BUDGET_SECONDS = 120.0


def _drain(
    *, db: Database, uploads: UploadQueue, include_failed: bool, budget: float
) -> dict[str, int]:
    """Run ``upload_due`` batch after batch until nothing is due (or the time budget is spent).

    A row that fails is rescheduled into the future, so every pass shrinks the due set and the
    loop ends. ``remaining`` counts what is still waiting when it does.
    """
    totals = {"uploaded": 0, "failed": 0, "retried": 0, "skipped": 0}
    deadline = time.monotonic() + budget
    while True:
        counts = uploads.upload_due(include_failed=include_failed, limit=BATCH)
        for name in ("uploaded", "failed", "retried"):
            totals[name] += counts[name]
        totals["skipped"] = counts["skipped"]
        worked = counts["uploaded"] + counts["failed"] + counts["retried"]
        if worked < BATCH or time.monotonic() > deadline:
            break
        include_failed = False  # each failed row had its one extra chance in the first pass
    totals["remaining"] = db.call(
        lambda s: int(
            s.scalar(
                select(func.count())
                .select_from(Image)
                .where(Image.r2_state.in_((R2_PENDING, R2_FAILED)))
            )
            or 0
        )
    )
    return totals


def upload_pending(
    *,
    db: Database,
    archive: Archive,
    uploads: UploadQueue,
    budget: float = DEFAULT_BUDGET_SECONDS,
) -> dict[str, int]:
    """Upload every pending image now, whatever its backoff says.

    Counts: uploaded, failed, retried, skipped (another worker holds them), remaining.
    """
    if archive.upload_objects() is None:
        return {"uploaded": 0, "failed": 0, "retried": 0, "skipped": 0, "remaining": 0}
    now = utcnow()
    db.call(
        lambda s: s.execute(
            update(Image)
            .where(Image.r2_state == R2_PENDING, Image.r2_next_attempt_at > now)
            .values(r2_next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    return _drain(db=db, uploads=uploads, include_failed=False, budget=budget)


def archive_local(
    *,
    db: Database,
    archive: Archive,
    events: EventLog,
    uploads: UploadQueue,
    budget: float = DEFAULT_BUDGET_SECONDS,
) -> dict[str, int]:
    """Queue every local image that has no R2 copy, then upload.

    These are images stored before R2 was configured, and images whose R2 copy was deleted
    on purpose; they are never queued by themselves, so this runs only when the admin asks.
    Counts as for ``upload_pending``, plus ``queued``: how many rows were put in the queue.
    """
    return _requeue_and_drain(
        (Image.r2_state == R2_NONE) & Image.local.is_(True),
        db=db,
        archive=archive,
        events=events,
        uploads=uploads,
        key="queued",
        message="☁️ 未归档的本地图片已排队上传到 R2: {} 张",
        budget=budget,
    )


def retry_failed(
    *,
    db: Database,
    archive: Archive,
    events: EventLog,
    uploads: UploadQueue,
    budget: float = DEFAULT_BUDGET_SECONDS,
) -> dict[str, int]:
    """Put every failed upload back in the queue with fresh fast attempts, then upload.

    Counts as for ``upload_pending``, plus ``reset``: how many failed rows were re-queued.
    """
    return _requeue_and_drain(
        Image.r2_state == R2_FAILED,
        db=db,
        archive=archive,
        events=events,
        uploads=uploads,
        key="reset",
        message="🔁 重新排队上传失败的图片: {} 张",
        budget=budget,
    )


def _requeue_and_drain(
    which: ColumnElement[bool],
    *,
    db: Database,
    archive: Archive,
    events: EventLog,
    uploads: UploadQueue,
    key: str,
    message: str,
    budget: float,
) -> dict[str, int]:
    """Queue the rows ``which`` selects with fresh fast attempts, then upload what is due."""
    if archive.upload_objects() is None:
        return {"uploaded": 0, "failed": 0, "retried": 0, "skipped": 0, "remaining": 0, key: 0}
    now = utcnow()

    def queue(session: Session) -> int:
        result = session.execute(
            update(Image)
            .where(which)
            .values(r2_state=R2_PENDING, r2_attempts=0, r2_next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    count = db.call(queue)
    events.info(message.format(count))
    totals = _drain(db=db, uploads=uploads, include_failed=False, budget=budget)
    totals[key] = count
    return totals


def test_r2(settings: Settings) -> list[ConnectionCheck]:
    """Check R2 with these (possibly unsaved) settings: bucket, put, get, delete of a probe."""
    missing = missing_r2_settings(settings)
    if missing:
        return [
            ConnectionCheck(
                step="config",
                ok=False,
                millis=0.0,
                detail=f"R2 is not configured: missing {', '.join(missing)}",
            )
        ]
    try:
        store = build_object_store(settings, max_attempts=1)
    except ValueError as exc:
        return [ConnectionCheck(step="config", ok=False, millis=0.0, detail=str(exc))]
    assert store is not None
    return store.test_connection(prefix=settings.r2_key_prefix)


test_r2.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite its name


def delete_images(
    ids: list[str],
    *,
    db: Database,
    cache: LocalCache,
    images: ImageStore,
    archive: Archive,
    events: EventLog,
    local: bool,
    remote: bool,
    forget: bool,
) -> dict[str, int]:
    """Delete images' local copies, R2 objects and/or rows.

    ``forget`` deletes the row, and with it the local file (a file without a row can never be
    served again); the R2 object goes only with ``remote``. A row whose R2 object could not be
    deleted (bucket unreachable) is kept, so the deletion can be tried again.
    Counts: requested, local (files removed), remote (objects removed), forgotten (rows
    removed), not_found (unknown ids), failed (R2 deletions that failed).
    """
    counts = {"requested": len(ids), "local": 0, "remote": 0, "forgotten": 0}
    counts |= {"not_found": 0, "failed": 0}
    store = archive.objects() if remote else None
    last_error = ""
    for image_id in dict.fromkeys(ids):
        row = db.call(_load(image_id))
        if row is None:
            counts["not_found"] += 1
            continue
        remote_gone = row.r2_state == R2_NONE
        if remote and not remote_gone:
            error = _delete_object(archive, store, row)
            if error is None:
                counts["remote"] += 1
                remote_gone = True
            else:
                counts["failed"] += 1
                last_error = error
        row_goes = forget and (remote_gone or not remote)
        if (local or row_goes) and cache.delete(row.id, row.ext):
            counts["local"] += 1
        if row_goes:
            db.call(_forget(row.id))
            counts["forgotten"] += 1
        else:
            db.call(_mark(row.id, local=local, remote=remote and remote_gone))
        images.forget(row.id)
    if counts["local"] or counts["remote"] or counts["forgotten"]:
        events.info(
            f"🗑️ 已删除图片: 本地 {counts['local']} 张, R2 {counts['remote']} 个, "
            f"记录 {counts['forgotten']} 条"
        )
    if counts["failed"]:
        events.error(f"❌ R2 删除失败: {counts['failed']} 个 ({last_error})")
    return counts


def _load(image_id: str) -> Callable[[Session], Image | None]:
    return lambda session: session.get(Image, image_id)


def _delete_object(archive: Archive, store: ObjectStore | None, row: Image) -> str | None:
    if store is None:
        return "R2 is not configured"
    try:
        store.delete(archive.key(row.id, row.ext))
    except ObjectStoreError as exc:
        return str(exc)
    return None


def _forget(image_id: str) -> Callable[[Session], None]:
    def work(session: Session) -> None:
        session.execute(delete(Image).where(Image.id == image_id))

    return work


def _mark(image_id: str, *, local: bool, remote: bool) -> Callable[[Session], None]:
    """Record what is gone; a row left with no copy anywhere is marked expired (→ 410)."""

    def work(session: Session) -> None:
        row = session.get(Image, image_id)
        if row is None:
            return
        if local:
            row.local = False
        if remote:
            # also revoke a running upload's claim: its worker sees the change and deletes
            # the object it may have written meanwhile
            row.r2_state = R2_NONE
            row.r2_attempts = 0
            row.r2_last_error = None
            row.r2_next_attempt_at = None
            row.r2_lease_owner = None
            row.r2_lease_until = None
        if not row.local and row.r2_state != R2_UPLOADED:
            row.expired = True

    return work
