"""Every statement on the ``images`` table, and the process's memory of its rows.

``ImageRows(db)`` is the one place that reads or writes an image row: storing, serving, the R2
upload queue, eviction, retention, repair, the console's actions, the statistics, the grid and
its filters, the daily image limit and the Open WebUI migration all call it. Each method is one
transaction through ``Database.read`` or ``Database.write``, so which statements write (and
take the single-writer lock) is decided here and nowhere else.

It also remembers recent rows (a small LRU of ``StoredImage``, so serving a hot image is no
database read) and buffers access times, written in batches (so serving is not a write).

The R2 columns form the upload queue (``r2_state``: ``none|pending|uploaded|failed``, attempts,
last error, next attempt, lease owner and expiry); ``picgate.library.uploads`` drives it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)

from picgate.db.engine import Database
from picgate.db.models import IMAGES, R2_FAILED, R2_NONE, R2_PENDING, R2_UPLOADED, ImageRow
from picgate.library.records import ImageFilter, StoredImage, utcnow

col = IMAGES.c  # the columns of ``images``, for statements: col.id, col.r2_state ...
RECORDS_KEPT = 4096
SORT_COLUMNS: dict[str, Column[Any]] = {
    "created": col.created_at,
    "accessed": col.accessed_at,
    "size": col.size,
}


@dataclass(frozen=True)
class UploadTask:
    """A claimed row: what is needed to upload it and to record the result."""

    id: str
    ext: str
    mime: str
    state: str
    attempts: int


def due_condition(now: datetime, *, include_failed: bool) -> ColumnElement[bool]:
    """Rows whose upload is due: ``pending`` at or past their next attempt; ``failed`` at their
    slow retry time, or all of them with ``include_failed``."""
    pending = and_(
        col.r2_state == R2_PENDING,
        or_(col.r2_next_attempt_at.is_(None), col.r2_next_attempt_at <= now),
    )
    failed = col.r2_state == R2_FAILED
    if not include_failed:
        failed = and_(failed, col.r2_next_attempt_at.is_not(None), col.r2_next_attempt_at <= now)
    return or_(pending, failed)


def lease_free(clock: datetime) -> ColumnElement[bool]:
    return or_(col.r2_lease_until.is_(None), col.r2_lease_until < clock)


def safe_to_remove(r2_on: bool) -> ColumnElement[bool]:
    """Rows whose local copy may go (``picgate.library.eviction``): ``uploaded`` always,
    ``none`` only while R2 is not configured; ``pending``/``failed`` never."""
    if r2_on:
        return col.r2_state == R2_UPLOADED
    return col.r2_state.in_((R2_UPLOADED, R2_NONE))


def filtered(query: Any, narrow: ImageFilter | None) -> Any:
    """``query`` with ``narrow``'s conditions on ``images`` added."""
    if narrow is None:
        return query
    if narrow.user_id:
        query = query.where(col.user_id == narrow.user_id)
    if narrow.chat_id:
        query = query.where(col.chat_id == narrow.chat_id)
    if narrow.model:
        query = query.where(col.model == narrow.model)
    if narrow.text:
        # the user's text is a literal: % and _ match only themselves
        escaped = narrow.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(col.prompt.like(f"%{escaped}%", escape="\\"))
    return query


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _flag(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


class ImageRows:
    """The ``images`` table of one database (see the module docstring). Synchronous: call it
    from a worker thread."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._records: OrderedDict[str, StoredImage] = OrderedDict()
        self._records_lock = threading.Lock()
        self._accessed: dict[str, datetime] = {}
        self._accessed_lock = threading.Lock()

    # -- one image -------------------------------------------------------------------------

    def insert(self, row: dict[str, Any], image: StoredImage) -> None:
        self.db.write(lambda c: c.execute(IMAGES.insert(), row))
        self.remember(image)

    def load(self, image_id: str) -> ImageRow | None:
        found = self.db.read(lambda c: c.execute(select(IMAGES).where(col.id == image_id)).first())
        if found is None:
            return None
        row = ImageRow._make(found)
        self.remember(StoredImage(row.id, row.ext, row.mime, row.size, row.sha256))
        return row

    def sizes(self, ids: Collection[str]) -> dict[str, int]:
        """The stored size of every id of ``ids`` that has a row, in one query (a chat naming
        thousands of made-up ids costs one statement, not one each)."""
        wanted = list(ids)
        if not wanted:
            return {}

        def work(conn: Connection) -> dict[str, int]:
            found = conn.execute(select(col.id, col.size).where(col.id.in_(wanted)))
            return {str(r.id): int(r.size) for r in found}

        return self.db.read(work)

    def mark_cached(self, image_id: str) -> None:
        """The image has a local copy again (fetched back from the archive)."""
        self.db.write(
            lambda c: c.execute(
                update(IMAGES).where(col.id == image_id).values(local=True, expired=False)
            )
        )

    def delete(self, image_id: str) -> None:
        self.db.write(lambda c: c.execute(delete(IMAGES).where(col.id == image_id)))
        self.forget(image_id)

    def mark_gone(self, image_id: str, *, local: bool, remote: bool) -> None:
        """Record that the local copy and/or the R2 object are gone; a row left with no copy
        anywhere is marked expired (→ 410)."""

        def work(conn: Connection) -> None:
            found = conn.execute(select(col.local, col.r2_state).where(col.id == image_id)).first()
            if found is None:
                return
            values: dict[str, Any] = {}
            still_local, r2_state = bool(found.local) and not local, found.r2_state
            if local:
                values["local"] = False
            if remote:
                # also revoke a running upload's claim: its worker sees the change and deletes
                # the object it may have written meanwhile
                r2_state = R2_NONE
                values.update(
                    r2_state=R2_NONE,
                    r2_attempts=0,
                    r2_last_error=None,
                    r2_next_attempt_at=None,
                    r2_lease_owner=None,
                    r2_lease_until=None,
                )
            if not still_local and r2_state != R2_UPLOADED:
                values["expired"] = True
            if values:
                conn.execute(update(IMAGES).where(col.id == image_id).values(**values))

        self.db.write(work)
        self.forget(image_id)

    # -- memory: recent records and access times -------------------------------------------

    def remember(self, image: StoredImage) -> None:
        with self._records_lock:
            self._records[image.id] = image
            self._records.move_to_end(image.id)
            while len(self._records) > RECORDS_KEPT:
                self._records.popitem(last=False)

    def forget(self, image_id: str) -> None:
        with self._records_lock:
            self._records.pop(image_id, None)

    def cached_record(self, image_id: str) -> StoredImage | None:
        with self._records_lock:
            return self._records.get(image_id)

    def touch(self, image_id: str) -> None:
        with self._accessed_lock:
            self._accessed[image_id] = utcnow()

    def flush_access_times(self) -> int:
        with self._accessed_lock:
            pending, self._accessed = self._accessed, {}
        if not pending:
            return 0

        def work(conn: Connection) -> None:
            for image_id, when in pending.items():
                conn.execute(
                    update(IMAGES)
                    .where(col.id == image_id, col.accessed_at < when)
                    .values(accessed_at=when)
                )

        self.db.write(work)
        return len(pending)

    # -- the upload queue ------------------------------------------------------------------

    def upload_candidates(
        self, due: ColumnElement[bool], *, clock: datetime, limit: int
    ) -> tuple[list[str], int]:
        """Up to ``limit`` due ids with a free lease, and how many due rows others hold."""

        def work(conn: Connection) -> tuple[list[str], int]:
            ids: list[str] = list(
                conn.scalars(
                    select(col.id)
                    .where(due, lease_free(clock))
                    .order_by(col.r2_next_attempt_at, col.id)
                    .limit(limit)
                )
            )
            held = conn.scalar(
                select(func.count()).select_from(IMAGES).where(due, ~lease_free(clock))
            )
            return ids, int(held or 0)

        return self.db.read(work)

    def lease(
        self,
        ids: list[str],
        due: ColumnElement[bool],
        *,
        clock: datetime,
        owner: str,
        until: datetime,
    ) -> list[UploadTask]:
        """Lease the ids still due and free to ``owner``: one UPDATE repeating every condition,
        so of two claimers only one matches a row."""

        def work(conn: Connection) -> list[UploadTask]:
            conn.execute(
                update(IMAGES)
                .where(col.id.in_(ids), due, lease_free(clock))
                .values(r2_lease_owner=owner, r2_lease_until=until)
            )
            rows = conn.execute(
                select(col.id, col.ext, col.mime, col.r2_state, col.r2_attempts).where(
                    col.r2_lease_owner == owner
                )
            ).all()
            return [UploadTask(r.id, r.ext, r.mime, r.r2_state, r.r2_attempts or 0) for r in rows]

        return self.db.write(work)

    def upload_succeeded(self, image_id: str, *, owner: str) -> bool:
        """Mark the leased row uploaded; False when the row changed under the lease."""

        def work(conn: Connection) -> int:
            return _count(
                conn.execute(
                    update(IMAGES)
                    .where(
                        col.id == image_id,
                        col.r2_lease_owner == owner,
                        col.r2_state.in_((R2_PENDING, R2_FAILED)),
                    )
                    .values(
                        r2_state=R2_UPLOADED,
                        r2_last_error=None,
                        r2_next_attempt_at=None,
                        r2_lease_owner=None,
                        r2_lease_until=None,
                    )
                )
            )

        return bool(self.db.write(work))

    def r2_state(self, image_id: str) -> str | None:
        return self.db.read(lambda c: c.scalar(select(col.r2_state).where(col.id == image_id)))

    def upload_failed(
        self,
        image_id: str,
        *,
        owner: str,
        state: str,
        attempts: int,
        error: str,
        next_at: datetime | None,
    ) -> None:
        self.db.write(
            lambda c: c.execute(
                update(IMAGES)
                .where(col.id == image_id, col.r2_lease_owner == owner)
                .values(
                    r2_state=state,
                    r2_attempts=attempts,
                    r2_last_error=error[:1000],
                    r2_next_attempt_at=next_at,
                    r2_lease_owner=None,
                    r2_lease_until=None,
                )
            )
        )

    def uploads_waiting(self) -> int:
        """Rows still ``pending`` or ``failed``."""
        return self.db.read(
            lambda s: int(
                s.scalar(
                    select(func.count())
                    .select_from(IMAGES)
                    .where(col.r2_state.in_((R2_PENDING, R2_FAILED)))
                )
                or 0
            )
        )

    def make_pending_due(self, now: datetime) -> None:
        """Every pending upload due now, whatever its backoff said."""
        self.db.write(
            lambda c: c.execute(
                update(IMAGES)
                .where(col.r2_state == R2_PENDING, col.r2_next_attempt_at > now)
                .values(r2_next_attempt_at=now)
            )
        )

    def queue_unarchived(self, now: datetime) -> int:
        """Queue every local image without an R2 copy, with fresh fast attempts."""
        return self._requeue((col.r2_state == R2_NONE) & col.local.is_(True), now)

    def queue_failed(self, now: datetime) -> int:
        """Put every failed upload back in the queue with fresh fast attempts."""
        return self._requeue(col.r2_state == R2_FAILED, now)

    def _requeue(self, which: ColumnElement[bool], now: datetime) -> int:
        return self.db.write(
            lambda s: _count(
                s.execute(
                    update(IMAGES)
                    .where(which)
                    .values(r2_state=R2_PENDING, r2_attempts=0, r2_next_attempt_at=now)
                )
            )
        )

    # -- local copies: eviction and repair -------------------------------------------------

    def evictable(
        self,
        *,
        r2_on: bool,
        accessed_before: datetime | None = None,
        spare: str | None = None,
        exclude: Collection[str] = (),
        limit: int,
    ) -> list[Any]:
        """(id, ext, size, r2_state) of local copies safe to remove, least recently accessed
        first; through the ``(local, accessed_at)`` index, a small batch at a time."""
        query = (
            select(col.id, col.ext, col.size, col.r2_state)
            .where(col.local.is_(True), safe_to_remove(r2_on))
            .order_by(col.accessed_at, col.id)
            .limit(limit)
        )
        if accessed_before is not None:
            query = query.where(col.accessed_at < accessed_before)
        if spare is not None:
            query = query.where(col.id != spare)
        if exclude:
            query = query.where(col.id.not_in(list(exclude)))
        return self.db.read(lambda s: list(s.execute(query).all()))

    def count_local(
        self, *, unsafe_for: bool | None = None, accessed_before: datetime | None = None
    ) -> int:
        """Rows with a local copy; with ``unsafe_for`` (R2 on or off), only those the safety
        rule keeps; with ``accessed_before``, only those accessed earlier."""
        where: ColumnElement[bool] = col.local.is_(True)
        if unsafe_for is not None:
            where = and_(where, ~safe_to_remove(unsafe_for))
        if accessed_before is not None:
            where = and_(where, col.accessed_at < accessed_before)
        return self.db.read(
            lambda s: int(s.scalar(select(func.count()).select_from(IMAGES).where(where)) or 0)
        )

    def mark_not_local(self, ids: list[str], *, expired: bool, only_local: bool = False) -> None:
        """``local=False`` (and ``expired=True`` with ``expired``) on these rows."""
        if not ids:
            return
        values: dict[str, Any] = {"local": False}
        if expired:
            values["expired"] = True
        where: ColumnElement[bool] = col.id.in_(ids)
        if only_local:
            where = and_(where, col.local.is_(True))
        self.db.write(lambda c: c.execute(update(IMAGES).where(where).values(**values)))
        for image_id in ids:
            self.forget(image_id)

    def local_flags(self, ids: list[str]) -> dict[str, tuple[str, bool]]:
        """id → (ext, local) for the ids that have a row."""

        def work(conn: Connection) -> dict[str, tuple[str, bool]]:
            found = conn.execute(select(col.id, col.ext, col.local).where(col.id.in_(ids))).all()
            return {r.id: (r.ext, bool(r.local)) for r in found}

        return self.db.read(work)

    def relink(self, ids: list[str]) -> None:
        """The files are there after all: ``local=True``, not expired."""
        if ids:
            self.db.write(
                lambda c: c.execute(
                    update(IMAGES).where(col.id.in_(ids)).values(local=True, expired=False)
                )
            )

    def local_rows_except(self, seen: Collection[str], *, batch: int) -> list[tuple[str, str, str]]:
        """(id, ext, r2_state) of rows claiming a local copy whose id is not in ``seen``."""

        def work(conn: Connection) -> list[tuple[str, str, str]]:
            # one index scan, streamed in partitions; only the (usually few) unseen rows are kept
            query = select(col.id, col.ext, col.r2_state).where(col.local.is_(True))
            found = conn.execute(query.execution_options(yield_per=batch))
            return [(r.id, r.ext, r.r2_state) for r in found if r.id not in seen]

        return self.db.read(work)

    # -- retention -------------------------------------------------------------------------

    def created_before(
        self, cutoff: datetime, *, exclude: Collection[str], limit: int
    ) -> list[Any]:
        """(id, ext, r2_state) of rows created before ``cutoff``, oldest first."""
        query = (
            select(col.id, col.ext, col.r2_state)
            .where(col.created_at < cutoff)
            .order_by(col.created_at, col.id)
            .limit(limit)
        )
        if exclude:
            query = query.where(col.id.not_in(list(exclude)))
        return self.db.read(lambda s: list(s.execute(query).all()))

    def delete_many(self, ids: list[str]) -> None:
        self.db.write(lambda c: c.execute(delete(IMAGES).where(col.id.in_(ids))))
        for image_id in ids:
            self.forget(image_id)

    # -- statistics and the grid -----------------------------------------------------------

    def counts(self) -> tuple[int, int, int, int, int, int, int]:
        """total, local, uploaded, pending, failed, expired, bytes of local rows: one pass."""

        def work(conn: Connection) -> Any:
            return conn.execute(
                select(
                    func.count(),
                    _flag(col.local.is_(True)),
                    _flag(col.r2_state == R2_UPLOADED),
                    _flag(col.r2_state == R2_PENDING),
                    _flag(col.r2_state == R2_FAILED),
                    _flag(col.expired.is_(True)),
                    func.coalesce(func.sum(case((col.local.is_(True), col.size), else_=0)), 0),
                ).select_from(IMAGES)
            ).one()

        return tuple(int(value) for value in self.db.read(work))  # type: ignore[return-value]

    def gauges(self) -> tuple[int, int, int, int, int]:
        """Of the rows not expired: count, bytes, uploads pending, uploads failed, bytes with a
        local copy (the metrics' scrape: one query)."""

        def work(conn: Connection) -> Any:
            return conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(col.size), 0),
                    _flag(col.r2_state == R2_PENDING),
                    _flag(col.r2_state == R2_FAILED),
                    func.coalesce(func.sum(case((col.local.is_(True), col.size), else_=0)), 0),
                )
                .select_from(IMAGES)
                .where(col.expired.is_(False))
            ).one()

        return tuple(int(value or 0) for value in self.db.read(work))  # type: ignore[return-value]

    def created_between(self, start: datetime, end: datetime) -> int:
        return self.db.read(
            lambda s: int(
                s.scalar(
                    select(func.count())
                    .select_from(IMAGES)
                    .where(col.created_at >= start, col.created_at < end)
                )
                or 0
            )
        )

    def page(
        self,
        sort: str,
        *,
        after: tuple[Any, str] | None,
        limit: int,
        narrow: ImageFilter | None = None,
    ) -> tuple[list[ImageRow], int]:
        """Up to ``limit`` rows ordered by ``sort`` (a SORT_COLUMNS key) descending, after the
        (value, id) keyset position, narrowed by ``narrow``; and how many rows it lets through."""
        column = SORT_COLUMNS[sort]
        query = filtered(select(IMAGES).order_by(column.desc(), col.id.desc()).limit(limit), narrow)
        if after is not None:
            query = query.where(tuple_(column, col.id) < tuple_(*after))
        counting = filtered(select(func.count()).select_from(IMAGES), narrow)

        def work(conn: Connection) -> tuple[list[ImageRow], int]:
            rows = [ImageRow._make(row) for row in conn.execute(query)]
            total = int(conn.scalar(counting) or 0)
            return rows, total

        return self.db.read(work)

    def per_user(self, day_start: datetime, *, limit: int) -> list[dict[str, Any]]:
        """Images per user id, today (from ``day_start``) and in total, most first: user_id,
        user_name, today, total; one grouped pass over the rows."""
        total = func.count()
        query = (
            select(
                col.user_id,
                func.max(col.user_name),
                _flag(col.created_at >= day_start),
                total,
            )
            .where(col.user_id.is_not(None))
            .group_by(col.user_id)
            .order_by(total.desc(), col.user_id)
            .limit(limit)
        )
        found = self.db.read(lambda s: list(s.execute(query).all()))
        return [
            {"user_id": r[0], "user_name": r[1], "today": int(r[2] or 0), "total": int(r[3])}
            for r in found
        ]

    # -- attribution: the daily limit, a chat's images, the same bytes again ---------------

    def count_since(
        self, since: datetime, *, user_id: str | None = None, key_name: str | None = None
    ) -> int:
        """Images stored since ``since`` for one user id, or (``user_id`` None) through one
        gateway key: what ``USER_DAILY_IMAGE_LIMIT`` counts."""
        query = select(func.count()).select_from(IMAGES).where(col.created_at >= since)
        if user_id is not None:
            query = query.where(col.user_id == user_id)
        else:
            query = query.where(col.key_name == key_name)
        return self.db.read(lambda s: int(s.execute(query).scalar_one()))

    def ids_of_chat(self, chat_id: str) -> list[str]:
        """The ids of every image recorded with this chat id."""
        return self.db.read(lambda s: list(s.scalars(select(col.id).where(col.chat_id == chat_id))))

    def find_by_sha256(self, digest: str) -> StoredImage | None:
        """An unexpired image with these bytes, the oldest first (None when there is none)."""
        row = self.db.read(
            lambda c: c.execute(
                select(col.id, col.ext, col.mime, col.size, col.sha256)
                .where(col.sha256 == digest, col.expired.is_(False))
                .order_by(col.created_at)
                .limit(1)
            ).first()
        )
        if row is None:
            return None
        return StoredImage(row.id, row.ext, row.mime, row.size, row.sha256)
