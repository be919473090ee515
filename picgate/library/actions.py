"""What the admin console (and the CLI) do to the library by hand: plain synchronous methods.

Each returns a small dict of counts that the console shows as it is. Call them from a worker
thread: they talk to the database and to R2.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from picgate.config import Settings
from picgate.db.models import R2_NONE, R2_UPLOADED, ImageRow
from picgate.errors import OnlyCopy
from picgate.eventlog import EventLog
from picgate.library.eviction import format_bytes
from picgate.library.records import naive_utc, utcnow
from picgate.library.rows import ImageRows
from picgate.storage.archive import Archive, build_object_store, missing_r2_settings
from picgate.storage.local import LocalCache
from picgate.storage.object_store import ConnectionCheck, ObjectStore, ObjectStoreError

if TYPE_CHECKING:
    from picgate.library.eviction import LocalCopies
    from picgate.library.uploads import UploadQueue

DEFAULT_BUDGET_SECONDS = 120.0
NOTHING_UPLOADED = {"uploaded": 0, "failed": 0, "retried": 0, "skipped": 0, "remaining": 0}


class ConsoleActions:
    """The console's cache buttons and image deletion (see the module docstring)."""

    def __init__(
        self,
        *,
        rows: ImageRows,
        cache: LocalCache,
        archive: Archive,
        events: EventLog,
        uploads: UploadQueue,
        copies: LocalCopies,
        settings: Callable[[], Settings],
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.archive = archive
        self.events = events
        self.uploads = uploads
        self.copies = copies
        self.settings = settings

    # -- local copies ----------------------------------------------------------------------

    def clean_expired(self, *, now: datetime | None = None) -> dict[str, Any]:
        """Remove the local copies past the TTL now (the console's "clean expired").

        Keys: removed, expired (of those, gone for good), bytes_freed, kept (past the TTL but
        the only copy of an image not yet in R2), errors.
        """
        ttl_hours = self.settings().local_cache_ttl_hours
        result = self.copies.evict_expired(now=naive_utc(now), ttl_hours=ttl_hours)
        self.copies.log_ttl(result, ttl_hours)
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
        result = self.copies.evict_all_remote()
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

    # -- uploads ---------------------------------------------------------------------------

    def _drain(self, budget: float) -> dict[str, int]:
        """Upload what is due until nothing is (or the budget is spent); ``remaining`` counts
        what is still waiting then."""
        totals = self.uploads.drain(include_failed=False, budget=budget)
        totals["remaining"] = self.rows.uploads_waiting()
        return totals

    def upload_pending(self, *, budget: float = DEFAULT_BUDGET_SECONDS) -> dict[str, int]:
        """Upload every pending image now, whatever its backoff says.

        Counts: uploaded, failed, retried, skipped (another worker holds them), remaining.
        """
        if self.archive.upload_objects() is None:
            return dict(NOTHING_UPLOADED)
        self.rows.make_pending_due(utcnow())
        return self._drain(budget)

    def archive_local(self, *, budget: float = DEFAULT_BUDGET_SECONDS) -> dict[str, int]:
        """Queue every local image that has no R2 copy, then upload.

        These are images stored before R2 was configured, and images whose R2 copy was deleted
        on purpose; they are never queued by themselves, so this runs only when the admin asks.
        Counts as for ``upload_pending``, plus ``queued``: how many rows were put in the queue.
        """
        if self.archive.upload_objects() is None:
            return {**NOTHING_UPLOADED, "queued": 0}
        count = self.rows.queue_unarchived(utcnow())
        self.events.info(f"☁️ 未归档的本地图片已排队上传到 R2: {count} 张")
        return {**self._drain(budget), "queued": count}

    def retry_failed(self, *, budget: float = DEFAULT_BUDGET_SECONDS) -> dict[str, int]:
        """Put every failed upload back in the queue with fresh fast attempts, then upload.

        Counts as for ``upload_pending``, plus ``reset``: how many failed rows were re-queued.
        """
        if self.archive.upload_objects() is None:
            return {**NOTHING_UPLOADED, "reset": 0}
        count = self.rows.queue_failed(utcnow())
        self.events.info(f"🔁 重新排队上传失败的图片: {count} 张")
        return {**self._drain(budget), "reset": count}

    # -- deleting --------------------------------------------------------------------------

    def delete_images(
        self, ids: list[str], *, local: bool, remote: bool, forget: bool, force: bool = False
    ) -> dict[str, int]:
        """Delete images' local copies, R2 objects and/or rows.

        ``forget`` deletes the row, and with it the local file (a file without a row can never
        be served again); the R2 object goes only with ``remote``. A row whose R2 object could
        not be deleted (bucket unreachable) is kept, so the deletion can be tried again.
        Counts: requested, local (files removed), remote (objects removed), forgotten (rows
        removed), not_found (unknown ids), failed (R2 deletions that failed).

        Deleting only local copies while R2 is configured refuses, unless ``force``, when one
        of the images is not in R2 yet (upload pending, failed, or never queued): its local
        copy is its only one. OnlyCopy (409) then, and nothing is deleted.
        """
        if local and not remote and not forget and not force:
            self._refuse_only_copies(ids)
        counts = {"requested": len(ids), "local": 0, "remote": 0, "forgotten": 0}
        counts |= {"not_found": 0, "failed": 0}
        store = self.archive.objects() if remote else None
        last_error = ""
        for image_id in dict.fromkeys(ids):
            row = self.rows.load(image_id)
            if row is None:
                counts["not_found"] += 1
                continue
            remote_gone = row.r2_state == R2_NONE
            if remote and not remote_gone:
                error = self._delete_object(store, row)
                if error is None:
                    counts["remote"] += 1
                    remote_gone = True
                else:
                    counts["failed"] += 1
                    last_error = error
            row_goes = forget and (remote_gone or not remote)
            if (local or row_goes) and self.cache.delete(row.id, row.ext):
                counts["local"] += 1
            if row_goes:
                self.rows.delete(row.id)
                counts["forgotten"] += 1
            else:
                self.rows.mark_gone(row.id, local=local, remote=remote and remote_gone)
        if counts["local"] or counts["remote"] or counts["forgotten"]:
            self.events.info(
                f"🗑️ 已删除图片: 本地 {counts['local']} 张, R2 {counts['remote']} 个, "
                f"记录 {counts['forgotten']} 条"
            )
        if counts["failed"]:
            self.events.error(f"❌ R2 删除失败: {counts['failed']} 个 ({last_error})")
        return counts

    def _refuse_only_copies(self, ids: list[str]) -> None:
        if not self.archive.configured():
            return  # without R2 every local copy is the only one, and the console says so
        only = 0
        for image_id in dict.fromkeys(ids):
            row = self.rows.load(image_id)
            if row is not None and row.local and row.r2_state != R2_UPLOADED:
                only += 1
        if only:
            raise OnlyCopy(
                f"{only} of the selected images are not in R2 yet (upload pending or failed): "
                "their local copy is their only copy and deleting it loses them. Upload them "
                "first (cache → upload pending / retry failed), or delete again with force.",
                param="ids",
            )

    def _delete_object(self, store: ObjectStore | None, row: ImageRow) -> str | None:
        if store is None:
            return "R2 is not configured"
        try:
            store.delete(self.archive.key(row.id, row.ext))
        except ObjectStoreError as exc:
            return str(exc)
        return None


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
