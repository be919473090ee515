"""Variants of stored images, made once and kept beside the original in the local cache.

``VariantCache.get`` answers the bytes of one variant (``picgate.storage.variants``): the cached
file when there is one, else the original's bytes (the local copy, or fetched back from R2 into
the local cache as ``/images`` does) rendered by Pillow in a worker thread and written
atomically under ``{IMAGES_DIR}/variants/``. Concurrent requests for the same variant share one
rendering; at most ``RENDER_SLOTS`` renderings run at once, since each can take ~130 MB at its
peak. Variants are never archived to R2: they can be made again.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from picgate.errors import Gone
from picgate.library.rows import ImageRows
from picgate.library.serving import ImageServing, Located, read_fd
from picgate.storage.codec import BY_EXT, ImageType
from picgate.storage.local import LocalCache
from picgate.storage.variants import VariantSpec, render_variant

RENDER_SLOTS = 2


@dataclass(frozen=True)
class Variant:
    data: bytes
    type: ImageType
    etag: str


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class VariantCache:
    def __init__(self, *, rows: ImageRows, serving: ImageServing, cache: LocalCache) -> None:
        self.rows = rows
        self.serving = serving
        self.cache = cache
        self._slots = threading.BoundedSemaphore(RENDER_SLOTS)
        self._lock = threading.Lock()
        self._inflight: dict[Path, Future[bytes]] = {}

    async def get(self, located: Located, spec: VariantSpec) -> Variant:
        """The variant ``spec`` of the located image; Gone when its bytes are nowhere,
        UnsupportedMediaType/BadRequest from rendering (bombs, animations, undecodable)."""
        image = located.image
        original = BY_EXT[image.ext]
        out = spec.output_type(original)
        path = self.cache.variant_path(image.id, spec.file_name(original))
        data = await anyio.to_thread.run_sync(_read, path)
        if data is None:
            source = None
            if located.fd is not None:  # the file opened at lookup: whole even if evicted since
                source = await anyio.to_thread.run_sync(read_fd, located.fd, image.size)
            elif located.path is not None:
                source = await anyio.to_thread.run_sync(_read, located.path)
            if source is None:  # only in R2, or evicted since it was located
                fetched = await self._fetch_original(image.id)
                source = await anyio.to_thread.run_sync(_read, fetched)
            if source is None:
                raise Gone("This image is no longer stored anywhere.")
            data = await anyio.to_thread.run_sync(self._make, path, source, image.id, spec)
        return Variant(data, out, spec.etag(image.sha256, original))

    async def file(self, located: Located, spec: VariantSpec) -> Path:
        """The cached file of the variant ``spec``, made first when missing (for a proxy to send,
        ``picgate.library.sendfile``); the errors of ``get``."""
        image = located.image
        path = self.cache.variant_path(image.id, spec.file_name(BY_EXT[image.ext]))
        if not await anyio.to_thread.run_sync(path.is_file):
            await self.get(located, spec)
        return path

    async def _fetch_original(self, image_id: str) -> Path:
        """The original in the local cache, fetched back from R2 (once per id) when missing."""
        row = await anyio.to_thread.run_sync(self.rows.load, image_id)
        if row is None:
            raise Gone("This image is no longer stored anywhere.")
        path = await anyio.to_thread.run_sync(self.serving.fetch_to_cache, row)
        if path is None:
            raise Gone("This image has expired and is no longer stored anywhere.")
        return path

    def _make(self, path: Path, source: bytes, image_id: str, spec: VariantSpec) -> bytes:
        """Render and store one variant; concurrent callers for ``path`` share one rendering."""
        with self._lock:
            flight = self._inflight.get(path)
            leader = flight is None
            if flight is None:
                flight = Future()
                self._inflight[path] = flight
        if not leader:
            return flight.result()
        try:
            data = self._render(path, source, image_id, spec)
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(data)
            return data
        finally:
            with self._lock:
                self._inflight.pop(path, None)

    def _render(self, path: Path, source: bytes, image_id: str, spec: VariantSpec) -> bytes:
        done = _read(path)  # a flight that finished just before this one started
        if done is not None:
            return done
        with self._slots:
            data, _type = render_variant(source, spec)
        self.cache.write_variant(image_id, path.name, data)
        return data
