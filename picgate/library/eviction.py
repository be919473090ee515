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
and updated with one statement per batch; nothing loads the whole table. ``SizeCap`` applies the
cap after each store (``ImageLibrary.save``); the cleanup job applies TTL and cap on schedule.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from picgate.config import Settings
from picgate.db.models import R2_UPLOADED
from picgate.eventlog import EventLog
from picgate.library.rows import ImageRows
from picgate.storage.archive import Archive
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


def format_bytes(size: int) -> str:
    if size < 2**20:
        return f"{size / 1024:.1f} KB"
    if size < 2**30:
        return f"{size / 2**20:.1f} MB"
    return f"{size / 2**30:.2f} GB"


class LocalCopies:
    """The three ways local copies go (TTL, cap, clear local) over one removal loop."""

    def __init__(
        self, *, rows: ImageRows, cache: LocalCache, archive: Archive, events: EventLog
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.archive = archive
        self.events = events

    def _evict(
        self,
        *,
        accessed_before: datetime | None = None,
        spare: str | None = None,
        excess: Callable[[], int] | None = None,
    ) -> Eviction:
        """Remove the safe local copies (accessed before ``accessed_before``, never ``spare``),
        oldest first.

        ``excess`` (the size cap) gives the bytes still to free; each batch takes just enough rows
        by their recorded size, and the pass ends once it is ≤ 0.
        """
        r2_on = self.archive.configured()
        result = Eviction()
        failed: list[str] = []
        while True:
            need = excess() if excess is not None else None
            if need is not None and need <= 0:
                break
            rows = self.rows.evictable(
                r2_on=r2_on,
                accessed_before=accessed_before,
                spare=spare,
                exclude=failed,
                limit=BATCH,
            )
            if not rows:
                break
            if need is not None:
                rows = _just_enough(rows, need)
            gone_for_good: list[str] = []
            remote_kept: list[str] = []
            for row, outcome in zip(rows, _remove_files(self.cache, rows), strict=True):
                if isinstance(outcome, OSError):  # the row keeps local=True; the file is served
                    failed.append(row.id)
                    result.errors.append(
                        f"cannot remove {row.id[:8]}...: {outcome.strerror or outcome}"
                    )
                    continue
                result.bytes_freed += outcome
                (remote_kept if row.r2_state == R2_UPLOADED else gone_for_good).append(row.id)
            self.rows.mark_not_local(remote_kept, expired=False)
            self.rows.mark_not_local(gone_for_good, expired=True)
            result.removed += len(remote_kept) + len(gone_for_good)
            result.expired += len(gone_for_good)
            if len(failed) >= MAX_FAILURES:
                break
        return result

    def evict_expired(self, *, now: datetime, ttl_hours: float) -> Eviction:
        """Remove safe local copies not accessed for ``ttl_hours`` (0: TTL off, nothing removed).

        A row accessed exactly at the cutoff stays; one a moment older goes.
        """
        if ttl_hours <= 0:
            return Eviction()
        self.rows.flush_access_times()
        cutoff = now - timedelta(hours=ttl_hours)
        result = self._evict(accessed_before=cutoff)
        result.kept = self.rows.count_local(
            unsafe_for=self.archive.configured(), accessed_before=cutoff
        )
        return result

    def evict_to_cap(self, *, cap_bytes: int, spare: str | None = None) -> Eviction:
        """Remove safe local copies, least recently accessed first, until usage ≤ ``cap_bytes``.

        Usage is ``cache.usage()`` (a running total). 0 means no cap. ``spare`` is an id
        never removed (the image just stored: its URL is about to be handed out). ``kept`` is 1
        when the cache is still over the cap because every remaining copy is unsafe to remove.
        """
        cache = self.cache
        if cap_bytes <= 0 or cache.usage() <= cap_bytes:
            return Eviction()
        self.rows.flush_access_times()
        result = self._evict(spare=spare, excess=lambda: cache.usage() - cap_bytes)
        if cache.usage() > cap_bytes:
            result.kept = 1
        return result

    def evict_all_remote(self) -> Eviction:
        """Remove every local copy that has an R2 copy; nothing at all when R2 is not configured.

        ``kept`` counts the local copies left because they are the only copy.
        """
        if not self.archive.configured():
            return Eviction(kept=self.rows.count_local())
        result = self._evict()
        result.kept = self.rows.count_local()
        return result

    def log_cap(self, result: Eviction, cap_bytes: int) -> None:
        cap_mb = cap_bytes // 2**20
        if result.removed:
            self.events.info(
                f"🧹 自动清理: 删除 {result.removed} 张最早的图片，保持在 {cap_mb}MB 限制内"
            )
        if result.kept:
            self.events.warning(
                f"⚠️ 本地缓存超过 {cap_mb}MB 上限，但剩余图片尚未上传到 R2，暂不删除"
            )

    def log_ttl(self, result: Eviction, ttl_hours: float) -> None:
        if result.removed:
            line = (
                f"🧹 过期清理: 删除 {result.removed} 张超过 {ttl_hours:g} 小时未访问的本地图片，"
                f"释放 {format_bytes(result.bytes_freed)}"
            )
            if result.expired:
                line += f"（其中 {result.expired} 张没有 R2 副本，已永久过期）"
            self.events.info(line)
        if result.kept:
            self.events.warning(f"⚠️ {result.kept} 张过期图片尚未上传到 R2，暂不删除本地文件")


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


class SizeCap:
    """Run by ``ImageLibrary.save`` after each store: evicts when the cache passes the cap.

    Cheap when under the cap: one settings read and the running usage total. One eviction at a
    time per process; after a pass that found nothing safe, it rests CAP_BLOCKED_SECONDS. A
    failed eviction never fails the store (the scheduled job applies the cap again).
    """

    def __init__(self, copies: LocalCopies, settings: Callable[[], Settings]) -> None:
        self.copies = copies
        self.settings = settings
        self._lock = threading.Lock()
        self._blocked_until = 0.0

    def after_store(self, image_id: str) -> None:
        cap_bytes = self.settings().max_local_cache_mb * 2**20
        if cap_bytes <= 0 or self.copies.cache.usage() <= cap_bytes:
            return
        if time.monotonic() < self._blocked_until or not self._lock.acquire(blocking=False):
            return
        try:
            result = self.copies.evict_to_cap(cap_bytes=cap_bytes, spare=image_id)
        except Exception as exc:  # a failed eviction must not fail the store; the job retries
            log.warning("size cap eviction failed: %s", exc)
            return
        finally:
            self._lock.release()
        if result.kept:
            self._blocked_until = time.monotonic() + CAP_BLOCKED_SECONDS
        self.copies.log_cap(result, cap_bytes)
