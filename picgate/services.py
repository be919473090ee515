"""Everything the routes need, built once per process and handed to them through ``deps``.

Building does no I/O. ``prepare()`` (synchronous) makes folders, migrates the database and
generates a gateway key on first start; ``start()``/``stop()`` run the background tasks of
server mode. Under Lambda only ``prepare()`` runs, once per container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import httpx

from picgate.config import Settings, validate_settings
from picgate.db.engine import Database
from picgate.errors import StorageUnavailable
from picgate.eventlog import EventLog
from picgate.gateway.upstream import Upstream
from picgate.settings_store import ConfigService, SecretBox, load_or_create_secret_key
from picgate.storage.archive import Remote, fetch_remote_bytes, locate_remote
from picgate.storage.image_store import ImageStore, StoredImage
from picgate.storage.local import LocalCache
from picgate.storage.object_store import ObjectStore
from picgate.storage.upload_queue import UploadWorker, upload_now

if TYPE_CHECKING:
    from picgate.db.models import Image
    from picgate.images.serving import Located

log = logging.getLogger("picgate")

FLUSH_SECONDS = 1.0
ACCESS_FLUSH_SECONDS = 30.0


class Services:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        """``objects`` forces an object store (tests); by default R2 follows the settings."""
        validate_settings(settings)
        self.settings = settings
        self.serverless = settings.serverless
        self.db = Database(settings.database_url, auth_token=settings.database_auth_token)
        self.events = EventLog(self.db, max_entries=settings.log_max_entries)
        self.cache = LocalCache(settings.resolved_images_dir)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self.upstream = Upstream(lambda: self.http)
        self._config: ConfigService | None = None
        self.remote = Remote(lambda: self.config.current(), forced=objects)
        self.images = ImageStore(
            db=self.db,
            cache=self.cache,
            events=self.events,
            max_image_bytes=settings.max_image_mb * 2**20,
            r2_enabled=self.remote.configured,
        )
        self._prepared = False
        self._prepare_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # extra periodic work registered by other parts (upload worker, scheduler)
        self.background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.generated_key: str | None = None
        self.uploader = UploadWorker(self)
        if not self.serverless:
            self.background.append(self.uploader.run)
        from picgate.jobs import install as install_jobs

        install_jobs(self)  # the size cap after each store; the cleanup scheduler (server mode)

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared outbound client, built on first use (it loads the CA bundle)."""
        if self._http is None:
            self._http = Upstream.build_client(transport=self._transport)
        return self._http

    @property
    def config(self) -> ConfigService:
        if self._config is None:
            secret = load_or_create_secret_key(self.settings)
            self._config = ConfigService(self.settings, self.db, SecretBox(secret))
        return self._config

    def prepare(self) -> None:
        """Folders, schema, first-start key. Idempotent and thread-safe; call before serving."""
        if self._prepared:
            return
        with self._prepare_lock:
            if self._prepared:
                return
            self.cache.ensure()
            self.db.migrate()
            key = self.config.ensure_gateway_key()
            if key:
                self.generated_key = key
                banner = (
                    "\n" + "=" * 64 + "\n"
                    "PicGate generated a gateway API key (shown once; also in the admin console):\n"
                    f"    {key}\n"
                    "Clients must send:  Authorization: Bearer <key>\n" + "=" * 64
                )
                print(banner, flush=True)
            self.config.reload()
            self._prepared = True

    async def after_store(self, image: StoredImage) -> StoredImage:
        """Hook run after an image is stored: queue its R2 upload, or do it now (serverless).

        Serverless: the object is in R2 before this returns; if it cannot be (after a couple of
        attempts) the row stays queued and StorageUnavailable tells the caller to return the
        image inline. Server mode: wakes the upload worker and returns at once.
        """
        if not self.serverless:
            if image.queued:
                self.uploader.wake()
            return image
        import anyio.to_thread

        def archive() -> bool:
            # configured() may read the settings table: off the event loop
            return not self.remote.configured() or upload_now(self, image.id)

        if not await anyio.to_thread.run_sync(archive):
            raise StorageUnavailable("the image could not be archived to R2; returned inline")
        return image

    async def locate_remote(self, row: Image) -> Located | None:
        """Serve an image with no local copy from the remote store (None: not there)."""
        return await locate_remote(self, row)

    async def fetch_remote_bytes(self, image: StoredImage) -> bytes | None:
        return await fetch_remote_bytes(self, image)

    # -- background work (server mode) ---------------------------------------------------

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="picgate-flush"))
        for job in self.background:
            self._tasks.append(asyncio.create_task(job(), name="picgate-background"))

    async def _flush_loop(self) -> None:
        import anyio.to_thread

        ticks = 0
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            ticks += 1
            try:
                await self.events.aflush()
                if ticks * FLUSH_SECONDS >= ACCESS_FLUSH_SECONDS:
                    ticks = 0
                    await anyio.to_thread.run_sync(self.images.flush_access_times)
            except Exception as exc:  # keep the loop alive; the next tick retries
                log.warning("background flush failed: %s", exc)

    def flush(self) -> None:
        """Write buffered log lines and access times now (serverless: before returning)."""
        self.images.flush_access_times()
        self.events.flush()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        import anyio.to_thread

        with contextlib.suppress(Exception):
            await anyio.to_thread.run_sync(self.flush)
        if self._http is not None:
            await self._http.aclose()
        self.db.dispose()
