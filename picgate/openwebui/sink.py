"""Where a migrated image goes: PicGate's image store, checked before any chat points at it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from picgate.attribution import Attribution, clean_text
from picgate.db.models import R2_UPLOADED
from picgate.storage.image_store import ImageStore, StoredImage
from picgate.storage.local import LocalCache, sha256_hex

SOURCE = "openwebui"


@dataclass(frozen=True)
class Origin:
    """Where in Open WebUI an image was found (recorded on the image)."""

    chat_id: str
    user_id: str | None
    message_id: str | None


class SinkError(Exception):
    """An image could not be stored and verified: its chat must stay as it is."""


class ImageSink(Protocol):
    def keep(self, data: bytes, origin: Origin) -> str:
        """Store ``data`` (or find it stored already), check it reads back, return its URL."""
        ...


class PicGateSink:
    """Stores through ``ImageStore``; an image already stored (same sha256) is used again.

    ``upload_now``: when given (serverless, where the local copy is a temporary cache), every
    new image must be in the archive before its URL is handed out.
    """

    def __init__(
        self,
        *,
        images: ImageStore,
        cache: LocalCache,
        base_url: str,
        upload_now: Callable[[str], bool] | None = None,
    ) -> None:
        self.images = images
        self.cache = cache
        self.base_url = base_url.rstrip("/")
        self.upload_now = upload_now
        self.stored = 0
        self.reused = 0

    def url(self, image: StoredImage) -> str:
        return f"{self.base_url}{image.path}"

    def keep(self, data: bytes, origin: Origin) -> str:
        digest = sha256_hex(data)
        existing = self.images.find_by_sha256(digest)
        if existing is not None and self._readable(existing, digest):
            self.reused += 1
            return self.url(existing)
        # the ids come from the Open WebUI database: as untrusted as forwarded headers
        who = Attribution(
            user_id=clean_text(origin.user_id),
            chat_id=clean_text(origin.chat_id),
            message_id=clean_text(origin.message_id),
        )
        stored = self.images.store_bytes(data, source=SOURCE, attribution=who)
        if self.upload_now is not None and not self.upload_now(stored.id):
            raise SinkError(f"image {stored.id} could not be archived to R2")
        if not self._readable(stored, digest):
            raise SinkError(f"image {stored.id} did not read back with the bytes stored")
        self.stored += 1
        return self.url(stored)

    def _readable(self, image: StoredImage, digest: str) -> bool:
        """The row names these bytes and a copy of them exists (local, or uploaded to R2)."""
        row = self.images.load_row(image.id)
        if row is None or row.sha256 != digest or row.expired:
            return False
        if row.local:
            data = self.cache.read(image.id, image.ext)
            if data is not None and sha256_hex(data) == digest:
                return True
        return row.r2_state == R2_UPLOADED
