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
    ColumnElement,
    Table,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from picgate.db.engine import Database
from picgate.db.models import R2_FAILED, R2_NONE, R2_PENDING, R2_UPLOADED, Image
from picgate.library.records import ImageFilter, StoredImage, utcnow

IMAGES: Table = Image.__table__  # type: ignore[assignment]
RECORDS_KEPT = 4096
SORT_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "created": Image.created_at,
    "accessed": Image.accessed_at,
    "size": Image.size,
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


def safe_to_remove(r2_on: bool) -> ColumnElement[bool]:
    """Rows whose local copy may go (``picgate.library.eviction``): ``uploaded`` always,
    ``none`` only while R2 is not configured; ``pending``/``failed`` never."""
    if r2_on:
        return Image.r2_state == R2_UPLOADED
    return Image.r2_state.in_((R2_UPLOADED, R2_NONE))


def filtered(query: Any, narrow: ImageFilter | None) -> Any:
    """``query`` with ``narrow``'s conditions on ``images`` added."""
    if narrow is None:
        return query
    if narrow.user_id:
        query = query.where(Image.user_id == narrow.user_id)
    if narrow.chat_id:
        query = query.where(Image.chat_id == narrow.chat_id)
    if narrow.model:
        query = query.where(Image.model == narrow.model)
    if narrow.text:
        # the user's text is a literal: % and _ match only themselves
        escaped = narrow.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Image.prompt.like(f"%{escaped}%", escape="\\"))
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
        # a Core insert: the ORM's unit of work costs twice the CPU for one new row
        self.db.write(lambda s: s.execute(IMAGES.insert(), row))
        self.remember(image)

    def load(self, image_id: str) -> Image | None:
        row = self.db.read(lambda s: s.get(Image, image_id))
        if row is not None:
            self.remember(StoredImage(row.id, row.ext, row.mime, row.size, row.sha256))
        return row

    def sizes(self, ids: Collection[str]) -> dict[str, int]:
        """The stored size of every id of ``ids`` that has a row, in one query (a chat naming
        thousands of made-up ids costs one statement, not one each)."""
        wanted = list(ids)
        if not wanted:
            return {}

        def work(session: Session) -> dict[str, int]:
            found = session.execute(select(Image.id, Image.size).where(Image.id.in_(wanted)))
            return {image_id: size for image_id, size in found}

        return self.db.read(work)

    def mark_cached(self, image_id: str) -> None:
        """The image has a local copy again (fetched back from the archive)."""
        self.db.write(
            lambda s: s.execute(
                update(Image).where(Image.id == image_id).values(local=True, expired=False)
            )
        )

    def delete(self, image_id: str) -> None:
        self.db.write(lambda s: s.execute(delete(Image).where(Image.id == image_id)))
        self.forget(image_id)

    def mark_gone(self, image_id: str, *, local: bool, remote: bool) -> None:
        """Record that the local copy and/or the R2 object are gone; a row left with no copy
        anywhere is marked expired (→ 410)."""

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

        def work(session: Session) -> None:
            for image_id, when in pending.items():
                session.execute(
                    update(Image)
                    .where(Image.id == image_id, Image.accessed_at < when)
                    .values(accessed_at=when)
                )

        self.db.write(work)
        return len(pending)

    # -- the upload queue ------------------------------------------------------------------

    def upload_candidates(
        self, due: ColumnElement[bool], *, clock: datetime, limit: int
    ) -> tuple[list[str], int]:
        """Up to ``limit`` due ids with a free lease, and how many due rows others hold."""

        def work(session: Session) -> tuple[list[str], int]:
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

        def work(session: Session) -> list[UploadTask]:
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

        return self.db.write(work)

    def upload_succeeded(self, image_id: str, *, owner: str) -> bool:
        """Mark the leased row uploaded; False when the row changed under the lease."""

        def work(session: Session) -> int:
            return _count(
                session.execute(
                    update(Image)
                    .where(
                        Image.id == image_id,
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
            )

        return bool(self.db.write(work))

    def r2_state(self, image_id: str) -> str | None:
        return self.db.read(lambda s: s.scalar(select(Image.r2_state).where(Image.id == image_id)))

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
            lambda s: s.execute(
                update(Image)
                .where(Image.id == image_id, Image.r2_lease_owner == owner)
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

    def uploads_waiting(self) -> int:
        """Rows still ``pending`` or ``failed``."""
        return self.db.read(
            lambda s: int(
                s.scalar(
                    select(func.count())
                    .select_from(Image)
                    .where(Image.r2_state.in_((R2_PENDING, R2_FAILED)))
                )
                or 0
            )
        )

    def make_pending_due(self, now: datetime) -> None:
        """Every pending upload due now, whatever its backoff said."""
        self.db.write(
            lambda s: s.execute(
                update(Image)
                .where(Image.r2_state == R2_PENDING, Image.r2_next_attempt_at > now)
                .values(r2_next_attempt_at=now)
                .execution_options(synchronize_session=False)
            )
        )

    def queue_unarchived(self, now: datetime) -> int:
        """Queue every local image without an R2 copy, with fresh fast attempts."""
        return self._requeue((Image.r2_state == R2_NONE) & Image.local.is_(True), now)

    def queue_failed(self, now: datetime) -> int:
        """Put every failed upload back in the queue with fresh fast attempts."""
        return self._requeue(Image.r2_state == R2_FAILED, now)

    def _requeue(self, which: ColumnElement[bool], now: datetime) -> int:
        return self.db.write(
            lambda s: _count(
                s.execute(
                    update(Image)
                    .where(which)
                    .values(r2_state=R2_PENDING, r2_attempts=0, r2_next_attempt_at=now)
                    .execution_options(synchronize_session=False)
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
            select(Image.id, Image.ext, Image.size, Image.r2_state)
            .where(Image.local.is_(True), safe_to_remove(r2_on))
            .order_by(Image.accessed_at, Image.id)
            .limit(limit)
        )
        if accessed_before is not None:
            query = query.where(Image.accessed_at < accessed_before)
        if spare is not None:
            query = query.where(Image.id != spare)
        if exclude:
            query = query.where(Image.id.not_in(list(exclude)))
        return self.db.read(lambda s: list(s.execute(query).all()))

    def count_local(
        self, *, unsafe_for: bool | None = None, accessed_before: datetime | None = None
    ) -> int:
        """Rows with a local copy; with ``unsafe_for`` (R2 on or off), only those the safety
        rule keeps; with ``accessed_before``, only those accessed earlier."""
        where: ColumnElement[bool] = Image.local.is_(True)
        if unsafe_for is not None:
            where = and_(where, ~safe_to_remove(unsafe_for))
        if accessed_before is not None:
            where = and_(where, Image.accessed_at < accessed_before)
        return self.db.read(
            lambda s: int(s.scalar(select(func.count()).select_from(Image).where(where)) or 0)
        )

    def mark_not_local(self, ids: list[str], *, expired: bool, only_local: bool = False) -> None:
        """``local=False`` (and ``expired=True`` with ``expired``) on these rows."""
        if not ids:
            return
        values: dict[str, Any] = {"local": False}
        if expired:
            values["expired"] = True
        where: ColumnElement[bool] = Image.id.in_(ids)
        if only_local:
            where = and_(where, Image.local.is_(True))
        self.db.write(
            lambda s: s.execute(
                update(Image)
                .where(where)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        )
        for image_id in ids:
            self.forget(image_id)

    def local_flags(self, ids: list[str]) -> dict[str, tuple[str, bool]]:
        """id → (ext, local) for the ids that have a row."""

        def work(session: Session) -> dict[str, tuple[str, bool]]:
            found = session.execute(
                select(Image.id, Image.ext, Image.local).where(Image.id.in_(ids))
            ).all()
            return {r.id: (r.ext, bool(r.local)) for r in found}

        return self.db.read(work)

    def relink(self, ids: list[str]) -> None:
        """The files are there after all: ``local=True``, not expired."""
        if ids:
            self.db.write(
                lambda s: s.execute(
                    update(Image)
                    .where(Image.id.in_(ids))
                    .values(local=True, expired=False)
                    .execution_options(synchronize_session=False)
                )
            )

    def local_rows_except(self, seen: Collection[str], *, batch: int) -> list[tuple[str, str, str]]:
        """(id, ext, r2_state) of rows claiming a local copy whose id is not in ``seen``."""

        def work(session: Session) -> list[tuple[str, str, str]]:
            # one index scan, streamed in partitions; only the (usually few) unseen rows are kept
            query = select(Image.id, Image.ext, Image.r2_state).where(Image.local.is_(True))
            found = session.execute(query.execution_options(yield_per=batch))
            return [(r.id, r.ext, r.r2_state) for r in found if r.id not in seen]

        return self.db.read(work)

    # -- retention -------------------------------------------------------------------------

    def created_before(
        self, cutoff: datetime, *, exclude: Collection[str], limit: int
    ) -> list[Any]:
        """(id, ext, r2_state) of rows created before ``cutoff``, oldest first."""
        query = (
            select(Image.id, Image.ext, Image.r2_state)
            .where(Image.created_at < cutoff)
            .order_by(Image.created_at, Image.id)
            .limit(limit)
        )
        if exclude:
            query = query.where(Image.id.not_in(list(exclude)))
        return self.db.read(lambda s: list(s.execute(query).all()))

    def delete_many(self, ids: list[str]) -> None:
        self.db.write(
            lambda s: s.execute(
                delete(Image).where(Image.id.in_(ids)).execution_options(synchronize_session=False)
            )
        )
        for image_id in ids:
            self.forget(image_id)

    # -- statistics and the grid -----------------------------------------------------------

    def counts(self) -> tuple[int, int, int, int, int, int, int]:
        """total, local, uploaded, pending, failed, expired, bytes of local rows: one pass."""

        def work(session: Session) -> Any:
            return session.execute(
                select(
                    func.count(),
                    _flag(Image.local.is_(True)),
                    _flag(Image.r2_state == R2_UPLOADED),
                    _flag(Image.r2_state == R2_PENDING),
                    _flag(Image.r2_state == R2_FAILED),
                    _flag(Image.expired.is_(True)),
                    func.coalesce(func.sum(case((Image.local.is_(True), Image.size), else_=0)), 0),
                ).select_from(Image)
            ).one()

        return tuple(int(value) for value in self.db.read(work))  # type: ignore[return-value]

    def gauges(self) -> tuple[int, int, int, int, int]:
        """Of the rows not expired: count, bytes, uploads pending, uploads failed, bytes with a
        local copy (the metrics' scrape: one query)."""

        def work(session: Session) -> Any:
            return session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(Image.size), 0),
                    _flag(Image.r2_state == R2_PENDING),
                    _flag(Image.r2_state == R2_FAILED),
                    func.coalesce(func.sum(case((Image.local.is_(True), Image.size), else_=0)), 0),
                )
                .select_from(Image)
                .where(Image.expired.is_(False))
            ).one()

        return tuple(int(value or 0) for value in self.db.read(work))  # type: ignore[return-value]

    def created_between(self, start: datetime, end: datetime) -> int:
        return self.db.read(
            lambda s: int(
                s.scalar(
                    select(func.count())
                    .select_from(Image)
                    .where(Image.created_at >= start, Image.created_at < end)
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
    ) -> tuple[list[Image], int]:
        """Up to ``limit`` rows ordered by ``sort`` (a SORT_COLUMNS key) descending, after the
        (value, id) keyset position, narrowed by ``narrow``; and how many rows it lets through."""
        column = SORT_COLUMNS[sort]
        query = filtered(
            select(Image).order_by(column.desc(), Image.id.desc()).limit(limit), narrow
        )
        if after is not None:
            query = query.where(tuple_(column, Image.id) < tuple_(*after))
        counting = filtered(select(func.count()).select_from(Image), narrow)

        def work(session: Session) -> tuple[list[Image], int]:
            rows = list(session.scalars(query))
            total = int(session.scalar(counting) or 0)
            return rows, total

        return self.db.read(work)

    def per_user(self, day_start: datetime, *, limit: int) -> list[dict[str, Any]]:
        """Images per user id, today (from ``day_start``) and in total, most first: user_id,
        user_name, today, total; one grouped pass over the rows."""
        total = func.count()
        query = (
            select(
                Image.user_id,
                func.max(Image.user_name),
                _flag(Image.created_at >= day_start),
                total,
            )
            .where(Image.user_id.is_not(None))
            .group_by(Image.user_id)
            .order_by(total.desc(), Image.user_id)
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
        query = select(func.count()).select_from(Image).where(Image.created_at >= since)
        if user_id is not None:
            query = query.where(Image.user_id == user_id)
        else:
            query = query.where(Image.key_name == key_name)
        return self.db.read(lambda s: int(s.execute(query).scalar_one()))

    def ids_of_chat(self, chat_id: str) -> list[str]:
        """The ids of every image recorded with this chat id."""
        return self.db.read(
            lambda s: list(s.scalars(select(Image.id).where(Image.chat_id == chat_id)))
        )

    def find_by_sha256(self, digest: str) -> StoredImage | None:
        """An unexpired image with these bytes, the oldest first (None when there is none)."""
        row = self.db.read(
            lambda s: s.scalars(
                select(Image)
                .where(Image.sha256 == digest, Image.expired.is_(False))
                .order_by(Image.created_at)
                .limit(1)
            ).first()
        )
        if row is None:
            return None
        return StoredImage(row.id, row.ext, row.mime, row.size, row.sha256)
