"""The container: builds every component once per process, wires them, runs their tasks.

Components (each takes only the others it uses): ``db`` (Database), ``events`` (EventLog),
``cache`` (LocalCache), ``config`` (ConfigService, built on first use), ``upstream``,
``archive`` (the R2 store), ``images`` (ImageStore), ``uploads`` (UploadQueue), ``serving``
(ImageServing), ``cleanup`` (the cleanup job). Routes receive the container through ``deps``;
the domain, storage and jobs modules never import it.

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
from typing import Any

import httpx

from picgate.config import Settings, validate_settings
from picgate.db.engine import Database
from picgate.errors import StorageUnavailable
from picgate.eventlog import EventLog
from picgate.gateway.upstream import Upstream
from picgate.images.serving import ImageServing
from picgate.jobs.cleanup import Cleanup
from picgate.jobs.eviction import CapGuard
from picgate.jobs.scheduler import CleanupScheduler
from picgate.jobs.upload_worker import UploadWorker
from picgate.redaction import Redactor
from picgate.settings_store import ConfigService, SecretBox, load_or_create_secret_key
from picgate.storage.archive import Archive
from picgate.storage.image_store import ImageStore, StoredImage
from picgate.storage.local import LocalCache
from picgate.storage.object_store import ObjectStore
from picgate.storage.upload_queue import UploadQueue

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
        self.events.redactor = Redactor.of(settings)
        self.cache = LocalCache(settings.resolved_images_dir)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self.upstream = Upstream(lambda: self.http)
        self._config: ConfigService | None = None
        self.archive = Archive(self._current_settings, forced=objects)
        self.images = ImageStore(
            db=self.db,
            cache=self.cache,
            events=self.events,
            max_image_bytes=settings.max_image_mb * 2**20,
            r2_enabled=self.archive.configured,
        )
        self.uploads = UploadQueue(
            db=self.db, cache=self.cache, archive=self.archive, events=self.events
        )
        self.serving = ImageServing(
            images=self.images,
            cache=self.cache,
            archive=self.archive,
            events=self.events,
            serverless=self.serverless,
        )
        self.cleanup = Cleanup(
            db=self.db,
            events=self.events,
            cache=self.cache,
            images=self.images,
            archive=self.archive,
            uploads=self.uploads,
            settings=self._current_settings,
        )
        # the size cap runs after every store
        self.images.on_stored.append(
            CapGuard(
                db=self.db,
                cache=self.cache,
                images=self.images,
                archive=self.archive,
                events=self.events,
                settings=self._current_settings,
            )
        )
        self._prepared = False
        self._prepare_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # the periodic work of server mode (Lambda uploads inline and has EventBridge)
        self.background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.generated_key: str | None = None
        # the "PUBLIC_BASE_URL is not set" warning is logged once per process
        self.base_url_warned = False
        self.uploader = UploadWorker(self.uploads)
        if not self.serverless:
            scheduler = CleanupScheduler(
                self.cleanup, interval_minutes=settings.cleanup_interval_minutes
            )
            self.background.append(self.uploader.run)
            self.background.append(scheduler.run)

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared outbound client, built on first use (it loads the CA bundle)."""
        if self._http is None:
            self._http = Upstream.build_client(transport=self._transport)
        return self._http

    def _current_settings(self) -> Settings:
        return self.config.current()

    @property
    def config(self) -> ConfigService:
        if self._config is None:
            secret = load_or_create_secret_key(self.settings)
            self._config = ConfigService(self.settings, self.db, SecretBox(secret))
            self._config.listeners.append(self._settings_changed)
        return self._config

    def _settings_changed(self, current: Settings) -> None:
        # keys stored through the console are secrets too; the environment's stay so as well,
        # and so do keys rotated away (an upstream or a log may still echo the old one)
        self.events.redactor = self.events.redactor.remembering(self.settings, current)

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
            self._announce_setup()
            self.config.reload()
            self._prepared = True

    def _announce_setup(self) -> None:
        """While no admin exists, print the one-time setup link (console, docker logs,
        CloudWatch): first-run setup needs its token, so reaching the port is not enough."""
        try:
            from picgate.admin import auth
        except ImportError:  # a build without the console has nothing to set up
            return
        if self.db.call(auth.admin_exists):
            return
        token = auth.setup_token(self.config.box)
        base = (self.settings.public_base_url or "").rstrip("/")
        if not base:
            host = self.settings.host
            shown = "localhost" if host in ("0.0.0.0", "::", "") else host
            base = "<function URL>" if self.serverless else f"http://{shown}:{self.settings.port}"
        banner = (
            "\n" + "=" * 64 + "\n"
            "PicGate has no admin yet. Create one with this one-time link:\n"
            f"    {base}/admin/setup?token={token}\n"
            f"(or enter the setup token {token} on /admin/setup,\n"
            " or run: picgate admin create --username U --password P)\n" + "=" * 64
        )
        print(banner, flush=True)

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
            return not self.archive.configured() or self.uploads.upload_now(image.id)

        if not await anyio.to_thread.run_sync(archive):
            raise StorageUnavailable("the image could not be archived to R2; returned inline")
        return image

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
