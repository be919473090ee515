"""Removing local copies: TTL expiry, the size cap, and "clear local", all under one safety rule.

The rule: a local file is removed only when it is *safe*:

- ``uploaded``: always safe. The row becomes ``local=False``; the image is fetched back from R2
  when asked for (its object exists even if R2 has since been switched off).
- ``pending`` or ``failed``: never safe, whatever the current settings. The upload was queued
  while R2 was configured and has not happened: the local file is the only copy. Switching R2
  off in the admin must not turn these into deletable files (they upload once R2 is back).
- ``none`` with R2 not configured: the local copy *is* the image. TTL and the cap delete it for
  good; the row stays, ``local=False`` and ``expired=True`` (``/images/{id}`` answers 410).
- ``none`` with R2 configured: stored before R2 was set up and not queued yet; it stays until
  "upload pending" queues it.

Rows are read in small batches through the ``(local, accessed_at)`` index, oldest access first,
and updated with one statement per batch; nothing loads the whole table.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Executable, and_, func, select, true, update
from sqlalchemy.orm import Session

from picgate.db.models import R2_NONE, R2_UPLOADED, Image

if TYPE_CHECKING:
    from picgate.config import Settings
    from picgate.db.engine import Database
    from picgate.eventlog import EventLog
    from picgate.storage.archive import Archive
    from picgate.storage.image_store import ImageStore, StoredImage
    from picgate.storage.local import LocalCache

log = logging.getLogger("picgate")

BATCH = 500
DELETE_THREADS = 4
PARALLEL_FROM = 16  # fewer files than this: unlink them on the calling thread
# unlink failures (permissions...) excluded from later batches; past this many, stop the step
MAX_FAILURES = 100
# after the cap found nothing safe to remove, wait before trying again on the next store
CAP_BLOCKED_SECONDS = 30.0


@dataclass
class Eviction:
    """What one pass removed. ``kept`` counts candidates left alone by the safety rule."""

    removed: int = 0
    expired: int = 0  # of ``removed``: gone for good (no R2 copy)
    bytes_freed: int = 0
    kept: int = 0
    errors: list[str] = field(default_factory=list)


def safe_to_remove(r2_on: bool) -> ColumnElement[bool]:
    """Rows whose local copy may go (see the module docstring): ``uploaded`` always, ``none``
    only while R2 is not configured. ``pending``/``failed`` never: the settings that queued
    their upload may have changed since, but the file is still the only copy."""
    if r2_on:
        return Image.r2_state == R2_UPLOADED
    return Image.r2_state.in_((R2_UPLOADED, R2_NONE))


def fetch_rows(db: Database, query: Executable) -> list[Any]:
    """All rows of ``query`` (a small batch), read in one transaction."""
    return db.call(lambda session: list(session.execute(query).all()))


def execute(db: Database, statement: Executable) -> None:
    db.call(lambda session: session.execute(statement))


def _evict(
    *,
    db: Database,
    cache: LocalCache,
    images: ImageStore,
    archive: Archive,
    where: ColumnElement[bool],
    excess: Callable[[], int] | None = None,
) -> Eviction:
    """Remove the local copies of rows matching ``where`` (plus local and safe), oldest first.

    ``excess`` (the size cap) gives the bytes still to free; each batch takes just enough rows
    by their recorded size, and the pass ends once it is ≤ 0.
    """
    r2_on = archive.configured()
    result = Eviction()
    failed: list[str] = []
    condition = and_(Image.local.is_(True), safe_to_remove(r2_on), where)
    while True:
        need = excess() if excess is not None else None
        if need is not None and need <= 0:
            break
        query = (
            select(Image.id, Image.ext, Image.size, Image.r2_state)
            .where(condition)
            .order_by(Image.accessed_at, Image.id)
            .limit(BATCH)
        )
        if failed:
            query = query.where(Image.id.not_in(failed))
        rows = fetch_rows(db, query)
        if not rows:
            break
        if need is not None:
            rows = _just_enough(rows, need)
        gone_for_good: list[str] = []
        remote_kept: list[str] = []
        for row, outcome in zip(rows, _remove_files(cache, rows), strict=True):
            if isinstance(outcome, OSError):  # the row keeps local=True; the file is served
                failed.append(row.id)
                result.errors.append(
                    f"cannot remove {row.id[:8]}...: {outcome.strerror or outcome}"
                )
                continue
            result.bytes_freed += outcome
            images.forget(row.id)
            (remote_kept if row.r2_state == R2_UPLOADED else gone_for_good).append(row.id)
        _mark_removed(db, remote_kept, expired=False)
        _mark_removed(db, gone_for_good, expired=True)
        result.removed += len(remote_kept) + len(gone_for_good)
        result.expired += len(gone_for_good)
        if len(failed) >= MAX_FAILURES:
            break
    return result


def _just_enough(rows: list[Any], need: int) -> list[Any]:
    """The oldest rows whose sizes add up to ``need`` bytes (a missing file frees nothing:
    the next batch then takes more)."""
    chosen = []
    for row in rows:
        if need <= 0:
            break
        chosen.append(row)
        need -= row.size
    return chosen


def _remove_files(cache: LocalCache, rows: list[Any]) -> list[int | OSError]:
    """Unlink the rows' files: bytes freed (0 if already gone) or the OSError, in row order.

    A few threads: an unlink can wait on the filesystem journal while other processes write,
    and those waits overlap.
    """

    def remove(row: Any) -> int | OSError:
        try:
            return cache.delete(row.id, row.ext)
        except OSError as exc:
            return exc

    if len(rows) < PARALLEL_FROM:
        return [remove(row) for row in rows]
    with ThreadPoolExecutor(max_workers=DELETE_THREADS) as pool:
        return list(pool.map(remove, rows))


def _mark_removed(db: Database, ids: list[str], *, expired: bool) -> None:
    if not ids:
        return
    values: dict[str, Any] = {"local": False}
    if expired:
        values["expired"] = True
    execute(
        db,
        update(Image)
        .where(Image.id.in_(ids))
        .values(**values)
        .execution_options(synchronize_session=False),
    )


def _count(db: Database, where: ColumnElement[bool]) -> int:
    def work(session: Session) -> int:
        return int(session.scalar(select(func.count()).select_from(Image).where(where)) or 0)

    return db.call(work)


def evict_expired(
    *,
    db: Database,
    cache: LocalCache,
    images: ImageStore,
    archive: Archive,
    now: datetime,
    ttl_hours: float,
) -> Eviction:
    """Remove safe local copies not accessed for ``ttl_hours`` (0: TTL off, nothing removed).

    A row accessed exactly at the cutoff stays; one a moment older goes.
    """
    if ttl_hours <= 0:
        return Eviction()
    images.flush_access_times()
    cutoff = now - timedelta(hours=ttl_hours)
    result = _evict(
        db=db, cache=cache, images=images, archive=archive, where=Image.accessed_at < cutoff
    )
    result.kept = _count(
        db,
        and_(
            Image.local.is_(True),
            Image.accessed_at < cutoff,
            ~safe_to_remove(archive.configured()),
        ),
    )
    return result


def evict_to_cap(
    *,
    db: Database,
    cache: LocalCache,
    images: ImageStore,
    archive: Archive,
    cap_bytes: int,
    spare: str | None = None,
) -> Eviction:
    """Remove safe local copies, least recently accessed first, until usage ≤ ``cap_bytes``.

    Usage is ``cache.usage()`` (a running total). 0 means no cap. ``spare`` is an id
    never removed (the image just stored: its URL is about to be handed out). ``kept`` is 1
    when the cache is still over the cap because every remaining copy is unsafe to remove.
    """
    if cap_bytes <= 0 or cache.usage() <= cap_bytes:
        return Eviction()
    images.flush_access_times()
    where = true() if spare is None else Image.id != spare
    result = _evict(
        db=db,
        cache=cache,
        images=images,
        archive=archive,
        where=where,
        excess=lambda: cache.usage() - cap_bytes,
    )
    if cache.usage() > cap_bytes:
        result.kept = 1
    return result


def evict_all_remote(
    *, db: Database, cache: LocalCache, images: ImageStore, archive: Archive
) -> Eviction:
    """Remove every local copy that has an R2 copy; nothing at all when R2 is not configured.

    ``kept`` counts the local copies left because they are the only copy.
    """
    if not archive.configured():
        return Eviction(kept=_count(db, Image.local.is_(True)))
    result = _evict(db=db, cache=cache, images=images, archive=archive, where=true())
    result.kept = _count(db, Image.local.is_(True))
    return result


def log_cap(events: EventLog, result: Eviction, cap_bytes: int) -> None:
    cap_mb = cap_bytes // 2**20
    if result.removed:
        events.info(f"🧹 自动清理: 删除 {result.removed} 张最早的图片，保持在 {cap_mb}MB 限制内")
    if result.kept:
        events.warning(f"⚠️ 本地缓存超过 {cap_mb}MB 上限，但剩余图片尚未上传到 R2，暂不删除")


class CapGuard:
    """Runs after each store (``ImageStore`` callback): evicts when the cache passes the cap.

    Cheap when under the cap: one settings read and the running usage total. One eviction at a
    time per process; after a pass that found nothing safe, it rests CAP_BLOCKED_SECONDS.
    """

    def __init__(
        self,
        *,
        db: Database,
        cache: LocalCache,
        images: ImageStore,
        archive: Archive,
        events: EventLog,
        settings: Callable[[], Settings],
    ) -> None:
        self.db = db
        self.cache = cache
        self.images = images
        self.archive = archive
        self.events = events
        self.settings = settings
        self._lock = threading.Lock()
        self._blocked_until = 0.0

    def __call__(self, image: StoredImage) -> None:
        cap_bytes = self.settings().max_local_cache_mb * 2**20
        if cap_bytes <= 0 or self.cache.usage() <= cap_bytes:
            return
        if time.monotonic() < self._blocked_until or not self._lock.acquire(blocking=False):
            return
        try:
            result = evict_to_cap(
                db=self.db,
                cache=self.cache,
                images=self.images,
                archive=self.archive,
                cap_bytes=cap_bytes,
                spare=image.id,
            )
        except Exception as exc:  # a failed eviction must not fail the store; the job retries
            log.warning("size cap eviction failed: %s", exc)
            return
        finally:
            self._lock.release()
        if result.kept:
            self._blocked_until = time.monotonic() + CAP_BLOCKED_SECONDS
        log_cap(self.events, result, cap_bytes)
