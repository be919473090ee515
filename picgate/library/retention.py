"""Metadata retention: rows older than ``METADATA_RETENTION_DAYS`` go, with their local files,
and with their R2 objects when ``DELETE_R2_ON_METADATA_EXPIRE`` is on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from picgate.db.models import R2_UPLOADED
from picgate.eventlog import EventLog
from picgate.library.rows import ImageRows
from picgate.storage.archive import Archive
from picgate.storage.local import LocalCache
from picgate.storage.object_store import ObjectStoreError

BATCH = 500


@dataclass
class Retention:
    """What one pass deleted."""

    rows_deleted: int = 0
    r2_objects_deleted: int = 0
    bytes_freed: int = 0
    errors: list[str] = field(default_factory=list)


class MetadataRetention:
    def __init__(
        self, *, rows: ImageRows, cache: LocalCache, archive: Archive, events: EventLog
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.archive = archive
        self.events = events

    def expire(self, *, now: datetime, days: int, delete_remote: bool) -> Retention:
        """Delete rows created more than ``days`` ago (0: keep forever), with their local files.

        With ``delete_remote`` their R2 objects go too; a row whose object could not be deleted
        (R2 unreachable) is kept for the next run, and after the first such failure no more
        deletions are tried in this run. With R2 not configured there is no bucket to clean:
        rows just go.
        """
        result = Retention()
        if days <= 0:
            return result
        cutoff = now - timedelta(days=days)
        archive = self.archive
        store = archive.objects() if delete_remote else None
        kept: list[str] = []
        remote_down = False
        while True:
            rows = self.rows.created_before(cutoff, exclude=kept, limit=BATCH)
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
                        result.errors.append(f"retention: R2 delete failed: {exc}")
                        continue
                    result.r2_objects_deleted += 1
                try:
                    result.bytes_freed += self.cache.delete(row.id, row.ext)
                except OSError as exc:  # the file becomes an orphan; repair removes it later
                    result.errors.append(f"retention: cannot remove {row.id[:8]}...: {exc}")
                doomed.append(row.id)
            if doomed:
                self.rows.delete_many(doomed)
                result.rows_deleted += len(doomed)
        if result.rows_deleted:
            line = f"🗂️ 元数据清理: 删除 {result.rows_deleted} 条超过 {days} 天的记录"
            if result.r2_objects_deleted:
                line += f"，同时删除 {result.r2_objects_deleted} 个 R2 对象"
            self.events.info(line)
        return result
