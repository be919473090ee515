"""``ImageLibrary``: the image row's one owner. Save, get, list, delete; and the parts that look
after an image for the rest of its life, built once here.

``save`` does everything storing an image means, so no caller has a step to remember: check the
size, sniff the real type, write the file atomically, insert the row, apply the local size cap,
then archive it — server mode queues the R2 upload and rings the upload worker's doorbell;
serverless mode uploads before returning and raises ``StorageUnavailable`` when it cannot (the
image stays stored and queued; the caller answers with the image inline).

Parts: ``rows`` (every statement on ``images``), ``uploads`` (the R2 queue), ``serving`` (where
bytes come from, the redirect rule), ``variants`` (resized or converted copies, made once and
kept beside the original), ``copies`` (TTL, cap, clear local), ``retention``, ``actions`` (the
console's buttons), ``stats``.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio.to_thread

from picgate.config import Settings
from picgate.db.engine import Database
from picgate.db.models import R2_NONE, R2_PENDING, ImageRow
from picgate.errors import PayloadTooLarge, StorageUnavailable
from picgate.eventlog import EventLog
from picgate.library.actions import ConsoleActions
from picgate.library.eviction import LocalCopies, SizeCap
from picgate.library.gallery import Page, list_images
from picgate.library.records import (
    ImageFilter,
    ImageOrigin,
    StoredImage,
    new_image_id,
    utcnow,
)
from picgate.library.retention import MetadataRetention
from picgate.library.rows import ImageRows
from picgate.library.sendfile import Sendfile
from picgate.library.serving import ImageServing
from picgate.library.stats import LibraryStats
from picgate.library.uploads import UploadQueue
from picgate.library.variant_cache import VariantCache
from picgate.storage.archive import Archive
from picgate.storage.codec import decode_base64, image_size, sniff
from picgate.storage.incoming import IncomingImage, Received
from picgate.storage.local import LocalCache


class ImageLibrary:
    """Built once per process (by the container). ``settings`` gives the effective settings at
    call time: the console can change them while PicGate runs."""

    def __init__(
        self,
        *,
        db: Database,
        cache: LocalCache,
        archive: Archive,
        events: EventLog,
        settings: Callable[[], Settings],
        max_image_bytes: int,
        serverless: bool,
        sendfile: Sendfile | None = None,
    ) -> None:
        self.cache = cache
        self.archive = archive
        self.events = events
        self.settings = settings
        self.max_image_bytes = max_image_bytes
        self.serverless = serverless
        self.rows = rows = ImageRows(db)
        self.uploads = UploadQueue(rows=rows, cache=cache, archive=archive, events=events)
        self.serving = ImageServing(
            rows=rows,
            cache=cache,
            archive=archive,
            events=events,
            serverless=serverless,
            sendfile=sendfile,
        )
        self.variants = VariantCache(rows=rows, serving=self.serving, cache=cache)
        self.copies = LocalCopies(rows=rows, cache=cache, archive=archive, events=events)
        self.size_cap = SizeCap(self.copies, settings)
        self.retention = MetadataRetention(rows=rows, cache=cache, archive=archive, events=events)
        self.stats = LibraryStats(rows=rows, cache=cache, archive=archive, events=events)
        self.actions = ConsoleActions(
            rows=rows,
            cache=cache,
            archive=archive,
            events=events,
            uploads=self.uploads,
            copies=self.copies,
            settings=settings,
        )

    # -- saving ----------------------------------------------------------------------------

    def decode(self, payload: str | bytes) -> bytes:
        """The bytes of base64 ``payload``; PayloadTooLarge before decoding an oversized one."""
        # base64 is 4/3 of the bytes: refuse oversized input before decoding it
        if len(payload) > self.max_image_bytes * 4 // 3 + 1024:
            raise PayloadTooLarge(f"image is larger than {self.max_image_bytes // 2**20} MB")
        return decode_base64(payload)

    def incoming(self, *, keep_text: bool = False) -> IncomingImage:
        """A new image to be written while its base64 arrives (see ``storage.incoming``);
        ``keep_text``: keep its base64 text when canonical (``Received.b64``)."""
        return IncomingImage(
            self.cache, new_image_id(), max_bytes=self.max_image_bytes, keep_text=keep_text
        )

    def save_sync(
        self, data: bytes, *, origin: ImageOrigin, received: Received | None = None
    ) -> StoredImage:
        """``save`` on this thread (a worker thread: it writes files and rows)."""
        stored = self._store(data, origin=origin, received=received)
        self.size_cap.after_store(stored.id)
        if stored.queued:
            if not self.serverless:
                self.uploads.doorbell.ring()
            elif not self.uploads.upload_now(stored.id):
                raise StorageUnavailable("the image could not be archived to R2; returned inline")
        return stored

    async def save(
        self, data: bytes, *, origin: ImageOrigin, received: Received | None = None
    ) -> StoredImage:
        """Store one image and everything that follows (see the module docstring).

        ``received``: ``data`` is already hashed and in a temporary file (written while the
        upstream answer arrived), renamed into place here; if ``data`` is refused first, the
        caller discards it. Raises BadRequest/UnsupportedMediaType/PayloadTooLarge for bytes
        that are not a storable image, OSError when the disk fails, and (serverless only)
        StorageUnavailable after storing when the archive upload failed.
        """
        return await anyio.to_thread.run_sync(
            lambda: self.save_sync(data, origin=origin, received=received)
        )

    async def save_encoded(self, payload: str | bytes, *, origin: ImageOrigin) -> StoredImage:
        """``save`` of base64 text."""
        return await anyio.to_thread.run_sync(
            lambda: self.save_sync(self.decode(payload), origin=origin)
        )

    def _store(self, data: bytes, *, origin: ImageOrigin, received: Received | None) -> StoredImage:
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
        r2 = self.archive.configured()
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
            **origin.columns(),
            "local": True,
            "expired": False,
            "r2_state": R2_PENDING if r2 else R2_NONE,
            "r2_attempts": 0,
            "r2_next_attempt_at": now if r2 else None,
        }
        stored = StoredImage(image_id, kind.ext, kind.mime, len(data), digest, queued=r2)
        try:
            self.rows.insert(row, stored)
        except BaseException:
            self.cache.delete(image_id, kind.ext)
            raise
        return stored

    # -- reading, listing, deleting --------------------------------------------------------

    def get(self, image_id: str) -> ImageRow | None:
        """The row of ``image_id``, or None (synchronous)."""
        return self.rows.load(image_id)

    async def aget(self, image_id: str) -> ImageRow | None:
        return await anyio.to_thread.run_sync(self.rows.load, image_id)

    async def delete(
        self, ids: list[str], *, local: bool, remote: bool, forget: bool, force: bool = False
    ) -> dict[str, int]:
        """``ConsoleActions.delete_images`` in a worker thread."""
        return await anyio.to_thread.run_sync(
            lambda: self.actions.delete_images(
                ids, local=local, remote=remote, forget=forget, force=force
            )
        )

    async def sizes(self, ids: list[str]) -> dict[str, int]:
        """The stored size of each of ``ids`` that exists (one query; see ``ImageRows.sizes``)."""
        return await anyio.to_thread.run_sync(self.rows.sizes, ids)

    def touch(self, image_id: str) -> None:
        """Remember that ``image_id`` was served now (written in batches)."""
        self.rows.touch(image_id)

    def flush_access_times(self) -> int:
        return self.rows.flush_access_times()

    def list_sync(
        self,
        *,
        sort: str = "created",
        cursor: str | None = None,
        limit: int = 48,
        narrow: ImageFilter | None = None,
    ) -> Page:
        """One page of the grid (``picgate.library.gallery``), on this thread."""
        return list_images(self.rows, sort=sort, cursor=cursor, limit=limit, narrow=narrow)

    async def list(
        self,
        *,
        sort: str = "created",
        cursor: str | None = None,
        limit: int = 48,
        narrow: ImageFilter | None = None,
    ) -> Page:
        """One page of the grid (``picgate.library.gallery``)."""
        return await anyio.to_thread.run_sync(
            lambda: self.list_sync(sort=sort, cursor=cursor, limit=limit, narrow=narrow)
        )
