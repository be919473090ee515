"""Where a migrated image goes: PicGate's image store, checked before any chat points at it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from picgate.attribution import clean_text
from picgate.db.models import R2_UPLOADED
from picgate.errors import StorageUnavailable
from picgate.library.library import ImageLibrary
from picgate.library.records import ImageOrigin, StoredImage
from picgate.storage.local import sha256_hex

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
    """Stores through ``ImageLibrary``; an image already stored (same sha256) is used again.

    Serverless with R2 (where the local copy is a temporary cache), the library archives every
    new image before ``save`` returns; when it cannot, the image's chat stays as it is.
    """

    def __init__(self, *, library: ImageLibrary, base_url: str) -> None:
        self.library = library
        self.base_url = base_url.rstrip("/")
        self.stored = 0
        self.reused = 0

    def url(self, image: StoredImage) -> str:
        return f"{self.base_url}{image.path}"

    def keep(self, data: bytes, origin: Origin) -> str:
        digest = sha256_hex(data)
        existing = self.library.rows.find_by_sha256(digest)
        if existing is not None and self._readable(existing, digest):
            self.reused += 1
            return self.url(existing)
        # the ids come from the Open WebUI database: as untrusted as forwarded headers
        found = ImageOrigin(
            SOURCE,
            user_id=clean_text(origin.user_id),
            chat_id=clean_text(origin.chat_id),
            message_id=clean_text(origin.message_id),
        )
        try:
            stored = self.library.save_sync(data, origin=found)
        except StorageUnavailable as exc:  # serverless: stored, but not archived to R2
            raise SinkError(f"image could not be archived to R2: {exc}") from exc
        if not self._readable(stored, digest):
            raise SinkError(f"image {stored.id} did not read back with the bytes stored")
        self.stored += 1
        return self.url(stored)

    def _readable(self, image: StoredImage, digest: str) -> bool:
        """The row names these bytes and a copy of them exists (local, or uploaded to R2)."""
        row = self.library.get(image.id)
        if row is None or row.sha256 != digest or row.expired:
            return False
        if row.local:
            data = self.library.cache.read(image.id, image.ext)
            if data is not None and sha256_hex(data) == digest:
                return True
        return row.r2_state == R2_UPLOADED
