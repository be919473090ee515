"""The container: builds every component once per process, wires them, runs their tasks.

Components (each takes only the others it uses): ``db`` (Database), ``events`` (EventLog),
``cache`` (LocalCache), ``config`` (ConfigService, built on first use), ``upstream`` and
``http`` (the outbound client), ``archive`` (the R2 store), ``library`` (ImageLibrary: the
image row's owner, with its upload queue, serving policy, variants, eviction, retention,
console actions and statistics), ``cleanup`` (the cleanup job), ``uploader`` (the upload
worker), ``keys`` (KeyRing: the named gateway keys), ``catalog`` (ModelCatalog: the models of
MODELS_FILE and of the console, merged) and ``metrics`` (the app's Prometheus registry; None
unless ``METRICS_TOKEN`` is set, since nobody could read it, and prometheus_client stays out of
the cold start).

Only the edges import this module: ``picgate.app``, ``handler.py`` and the CLI commands. Routes
get single components through the ``Annotated`` aliases of ``picgate.deps``; the gateway, admin,
jobs, library and storage code take the components they use as arguments. The import-linter
contracts in ``pyproject.toml`` hold this.

Building does no I/O. ``prepare()`` (synchronous) makes folders, migrates the database and
generates a gateway key on first start; ``start()``/``stop()`` run the background tasks of
server mode. Under Lambda only ``prepare()`` runs, once per container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from picgate.config import Settings, validate_settings
from picgate.db.engine import Database
from picgate.eventlog import EventLog
from picgate.gateway.buffers import BufferBudget
from picgate.gateway.upstream import Upstream
from picgate.jobs.cleanup import Cleanup
from picgate.jobs.scheduler import CleanupScheduler
from picgate.jobs.upload_worker import UploadWorker
from picgate.keyring import KeyRing
from picgate.library.library import ImageLibrary
from picgate.library.sendfile import Sendfile
from picgate.model_catalog import ModelCatalog
from picgate.redaction import Redactor
from picgate.routing.models_file import load_models_file
from picgate.settings_store import ConfigService, SecretBox, load_or_create_secret_key
from picgate.storage.archive import Archive
from picgate.storage.local import LocalCache
from picgate.storage.object_store import ObjectStore

if TYPE_CHECKING:
    import httpx

    from picgate.metrics import Metrics

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
        # MODELS_FILE: read once per process; a bad file stops the start with one line
        models_file = load_models_file(settings.models_file) if settings.models_file else None
        self.catalog = ModelCatalog(
            self.db,
            lambda: self.config.box,
            file=models_file,
            source=settings.models_file,
            on_secrets=self._learn_model_secrets,
        )
        self.events.redactor = Redactor.of(settings, extra=self.catalog.secrets())
        self.cache = LocalCache(settings.resolved_images_dir)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        # one budget for the whole process: the image bytes requests hold (MAX_BUFFERED_MB)
        self.buffers = BufferBudget.from_mb(settings.max_buffered_mb)
        self._config: ConfigService | None = None
        self.archive = Archive(self._current_settings, forced=objects)
        self.library = ImageLibrary(
            db=self.db,
            cache=self.cache,
            archive=self.archive,
            events=self.events,
            settings=self._current_settings,
            max_image_bytes=settings.max_image_mb * 2**20,
            serverless=self.serverless,
            sendfile=Sendfile.from_settings(settings),
        )
        self.cleanup = Cleanup(
            db=self.db, events=self.events, library=self.library, settings=self._current_settings
        )
        self.metrics: Metrics | None = None
        if settings.metrics_token:  # an environment setting only: it cannot appear later
            from picgate.metrics import Metrics

            # the library's gauges are read through its rows at scrape time
            self.metrics = Metrics(self.library.rows)
        observe = self.metrics.observe_upstream if self.metrics else None
        self.upstream = Upstream(lambda: self.http, observe=observe)
        self.keys = KeyRing(self.db)
        self._prepared = False
        self._prepare_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # the periodic work of server mode (Lambda uploads inline and has EventBridge)
        self.background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.generated_key: str | None = None
        # the "PUBLIC_BASE_URL is not set" warning is logged once per process
        self.base_url_warned = False
        self.uploader = UploadWorker(self.library.uploads)
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
            self._config = ConfigService(
                self.settings,
                self.db,
                SecretBox(secret),
                events=self.events,
                extra_secrets=self.catalog.secrets(),
            )
        return self._config

    def _learn_model_secrets(self, keys: Sequence[str]) -> None:
        """Every upstream key (file and console) is scrubbed from now on, and stays scrubbed
        when the settings change (the config service rebuilds the redactor then)."""
        if self._config is not None:
            self._config.extra_secrets = tuple(keys)
        self.events.redactor = self.events.redactor.remembering(extra=keys)

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
                    "PicGate generated a gateway API key. It is shown here once and once on the\n"
                    "admin dashboard, then only masked (generate a new one in the admin settings):\n"
                    f"    {key}\n"
                    "Clients must send:  Authorization: Bearer <key>\n" + "=" * 64
                )
                print(banner, flush=True)
            self._announce_setup()
            self.config.reload()
            self._warn_host_urls()
            self._prepared = True

    def _announce_setup(self) -> None:
        """While no admin exists, print the one-time setup link (console, docker logs,
        CloudWatch): first-run setup needs its token, so reaching the port is not enough."""
        try:
            from picgate.admin import auth
        except ImportError:  # a build without the console has nothing to set up
            return
        if self.db.read(auth.admin_exists):
            return
        token = auth.setup_token(self.config.box)
        base = (self.settings.public_base_url or "").rstrip("/")
        if not base:
            host = self.settings.host
            shown = "localhost" if host in ("0.0.0.0", "::", "") else host
            shown = f"[{shown}]" if ":" in shown else shown  # an IPv6 address in a URL
            base = "<function URL>" if self.serverless else f"http://{shown}:{self.settings.port}"
        banner = (
            "\n" + "=" * 64 + "\n"
            "PicGate has no admin yet. Create one with this one-time link:\n"
            f"    {base}/admin/setup?token={token}\n"
            f"(or enter the setup token {token} on /admin/setup,\n"
            " or run: picgate admin create --username U --password P)\n" + "=" * 64
        )
        print(banner, flush=True)

    def _warn_host_urls(self) -> None:
        """Say loudly (stderr) when image URLs follow the request's ``Host`` header: without
        ``PUBLIC_BASE_URL`` a client can make PicGate hand out links to any host it names."""
        if self.config.current().public_base_url:
            return
        banner = (
            "\n" + "!" * 64 + "\n"
            "WARNING: PUBLIC_BASE_URL is not set. Image URLs in answers are built from the\n"
            "Host header of each request, so a client can make them point at any host.\n"
            "Set PUBLIC_BASE_URL to the address clients use (environment, or admin console ->\n"
            "settings), for example: PUBLIC_BASE_URL=https://picgate.example.com\n" + "!" * 64
        )
        print(banner, file=sys.stderr, flush=True)

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
                    await anyio.to_thread.run_sync(self.library.flush_access_times)
            except Exception as exc:  # keep the loop alive; the next tick retries
                log.warning("background flush failed: %s", exc)

    def flush(self) -> None:
        """Write buffered log lines and access times now (serverless: before returning)."""
        self.library.flush_access_times()
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
