"""The image store: decode → sniff → id → atomic write → metadata row (→ R2 queue).

Blocking work (decoding, hashing, file I/O, database) runs in a worker thread. Access times are
remembered in memory and written in batches, so serving an image is not a database write.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio.to_thread
from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from picgate.db.engine import Database
from picgate.db.models import R2_NONE, R2_PENDING, Image
from picgate.errors import PayloadTooLarge
from picgate.eventlog import EventLog
from picgate.storage.codec import BY_EXT, decode_base64, image_size, sniff
from picgate.storage.incoming import IncomingImage, Received
from picgate.storage.local import ID_PATTERN, LocalCache

PROMPT_MAX = 2000
IMAGES: Table = Image.__table__  # type: ignore[assignment]


def new_image_id() -> str:
    """22 URL-safe characters: 128 random bits."""
    return secrets.token_urlsafe(16)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class StoredImage:
    id: str
    ext: str
    mime: str
    size: int
    sha256: str
    queued: bool = field(default=False, compare=False)  # its R2 upload was queued on storing

    @property
    def path(self) -> str:
        return f"/images/{self.id}.{self.ext}"

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


def parse_image_name(name: str) -> tuple[str, str | None] | None:
    """``{id}`` or ``{id}.{ext}`` → (id, ext or None); None for anything else (traversal...)."""
    stem, dot, ext = name.partition(".")
    if not ID_PATTERN.match(stem):
        return None
    if dot:
        ext = ext.lower()
        if ext not in BY_EXT:
            return None
        return stem, ("jpg" if ext == "jpeg" else ext)
    return stem, None


class ImageStore:
    def __init__(
        self,
        *,
        db: Database,
        cache: LocalCache,
        events: EventLog,
        max_image_bytes: int,
        r2_enabled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.db = db
        self.cache = cache
        self.events = events
        self.max_image_bytes = max_image_bytes
        self.r2_enabled = r2_enabled
        self._records: OrderedDict[str, StoredImage] = OrderedDict()
        self._records_lock = threading.Lock()
        self._accessed: dict[str, datetime] = {}
        self._accessed_lock = threading.Lock()
        # called with each new image after its row is written (Services adds the size cap)
        self.on_stored: list[Callable[[StoredImage], None]] = []

    # -- storing ---------------------------------------------------------------------------

    def decode(self, payload: str | bytes) -> bytes:
        # base64 is 4/3 of the bytes: refuse oversized input before decoding it
        if len(payload) > self.max_image_bytes * 4 // 3 + 1024:
            raise PayloadTooLarge(f"image is larger than {self.max_image_bytes // 2**20} MB")
        return decode_base64(payload)

    def incoming(self, *, keep_text: bool = False) -> IncomingImage:
        """A new image to be written while its base64 arrives (see ``storage.incoming``)."""
        return IncomingImage(
            self.cache, new_image_id(), max_bytes=self.max_image_bytes, keep_text=keep_text
        )

    def store_bytes(
        self,
        data: bytes,
        *,
        source: str,
        prompt: str | None = None,
        received: Received | None = None,
    ) -> StoredImage:
        """Store one image (synchronous; call from a worker thread).

        ``received``: ``data`` is already hashed and in a temporary file (written while the
        upstream answer arrived), which is renamed into place; if ``data`` is refused first,
        the caller discards it.
        """
        if len(data) > self.max_image_bytes:
            raise PayloadTooLarge(f"image is larger than {self.max_image_bytes // 2**20} MB")
        kind = sniff(data)
        if received is None:
            image_id = new_image_id()
            temp, digest = self.cache.write_temp(image_id, data)
            received = Received(image_id, temp, data, digest)
        image_id, digest = received.image_id, received.sha256
        try:
            self.cache.commit(received.temp, image_id, kind.ext, len(data))
        except BaseException:
            received.discard()
            raise
        dims = image_size(data, kind)
        now = utcnow()
        r2 = self.r2_enabled()
        row = {
            "id": image_id,
            "ext": kind.ext,
            "mime": kind.mime,
            "size": len(data),
            "sha256": digest,
            "width": dims[0] if dims else None,
            "height": dims[1] if dims else None,
            "created_at": now,
            "accessed_at": now,
            "source": source,
            "prompt": (prompt or None) and prompt[:PROMPT_MAX],
            "local": True,
            "expired": False,
            "r2_state": R2_PENDING if r2 else R2_NONE,
            "r2_attempts": 0,
            "r2_next_attempt_at": now if r2 else None,
        }
        try:
            # a Core insert: the ORM's unit of work costs twice the CPU for one new row
            self.db.call(lambda s: s.execute(IMAGES.insert(), row))
        except BaseException:
            self.cache.delete(image_id, kind.ext)
            raise
        stored = StoredImage(image_id, kind.ext, kind.mime, len(data), digest, queued=r2)
        self._remember(stored)
        for hook in self.on_stored:
            hook(stored)
        return stored

    def store_encoded(
        self, payload: str | bytes, *, source: str, prompt: str | None = None
    ) -> StoredImage:
        return self.store_bytes(self.decode(payload), source=source, prompt=prompt)

    async def save_encoded(
        self, payload: str | bytes, *, source: str, prompt: str | None = None
    ) -> StoredImage:
        return await anyio.to_thread.run_sync(
            lambda: self.store_encoded(payload, source=source, prompt=prompt)
        )

    async def save_bytes(
        self,
        data: bytes,
        *,
        source: str,
        prompt: str | None = None,
        received: Received | None = None,
    ) -> StoredImage:
        return await anyio.to_thread.run_sync(
            lambda: self.store_bytes(data, source=source, prompt=prompt, received=received)
        )

    # -- reading ---------------------------------------------------------------------------

    def _remember(self, image: StoredImage) -> None:
        with self._records_lock:
            self._records[image.id] = image
            self._records.move_to_end(image.id)
            while len(self._records) > 4096:
                self._records.popitem(last=False)

    def forget(self, image_id: str) -> None:
        with self._records_lock:
            self._records.pop(image_id, None)

    def cached_record(self, image_id: str) -> StoredImage | None:
        with self._records_lock:
            return self._records.get(image_id)

    def load_row(self, image_id: str) -> Image | None:
        row = self.db.call(lambda s: s.get(Image, image_id))
        if row is not None:
            self._remember(StoredImage(row.id, row.ext, row.mime, row.size, row.sha256))
        return row

    def mark_cached(self, image_id: str) -> None:
        """Record that the image has a local copy again (fetched back from the archive)."""
        self.db.call(
            lambda s: s.execute(
                update(Image).where(Image.id == image_id).values(local=True, expired=False)
            )
        )

    # -- access times ----------------------------------------------------------------------

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

        self.db.call(work)
        return len(pending)
